//! Wheels installed by mlambda against the same wheels installed by pip: real wheels from PyPI
//! (numpy, scikit-learn, scipy, onnxruntime for CPython 3.11 on manylinux x86_64), downloaded
//! once into a cache that outlives the run (`MLAMBDA_TEST_WHEELS`, else the target's tmp dir).
//! pip is the reference: the same files with the same bytes and exec bits, and launchers that
//! run the same code.

use crate::common::{run_ok, tool};
use mlambda::model_image::layer::LayerOptions;
use mlambda::packages::install::{Installed, Scheme, WheelFile, install_wheels};
use mlambda::store::Layout;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const PYTHON: &str = "3.11";
const PLATFORM: &str = "manylinux_2_28_x86_64";

// Each has a cp311 wheel tagged manylinux_2_28 x86_64 (pip download finds older releases,
// tagged manylinux2014 only, not for this --platform).
const NUMPY: (&str, &str) = ("numpy", "2.4.6");
const SCIKIT_LEARN: (&str, &str) = ("scikit-learn", "1.9.1");
const SCIPY: (&str, &str) = ("scipy", "1.17.1");
const ONNXRUNTIME: (&str, &str) = ("onnxruntime", "1.20.1");

/// python3 with pip; `None` when either is missing (skipped loudly, or a failure under CI).
fn python_with_pip() -> Option<PathBuf> {
    let python = tool("python3")?;
    let has_pip = Command::new(&python)
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_pip {
        if std::env::var_os("CI").is_some() {
            panic!("pip is not installed for python3, and CI is set: .ci/run must install it");
        }
        eprintln!("SKIPPED: pip not installed for python3");
        return None;
    }
    Some(python)
}

fn wheel_cache() -> PathBuf {
    std::env::var_os("MLAMBDA_TEST_WHEELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_TARGET_TMPDIR"), "/wheels")))
}

/// The pip options that choose the wheel of the image's Python, not of the host's.
fn target_options(command: &mut Command) -> &mut Command {
    command
        .args(["--no-deps", "--only-binary=:all:"])
        .args(["--python-version", PYTHON, "--platform", PLATFORM])
        .args(["--implementation", "cp"])
}

/// The wheel of `project==version`, downloaded by pip the first time only.
fn fetch(python: &Path, (project, version): (&str, &str)) -> WheelFile {
    let cache = wheel_cache();
    std::fs::create_dir_all(&cache).unwrap();
    // A wheel's file name spells the project with underscores: scikit_learn-1.9.1-….
    let prefix = format!("{}-{version}-", project.replace('-', "_"));
    let find = |dir: &Path| {
        std::fs::read_dir(dir).unwrap().flatten().find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            (name.starts_with(&prefix) && name.ends_with(".whl")).then(|| entry.path())
        })
    };
    let path = match find(&cache) {
        Some(path) => path,
        None => {
            // Downloaded beside the cache, then renamed into it: an interrupted run leaves no
            // half wheel behind.
            let partial = tempfile::tempdir_in(&cache).unwrap();
            let out = target_options(Command::new(python).args(["-m", "pip", "download"]))
                .arg("-d")
                .arg(partial.path())
                .arg(format!("{project}=={version}"))
                .output()
                .expect("pip starts");
            assert!(
                out.status.success(),
                "pip could not download {project}=={version} (is the network up?): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got = find(partial.path())
                .unwrap_or_else(|| panic!("pip downloaded no {prefix}*.whl into {partial:?}"));
            let path = cache.join(got.file_name().unwrap());
            std::fs::rename(&got, &path).unwrap();
            path
        }
    };
    WheelFile {
        filename: path.file_name().unwrap().to_string_lossy().into_owned(),
        path,
    }
}

fn pip_install(python: &Path, wheel: &WheelFile, target: &Path) {
    run_ok(
        target_options(Command::new(python).args(["-m", "pip", "install"]))
            .args(["--no-compile", "--no-index", "--no-warn-script-location"])
            .arg("--target")
            .arg(target)
            .arg(&wheel.path),
    );
}

/// Installs `wheel` with mlambda into a new layout under `dir`; the layer unpacked in `dir/rootfs`.
fn mlambda_install(wheel: &WheelFile, dir: &Path) -> (Installed, PathBuf) {
    let layout = Layout::create(&dir.join("layout")).unwrap();
    let installed = install_wheels(
        std::slice::from_ref(wheel),
        &Scheme::debian(PYTHON),
        &layout,
        &LayerOptions::default(),
        format!("python package {}", wheel.filename),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let root = dir.join("rootfs");
    let blob = layout
        .open_blob(&installed.layer.descriptor.digest)
        .unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
    archive.set_preserve_permissions(true);
    archive.unpack(&root).unwrap();
    (installed, root)
}

/// Every file under `dir`, by its path from `dir`: (sha256, executable).
fn tree(dir: &Path) -> BTreeMap<String, (String, bool)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap().flatten() {
            let kind = entry.file_type().unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            assert!(!kind.is_symlink(), "{rel} is a symlink");
            if kind.is_dir() {
                stack.push(path);
                continue;
            }
            let executable = entry.metadata().unwrap().permissions().mode() & 0o111 != 0;
            files.insert(rel, (sha256_of(&path), executable));
        }
    }
    files
}

