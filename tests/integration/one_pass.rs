//! `upload --registry` builds and pushes in one pass: a new big file's layer goes to the
//! registry while it is written (one streamed PATCH, closed with the digest), a stream that
//! breaks is sent again after the build, and a build that fails half-way leaves the registry
//! with neither the tag nor the blob it was sending.

use crate::common;

use common::proxy::{Proxy, put_digest};
use common::registry::{Distribution, RegistryOptions, registry_serve, skopeo_raw_manifest};
use common::*;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const NAME: &str = "one_pass_model";
/// Above the 64 MiB from which a file has a layer of its own.
const WEIGHTS: u64 = 96 << 20;

/// A model with one big file of `WEIGHTS` bytes (a pattern, not zeros: a registry sees real
/// bytes) and a small one.
fn model(root: &Path) -> PathBuf {
    let dir = root.join("model");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("serving.yaml"),
        format!(
            "kind: Model\nname: {NAME}\nmodel-type: \"python:3.11\"\n\
             contract:\n  predict:\n    inputs:\n      x:\n        type: float32\n    outputs:\n      y:\n        type: float32\n"
        ),
    )
    .unwrap();
    fs::write(dir.join("notes.txt"), "small\n").unwrap();
    let weights = File::create(dir.join("weights.bin")).unwrap();
    let piece: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + i / 251) as u8).collect();
    for n in 0..WEIGHTS >> 20 {
        weights.write_all_at(&piece, n << 20).unwrap();
    }
    dir
}

fn upload(home: &Path, registry: &str, dir: &Path) -> Command {
    upload_on(home, registry, dir, "scratch")
}

fn upload_on(home: &Path, registry: &str, dir: &Path, base: &str) -> Command {
    let mut command = mlambda(home);
    command
        .args(["upload", "--json", "--base", base, "--registry", registry])
        .arg(dir);
    command
}

/// A base image with a layer of its own (a folder built on scratch), as `oci:DIR:v1`; and
/// the digests of its layers.
fn base_image(home: &Path, root: &Path) -> (String, Vec<String>) {
    let source = root.join("base-src");
    fs::create_dir_all(source.join("lib")).unwrap();
    fs::write(source.join("lib/runtime.py"), "print('runtime')\n").unwrap();
    fs::write(
        source.join("serving.yaml"),
        "name: runtime\nmodel-type: python:3.11\ncontract:\n  f:\n    inputs:\n      x: {type: string, shape: scalar}\n    outputs:\n      y: {type: string, shape: scalar}\n",
    )
    .unwrap();
    let base = format!("oci:{}:v1", root.join("base").display());
    run_ok(
        mlambda(home)
            .args(["build", "--base", "scratch", "-o", &base])
            .arg(&source),
    );
    let layers = layout_layers(&root.join("base"), "v1");
    assert!(!layers.is_empty());
    (base, layers)
}

/// The digest of the layer that holds `weights.bin` (the biggest) in the local store.
fn weights_layer(home: &Path) -> String {
    let shown = json_of(&run_ok(mlambda(home).args([
        "show",
        &format!("{NAME}:1"),
        "--json",
    ])));
    let log = shown["log"].as_str().unwrap().to_string();
    let line = log
        .lines()
        .find(|l| l.starts_with("layer ") && l.ends_with("model file weights.bin"))
        .unwrap_or_else(|| panic!("no weights layer in the log:\n{log}"));
    line.split_whitespace().nth(1).unwrap().to_string()
}

fn log_of(home: &Path) -> String {
    version_log(home, &format!("{NAME}:1"))
}

#[test]
fn a_new_big_file_goes_to_the_registry_while_its_layer_is_written() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    let work = tempfile::tempdir().unwrap();
    let dir = model(work.path());
    let home = work.path().join("home");
    let (base, base_layers) = base_image(&home, work.path());
    let uploaded = json_of(&run_ok(&mut upload_on(&home, &proxy.url("t"), &dir, &base)));
    assert_eq!(uploaded["status"], "Finished");
    assert_eq!(uploaded["pushed_digest"], uploaded["digest"]);
    let weights = weights_layer(&home);
    let log = proxy.take_log();

    // The base's layers went up while the weights were still being written: their uploads
    // closed before the weights' stream did.
    let stream_done = log.iter().position(|l| l.streamed).unwrap();
    for layer in &base_layers {
        let sent = log
            .iter()
            .position(|l| put_digest(l).as_deref() == Some(layer.as_str()) && l.status == 201);
        assert!(sent.is_some_and(|at| at < stream_done), "{layer}: {log:#?}");
    }

    // One streamed PATCH (no length: sent as written), then the PUT that names its digest.
    let streamed: Vec<_> = log.iter().filter(|l| l.streamed).collect();
    assert_eq!(streamed.len(), 1, "{log:#?}");
    assert_eq!(streamed[0].method, "PATCH");
    assert_eq!(streamed[0].status, 202);
    let closing: Vec<_> = log
        .iter()
        .filter(|l| put_digest(l).as_deref() == Some(weights.as_str()))
        .collect();
    assert_eq!(
        closing.len(),
        1,
        "the weights' blob is closed once: {log:#?}"
    );
    assert_eq!(closing[0].status, 201);
    let patch_at = log.iter().position(|l| l.streamed).unwrap();
    let manifest_at = log
        .iter()
        .position(|l| l.method == "PUT" && l.target.contains("/manifests/"))
        .unwrap();
    assert!(patch_at < manifest_at, "{log:#?}");
    // Every blob counts as uploaded by this push, the streamed one and the base's included.
    assert_eq!(
        uploaded["blobs"]["uploaded"],
        4 + base_layers.len(),
        "{uploaded}"
    );
    assert!(
        log_of(&home).contains("1 layer was sent while it was written"),
        "{}",
        log_of(&home)
    );

    // What the registry holds is the image, digest for digest: skopeo copies it.
    if let Some(skopeo) = tool("skopeo") {
        let direct = format!("{}/t/{NAME}:1", registry.authority());
        let raw = skopeo_raw_manifest(&skopeo, &direct, &["--tls-verify=false"]);
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        let layers: Vec<&str> = manifest["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap())
            .collect();
        assert!(layers.contains(&weights.as_str()));
        skopeo_copies(&skopeo, &direct);
    }
    // The streamed blob's bytes are the layer's, as the registry serves them.
    let mut served = reqwest::blocking::get(format!(
        "http://{}/v2/t/{NAME}/blobs/{weights}",
        registry.authority()
    ))
    .unwrap();
    assert_eq!(served.status(), 200);
    let mut hasher = sha2::Sha256::default();
    let size = std::io::copy(&mut served, &mut HashWriter(&mut hasher)).unwrap();
    use sha2::Digest;
    assert_eq!(
        format!("sha256:{}", hex::encode(hasher.finalize())),
        weights
    );
    assert!(size > WEIGHTS);
}

