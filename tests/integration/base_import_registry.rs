//! `mlambda base import NAME REFERENCE` from the real CNCF distribution registry: a
//! multi-platform index pushed by skopeo resolved to the platform asked for, the model image
//! built on the exact layers the registry holds, nothing downloaded twice, and the errors.

use crate::common;

use common::proxy::Proxy;
use common::registry::{Distribution, RegistryOptions, skopeo_raw_manifest};
use common::*;
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// An OCI layout (made by umoci) whose tag `multi` is an image index of a linux/amd64 and a
/// linux/arm64 image, each with `ARCH=<arch>` in its config's Env.
fn multi_platform_layout(dir: &Path) -> Option<PathBuf> {
    let umoci = tool("umoci")?;
    let layout = dir.join("layout");
    run_ok(Command::new(&umoci).args(["init", "--layout"]).arg(&layout));
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let image = format!("{}:{arch}", layout.display());
        run_ok(Command::new(&umoci).args(["new", "--image", &image]));
        let bundle = dir.join(format!("bundle-{arch}"));
        run_ok(
            Command::new(&umoci)
                .args(["unpack", "--rootless", "--image", &image])
                .arg(&bundle),
        );
        std::fs::create_dir_all(bundle.join("rootfs/etc")).unwrap();
        std::fs::write(bundle.join("rootfs/etc/arch"), arch).unwrap();
        run_ok(
            Command::new(&umoci)
                .args(["repack", "--image", &image])
                .arg(&bundle),
        );
        run_ok(Command::new(&umoci).args([
            "config",
            "--image",
            &image,
            "--os",
            "linux",
            "--architecture",
            arch,
            "--config.env",
            &format!("ARCH={arch}"),
        ]));
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut descriptor = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == arch)
            .unwrap()
            .clone();
        descriptor.as_object_mut().unwrap().remove("annotations");
        descriptor["platform"] = json!({"os": "linux", "architecture": arch});
        manifests.push(descriptor);
    }
    let nested = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests});
    let bytes = serde_json::to_vec(&nested).unwrap();
    let digest = sha256_hex(&bytes);
    std::fs::write(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
        &bytes,
    )
    .unwrap();
    let top = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": "multi"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
    Some(layout)
}

/// Pushes the multi-platform index to `runtimes/multi:1` with skopeo.
fn push_multi(registry: &Distribution, dir: &Path, creds: Option<&str>) -> Option<()> {
    let skopeo = tool("skopeo")?;
    let layout = multi_platform_layout(dir)?;
    let mut command = Command::new(skopeo);
    command.args(["copy", "--all", "--dest-tls-verify=false"]);
    if let Some(creds) = creds {
        command.args(["--dest-creds", creds]);
    }
    run_ok(
        command
            .arg(format!("oci:{}:multi", layout.display()))
            .arg(format!(
                "docker://{}/runtimes/multi:1",
                registry.authority()
            )),
    );
    Some(())
}

fn skopeo_json(args: &[&str]) -> Value {
    let skopeo = tool("skopeo").unwrap();
    serde_json::from_slice(&run_ok(Command::new(skopeo).args(args)).stdout).unwrap()
}

fn layers_of(value: &Value) -> Vec<String> {
    value["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect()
}

/// The Env of the config of runtime busybox in `home`.
fn imported_env(home: &Path) -> Vec<Value> {
    let config = skopeo_json(&[
        "inspect",
        "--config",
        &format!(
            "oci:{}:latest",
            home.join("registry/base/busybox").display()
        ),
    ]);
    config["config"]["Env"].as_array().unwrap().clone()
}

fn import(home: &Path, reference: &str, extra: &[&str]) -> Value {
    json_of(&run_ok(
        mlambda(home)
            .args(["base", "import", "busybox", reference, "--json"])
            .args(extra),
    ))
}

fn host_arch() -> Option<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Some("amd64"),
        "aarch64" => Some("arm64"),
        _ => None,
    }
}

fn blob_gets(proxy: &Proxy) -> Vec<String> {
    proxy
        .take_log()
        .into_iter()
        .filter(|e| e.method == "GET" && e.target.contains("/blobs/"))
        .map(|e| e.target)
        .collect()
}

