//! Python packages in images: a model's requirements resolved for the image's Python (not the
//! host's), its wheels installed by mlambda as one layer per distribution, and the image run
//! (chroot, as root, as in CI) answering with the numbers scikit-learn computes.

use crate::common;

use common::http::free_port;
use common::rootfs::{can_chroot, chroot, post_json, serve_python, unpacked};
use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;

/// uv and PyPI are needed to resolve a loose requirements file.
fn have_uv() -> bool {
    tool("uv").is_some()
}

/// Each layer of a stored image with what made it (the config's history).
fn layers_made_by(layout: &Path, tag: &str) -> Vec<(String, String)> {
    let digests = layout_layers(layout, tag);
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest_digest)).unwrap()).unwrap();
    let config: Value = serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let history: Vec<String> = config["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["created_by"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(history.len(), digests.len(), "one history entry per layer");
    digests.into_iter().zip(history).collect()
}

fn package_layer(layers: &[(String, String)], package: &str) -> String {
    let wanted = format!("python package {package} ");
    layers
        .iter()
        .find(|(_, by)| by.contains(&wanted))
        .unwrap_or_else(|| panic!("no layer of {package}: {layers:#?}"))
        .0
        .clone()
}

fn show(home: &Path, reference: &str) -> Value {
    json_of(&run_ok(mlambda(home).args(["show", reference, "--json"])))
}

/// Runs the iris model's image: its own entrypoint answers over HTTP with what scikit-learn,
/// called directly inside the same image, computes.
fn iris_answers_in_its_image(home: &Path, version: &str) {
    if !can_chroot() {
        return;
    }
    let Some((_bundle, rootfs)) = unpacked(&home.join("registry/iris"), version) else {
        return;
    };
    let direct = chroot(
        &rootfs,
        &[
            "/usr/bin/python3",
            "-c",
            "import sys; sys.path.insert(0, '/model/files/src'); import func_main, json; \
             print(json.dumps(func_main.predict([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])))",
        ],
    );
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(direct["species"], json!([0, 2]), "setosa, then virginica");
    let port = free_port();
    let _server = serve_python(&rootfs, port);
    let served = post_json(
        port,
        "/v2/models/iris/infer",
        r#"{"inputs": [{"name": "features", "datatype": "FP64", "shape": [2, 4], "data": [5.1, 3.5, 1.4, 0.2, 6.7, 3.0, 5.2, 2.3]}]}"#,
    );
    let served: Value = serde_json::from_str(&served).unwrap();
    let outputs = &served["outputs"];
    assert_eq!(outputs[0]["name"], "species");
    assert_eq!(outputs[0]["datatype"], "INT64");
    assert_eq!(outputs[0]["shape"], json!([2]));
    assert_eq!(outputs[1]["name"], "probability");
    let served = json!({"species": outputs[0]["data"], "probability": outputs[1]["data"]});
    assert_eq!(served, direct);
    // The packages are where Debian's Python looks, installed as pip would (INSTALLER aside).
    let site = rootfs.join("usr/local/lib/python3.11/dist-packages");
    let installer = std::fs::read_dir(&site)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("scikit_learn-"))
        .map(|e| std::fs::read_to_string(e.path().join("INSTALLER")).unwrap());
    assert_eq!(installer.as_deref(), Some("mlambda\n"));
}

