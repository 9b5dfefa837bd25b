//! The digest cache of big files (issue 7): an upload with unchanged weights neither reads nor
//! writes them again, and any change to a file (even one that restores size and mtime) or a
//! new copy of it is built again.

use crate::common;

use common::*;
use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

const NAME: &str = "cached_weights_model";
const WEIGHTS: u64 = 65 << 20;

/// A model folder with a sparse 65 MiB weights file and two small files.
fn model_dir(root: &Path) -> PathBuf {
    let dir = root.join("model");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("serving.yaml"),
        format!(
            "kind: Model\nname: {NAME}\nmodel-type: \"python:3.6\"\npayload:\n  - weights.bin\n  - requirements.txt\n  - main.py\n\
             contract:\n  predict:\n    inputs:\n      x:\n        shape: [-1, 1]\n        type: float32\n    outputs:\n      y:\n        shape: [-1, 1]\n        type: float32\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("requirements.txt"), "numpy\n").unwrap();
    fs::write(dir.join("main.py"), "print('hi')\n").unwrap();
    let weights = File::create(dir.join("weights.bin")).unwrap();
    weights.set_len(WEIGHTS).unwrap();
    write_byte(&dir.join("weights.bin"), 1 << 20, 7);
    dir
}

fn write_byte(path: &Path, at: u64, value: u8) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(at)).unwrap();
    file.write_all(&[value]).unwrap();
    file.sync_all().unwrap();
}

/// A file whose ctime is under a second old is not recorded (it could still change within the
/// same clock tick unseen): wait it out before an upload whose record a later one relies on.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

/// Uploads `dir`; returns the version's build log.
fn upload(home: &Path, dir: &Path) -> String {
    let uploaded = json_of(&run_ok(
        mlambda(home)
            .args(["upload", "--json", "--base", "scratch"])
            .arg(dir),
    ));
    let reference = format!("{NAME}:{}", uploaded["version"]);
    let shown = json_of(&run_ok(mlambda(home).args(["show", &reference, "--json"])));
    shown["log"].as_str().unwrap().to_string()
}

/// The layer line of `what` in a build log: (digest, cached).
fn layer(log: &str, what: &str) -> (String, bool) {
    let line = log
        .lines()
        .find(|l| l.starts_with("layer ") && l.contains(what))
        .unwrap_or_else(|| panic!("no layer line for {what} in:\n{log}"));
    let digest = line.split_whitespace().nth(1).unwrap().to_string();
    (digest, line.ends_with("(cached)"))
}

fn pool(home: &Path) -> BTreeSet<String> {
    fs::read_dir(home.join("registry/_blobs/blobs/sha256"))
        .unwrap()
        .map(|e| format!("sha256:{}", e.unwrap().file_name().to_string_lossy()))
        .collect()
}

#[test]
fn unchanged_weights_are_reused_and_any_change_is_seen() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = model_dir(work.path());
    let weights = dir.join("weights.bin");
    settle();

    let first = upload(home.path(), &dir);
    let (d1, cached) = layer(&first, "model file weights.bin");
    assert!(!cached, "{first}");

    // (chmod 000 cannot show that the file is not read: it moves the ctime, a cache miss.
    // The "(cached)" log line is written only on the path that never opens the file.)
    let second = upload(home.path(), &dir);
    assert_eq!(
        layer(&second, "model file weights.bin"),
        (d1.clone(), true),
        "{second}"
    );

    // One byte changed, same size: a new layer.
    write_byte(&weights, 1 << 20, 8);
    settle();
    let third = upload(home.path(), &dir);
    let (d3, cached) = layer(&third, "model file weights.bin");
    assert!(!cached, "{third}");
    assert_ne!(d3, d1);

    // Only the mtime touched back to what it was: the ctime moved, so it is read again (and
    // gives the same layer).
    let mtime = fs::metadata(&weights).unwrap().modified().unwrap();
    File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let fourth = upload(home.path(), &dir);
    assert_eq!(
        layer(&fourth, "model file weights.bin"),
        (d3.clone(), false),
        "{fourth}"
    );

    // The dangerous edit: one byte changed in place, size and mtime restored (touch -d).
    settle();
    let recorded = upload(home.path(), &dir);
    assert_eq!(layer(&recorded, "model file weights.bin").0, d3);
    let reused = upload(home.path(), &dir);
    assert_eq!(layer(&reused, "model file weights.bin"), (d3.clone(), true));
    let mtime = fs::metadata(&weights).unwrap().modified().unwrap();
    write_byte(&weights, 1 << 20, 9);
    File::options()
        .write(true)
        .open(&weights)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let edited = upload(home.path(), &dir);
    let (d5, cached) = layer(&edited, "model file weights.bin");
    assert!(!cached, "{edited}");
    assert_ne!(d5, d3);
    assert_ne!(d5, d1);

    // A copy elsewhere (another path, another inode): read again, same layer.
    settle();
    let copy = work.path().join("copy");
    copy_tree(&dir, &copy);
    let copied = upload(home.path(), &copy);
    assert_eq!(layer(&copied, "model file weights.bin"), (d5, false));
}

#[test]
fn a_changed_small_file_writes_only_the_small_files_layer_config_and_manifest() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = model_dir(work.path());
    settle();
    let first = upload(home.path(), &dir);
    let before = pool(home.path());

    fs::write(dir.join("requirements.txt"), "numpy\nscipy\n").unwrap();
    let second = upload(home.path(), &dir);
    let after = pool(home.path());

    let (weights1, _) = layer(&first, "model file weights.bin");
    assert_eq!(
        layer(&second, "model file weights.bin"),
        (weights1, true),
        "{second}"
    );
    let (small1, _) = layer(&first, "model payload");
    let (small2, _) = layer(&second, "model payload");
    assert_ne!(small1, small2);
    assert_eq!(
        layer(&first, "model contract"),
        layer(&second, "model contract")
    );

    let manifest_line = second.lines().find(|l| l.starts_with("manifest ")).unwrap();
    let words: Vec<&str> = manifest_line.split_whitespace().collect();
    let manifest = words[1].trim_end_matches(',').to_string();
    let config = words[3].to_string();
    let new: BTreeSet<String> = after.difference(&before).cloned().collect();
    assert_eq!(new, BTreeSet::from([small2, config, manifest]));
}