fn sha256_of(path: &Path) -> String {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).unwrap();
        if n == 0 {
            return hex::encode(hasher.finalize());
        }
        hasher.update(&buffer[..n]);
    }
}

/// What pip writes about the install itself, not the wheel's files.
fn about_the_install(rel: &str) -> bool {
    let Some((dir, name)) = rel.rsplit_once('/') else {
        return false;
    };
    dir.ends_with(".dist-info")
        && !dir.contains('/')
        && ["RECORD", "INSTALLER", "REQUESTED", "direct_url.json"].contains(&name)
}

/// Installs `package` with pip and with mlambda and compares the results; returns mlambda's
/// install and where both are, for more checks.
fn compare_with_pip(package: (&str, &str)) -> Option<(Installed, tempfile::TempDir)> {
    let python = python_with_pip()?;
    let wheel = fetch(&python, package);
    let dir = tempfile::tempdir().unwrap();
    let pip_dir = dir.path().join("pip");
    pip_install(&python, &wheel, &pip_dir);
    let (installed, root) = mlambda_install(&wheel, dir.path());
    let scheme = Scheme::debian(PYTHON);

    let ours_all = tree(&root);
    let outside: Vec<&String> = ours_all
        .keys()
        .filter(|p| !p.starts_with(&format!("{}/", scheme.purelib)))
        .filter(|p| !p.starts_with(&format!("{}/", scheme.scripts)))
        .collect();
    assert!(
        outside.is_empty(),
        "installed outside site and bin: {outside:?}"
    );
    assert_eq!(installed.files, ours_all.len() as u64);

    let ours: BTreeMap<String, (String, bool)> = tree(&root.join(&scheme.purelib))
        .into_iter()
        .filter(|(rel, _)| !about_the_install(rel))
        .collect();
    let pips: BTreeMap<String, (String, bool)> = tree(&pip_dir)
        .into_iter()
        .filter(|(rel, _)| !rel.starts_with("bin/") && !about_the_install(rel))
        .collect();
    let only_ours: Vec<&String> = ours.keys().filter(|k| !pips.contains_key(*k)).collect();
    let only_pips: Vec<&String> = pips.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(
        only_ours.is_empty() && only_pips.is_empty(),
        "{}: only mlambda installed {only_ours:?}; only pip installed {only_pips:?}",
        wheel.filename
    );
    let differ: Vec<String> = ours
        .iter()
        .filter(|(rel, ours)| pips[*rel] != **ours)
        .map(|(rel, ours)| format!("{rel}: mlambda {ours:?}, pip {:?}", pips[rel]))
        .collect();
    assert!(differ.is_empty(), "{}: {differ:#?}", wheel.filename);
    let executables = ours.values().filter(|(_, x)| *x).count();

    // The launchers: pip's shebang names the host's Python, ours the image's; below it, the
    // same code.
    let launchers = |dir: &Path| -> BTreeMap<String, String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return BTreeMap::new();
        };
        entries
            .flatten()
            .map(|e| {
                let text = std::fs::read_to_string(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), text)
            })
            .collect()
    };
    let our_scripts = launchers(&root.join(&scheme.scripts));
    let pip_scripts = launchers(&pip_dir.join("bin"));
    assert_eq!(
        our_scripts.keys().collect::<Vec<_>>(),
        pip_scripts.keys().collect::<Vec<_>>()
    );
    for (name, ours) in &our_scripts {
        let (shebang, body) = ours.split_once('\n').unwrap();
        assert_eq!(shebang, format!("#!{}", scheme.interpreter), "{name}");
        let pips = pip_scripts[name].split_once('\n').unwrap().1;
        assert_eq!(body, pips, "{name}: the launchers differ below the #! line");
    }
    eprintln!(
        "{}: {} files ({executables} executable) as pip installs them; launchers {:?}",
        wheel.filename,
        ours.len(),
        our_scripts.keys().collect::<Vec<_>>()
    );
    Some((installed, dir))
}

