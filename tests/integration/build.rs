//! `mlambda build`: reproducible images written to layouts and archives, on any base.

use crate::common;

use common::*;
use std::path::Path;
use std::process::Command;

fn build_digest(home: &Path, folder: &Path, output: &str, epoch: &str) -> String {
    let out = run_ok(
        mlambda(home)
            .env("SOURCE_DATE_EPOCH", epoch)
            .args(["build", "--json", "--base", "scratch", "--output", output])
            .arg(folder),
    );
    json_of(&out)["digest"].as_str().unwrap().to_string()
}

#[test]
fn same_folder_and_epoch_give_the_same_digest_anywhere() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = |n: &str| format!("oci:{}", out.path().join(n).display());
    let first = build_digest(home.path(), &example_dir(), &layout("a"), "1700000000");
    let again = build_digest(home.path(), &example_dir(), &layout("b"), "1700000000");
    assert_eq!(first, again);

    // Another checkout path, with other mtimes and inode numbers.
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("some/other/checkout");
    copy_tree(&example_dir(), &copy);
    assert_eq!(
        build_digest(home.path(), &copy, &layout("c"), "1700000000"),
        first
    );

    // Another epoch changes the timestamps, so the digest.
    assert_ne!(
        build_digest(home.path(), &example_dir(), &layout("d"), "1700000001"),
        first
    );
}

#[test]
fn an_unprivileged_user_builds_the_same_image() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let reference = build_digest(
        home.path(),
        &example_dir(),
        &format!("oci:{}", out.path().join("root").display()),
        "0",
    );

    let is_root = effective_uid() == 0;
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("model");
    copy_tree(&example_dir(), &folder);
    let user_home = work.path().join("home");
    std::fs::create_dir(&user_home).unwrap();
    let mut command;
    if is_root {
        // Everything the unprivileged user touches must be theirs; nothing else is writable.
        chown_tree(work.path(), 65534);
        let setpriv = tool("setpriv").expect("setpriv (util-linux) is part of Debian");
        command = Command::new(setpriv);
        command
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(mlambda_bin());
    } else {
        command = Command::new(mlambda_bin());
    }
    let output_dir = work.path().join("out");
    let out = run_ok(
        command
            .env("MLAMBDA_HOME", &user_home)
            .env("SOURCE_DATE_EPOCH", "0")
            .args(["build", "--json", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", output_dir.display()))
            .arg(&folder),
    );
    assert_eq!(json_of(&out)["digest"], reference.as_str());
    if is_root {
        use std::os::unix::fs::MetadataExt;
        assert_eq!(
            std::fs::metadata(output_dir.join("index.json"))
                .unwrap()
                .uid(),
            65534
        );
    }
}

fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process just created is its effective uid.
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::fs::metadata(probe.path()).unwrap().uid()
}

fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn archives_load_in_skopeo_with_the_same_image() {
    let Some(skopeo) = tool("skopeo") else { return };
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let oci_archive = out.path().join("model.oci.tar");
    let docker_archive = out.path().join("model.docker.tar");
    let digest = build_digest(
        home.path(),
        &example_dir(),
        &format!("oci-archive:{}", oci_archive.display()),
        "0",
    );
    build_digest(
        home.path(),
        &example_dir(),
        &format!("docker-archive:{}", docker_archive.display()),
        "0",
    );

    let inspect = |reference: String| -> serde_json::Value {
        serde_json::from_slice(&run_ok(Command::new(&skopeo).args(["inspect", &reference])).stdout)
            .unwrap()
    };
    assert_eq!(
        inspect(format!("oci-archive:{}:latest", oci_archive.display()))["Digest"],
        digest.as_str()
    );
    let docker = inspect(format!("docker-archive:{}", docker_archive.display()));
    assert_eq!(docker["Labels"]["MODEL_NAME"], "example_tokenizer_model");
    assert_eq!(docker["Layers"].as_array().unwrap().len(), 2);

    // Round trip: skopeo copies the docker archive into a layout umoci unpacks.
    let layout = out.path().join("copied");
    run_ok(Command::new(&skopeo).args([
        "copy",
        &format!("docker-archive:{}", docker_archive.display()),
        &format!("oci:{}:x", layout.display()),
    ]));
    if let Some(rootfs) = umoci_unpack(
        &format!("{}:x", layout.display()),
        &out.path().join("bundle"),
    ) {
        assert!(rootfs.join("model/files/src/func_main.py").is_file());
        assert!(rootfs.join("model/contract.protobin").is_file());
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mlambda"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn a_base_layout_is_reused_byte_for_byte_and_its_config_inherited() {
    let Some(umoci) = tool("umoci") else { return };
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A base made by a third-party tool: umoci creates the image and sets its runtime config.
    let base = work.path().join("base");
    let base_ref = format!("{}:v1", base.display());
    run_ok(Command::new(&umoci).args(["init", "--layout"]).arg(&base));
    run_ok(Command::new(&umoci).args(["new", "--image", &base_ref]));
    let rootfs_dir = work.path().join("bundle");
    run_ok(
        Command::new(&umoci)
            .args(["unpack", "--rootless", "--image", &base_ref])
            .arg(&rootfs_dir),
    );
    std::fs::create_dir_all(rootfs_dir.join("rootfs/bin")).unwrap();
    std::fs::write(
        rootfs_dir.join("rootfs/bin/serve"),
        "#!/bin/sh\necho serving\n",
    )
    .unwrap();
    run_ok(
        Command::new(&umoci)
            .args(["repack", "--image", &base_ref])
            .arg(&rootfs_dir),
    );
    run_ok(Command::new(&umoci).args([
        "config",
        "--image",
        &base_ref,
        "--config.env",
        "RUNTIME=python",
        "--config.entrypoint",
        "/bin/serve",
        "--config.workingdir",
        "/model",
    ]));
    let base_manifest = read_manifest(&base, "v1");

    let model = work.path().join("model-layout");
    let out = run_ok(
        mlambda(home.path())
            .args([
                "build",
                "--json",
                "--base",
                &format!("oci:{base_ref}"),
                "--output",
            ])
            .arg(format!("oci:{}", model.display()))
            .arg(example_dir()),
    );
    assert_eq!(json_of(&out)["base"], format!("oci:{base_ref}"));
    let model_manifest = read_manifest(&model, "latest");
    let base_layers = base_manifest["layers"].as_array().unwrap();
    let model_layers = model_manifest["layers"].as_array().unwrap();
    assert_eq!(model_layers.len(), base_layers.len() + 2);
    for (ours, theirs) in model_layers.iter().zip(base_layers) {
        assert_eq!(ours["digest"], theirs["digest"]);
        assert_eq!(ours["size"], theirs["size"]);
    }
    let config = read_blob_json(&model, model_manifest["config"]["digest"].as_str().unwrap());
    assert_eq!(
        config["config"]["Entrypoint"],
        serde_json::json!(["/bin/serve"])
    );
    assert_eq!(config["config"]["WorkingDir"], "/model");
    assert!(
        config["config"]["Env"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("RUNTIME=python"))
    );
    assert_eq!(
        config["config"]["Labels"]["MODEL_NAME"],
        "example_tokenizer_model"
    );
    assert_eq!(
        model_manifest["annotations"]["org.opencontainers.image.base.digest"],
        base_manifest_digest(&base, "v1")
    );

    // The model image unpacks with the base's file and the model's together.
    if let Some(rootfs) = umoci_unpack(
        &format!("{}:latest", model.display()),
        &work.path().join("unpacked"),
    ) {
        assert!(rootfs.join("bin/serve").is_file());
        assert!(rootfs.join("model/files/src/func_main.py").is_file());
    }
}

fn index_entry(layout: &Path, tag: &str) -> serde_json::Value {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap()
}

fn base_manifest_digest(layout: &Path, tag: &str) -> String {
    index_entry(layout, tag)["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

fn read_manifest(layout: &Path, tag: &str) -> serde_json::Value {
    read_blob_json(layout, &base_manifest_digest(layout, tag))
}

fn read_blob_json(layout: &Path, digest: &str) -> serde_json::Value {
    let path = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn zstd_on_request_and_the_diff_ids_match_the_uncompressed_layers() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("zstd");
    run_ok(
        mlambda(home.path())
            .args([
                "build",
                "--base",
                "scratch",
                "--compression",
                "zstd",
                "--output",
            ])
            .arg(format!("oci:{}", layout.display()))
            .arg(example_dir()),
    );
    let manifest = read_manifest(&layout, "latest");
    let config = read_blob_json(&layout, manifest["config"]["digest"].as_str().unwrap());
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 2);
    let mut paths = Vec::new();
    for (layer, diff_id) in layers
        .iter()
        .zip(config["rootfs"]["diff_ids"].as_array().unwrap())
    {
        assert_eq!(
            layer["mediaType"],
            "application/vnd.oci.image.layer.v1.tar+zstd"
        );
        let blob = std::fs::read(
            layout.join("blobs/sha256").join(
                layer["digest"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("sha256:"),
            ),
        )
        .unwrap();
        let tar_bytes = zstd::decode_all(blob.as_slice()).unwrap();
        assert_eq!(
            mlambda::oci::digest::sha256_of(&tar_bytes),
            diff_id.as_str().unwrap()
        );
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        for entry in archive.entries().unwrap() {
            paths.push(entry.unwrap().path().unwrap().display().to_string());
        }
    }
    assert_eq!(
        paths,
        [
            "model/",
            "model/files/",
            "model/files/requirements.txt",
            "model/files/src/",
            "model/files/src/func_main.py",
            "model/contract.protobin"
        ]
    );
}

#[test]
fn several_big_files_become_layers_in_path_order_whichever_is_written_first() {
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("sharded");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(
        folder.join("serving.yaml"),
        "kind: Model\nname: sharded\nmodel-type: python:3.11\ncontract:\n  f:\n    inputs: {x: {type: float32}}\n    outputs: {y: {type: float32}}\n",
    )
    .unwrap();
    // Five shards of 64 MiB and more (sparse: cheap to make), sizes descending so that the
    // first in path order is the slowest to write.
    let shards = [
        "shard-a.bin",
        "shard-b.bin",
        "shard-c.bin",
        "shard-d.bin",
        "shard-e.bin",
    ];
    for (i, shard) in shards.iter().enumerate() {
        std::fs::File::create(folder.join(shard))
            .unwrap()
            .set_len((96 - 4 * i as u64) << 20)
            .unwrap();
    }
    let first = work.path().join("one");
    let second = work.path().join("two");
    let digest = build_digest(
        &work.path().join("home1"),
        &folder,
        &format!("oci:{}:x", first.display()),
        "0",
    );
    for _ in 0..2 {
        let again = build_digest(
            &work.path().join("home2"),
            &folder,
            &format!("oci:{}:x", second.display()),
            "0",
        );
        assert_eq!(digest, again);
    }
    // After the small-files and before the contract layer: one uncompressed layer per shard,
    // in path order, each a tar holding just that file.
    let manifest = read_manifest(&first, "x");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1 + shards.len() + 1);
    for (layer, shard) in layers[1..=shards.len()].iter().zip(shards) {
        assert_eq!(layer["mediaType"], "application/vnd.oci.image.layer.v1.tar");
        let path = first.join("blobs/sha256").join(
            layer["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:"),
        );
        let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, [format!("model/files/{shard}")]);
    }
}
