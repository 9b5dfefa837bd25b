//! Installing wheels is unpacking them into an image layer: the install steps of the wheel spec
//! (the binary distribution format, version 1) done by mlambda, with no Python and none of the
//! package's code run.
//!
//! Each wheel is planned first from its zip directory and its small `.dist-info` files (WHEEL,
//! RECORD, entry_points.txt): where every file goes, its mode, and the new RECORD, whose hashes
//! are the wheel's own (a file that does not match them fails the whole install, so the layer is
//! never stored). Then every file of every wheel is streamed once, in path order, from its zip
//! entry into the tar, hashed and checked against RECORD on the way, and copied to a temporary
//! file when it is an ELF object so that its libraries can be read. Only small files (RECORD,
//! launchers, `#!python` scripts) are ever held in memory.
//!
//! One file per step: opening a wheel and reading its `.dist-info` (wheel.rs), RECORD and the
//! hashes every file is checked against (record.rs), entry points and `#!python` scripts
//! (scripts.rs), where every file goes (plan.rs), and streaming the files into the tar
//! (write.rs).

mod beside;
mod plan;
mod record;
mod scripts;
#[cfg(test)]
mod test_wheels;
mod wheel;
mod write;

use crate::model_image::layer::{Layer, LayerError, LayerOptions, LayerTar};
use crate::store::Layout;
use plan::{Planned, plan_wheel};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use wheel::{open_wheel, unsafe_path};
use write::{Found, write_file};

/// Where an interpreter's install scheme puts things, as paths in the image without a leading '/'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    pub purelib: String,
    pub platlib: String,
    pub scripts: String,
    /// The base: as pip does, a distribution's headers go in a directory named after it.
    pub headers: String,
    pub data: String,
    /// Absolute, for shebangs: "/usr/bin/python3.11".
    pub interpreter: String,
}

impl Scheme {
    /// Debian's python3.X: what pip installs as root goes under /usr/local, in dist-packages.
    pub fn debian(python: &str) -> Scheme {
        Scheme::under_usr_local(python, "dist-packages", &format!("/usr/bin/python{python}"))
    }

    /// The python.org layout of the Docker official images: a Python built with prefix /usr/local.
    pub fn prefix_local(python: &str) -> Scheme {
        Scheme::under_usr_local(
            python,
            "site-packages",
            &format!("/usr/local/bin/python{python}"),
        )
    }

