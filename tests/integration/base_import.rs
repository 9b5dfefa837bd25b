//! `mlambda base import` from every local source kind, and the errors for bad sources.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A base image made by third-party tools only: umoci creates it, skopeo converts it.
struct Sources {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    oci_archive: PathBuf,
    docker_archive: PathBuf,
}

fn sources() -> Option<Sources> {
    let umoci = tool("umoci")?;
    let skopeo = tool("skopeo")?;
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let image = format!("{}:v1", layout.display());
    run_ok(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    run_ok(Command::new(&umoci).args(["new", "--image", &image]));
    let bundle = dir.path().join("bundle");
    run_ok(
        Command::new(&umoci)
            .args(["unpack", "--rootless", "--image", &image])
            .arg(&bundle),
    );
    std::fs::create_dir_all(bundle.join("rootfs/bin")).unwrap();
    std::fs::write(
        bundle.join("rootfs/bin/run-model"),
        "#!/bin/sh\nexec \"$@\"\n",
    )
    .unwrap();
    run_ok(
        Command::new(&umoci)
            .args(["repack", "--image", &image])
            .arg(&bundle),
    );
    run_ok(Command::new(&umoci).args([
        "config",
        "--image",
        &image,
        "--config.env",
        "RUNTIME=imported",
    ]));
    let oci_archive = dir.path().join("base.oci.tar");
    let docker_archive = dir.path().join("base.docker.tar");
    run_ok(Command::new(&skopeo).args([
        "copy",
        &format!("oci:{image}"),
        &format!("oci-archive:{}:v1", oci_archive.display()),
    ]));
    run_ok(Command::new(&skopeo).args([
        "copy",
        &format!("oci:{image}"),
        &format!(
            "docker-archive:{}:runtime/busybox:v1",
            docker_archive.display()
        ),
    ]));
    Some(Sources {
        _dir: dir,
        layout,
        oci_archive,
        docker_archive,
    })
}

fn skopeo_layers(reference: &str) -> Vec<String> {
    let skopeo = tool("skopeo").unwrap();
    let out = run_ok(Command::new(skopeo).args(["inspect", reference]));
    let value: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    value["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

fn model_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("serving.yaml"),
        "name: shell-model\nmodel-type: shell:1\ncontract:\n  run:\n    inputs:\n      x: {type: string}\n    outputs:\n      y: {type: string}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("run.sh"), "echo hi\n").unwrap();
    dir
}

/// Imports `source` as the busybox runtime, uploads a shell model on it, and returns (the
/// imported base's layers, the model image's layers).
fn import_and_upload(source: &str) -> (Vec<String>, Vec<String>, serde_json::Value) {
    let home = tempfile::tempdir().unwrap();
    let imported = json_of(&run_ok(
        mlambda(home.path()).args(["base", "import", "busybox", source, "--json"]),
    ));
    let base_layers = skopeo_layers(imported["image"].as_str().unwrap());
    let model = model_folder();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(model.path()),
    ));
    assert_eq!(uploaded["base"], "runtime busybox");
    let model_layers = skopeo_layers(uploaded["image"].as_str().unwrap());
    let config = config_of(&home.path().join("registry/shell-model"));
    (base_layers, model_layers, config)
}