#[test]
fn numpy_installs_as_pip_installs_it_and_its_launcher_runs() {
    let Some((_, dir)) = compare_with_pip(NUMPY) else {
        return;
    };
    // The launcher, run with the tree installed by each: the host's Python must be the
    // wheel's (CPython 3.11 on x86_64 Linux) to load numpy's extension modules.
    let python = tool("python3").unwrap();
    let host = run_ok(Command::new(&python).args([
        "-c",
        "import sys, platform; print(sys.implementation.name, sys.version_info[:2] == (3, 11), platform.machine())",
    ]));
    if String::from_utf8_lossy(&host.stdout).trim() != "cpython True x86_64" {
        eprintln!("SKIPPED: running numpy-config needs CPython 3.11 on x86_64 as python3");
        return;
    }
    let scheme = Scheme::debian(PYTHON);
    let rootfs = dir.path().join("rootfs");
    let run = |script: PathBuf, site: PathBuf| {
        let out = run_ok(
            Command::new(&python)
                .arg("-s")
                .arg(script)
                .arg("--version")
                .env("PYTHONPATH", site)
                .env_remove("PYTHONHOME")
                .current_dir(dir.path()),
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ours = run(
        rootfs.join(&scheme.scripts).join("numpy-config"),
        rootfs.join(&scheme.purelib),
    );
    let pips = run(
        dir.path().join("pip/bin/numpy-config"),
        dir.path().join("pip"),
    );
    assert_eq!(ours.trim(), NUMPY.1);
    assert_eq!(ours, pips);
}

#[test]
fn scikit_learn_installs_as_pip_installs_it() {
    compare_with_pip(SCIKIT_LEARN);
}

#[test]
fn scipy_installs_as_pip_installs_it() {
    compare_with_pip(SCIPY);
}

#[test]
fn onnxruntime_installs_as_pip_installs_it() {
    compare_with_pip(ONNXRUNTIME);
}

/// What a manylinux_2_28 x86_64 wheel may need from the system (auditwheel's policy: PEP 513's
/// list, with libexpat.so.1 and libz.so.1 added in 2021); a wheel bundles everything else.
const MANYLINUX_SYSTEM: &[&str] = &[
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "libm.so.6",
    "libdl.so.2",
    "librt.so.1",
    "libc.so.6",
    "libnsl.so.1",
    "libutil.so.1",
    "libpthread.so.0",
    "libresolv.so.2",
    "libX11.so.6",
    "libXext.so.6",
    "libXrender.so.1",
    "libICE.so.6",
    "libSM.so.6",
    "libGL.so.1",
    "libgobject-2.0.so.0",
    "libgthread-2.0.so.0",
    "libglib-2.0.so.0",
    "libexpat.so.1",
    "libz.so.1",
    "ld-linux-x86-64.so.2",
];

#[test]
fn numpy_needs_the_c_library_and_provides_the_openblas_it_bundles() {
    let Some(python) = python_with_pip() else {
        return;
    };
    let wheel = fetch(&python, NUMPY);
    let dir = tempfile::tempdir().unwrap();
    let (installed, _) = mlambda_install(&wheel, dir.path());
    // Every library some installed file needs, with the first file (in path order) needing it.
    let mut needs: std::collections::BTreeMap<&String, &String> = Default::default();
    for file in &installed.libraries {
        for library in &file.needed {
            needs.entry(library).or_insert(&file.path);
        }
    }
    for library in ["libc.so.6", "libm.so.6"] {
        let by = needs
            .iter()
            .find(|(n, _)| n.as_str() == library)
            .map(|(_, by)| *by);
        assert!(by.is_some(), "{library} not in {needs:#?}");
        assert!(
            by.unwrap()
                .starts_with("usr/local/lib/python3.11/dist-packages/numpy")
        );
    }
    let archive = zip::ZipArchive::new(std::fs::File::open(&wheel.path).unwrap()).unwrap();
    let bundled: BTreeSet<String> = archive
        .file_names()
        .map(|name| name.unwrap().into_owned())
        .filter_map(|name| name.strip_prefix("numpy.libs/").map(str::to_string))
        .filter(|name| !name.is_empty())
        .collect();
    assert!(
        bundled.iter().any(|b| b.starts_with("libscipy_openblas")),
        "numpy bundles no openblas: {bundled:?}"
    );
    for library in &bundled {
        assert!(installed.provides.contains(library), "{library}");
    }
    // The openblas numpy's extension modules load is the one bundled.
    let openblas: Vec<&String> = needs
        .keys()
        .copied()
        .filter(|n| n.starts_with("libscipy_openblas"))
        .collect();
    assert!(!openblas.is_empty(), "{needs:#?}");
    assert!(
        openblas.iter().all(|n| bundled.contains(*n)),
        "{openblas:?}"
    );
    // Everything else comes from the system, within the manylinux policy (numpy's bundled
    // libgfortran needs the system's libz.so.1: the base must have it).
    let from_system: Vec<&String> = needs
        .keys()
        .copied()
        .filter(|n| !installed.provides.contains(*n))
        .collect();
    for library in &from_system {
        assert!(MANYLINUX_SYSTEM.contains(&library.as_str()), "{library}");
    }
    assert_eq!(
        needs
            .iter()
            .find(|(n, _)| n.as_str() == "libz.so.1")
            .map(|(_, by)| by.as_str()),
        bundled
            .iter()
            .find(|b| b.starts_with("libgfortran"))
            .map(|b| format!("usr/local/lib/python3.11/dist-packages/numpy.libs/{b}"))
            .as_deref()
    );
    eprintln!("numpy needs from the system: {from_system:?}; bundles {bundled:?}");
}
