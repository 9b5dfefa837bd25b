//! Helpers shared by the integration tests: running the real binary in a private home,
//! finding third-party tools, and an independent reader of the contract's wire format.
#![allow(dead_code)]

pub mod http;
pub mod manager;
pub mod mutate;
pub mod postgres;
pub mod proxy;
pub mod registry;
pub mod rootfs;
pub mod store_check;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn mlambda_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mlambda"))
}

/// `mlambda` with its own home, and no SOURCE_DATE_EPOCH leaking in from the caller.
pub fn mlambda(home: &Path) -> Command {
    let mut command = Command::new(mlambda_bin());
    command
        .env("MLAMBDA_HOME", home)
        .env_remove("SOURCE_DATE_EPOCH");
    command
}

pub fn run_ok(command: &mut Command) -> Output {
    let output = command.output().expect("the command starts");
    assert!(
        output.status.success(),
        "{command:?} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub fn run_fail(command: &mut Command) -> String {
    let output = command.output().expect("the command starts");
    assert!(
        !output.status.success(),
        "{command:?} should have failed\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`: (cert.pem, key.pem).
pub fn self_signed_cert(dir: &Path) -> Option<(PathBuf, PathBuf)> {
    let openssl = tool("openssl")?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new(openssl)
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256"])
            .args(["-days", "1", "-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
            // rustls (webpki) refuses a CA:TRUE certificate as the server's own.
            .args(["-addext", "basicConstraints=critical,CA:FALSE"])
            .stderr(std::process::Stdio::null()),
    );
    Some((cert, key))
}

/// Waits for uploads started side by side (`--json`); each must succeed. Their versions, sorted.
pub fn versions_of_uploads(children: Vec<std::process::Child>) -> Vec<u64> {
    let mut versions: Vec<u64> = children
        .into_iter()
        .map(|child| {
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            let document = json_of(&output);
            assert_eq!(document["status"], "Finished", "{document}");
            document["version"].as_u64().unwrap()
        })
        .collect();
    versions.sort();
    versions
}

pub fn json_of(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// A third-party program from PATH. Missing: the test is skipped loudly, or fails when `CI`
/// is set, so that CI can never pass by skipping.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed, and CI is set: .ci/run must install it");
        }
        eprintln!("SKIPPED: {name} not installed");
    }
    found
}

pub fn example_dir() -> PathBuf {
    examples("tokenizer")
}

/// A model of `examples/`.
pub fn examples(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

/// Copies a folder tree (files, folders and symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_tree(&entry.path(), &target);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), &target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Unpacks an image of an OCI layout with umoci; returns the rootfs, or `None` when skipped.
pub fn umoci_unpack(image: &str, bundle: &Path) -> Option<PathBuf> {
    let umoci = tool("umoci")?;
    run_ok(
        Command::new(umoci)
            .args(["unpack", "--rootless", "--image", image])
            .arg(bundle),
    );
    Some(bundle.join("rootfs"))
}

/// A reading of `contract.protobin` that shares no code with mlambda: the raw protobuf wire
/// format walked with SPEC section 2's field numbers, rendered as one line per field:
/// `signature/inputs/name dtype=7 profile=6 shape=[-1,1]` (shape `any` when absent).
pub fn decode_contract(bytes: &[u8]) -> (String, Vec<String>) {
    let mut model_name = String::new();
    let mut lines = Vec::new();
    for (number, value) in wire_fields(bytes) {
        match (number, value) {
            (1, Wire::Bytes(b)) => model_name = String::from_utf8(b.to_vec()).unwrap(),
            (2, Wire::Bytes(sig)) => {
                let mut name = String::new();
                let mut fields = Vec::new();
                for (n, v) in wire_fields(sig) {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => name = String::from_utf8(b.to_vec()).unwrap(),
                        (2, Wire::Bytes(f)) => fields.push(("inputs", f)),
                        (3, Wire::Bytes(f)) => fields.push(("outputs", f)),
                        other => panic!("unexpected signature field {other:?}"),
                    }
                }
                for (section, field) in fields {
                    decode_field(&format!("{name}/{section}"), field, &mut lines);
                }
            }
            other => panic!("unexpected contract field {other:?}"),
        }
    }
    (model_name, lines)
}

fn decode_field(prefix: &str, bytes: &[u8], lines: &mut Vec<String>) {
    let mut name = String::new();
    let mut dtype = None;
    let mut profile = 0;
    let mut shape = "any".to_string();
    let mut nested = Vec::new();
    for (n, v) in wire_fields(bytes) {
        match (n, v) {
            (1, Wire::Bytes(b)) => name = String::from_utf8(b.to_vec()).unwrap(),
            (2, Wire::Bytes(s)) => {
                let mut dims = Vec::new();
                let mut unknown_rank = false;
                for (dn, dv) in wire_fields(s) {
                    match (dn, dv) {
                        (2, Wire::Bytes(dim)) => {
                            let mut size = 0i64;
                            for (x, y) in wire_fields(dim) {
                                if let (1, Wire::Varint(v)) = (x, y) {
                                    size = v as i64;
                                }
                            }
                            dims.push(size.to_string());
                        }
                        (3, Wire::Varint(v)) => unknown_rank = v != 0,
                        other => panic!("unexpected shape field {other:?}"),
                    }
                }
                shape = if unknown_rank {
                    "unknown_rank".into()
                } else {
                    format!("[{}]", dims.join(","))
                };
            }
            (3, Wire::Bytes(sub)) => {
                for (sn, sv) in wire_fields(sub) {
                    if let (1, Wire::Bytes(f)) = (sn, sv) {
                        nested.push(f);
                    }
                }
            }
            (4, Wire::Varint(v)) => dtype = Some(v),
            (10, Wire::Varint(v)) => profile = v,
            other => panic!("unexpected field field {other:?}"),
        }
    }
    let kind = match dtype {
        Some(d) => format!("dtype={d}"),
        None => "nested".to_string(),
    };
    lines.push(format!(
        "{prefix}/{name} {kind} profile={profile} shape={shape}"
    ));
    for f in nested {
        decode_field(&format!("{prefix}/{name}"), f, lines);
    }
}

#[derive(Debug)]
pub enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn wire_fields(mut bytes: &[u8]) -> Vec<(u64, Wire<'_>)> {
    fn varint(bytes: &mut &[u8]) -> u64 {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = bytes[0];
            *bytes = &bytes[1..];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let key = varint(&mut bytes);
        let value = match key & 7 {
            0 => Wire::Varint(varint(&mut bytes)),
            2 => {
                let len = varint(&mut bytes) as usize;
                let (head, tail) = bytes.split_at(len);
                bytes = tail;
                Wire::Bytes(head)
            }
            other => panic!("unexpected wire type {other}"),
        };
        out.push((key >> 3, value));
    }
    out
}

/// `../shared/fixtures` (real model files written by the frameworks), beside the checkout as
/// in CI. Missing: the test is skipped loudly, or fails when `CI` is set.
pub fn shared_fixtures() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures");
    if dir.is_dir() {
        return Some(dir);
    }
    println!("SKIPPED: ../shared/fixtures not found");
    assert!(
        std::env::var_os("CI").is_none(),
        "../shared/fixtures not found, and CI is set: refusing to pass by skipping"
    );
    None
}

/// A model file the project generated itself (`tests/fixtures`, see scripts/fixtures).
pub fn own_fixture(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}

/// A field as one comparable line: `name dtype [dims] (dim names)`.
pub fn line(field: &mlambda::contract::Field) -> String {
    let dtype = match &field.kind {
        mlambda::contract::FieldKind::Tensor(dtype) => format!("{dtype:?}"),
        mlambda::contract::FieldKind::Nested(_) => "nested".into(),
    };
    let shape = match &field.shape {
        None => "any".to_string(),
        Some(s) if s.unknown_rank => "unknown_rank".into(),
        Some(s) => {
            let sizes: Vec<String> = s.dims.iter().map(|d| d.size.to_string()).collect();
            let names: Vec<&str> = s.dims.iter().map(|d| d.name.as_str()).collect();
            if names.iter().all(|n| n.is_empty()) {
                format!("[{}]", sizes.join(","))
            } else {
                format!("[{}] ({})", sizes.join(","), names.join(","))
            }
        }
    };
    format!("{} {dtype} {shape}", field.name)
}

pub fn lines(fields: &[mlambda::contract::Field]) -> Vec<String> {
    fields.iter().map(line).collect()
}

/// The layer digests of the image tagged `tag` in an OCI layout, read as any layout reader
/// would (not through mlambda).
pub fn layout_layers(layout: &Path, tag: &str) -> Vec<String> {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let entry = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .unwrap()
        .clone();
    let blob = layout.join("blobs/sha256").join(
        entry["digest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:"),
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect()
}

/// A home whose wheel cache is shared by the tests and kept between runs (the cache is
/// content-addressed and safe to share): a runtime's hundreds of MB of wheels are downloaded
/// once per machine, not once per test.
pub fn home_with_shared_wheels() -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let shared = Path::new(env!("CARGO_TARGET_TMPDIR")).join("wheel-cache");
    std::fs::create_dir_all(&shared).unwrap();
    std::os::unix::fs::symlink(&shared, home.path().join("wheels")).unwrap();
    home
}

/// A folder with `package`'s .deb, fetched by `apt-get download`; `None` (skipped loudly)
/// when that cannot be done outside CI.
pub fn downloaded_deb(package: &str) -> Option<tempfile::TempDir> {
    let debs = tempfile::tempdir().unwrap();
    let fetched = Command::new("apt-get")
        .current_dir(debs.path())
        .args(["download", package])
        .output();
    if !fetched.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "apt-get download must work in CI"
        );
        eprintln!("SKIPPED: apt-get download {package} failed");
        return None;
    }
    Some(debs)
}