/// A connection cut in the middle of a blob's download: the import goes on from the byte it
/// got to (`Range`), and what it stores is the image, byte for byte.
#[test]
fn a_download_cut_midway_resumes_from_where_it_stopped() {
    let Some(host) = host_arch() else { return };
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    if push_multi(&registry, dir.path(), None).is_none() {
        return;
    }
    let proxy = Proxy::start(registry.port);
    proxy.set(|s| s.cut_downloads = 2);
    let home = tempfile::tempdir().unwrap();
    let imported = import(
        home.path(),
        &format!("127.0.0.1:{}/runtimes/multi:1", proxy.port),
        &[],
    );
    assert_eq!(imported["platform"], format!("linux/{host}"), "{imported}");
    let log = proxy.take_log();
    assert_eq!(proxy.state.lock().unwrap().cuts_done, 2, "{log:?}");
    let resumed: Vec<_> = log
        .iter()
        .filter(|e| e.method == "GET" && e.target.contains("/blobs/"))
        .filter(|e| {
            e.range
                .as_deref()
                .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")
        })
        .collect();
    assert_eq!(
        resumed.len(),
        2,
        "each cut blob asked again from its offset: {log:?}"
    );
    // Every blob of the stored image has its digest (skopeo reads the layout, umoci unpacks it).
    assert!(imported_env(home.path()).contains(&json!(format!("ARCH={host}"))));
    let layout = home.path().join("registry/base/busybox/blobs/sha256");
    for entry in std::fs::read_dir(&layout).unwrap() {
        let entry = entry.unwrap();
        let bytes = std::fs::read(entry.path()).unwrap();
        assert_eq!(
            sha256_hex(&bytes),
            format!("sha256:{}", entry.file_name().to_string_lossy())
        );
    }
}

#[test]
fn a_multi_platform_index_is_resolved_and_the_model_builds_on_its_layers() {
    let Some(host) = host_arch() else { return };
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    if push_multi(&registry, dir.path(), None).is_none() {
        return;
    }
    let skopeo = tool("skopeo").unwrap();
    let upstream = format!("{}/runtimes/multi:1", registry.authority());
    let index_bytes = skopeo_raw_manifest(&skopeo, &upstream, &["--tls-verify=false"]);
    let index_digest = sha256_hex(&index_bytes);
    let index: Value = serde_json::from_slice(&index_bytes).unwrap();
    assert_eq!(index["manifests"].as_array().unwrap().len(), 2, "{index}");
    let registry_image = skopeo_json(&[
        "inspect",
        "--tls-verify=false",
        &format!("docker://{upstream}"),
    ]);

    // Through a counting proxy: what is downloaded, and what is not downloaded again.
    let proxy = Proxy::start(registry.port);
    let reference = format!("127.0.0.1:{}/runtimes/multi:1", proxy.port);
    let home = tempfile::tempdir().unwrap();
    let imported = import(home.path(), &reference, &[]);
    assert_eq!(imported["platform"], format!("linux/{host}"), "{imported}");
    let for_host = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["platform"]["architecture"] == host)
        .unwrap();
    assert_eq!(imported["digest"], for_host["digest"], "{imported}");
    assert_eq!(registry_image["Digest"], index_digest.as_str());
    assert_eq!(
        imported["pinned"],
        format!("127.0.0.1:{}/runtimes/multi@{index_digest}", proxy.port)
    );
    assert!(imported_env(home.path()).contains(&json!(format!("ARCH={host}"))));
    let first = blob_gets(&proxy);
    assert_eq!(
        first.len(),
        layers_of(&registry_image).len() + 1,
        "config and layers, once each: {first:?}"
    );
    // The manifest is stored byte for byte.
    let digest = imported["digest"].as_str().unwrap();
    let stored = std::fs::read(
        home.path()
            .join("registry/base/busybox/blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap();
    assert_eq!(sha256_hex(&stored), digest);

    let again = import(home.path(), &reference, &[]);
    assert_eq!(again["digest"], imported["digest"]);
    assert_eq!(
        blob_gets(&proxy),
        Vec::<String>::new(),
        "a second import downloads nothing"
    );

    // The source is shown, pinned by digest.
    let listed = json_of(&run_ok(
        mlambda(home.path()).args(["base", "list", "--json"]),
    ));
    let busybox = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "busybox")
        .unwrap();
    assert_eq!(busybox["imported_from"]["pinned"], imported["pinned"]);
    assert_eq!(busybox["imported_from"]["source"], reference.as_str());
    let table = run_ok(mlambda(home.path()).args(["base", "list"]));
    assert!(
        String::from_utf8_lossy(&table.stdout).contains(&index_digest),
        "{}",
        String::from_utf8_lossy(&table.stdout)
    );

    // A model on it: its first layers are exactly the registry image's.
    let model = tempfile::tempdir().unwrap();
    std::fs::write(
        model.path().join("serving.yaml"),
        "name: shell-model\nmodel-type: shell:1\ncontract:\n  run:\n    inputs:\n      x: {type: string}\n    outputs:\n      y: {type: string}\n",
    )
    .unwrap();
    std::fs::write(model.path().join("run.sh"), "echo hi\n").unwrap();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(model.path()),
    ));
    assert_eq!(uploaded["base"], "runtime busybox");
    let model_image = skopeo_json(&["inspect", uploaded["image"].as_str().unwrap()]);
    let base_layers = layers_of(&registry_image);
    let model_layers = layers_of(&model_image);
    assert_eq!(model_layers[..base_layers.len()], base_layers[..]);
    assert!(model_layers.len() > base_layers.len());

    // The other platform, asked for; a digest reference with docker://.
    let home = tempfile::tempdir().unwrap();
    let imported = import(
        home.path(),
        &format!("docker://{upstream}"),
        &["--platform", &format!("linux/{other}")],
    );
    assert_eq!(imported["platform"], format!("linux/{other}"));
    assert!(imported_env(home.path()).contains(&json!(format!("ARCH={other}"))));
    let by_digest = format!(
        "docker://{}/runtimes/multi@{}",
        registry.authority(),
        imported["digest"].as_str().unwrap()
    );
    let home = tempfile::tempdir().unwrap();
    let pinned = import(home.path(), &by_digest, &[]);
    assert_eq!(pinned["digest"], imported["digest"]);
    assert!(imported_env(home.path()).contains(&json!(format!("ARCH={other}"))));

    // A platform the index does not have.
    let stderr = run_fail(mlambda(home.path()).args([
        "base",
        "import",
        "busybox",
        &upstream,
        "--platform",
        "linux/s390x",
    ]));
    assert!(
        stderr.contains("no linux/s390x image") && stderr.contains("linux/amd64, linux/arm64"),
        "{stderr}"
    );
}