#[test]
fn a_model_with_loose_requirements_gets_its_packages_and_runs() {
    if !have_uv() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(examples("iris")),
    ));
    assert_eq!(uploaded["status"], "Finished");
    assert_eq!(uploaded["base"], "runtime python-3.11");
    let record = show(home.path(), "iris:1");
    let log = record["log"].as_str().unwrap();
    assert!(
        log.contains("resolved by uv for cp311 manylinux_2_36_"),
        "{log}"
    );
    let names: Vec<&str> = record["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for needed in ["numpy", "scikit-learn", "scipy", "joblib", "threadpoolctl"] {
        assert!(names.contains(&needed), "{needed} in {names:?}");
    }
    for package in record["packages"].as_array().unwrap() {
        let wheel = package["wheel"].as_str().unwrap();
        assert!(
            wheel.contains("-cp311-") || wheel.contains("-py3-") || wheel.contains(".py3-"),
            "{wheel} is for the image's Python 3.11"
        );
        assert_eq!(package["sha256"].as_str().unwrap().len(), 64);
    }
    // The lock is in the image too, beside the contract.
    let layout = home.path().join("registry/iris");
    let layers = layers_made_by(&layout, "1");
    let numpy = package_layer(&layers, "numpy");
    assert!(
        layers
            .last()
            .unwrap()
            .1
            .contains("model contract and package lock")
    );

    // Unchanged: the recorded lock is reused (no resolving, no download), the same layers.
    let again = run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(examples("iris")),
    );
    assert_eq!(json_of(&again)["version"], 2);
    let log = show(home.path(), "iris:2")["log"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(log.contains("unchanged since an earlier version"), "{log}");
    assert!(!log.contains("downloading"), "{log}");
    assert!(log.contains("(cached)"), "{log}");
    let layers2 = layers_made_by(&layout, "2");
    let digests = |l: &[(String, String)]| l.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>();
    assert_eq!(
        digests(&layers2),
        digests(&layers),
        "same bytes, same image layers"
    );
    assert_eq!(show(home.path(), "iris:2")["packages"], record["packages"]);

    // A second model needing numpy, pinned by hash to the same wheel: the same numpy layer,
    // found in the wheel cache by its hash (no index asked).
    let numpy_lock = record["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "numpy")
        .unwrap()
        .clone();
    let other = tempfile::tempdir().unwrap();
    std::fs::write(
        other.path().join("serving.yaml"),
        "name: doubler\nmodel-type: python:3.11\ncontract:\n  double:\n    inputs:\n      x: {type: double, shape: [-1]}\n    outputs:\n      y: {type: double, shape: [-1]}\n",
    )
    .unwrap();
    std::fs::write(
        other.path().join("requirements.txt"),
        format!(
            "numpy=={} \\\n    --hash=sha256:{}\n",
            numpy_lock["version"].as_str().unwrap(),
            numpy_lock["sha256"].as_str().unwrap()
        ),
    )
    .unwrap();
    run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(other.path())
            .env("PIP_INDEX_URL", "http://127.0.0.1:9/unreachable"),
    );
    let doubler = layers_made_by(&home.path().join("registry/doubler"), "1");
    assert_eq!(package_layer(&doubler, "numpy"), numpy);
    let log = show(home.path(), "doubler:1")["log"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(log.contains("pinned with hashes: 1 packages"), "{log}");

    iris_answers_in_its_image(home.path(), "1");
}

/// `unshare -n`: a command with no network at all (root only).
fn without_network(command: &Command) -> Command {
    let mut cut = Command::new("unshare");
    cut.arg("-n")
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => cut.env(key, value),
            None => cut.env_remove(key),
        };
    }
    cut
}

