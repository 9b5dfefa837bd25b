//! What an upload reads from outside the model's own description: a weights file that changes
//! while it is read.

use crate::common;

use common::*;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const NAME: &str = "torn_weights_model";
/// Big enough that the read lasts long after the test sees it begin.
const WEIGHTS: u64 = 256 << 20;

fn model_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("model");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("serving.yaml"),
        format!(
            "kind: Model\nname: {NAME}\nmodel-type: \"python:3.11\"\npayload:\n  - weights.bin\n\
             contract:\n  predict:\n    inputs:\n      x:\n        type: float32\n    outputs:\n      y:\n        type: float32\n"
        ),
    )
    .unwrap();
    File::create(dir.join("weights.bin"))
        .unwrap()
        .set_len(WEIGHTS)
        .unwrap();
    dir
}

/// Waits until a temporary blob of the store holds more than `bytes`: a layer's file is being
/// read. `None` when the upload ended first.
fn wait_for_read(store: &Path, bytes: u64, upload: &mut std::process::Child) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let written = fs::read_dir(store.join("_tmp"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        if written > bytes {
            return Some(());
        }
        if upload.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    panic!("the upload did not start reading the weights within 120 s");
}

/// `dd conv=notrunc` into the weights while the upload reads them: the version fails and says
/// why, instead of a Finished image whose layer is neither file.
#[test]
fn weights_rewritten_during_the_read_fail_the_version() {
    let work = tempfile::tempdir().unwrap();
    let dir = model_dir(work.path());
    let home = work.path().join("home");
    let mut upload = mlambda(&home)
        .args(["upload", "--json", "--base", "scratch"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let reading = wait_for_read(&home.join("registry"), 8 << 20, &mut upload);
    assert!(
        reading.is_some(),
        "the upload ended before the test saw it read"
    );
    let weights = OpenOptions::new()
        .write(true)
        .open(dir.join("weights.bin"))
        .unwrap();
    weights.write_all_at(b"torn", 0).unwrap();
    weights.write_all_at(b"torn", WEIGHTS - (6 << 20)).unwrap();
    let output = upload.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "the upload must fail\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let said = "weights.bin: changed while it was being read";
    assert!(
        stderr.contains(said) && stderr.contains("again once it is completely written"),
        "{stderr}"
    );
    let shown = json_of(&run_ok(mlambda(&home).args([
        "show",
        &format!("{NAME}:1"),
        "--json",
    ])));
    assert_eq!(shown["status"], "Failed", "{shown}");
    assert!(
        shown["error"].as_str().unwrap_or_default().contains(said),
        "{shown}"
    );
}