/// `mlambda base import` with the password on stdin.
fn import_with_password(
    home: &Path,
    reference: &str,
    user: &str,
    password: &str,
) -> (bool, String) {
    let mut child = mlambda(home)
        .args(["base", "import", "busybox", reference, "--username", user])
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn unknown_images_and_wrong_credentials_are_refused_clearly() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    for missing in ["nothing/here:1", "nothing/here"] {
        let stderr = run_fail(mlambda(home.path()).args([
            "base",
            "import",
            "busybox",
            &format!("{}/{missing}", registry.authority()),
        ]));
        assert!(stderr.contains("no such image"), "{stderr}");
    }
    let stderr = run_fail(mlambda(home.path()).args([
        "base",
        "import",
        "busybox",
        "docker://127.0.0.1:1/x:Bad Tag",
    ]));
    assert!(stderr.contains("not a valid tag"), "{stderr}");
    assert!(
        !home
            .path()
            .join("registry/base/busybox.source.json")
            .exists()
    );

    let Some(secured) = Distribution::start(RegistryOptions {
        basic_auth: Some(("puller".into(), "s3cret".into())),
        tls: false,
    }) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    if push_multi(&secured, dir.path(), Some("puller:s3cret")).is_none() {
        return;
    }
    let reference = format!("{}/runtimes/multi:1", secured.authority());
    let stderr = run_fail(mlambda(home.path()).args(["base", "import", "busybox", &reference]));
    assert!(stderr.contains("requires authentication"), "{stderr}");
    let (ok, stderr) = import_with_password(home.path(), &reference, "puller", "wrong");
    assert!(!ok);
    assert!(stderr.contains("rejected the credentials"), "{stderr}");
    let (ok, stderr) = import_with_password(home.path(), &reference, "puller", "s3cret");
    assert!(ok, "{stderr}");
}