#[test]
fn an_air_gapped_upload_installs_from_a_wheelhouse_with_the_network_cut() {
    if !have_uv() || !can_chroot() {
        return;
    }
    // On a connected host: the wheels and the lock into a folder.
    let connected = tempfile::tempdir().unwrap();
    let house = tempfile::tempdir().unwrap();
    let fetched = json_of(&run_ok(
        mlambda(connected.path())
            .args(["packages", "fetch", "--json", "--into"])
            .arg(house.path())
            .arg(examples("iris")),
    ));
    assert_eq!(
        fetched["target"].as_str().unwrap().split(' ').next(),
        Some("cp311")
    );
    let wheels = fetched["packages"].as_array().unwrap();
    for wheel in wheels {
        assert!(
            house
                .path()
                .join(wheel["wheel"].as_str().unwrap())
                .is_file()
        );
    }
    assert!(house.path().join("pylock.iris.toml").is_file());

    // The air-gapped host: its runtime is there (built before), but no wheel, and no network.
    let gapped = tempfile::tempdir().unwrap();
    run_ok(mlambda(gapped.path()).args(["base", "build", "python-3.11"]));
    let mut upload = mlambda(gapped.path());
    upload
        .args(["upload", "--json", "--offline", "--wheelhouse"])
        .arg(house.path())
        .arg(examples("iris"))
        // No uv either: the wheelhouse's lock is used as it is.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("MLAMBDA_UV", "/nonexistent/uv");
    let uploaded = json_of(&run_ok(&mut without_network(&upload)));
    assert_eq!(uploaded["status"], "Finished");
    let record = show(gapped.path(), "iris:1");
    let log = record["log"].as_str().unwrap();
    assert!(log.contains("the wheelhouse's lock"), "{log}");
    assert!(log.contains("from the wheelhouse"), "{log}");
    assert_eq!(record["packages"].as_array().unwrap().len(), wheels.len());
    iris_answers_in_its_image(gapped.path(), "1");

    // A wheel of the wheelhouse that is not the one locked: refused, nothing recorded Finished.
    let corrupt_home = tempfile::tempdir().unwrap();
    let joblib = wheels.iter().find(|w| w["name"] == "joblib").unwrap()["wheel"]
        .as_str()
        .unwrap()
        .to_string();
    let path = house.path().join(&joblib);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.push(b'\n');
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let error = run_fail(
        mlambda(corrupt_home.path())
            .args(["upload", "--offline", "--base"])
            .arg(format!(
                "oci:{}:latest",
                gapped.path().join("registry/base/python-3.11").display()
            ))
            .arg("--wheelhouse")
            .arg(house.path())
            .arg(examples("iris"))
            .env("MLAMBDA_UV", "/nonexistent/uv"),
    );
    assert!(
        error.contains(&joblib) && error.contains("sha256"),
        "{error}"
    );
    assert_eq!(show(corrupt_home.path(), "iris:1")["status"], "Failed");
}

fn model_with(requirements: &str) -> tempfile::TempDir {
    let model = tempfile::tempdir().unwrap();
    std::fs::write(
        model.path().join("serving.yaml"),
        "name: needy\nmodel-type: python:3.11\ncontract:\n  run:\n    inputs:\n      x: {type: string, shape: scalar}\n    outputs:\n      y: {type: string, shape: scalar}\n",
    )
    .unwrap();
    std::fs::write(model.path().join("requirements.txt"), requirements).unwrap();
    model
}