fn config_of(layout: &Path) -> serde_json::Value {
    let skopeo = tool("skopeo").unwrap();
    let out = run_ok(Command::new(skopeo).args([
        "inspect",
        "--config",
        &format!("oci:{}:1", layout.display()),
    ]));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn every_local_source_kind_gives_the_model_image_the_exact_base_layers() {
    let Some(sources) = sources() else { return };
    let source_layers = skopeo_layers(&format!("oci:{}:v1", sources.layout.display()));
    let docker_layers = skopeo_layers(&format!(
        "docker-archive:{}",
        sources.docker_archive.display()
    ));
    let cases = [
        (
            format!("oci:{}:v1", sources.layout.display()),
            &source_layers,
        ),
        (
            format!("{}:v1", sources.oci_archive.display()),
            &source_layers,
        ),
        (sources.docker_archive.display().to_string(), &docker_layers),
    ];
    for (source, expected) in cases {
        let (base_layers, model_layers, config) = import_and_upload(&source);
        assert_eq!(
            &base_layers, expected,
            "{source}: the base keeps the source's layers"
        );
        assert_eq!(
            model_layers[..base_layers.len()],
            base_layers[..],
            "{source}"
        );
        assert_eq!(model_layers.len(), base_layers.len() + 2, "{source}");
        let env = config["config"]["Env"].as_array().unwrap();
        assert!(
            env.contains(&serde_json::json!("RUNTIME=imported")),
            "{source}: {config}"
        );
    }
}

#[test]
fn bad_sources_say_what_is_wrong() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();

    let missing = dir.path().join("missing.tar");
    let stderr = run_fail(
        mlambda(home.path())
            .args(["base", "import", "busybox"])
            .arg(&missing),
    );
    assert!(
        stderr.contains("missing.tar") && stderr.contains("No such file"),
        "{stderr}"
    );

    let garbage = dir.path().join("garbage.tar");
    std::fs::write(&garbage, vec![0x5a; 3000]).unwrap();
    let stderr = run_fail(
        mlambda(home.path())
            .args(["base", "import", "busybox"])
            .arg(&garbage),
    );
    assert!(
        stderr.contains("garbage.tar") && stderr.contains("not a tar archive"),
        "{stderr}"
    );

    let plain_tar = dir.path().join("plain.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&plain_tar).unwrap());
    let mut header = tar::Header::new_gnu();
    header.set_size(2);
    header.set_cksum();
    builder
        .append_data(&mut header, "hello.txt", &b"hi"[..])
        .unwrap();
    builder.finish().unwrap();
    let stderr = run_fail(
        mlambda(home.path())
            .args(["base", "import", "busybox"])
            .arg(&plain_tar),
    );
    assert!(
        stderr.contains("neither an OCI archive") && stderr.contains("docker-archive"),
        "{stderr}"
    );

    let fake_debs = dir.path().join("debs");
    std::fs::create_dir(&fake_debs).unwrap();
    std::fs::write(
        fake_debs.join("busybox-static_1.0_amd64.deb"),
        b"not a package",
    )
    .unwrap();
    let stderr = run_fail(
        mlambda(home.path())
            .args(["base", "build", "busybox", "--debs"])
            .arg(&fake_debs),
    );
    assert!(
        stderr.contains("busybox-static_1.0_amd64.deb: not a Debian package"),
        "{stderr}"
    );

    // pytorch is import-only (spark is assembled since it has Debian's JRE and pyspark).
    let stderr = run_fail(mlambda(home.path()).args(["base", "build", "pytorch"]));
    assert!(stderr.contains("mlambda base import pytorch"), "{stderr}");
}

#[test]
fn an_index_without_this_platform_is_refused() {
    let Some(sources) = sources() else { return };
    // Re-point the layout's index at an image index that lists only another platform.
    let layout = &sources.layout;
    let index_path = layout.join("index.json");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let mut manifest = index["manifests"][0].clone();
    manifest["annotations"] = serde_json::json!({});
    manifest["platform"] = serde_json::json!({"architecture": "s390x", "os": "linux"});
    let nested = serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [manifest]});
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = mlambda::oci::digest::sha256_of(&bytes);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
        &bytes,
    )
    .unwrap();
    let top = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(&index_path, serde_json::to_vec(&top).unwrap()).unwrap();
    let home = tempfile::tempdir().unwrap();
    let stderr = run_fail(mlambda(home.path()).args([
        "base",
        "import",
        "busybox",
        &format!("oci:{}:multi", layout.display()),
    ]));
    assert!(
        stderr.contains("no linux/amd64 image") && stderr.contains("linux/s390x"),
        "{stderr}"
    );
}