    fn under_usr_local(python: &str, site: &str, interpreter: &str) -> Scheme {
        let lib = format!("usr/local/lib/python{python}/{site}");
        Scheme {
            purelib: lib.clone(),
            platlib: lib,
            scripts: "usr/local/bin".into(),
            headers: format!("usr/local/include/python{python}"),
            data: "usr/local".into(),
            interpreter: interpreter.to_string(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WheelFile {
    /// A .whl already verified by its sha256 by the caller.
    pub path: PathBuf,
    /// e.g. numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
    pub filename: String,
}

/// An ELF object installed: its path in the image, its soname, and its `DT_NEEDED`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ElfFile {
    pub path: String,
    pub soname: Option<String>,
    pub needed: Vec<String>,
}

#[derive(Debug)]
pub struct Installed {
    pub layer: Layer,
    /// Every ELF file installed, with the libraries it needs (the caller checks them
    /// against every layer and the base).
    pub libraries: Vec<ElfFile>,
    /// Basenames of installed files that look like shared libraries, and ELF sonames.
    pub provides: BTreeSet<String>,
    pub files: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("wheel {wheel}: {problem}")]
    Invalid { wheel: String, problem: String },
    #[error(
        "wheel {wheel}: {path} {problem}: the wheel is corrupt or was tampered with; nothing was installed: download it again from its index"
    )]
    Corrupt {
        wheel: String,
        path: String,
        problem: String,
    },
    #[error(
        "wheel {wheel}: refusing entry {path:?}: {problem}; a wheel may only hold regular files inside its own directories, so nothing was installed"
    )]
    Unsafe {
        wheel: String,
        path: String,
        problem: String,
    },
    #[error(
        "{path} is installed by both {first} and {second}: they cannot go into one image; drop one of them from the requirements"
    )]
    Clash {
        path: String,
        first: String,
        second: String,
    },
    #[error("the install scheme {problem}")]
    Scheme { problem: String },
    #[error("wheel {wheel}: {what}: {source}")]
    Io {
        wheel: String,
        what: String,
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// Installs `wheels` into one new layer of `layout`: every file of every wheel, their parent
/// directories, the launchers of their entry points, INSTALLER and a rewritten RECORD, in path
/// order, so that the same wheels, scheme and options give the same layer on any machine.
pub fn install_wheels(
    wheels: &[WheelFile],
    scheme: &Scheme,
    layout: &Layout,
    options: &LayerOptions,
    comment: String,
) -> Result<Installed, InstallError> {
    check_scheme(scheme)?;
    let mut opened = wheels
        .iter()
        .map(open_wheel)
        .collect::<Result<Vec<_>, _>>()?;
    let mut files: BTreeMap<String, Planned> = BTreeMap::new();
    for (number, wheel) in opened.iter_mut().enumerate() {
        for (path, planned) in plan_wheel(number, wheel, scheme)? {
            if let Some(earlier) = files.get(&path) {
                return Err(clash(path, &wheels[earlier.wheel], &wheels[number]));
            }
            files.insert(path, planned);
        }
    }
    let dirs = parent_dirs(&files, wheels)?;

    let mut tar = LayerTar::start_mirrored(layout, options.compression)?;
    let mut found = Found::default();
    let dir_failed = |source| LayerError::Write {
        layer: comment.clone(),
        source,
    };
    // Both sets are sorted; merged, a directory comes before everything under it.
    let mut dirs = dirs.into_iter().peekable();
    for (path, planned) in &files {
        while let Some(dir) = dirs.next_if(|dir| dir.as_str() < path.as_str()) {
            tar.append_dir(&dir, options).map_err(dir_failed)?;
        }
        let wheel = &mut opened[planned.wheel];
        write_file(&mut tar, wheel, path, planned, options, &mut found)?;
    }
    for dir in dirs {
        tar.append_dir(&dir, options).map_err(dir_failed)?;
    }
    let layer = tar.finish(layout, comment)?;
    Ok(Installed {
        layer,
        libraries: found.libraries,
        provides: found.provides,
        files: files.len() as u64,
    })
}

fn check_scheme(scheme: &Scheme) -> Result<(), InstallError> {
    let dirs = [
        ("purelib", &scheme.purelib),
        ("platlib", &scheme.platlib),
        ("scripts", &scheme.scripts),
        ("headers", &scheme.headers),
        ("data", &scheme.data),
    ];
    for (key, dir) in dirs {
        if let Some(problem) = unsafe_path(dir).filter(|_| !dir.is_empty()) {
            return Err(InstallError::Scheme {
                problem: format!(
                    "has {key} {dir:?}, and {problem}: it must be a relative path in the image"
                ),
            });
        }
    }
    let interpreter = &scheme.interpreter;
    if !interpreter.starts_with('/') || interpreter.contains(char::is_whitespace) {
        return Err(InstallError::Scheme {
            problem: format!(
                "has interpreter {interpreter:?}: it must be an absolute path without spaces, for the scripts' #! lines"
            ),
        });
    }
    Ok(())
}

fn clash(path: String, first: &WheelFile, second: &WheelFile) -> InstallError {
    if first.filename == second.filename {
        return InstallError::Invalid {
            wheel: first.filename.clone(),
            problem: format!("installs {path} twice (from two entries of the wheel)"),
        };
    }
    InstallError::Clash {
        path,
        first: first.filename.clone(),
        second: second.filename.clone(),
    }
}

/// Every ancestor directory of every file, each once; none may also be a file.
fn parent_dirs(
    files: &BTreeMap<String, Planned>,
    wheels: &[WheelFile],
) -> Result<BTreeSet<String>, InstallError> {
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut rest = path.as_str();
        while let Some((parent, _)) = rest.rsplit_once('/') {
            if !dirs.insert(parent.to_string()) {
                break;
            }
            rest = parent;
        }
    }
    for dir in &dirs {
        if let Some(file) = files.get(dir) {
            let inside = files
                .range(format!("{dir}/")..)
                .next()
                .map_or(file, |(_, planned)| planned);
            return Err(clash(
                dir.clone(),
                &wheels[file.wheel],
                &wheels[inside.wheel],
            ));
        }
    }
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::test_wheels::*;
    use super::*;

    #[test]
    fn the_same_wheels_give_the_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (first, _) = install(&dir.path().join("a"), &wheels, &Scheme::debian("3.11")).unwrap();
        let reversed: Vec<WheelFile> = wheels.iter().rev().cloned().collect();
        let (second, _) =
            install(&dir.path().join("b"), &reversed, &Scheme::debian("3.11")).unwrap();
        assert_eq!(
            first.layer.descriptor.digest,
            second.layer.descriptor.digest
        );
        assert_eq!(first.layer.diff_id, second.layer.diff_id);
        let (third, _) = install(
            &dir.path().join("c"),
            &wheels,
            &Scheme::prefix_local("3.11"),
        )
        .unwrap();
        assert_ne!(first.layer.descriptor.digest, third.layer.descriptor.digest);
    }

    #[test]
    fn directories_come_once_before_their_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (installed, layout) = install(dir.path(), &wheels, &Scheme::debian("3.11")).unwrap();
        let entries = entries(&layout, &installed.layer);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted, "sorted, each once");
        let dirs: BTreeSet<&str> = entries
            .iter()
            .filter(|e| e.1 == tar::EntryType::Directory)
            .map(|e| {
                assert_eq!(e.2, 0o755, "{}", e.0);
                e.0.as_str()
            })
            .collect();
        for path in &paths {
            let mut rest = *path;
            while let Some((parent, _)) = rest.rsplit_once('/') {
                assert!(dirs.contains(parent), "{parent} (of {path}) has no entry");
                rest = parent;
            }
        }
        for expected in [
            "usr",
            "usr/local",
            "usr/local/bin",
            SITE,
            &format!("{SITE}/alpha/deep/er"),
        ] {
            assert!(dirs.contains(expected), "{expected}");
        }
        assert_eq!(installed.files, 14, "{paths:?}");
    }

    #[test]
    fn two_wheels_installing_one_path_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = dist("alpha", "1.0", true);
        a.push(file("shared/util.py", b"a\n", 0o644));
        let mut b = dist("beta", "1.0", true);
        b.push(file("shared/util.py", b"b\n", 0o644));
        let wheels = [
            wheel(dir.path(), "alpha-1.0-py3-none-any.whl", &a),
            wheel(dir.path(), "beta-1.0-py3-none-any.whl", &b),
        ];
        let error = install(dir.path(), &wheels, &Scheme::debian("3.11"))
            .unwrap_err()
            .to_string();
        for part in [
            "alpha-1.0-py3-none-any.whl",
            "beta-1.0-py3-none-any.whl",
            "shared/util.py",
        ] {
            assert!(error.contains(part), "{error}");
        }
        // A file of one is a directory of the other.
        let mut c = dist("gamma", "1.0", true);
        c.push(file("shared", b"c\n", 0o644));
        let wheels = [
            wheels[0].clone(),
            wheel(dir.path(), "gamma-1.0-py3-none-any.whl", &c),
        ];
        let error = install(&dir.path().join("x"), &wheels, &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Clash { .. }), "{error}");
    }
}