/// Waits until the store under `store` has a temporary blob bigger than `bytes`: an upload is
/// writing a layer (and reading its file). False when the upload ended first.
pub fn writing_a_blob(store: &Path, bytes: u64, upload: &mut std::process::Child) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::time::Instant::now() < deadline {
        let written = std::fs::read_dir(store.join("_tmp"))
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.metadata().ok())
            .map(|m| m.len())
            .max()
            .unwrap_or(0);
        if written > bytes {
            return true;
        }
        if upload.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    panic!("the upload did not start writing a blob within 120 s");
}

/// Rewrites a few bytes of `file` (`len` bytes long) in place, at its start and `tail` bytes
/// before its end, as a program saving over it would: a read in progress sees it change.
pub fn tear_in_place(file: &Path, len: u64, tail: u64) {
    use std::os::unix::fs::FileExt;
    let open = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    open.write_all_at(b"torn", 0).unwrap();
    open.write_all_at(b"torn", len - tail).unwrap();
}

/// The build log of version `reference` (`NAME:VERSION`) of the catalogue in `home`.
pub fn version_log(home: &Path, reference: &str) -> String {
    let shown = json_of(&run_ok(mlambda(home).args(["show", reference, "--json"])));
    shown["log"].as_str().unwrap_or_default().to_string()
}