#[test]
fn source_only_packages_wrong_hashes_and_a_base_without_python_fail_clearly() {
    let home = tempfile::tempdir().unwrap();
    // On scratch, named as the base: the files only, and a note that nothing was installed.
    let out = run_ok(
        mlambda(home.path())
            .args(["upload", "--base", "scratch"])
            .arg(examples("iris")),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("requirements.txt is not installed: the base is scratch"),
        "{stderr}"
    );
    // A base with no Python that mlambda knows of: said before anything is fetched.
    let plain = tempfile::tempdir().unwrap();
    run_ok(
        mlambda(home.path())
            .args(["build", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", plain.path().display()))
            .arg(example_dir()),
    );
    let error = run_fail(
        mlambda(home.path())
            .args(["upload", "--base"])
            .arg(format!("oci:{}:latest", plain.path().display()))
            .arg(examples("iris")),
    );
    assert!(
        error.contains("has no Python") && error.contains("requirements.txt"),
        "{error}"
    );
    if !have_uv() {
        return;
    }
    run_ok(mlambda(home.path()).args(["base", "build", "python-3.11"]));
    // Loose requirements and no uv: how to pin them or install it.
    let error = run_fail(
        mlambda(home.path())
            .arg("upload")
            .arg(examples("iris"))
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env_remove("MLAMBDA_UV"),
    );
    assert!(
        error.contains("uv is not installed") && error.contains("--generate-hashes"),
        "{error}"
    );
    // docopt 0.6.2 was only ever published as a source distribution.
    let loose = model_with("docopt==0.6.2\n");
    let error = run_fail(mlambda(home.path()).arg("upload").arg(loose.path()));
    assert!(error.contains("docopt"), "{error}");
    let pinned = model_with(
        "docopt==0.6.2 --hash=sha256:49b3a825280bd66b3aa83585ef59c4a8c82f2c8a522dbe754a8bc8d08c85c491\n",
    );
    let error = run_fail(mlambda(home.path()).arg("upload").arg(pinned.path()));
    assert!(
        error.contains("docopt==0.6.2 has no wheel for cp311")
            && error.contains("source distribution"),
        "{error}"
    );
    // A hash no file of that version has.
    let wrong = model_with(&format!("six==1.16.0 --hash=sha256:{}\n", "0".repeat(64)));
    let error = run_fail(mlambda(home.path()).arg("upload").arg(wrong.path()));
    assert!(
        error.contains("six==1.16.0") && error.contains("sha256") && error.contains("not allowed"),
        "{error}"
    );
    let versions = json_of(&run_ok(
        mlambda(home.path()).args(["versions", "needy", "--json"]),
    ));
    assert!(
        versions
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["status"] == "Failed"),
        "{versions}"
    );
}

#[test]
fn two_concurrent_uploads_share_the_wheel_cache_safely() {
    if !have_uv() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    run_ok(mlambda(home.path()).args(["base", "build", "python-3.11"]));
    let first = model_with("six==1.16.0\nnumpy<2.3\n");
    let second = tempfile::tempdir().unwrap();
    copy_tree(first.path(), second.path());
    let spawn = |dir: &Path| {
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(dir)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let children = vec![spawn(first.path()), spawn(second.path())];
    let mut versions = versions_of_uploads(children);
    versions.sort();
    assert_eq!(versions, [1, 2]);
    // Every cached wheel is whole: its bytes hash to the name of its folder.
    let cache = home.path().join("wheels/sha256");
    let mut checked = 0;
    for folder in std::fs::read_dir(&cache).unwrap().filter_map(Result::ok) {
        for wheel in std::fs::read_dir(folder.path())
            .unwrap()
            .filter_map(Result::ok)
        {
            let digest = mlambda::oci::digest::sha256_of(&std::fs::read(wheel.path()).unwrap());
            assert_eq!(
                digest.trim_start_matches("sha256:"),
                folder.file_name().to_string_lossy()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "six and numpy, once each");
    assert!(
        !cache
            .parent()
            .unwrap()
            .join("tmp")
            .read_dir()
            .unwrap()
            .any(|_| true)
    );
    let layers = |v: &str| {
        layers_made_by(&home.path().join("registry/needy"), v)
            .into_iter()
            .map(|(d, _)| d)
            .collect::<Vec<_>>()
    };
    assert_eq!(layers("1"), layers("2"));
}

/// A wheel file as a build backend writes one: the files, METADATA, WHEEL and a RECORD with
/// every hash. `name` is `{project}-{version}-{tags}.whl`.
fn write_wheel(dir: &Path, name: &str, wheel_tags: &str, files: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut parts = name.split('-');
    let (project, version) = (parts.next().unwrap(), parts.next().unwrap());
    let dist_info = format!("{project}-{version}.dist-info");
    let record_hash = |bytes: &[u8]| {
        use base64::Engine;
        let digest = mlambda::oci::digest::sha256_of(bytes);
        let raw = hex::decode(digest.trim_start_matches("sha256:")).unwrap();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    };
    let mut all: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| (p.to_string(), b.clone()))
        .collect();
    all.push((
        format!("{dist_info}/METADATA"),
        format!("Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n").into_bytes(),
    ));
    all.push((
        format!("{dist_info}/WHEEL"),
        format!("Wheel-Version: 1.0\nGenerator: mlambda-tests\n{wheel_tags}").into_bytes(),
    ));
    let mut record = String::new();
    for (path, bytes) in &all {
        record.push_str(&format!(
            "{path},sha256={},{}\n",
            record_hash(bytes),
            bytes.len()
        ));
    }
    record.push_str(&format!("{dist_info}/RECORD,,\n"));
    all.push((format!("{dist_info}/RECORD"), record.into_bytes()));
    let path = dir.join(name);
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    for (file, bytes) in &all {
        zip.start_file(file.as_str(), zip::write::SimpleFileOptions::default())
            .unwrap();
        std::io::Write::write_all(&mut zip, bytes).unwrap();
    }
    zip.finish().unwrap();
    path
}

/// A lock (PEP 751) naming local wheels by path and hash.
fn pylock_of(wheels: &[(&str, &str, &Path)]) -> String {
    let mut text = "lock-version = \"1.0\"\ncreated-by = \"hand\"\n".to_string();
    for (project, version, path) in wheels {
        let sha256 = mlambda::oci::digest::sha256_of(&std::fs::read(path).unwrap());
        text.push_str(&format!(
            "\n[[packages]]\nname = \"{project}\"\nversion = \"{version}\"\nwheels = [{{ path = \"{}\", hashes = {{ sha256 = \"{}\" }} }}]\n",
            path.display(),
            sha256.trim_start_matches("sha256:")
        ));
    }
    text
}

/// A wheel with an extension module that needs a library no image has, built here with gcc.
fn wheel_needing_a_missing_library(dir: &Path) -> Option<(PathBuf, String)> {
    let gcc = tool("gcc")?;
    std::fs::write(dir.join("absent.c"), "int absent(void) { return 1; }\n").unwrap();
    run_ok(Command::new(&gcc).current_dir(dir).args([
        "-shared",
        "-fPIC",
        "-Wl,-soname,libabsent.so.7",
        "-o",
        "libabsent.so.7",
        "absent.c",
    ]));
    std::fs::write(
        dir.join("ext.c"),
        "int absent(void);\nint PyInit_ext(void) { return absent(); }\n",
    )
    .unwrap();
    run_ok(Command::new(&gcc).current_dir(dir).args([
        "-shared",
        "-fPIC",
        "-o",
        "ext.so",
        "ext.c",
        "-L.",
        "-l:libabsent.so.7",
    ]));
    let ext = std::fs::read(dir.join("ext.so")).unwrap();
    let name = "needy_ext-1.0-cp311-cp311-manylinux_2_17_x86_64.whl";
    let wheel_path = write_wheel(
        dir,
        name,
        "Root-Is-Purelib: false\nTag: cp311-cp311-manylinux_2_17_x86_64\n",
        &[("needy_ext.cpython-311-x86_64-linux-gnu.so", ext)],
    );
    Some((wheel_path, name.to_string()))
}

#[test]
fn a_package_that_needs_a_library_the_runtime_lacks_is_named_with_the_library() {
    let work = tempfile::tempdir().unwrap();
    let Some((wheel, name)) = wheel_needing_a_missing_library(work.path()) else {
        return;
    };
    let model = model_with("");
    std::fs::remove_file(model.path().join("requirements.txt")).unwrap();
    // A given pylock.toml: used as it is, its wheel found by the path it names.
    assert!(wheel.ends_with(&name));
    std::fs::write(
        model.path().join("pylock.toml"),
        pylock_of(&[("needy-ext", "1.0", &wheel)]),
    )
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let error = run_fail(
        mlambda(home.path())
            .args(["upload", "--offline"])
            .arg(model.path()),
    );
    assert!(
        error.contains("needy-ext==1.0 needs libabsent.so.7")
            && error.contains("needy_ext.cpython-311-x86_64-linux-gnu.so")
            && error.contains("runtime python-3.11"),
        "{error}"
    );
}

/// A runtime of the catalogue that declares wheels gets them as layers of its own, after its
/// Debian packages, installed where its Python looks (the lock is used as it is, offline).
#[test]
fn a_runtime_declaring_wheels_is_assembled_with_them() {
    let work = tempfile::tempdir().unwrap();
    let wheel = write_wheel(
        work.path(),
        "greeting-2.0-py3-none-any.whl",
        "Root-Is-Purelib: true\nTag: py3-none-any\n",
        &[("greeting/__init__.py", b"HELLO = 'hello'\n".to_vec())],
    );
    let Some(debs) = downloaded_deb("busybox-static") else {
        return;
    };
    let runtime = mlambda::base::Runtime {
        name: "greeter-py".into(),
        debian: vec!["busybox-static".into()],
        python: Some("3.11".into()),
        glibc: Some("2.36".into()),
        wheels: Some(pylock_of(&[("greeting", "2.0", &wheel)])),
        ..Default::default()
    };
    let home = tempfile::tempdir().unwrap();
    let store = mlambda::store::Store::open(&home.path().join("registry")).unwrap();
    let settings = mlambda::packages::Settings {
        offline: true,
        ..Default::default()
    };
    let wheel_cache = home.path().join("wheels");
    let assembly = mlambda::base::Assembly {
        debs: Some(debs.path()),
        created: 0,
        packages: &settings,
        wheel_cache: &wheel_cache,
    };
    let mut log = Vec::new();
    mlambda::base::build_runtime(&store, &runtime, &assembly, &mut |line| log.push(line)).unwrap();
    let layers = layers_made_by(&home.path().join("registry/base/greeter-py"), "latest");
    let made_by: Vec<&str> = layers.iter().map(|(_, by)| by.as_str()).collect();
    assert_eq!(made_by.len(), 3, "{made_by:?}");
    assert!(
        made_by[0].contains("debian package busybox-static"),
        "{made_by:?}"
    );
    assert!(
        made_by[1].contains("python package greeting 2.0"),
        "{made_by:?}"
    );
    assert!(
        made_by[2].contains("runtime greeter-py files"),
        "{made_by:?}"
    );
    let Some(rootfs) = umoci_unpack(
        &format!(
            "{}:latest",
            home.path().join("registry/base/greeter-py").display()
        ),
        &work.path().join("bundle"),
    ) else {
        return;
    };
    let site = rootfs.join("usr/local/lib/python3.11/dist-packages");
    assert_eq!(
        std::fs::read_to_string(site.join("greeting/__init__.py")).unwrap(),
        "HELLO = 'hello'\n"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("greeting-2.0.dist-info/INSTALLER")).unwrap(),
        "mlambda\n"
    );
}

/// Wheels are chosen for the image's platform, not the host's: `--platform linux/arm64` gets
/// aarch64 wheels on any machine.
#[test]
fn packages_fetch_resolves_for_the_platform_asked() {
    if !have_uv() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let house = tempfile::tempdir().unwrap();
    let model = model_with("markupsafe==3.0.2\n");
    let fetched = json_of(&run_ok(
        mlambda(home.path())
            .args([
                "packages",
                "fetch",
                "--json",
                "--platform",
                "linux/arm64",
                "--into",
            ])
            .arg(house.path())
            .arg(model.path()),
    ));
    assert_eq!(fetched["target"], "cp311 manylinux_2_36_aarch64");
    let wheel = fetched["packages"][0]["wheel"].as_str().unwrap();
    assert!(
        wheel
            .to_lowercase()
            .starts_with("markupsafe-3.0.2-cp311-cp311-")
            && wheel.contains("aarch64"),
        "{wheel}"
    );
    assert!(house.path().join(wheel).is_file());
    let lock = std::fs::read_to_string(house.path().join("pylock.needy.toml")).unwrap();
    assert!(lock.contains(wheel) && lock.contains("made-from"), "{lock}");
}