struct HashWriter<'a>(&'a mut sha2::Sha256);
impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_stream_cut_half_way_is_sent_again_after_the_build() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    proxy.set(|s| s.cut_uploads = 1);
    let work = tempfile::tempdir().unwrap();
    let dir = model(work.path());
    let home = work.path().join("home");
    let uploaded = json_of(&run_ok(&mut upload(&home, &proxy.url("t"), &dir)));
    assert_eq!(uploaded["status"], "Finished");
    assert_eq!(uploaded["pushed_digest"], uploaded["digest"]);
    let weights = weights_layer(&home);
    let log = proxy.take_log();
    let cut = log.iter().position(|l| l.streamed && l.status == 0);
    assert!(cut.is_some(), "the stream was cut: {log:#?}");
    // The push after the build sent the weights whole, with their length.
    let sent_after = log.iter().skip(cut.unwrap()).find(|l| {
        put_digest(l).as_deref() == Some(weights.as_str()) && l.status == 201 && !l.streamed
    });
    assert!(sent_after.is_some(), "{log:#?}");
    let text = log_of(&home);
    assert!(
        text.contains("0 layers were sent while they were written"),
        "{text}"
    );
    assert!(text.contains("sent after the build instead"), "{text}");
    if let Some(skopeo) = tool("skopeo") {
        let direct = format!("{}/t/{NAME}:1", registry.authority());
        let raw = skopeo_raw_manifest(&skopeo, &direct, &["--tls-verify=false"]);
        assert!(String::from_utf8_lossy(&raw).contains(&weights));
        skopeo_copies(&skopeo, &direct);
    }
}

/// skopeo copies `reference` from the registry into a layout, checking every digest.
fn skopeo_copies(skopeo: &Path, reference: &str) {
    let out = tempfile::tempdir().unwrap();
    run_ok(
        Command::new(skopeo)
            .args(["copy", "--src-tls-verify=false"])
            .arg(format!("docker://{reference}"))
            .arg(format!("oci:{}:pulled", out.path().display())),
    );
}

/// Every file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

/// Against mlambda's own registry, whose store the test can read whole. (CNCF distribution
/// refuses to delete a session whose PATCH broke off — its state no longer matches — and
/// purges it later itself; the tag and the blob are absent there too.)
#[test]
fn a_build_that_fails_half_way_leaves_no_tag_no_blob_and_no_session_on_the_registry() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("served");
    let server = registry_serve(&root, &[]);
    let proxy = Proxy::start(server.port);
    let dir = model(work.path());
    let home = work.path().join("home");
    let mut running = upload(&home, &proxy.url("t"), &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        writing_a_blob(&home.join("registry"), 8 << 20, &mut running),
        "the upload ended before the test saw it write"
    );
    // Rewritten in place while it is read: the build fails (see read_input.rs).
    tear_in_place(&dir.join("weights.bin"), WEIGHTS, 4 << 20);
    let output = running.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the upload must fail: {stderr}");
    assert!(
        stderr.contains("changed while it was being read"),
        "{stderr}"
    );

    // The registry's store: no blob, no repository (so no tag), no session left open.
    let blobs = files_under(&root.join("_blobs"));
    assert!(blobs.is_empty(), "blobs on the registry: {blobs:?}");
    assert!(!root.join("t").exists(), "{:?}", files_under(&root));
    let sessions = files_under(&root.join("_uploads"));
    assert!(sessions.is_empty(), "sessions left open: {sessions:?}");
    let status = reqwest::blocking::get(server.url(&format!("/v2/t/{NAME}/manifests/1")))
        .unwrap()
        .status();
    assert_eq!(status, 404);
    // It had begun: a streamed PATCH, then its session deleted.
    let log = proxy.take_log();
    assert!(log.iter().any(|l| l.streamed), "{log:#?}");
    assert!(
        log.iter().any(|l| l.method == "DELETE" && l.status == 204),
        "{log:#?}"
    );
}
