//! What must hold when things go wrong or happen at once: concurrent uploads, a killed
//! upload, a failing build, big files.

use crate::common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn eight_concurrent_uploads_get_eight_distinct_versions() {
    let home = tempfile::tempdir().unwrap();
    let children: Vec<_> = (0..8)
        .map(|_| {
            mlambda(home.path())
                .args(["upload", "--json", "--base", "scratch"])
                .arg(example_dir())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let versions = versions_of_uploads(children);
    assert_eq!(versions, (1..=8).collect::<Vec<_>>());
    let records = json_of(&run_ok(mlambda(home.path()).args([
        "versions",
        "example_tokenizer_model",
        "--json",
    ])));
    assert!(
        records
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "Finished")
    );
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            home.path()
                .join("registry/example_tokenizer_model/index.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let mut tags: Vec<String> = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["annotations"]["org.opencontainers.image.ref.name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    tags.sort_by_key(|t| t.parse::<u32>().unwrap());
    assert_eq!(tags, (1..=8).map(|v| v.to_string()).collect::<Vec<_>>());
}

#[test]
fn a_killed_upload_is_marked_failed_and_earlier_versions_stay_readable() {
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    copy_tree(&example_dir(), folder.path());
    run_ok(
        mlambda(home.path())
            .args(["upload", "--base", "scratch"])
            .arg(folder.path()),
    );

    // A big payload file keeps the second upload busy long enough to be killed mid-build.
    std::fs::write(
        folder.path().join("serving.yaml"),
        std::fs::read_to_string(example_dir().join("serving.yaml"))
            .unwrap()
            .replace(
                "  - \"requirements.txt\"",
                "  - \"requirements.txt\"\n  - \"weights.bin\"",
            ),
    )
    .unwrap();
    let weights = std::fs::File::create(folder.path().join("weights.bin")).unwrap();
    weights.set_len(4 << 30).unwrap();
    let mut child = mlambda(home.path())
        .args(["upload", "--base", "scratch"])
        .arg(folder.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let records = json_of(&run_ok(mlambda(home.path()).args([
            "versions",
            "example_tokenizer_model",
            "--json",
        ])));
        if records
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["version"] == 2 && r["status"] == "Running")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the second upload never started running"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the upload ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let records = json_of(&run_ok(mlambda(home.path()).args([
        "versions",
        "example_tokenizer_model",
        "--json",
    ])));
    let second = &records[1];
    assert_eq!(second["status"], "Failed", "{records}");
    assert!(
        second["error"]
            .as_str()
            .unwrap()
            .contains("ended before the build finished")
    );
    let index = std::fs::read_to_string(
        home.path()
            .join("registry/example_tokenizer_model/index.json"),
    )
    .unwrap();
    assert!(
        !index.contains("\"2\""),
        "a killed build must not be tagged: {index}"
    );
    if let Some(skopeo) = tool("skopeo") {
        let store = home.path().join("registry/example_tokenizer_model");
        run_ok(
            Command::new(skopeo)
                .arg("inspect")
                .arg(format!("oci:{}:1", store.display())),
        );
    }
    // And the next upload works and takes the next number.
    std::fs::remove_file(folder.path().join("weights.bin")).unwrap();
    std::fs::write(folder.path().join("weights.bin"), b"small now").unwrap();
    let third = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--base", "scratch"])
            .arg(folder.path()),
    ));
    assert_eq!(third["version"], 3);
}

#[test]
fn a_build_that_fails_is_recorded_failed_with_its_error() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("no-such-base");
    let stderr = run_fail(
        mlambda(home.path())
            .args(["upload", "--base", &format!("oci:{}", missing.display())])
            .arg(example_dir()),
    );
    assert!(
        stderr.contains("example_tokenizer_model:1 Failed") && stderr.contains("no-such-base"),
        "{stderr}"
    );
    let show = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "example_tokenizer_model:1",
        "--json",
    ])));
    assert_eq!(show["status"], "Failed");
    assert!(
        show["error"]
            .as_str()
            .unwrap()
            .contains("not an OCI image layout"),
        "{show}"
    );
    assert!(
        !home
            .path()
            .join("registry/example_tokenizer_model/index.json")
            .exists()
    );
}

#[test]
fn big_files_get_their_own_uncompressed_layer() {
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("serving.yaml"),
        "name: big\nmodel-type: python:3.11\ncontract:\n  predict:\n    inputs:\n      x: {type: float, shape: [-1, 4]}\n    outputs:\n      y: {type: float, shape: [-1]}\n",
    )
    .unwrap();
    std::fs::create_dir(folder.path().join("weights")).unwrap();
    let big = std::fs::File::create(folder.path().join("weights/model.bin")).unwrap();
    big.set_len(64 << 20).unwrap();
    std::fs::write(folder.path().join("weights/small.txt"), "small").unwrap();
    std::fs::write(folder.path().join("predict.py"), "print(1)").unwrap();
    let out = tempfile::tempdir().unwrap();
    let layout = out.path().join("layout");
    run_ok(
        mlambda(home.path())
            .args(["build", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", layout.display()))
            .arg(folder.path()),
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let blob = |digest: &str| {
        std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: serde_json::Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let media: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap())
        .collect();
    assert_eq!(
        media,
        [
            "application/vnd.oci.image.layer.v1.tar+gzip",
            "application/vnd.oci.image.layer.v1.tar",
            "application/vnd.oci.image.layer.v1.tar+gzip"
        ]
    );
    // The big layer holds exactly the one file, with a reproducible header.
    let big_layer = blob(manifest["layers"][1]["digest"].as_str().unwrap());
    let mut archive = tar::Archive::new(big_layer.as_slice());
    let entries: Vec<(String, u64, u32, u64)> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let h = e.header();
            (
                e.path().unwrap().display().to_string(),
                h.size().unwrap(),
                h.mode().unwrap(),
                h.mtime().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [(
            "model/files/weights/model.bin".to_string(),
            64 << 20,
            0o644,
            0
        )]
    );
    if let Some(rootfs) = umoci_unpack(
        &format!("{}:latest", layout.display()),
        &out.path().join("bundle"),
    ) {
        assert_eq!(
            std::fs::metadata(rootfs.join("model/files/weights/model.bin"))
                .unwrap()
                .len(),
            64 << 20
        );
        assert_eq!(
            std::fs::read(rootfs.join("model/files/weights/small.txt")).unwrap(),
            b"small"
        );
    }
}

/// Two uploads into a home that has no catalogue yet: both create it at once, and both
/// finish (switching a new catalogue to WAL refused the second with "database is locked",
/// 19 times in 25 before).
#[test]
fn two_first_uploads_at_once_both_create_the_catalogue_and_finish() {
    for _ in 0..8 {
        let home = tempfile::tempdir().unwrap();
        let spawn = || {
            mlambda(home.path())
                .args(["upload", "--json", "--base", "scratch"])
                .arg(example_dir())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        };
        let children = vec![spawn(), spawn()];
        assert_eq!(versions_of_uploads(children), [1, 2]);
    }
}
