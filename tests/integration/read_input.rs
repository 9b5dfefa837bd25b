//! What an upload reads from outside the model's own description: a weights file that changes
//! while it is read, and a home given as a relative path.

use crate::common;

use common::*;
use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};

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
    assert!(
        writing_a_blob(&home.join("registry"), 8 << 20, &mut upload),
        "the upload ended before the test saw it read"
    );
    tear_in_place(&dir.join("weights.bin"), WEIGHTS, 6 << 20);
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

/// `--home hb` (and `file:DIR`) from the folder the command runs in: the catalogue records
/// absolute paths, which mean the same from anywhere.
#[test]
fn a_relative_home_is_recorded_absolute() {
    let work = tempfile::tempdir().unwrap();
    let run_in = |args: &[&str]| {
        let mut command = Command::new(mlambda_bin());
        command
            .current_dir(work.path())
            .env_remove("MLAMBDA_HOME")
            .env_remove("SOURCE_DATE_EPOCH")
            .args(["--home", "hb"])
            .args(args);
        json_of(&run_ok(&mut command))
    };
    let example = example_dir();
    let example = example.to_str().unwrap();
    let local = run_in(&["upload", "--json", "--base", "scratch", example]);
    let to_store = run_in(&[
        "upload",
        "--json",
        "--base",
        "scratch",
        "--registry",
        "file:store",
        example,
    ]);
    let home = work.path().join("hb");
    let store = work.path().join("store");
    for (uploaded, root) in [(&local, home.join("registry")), (&to_store, store)] {
        let image = uploaded["image"].as_str().unwrap();
        let expected = format!("oci:{}/example_tokenizer_model:", root.display());
        assert!(
            image.starts_with(&expected),
            "{image} is not under {expected}"
        );
        let reference = format!("example_tokenizer_model:{}", uploaded["version"]);
        let shown = run_in(&["show", &reference, "--json"]);
        assert_eq!(shown["image"], uploaded["image"], "{shown}");
    }
}
