//! `mlambda upload --registry http(s)://…` and `mlambda push` against the real CNCF
//! distribution registry: what skopeo reads back, what is (not) sent again, base layers
//! mounted, faults survived, and every kind of authentication.

use crate::common;

use common::proxy::{Proxy, mount_digest, put_digest};
use common::registry::{Distribution, RegistryOptions, skopeo_raw_manifest};
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const MODEL: &str = "example_tokenizer_model";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// On scratch unless `extra` names a base: these tests are about the push, and a runtime
/// base would make every one of them build and send a Python installation.
fn upload_to(home: &Path, registry: &str, extra: &[&str]) -> Command {
    let mut command = mlambda(home);
    command.args(["upload", "--json", "--registry", registry]);
    if !extra.contains(&"--base") {
        command.args(["--base", "scratch"]);
    }
    command.args(extra).arg(example_dir());
    command
}

/// The layer digests of an image in the local store.
fn record(home: &Path, reference: &str) -> Value {
    json_of(&run_ok(mlambda(home).args(["show", reference, "--json"])))
}

#[test]
fn a_push_over_plain_http_is_what_skopeo_reads_and_an_unchanged_model_sends_no_payload() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    let home = tempfile::tempdir().unwrap();
    let first = json_of(&run_ok(&mut upload_to(
        home.path(),
        &proxy.url("team"),
        &[],
    )));
    let reference = format!("127.0.0.1:{}/team/{MODEL}:1", proxy.port);
    assert_eq!(first["status"], "Finished");
    assert_eq!(first["version"], 1);
    assert_eq!(first["image"], reference);
    assert_eq!(first["pushed_digest"], first["digest"]);
    assert!(first["local_image"].as_str().unwrap().starts_with("oci:"));
    let log = proxy.take_log();
    assert!(log.iter().any(|l| l.method == "HEAD"), "HEAD before upload");

    let shown = record(home.path(), &format!("{MODEL}:1"));
    assert_eq!(shown["image"], reference);
    assert_eq!(shown["pushed_digest"], first["digest"]);
    assert_eq!(shown["status"], "Finished");
    assert!(shown["log"].as_str().unwrap().contains("pushed"));

    if let Some(skopeo) = tool("skopeo") {
        let direct = format!("{}/team/{MODEL}:1", registry.authority());
        let raw = skopeo_raw_manifest(&skopeo, &direct, &["--tls-verify=false"]);
        assert_eq!(sha256_hex(&raw), first["digest"].as_str().unwrap());
        let out = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{direct}"))
                .arg(format!(
                    "oci:{}:pulled",
                    out.path().join("layout").display()
                )),
        );
        let inspected: Value = serde_json::from_slice(
            &run_ok(Command::new(&skopeo).arg("inspect").arg(format!(
                "oci:{}:pulled",
                out.path().join("layout").display()
            )))
            .stdout,
        )
        .unwrap();
        assert_eq!(inspected["Labels"]["MODEL_NAME"], MODEL);
        assert_eq!(inspected["Digest"], first["digest"]);
    }

    // Version 2 of the same folder: the payload and contract layers are there already.
    let second = json_of(&run_ok(&mut upload_to(
        home.path(),
        &proxy.url("team"),
        &[],
    )));
    assert_eq!(second["version"], 2);
    assert_eq!(second["pushed_digest"], second["digest"]);
    let layers = layout_layers(&home.path().join("registry").join(MODEL), "2");
    assert!(!layers.is_empty());
    let log = proxy.take_log();
    let uploaded: Vec<String> = log.iter().filter_map(put_digest).collect();
    for layer in &layers {
        assert!(
            !uploaded.contains(layer),
            "layer {layer} was uploaded again: {log:#?}"
        );
    }
    assert_eq!(
        uploaded.len(),
        1,
        "only the new config is uploaded: {log:#?}"
    );
    assert_eq!(second["blobs"]["uploaded"], 1);
    assert_eq!(second["blobs"]["existed"], layers.len());
    let patches = log.iter().filter(|l| l.method == "PATCH").count();
    assert_eq!(patches, 0, "monolithic uploads by default");
}

#[test]
fn a_second_model_on_the_same_base_mounts_every_base_layer() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // A base image with layers of its own: some folder built on scratch.
    let base_src = work.path().join("base-src");
    std::fs::create_dir_all(base_src.join("lib")).unwrap();
    std::fs::write(base_src.join("lib/runtime.py"), "print('runtime')\n").unwrap();
    std::fs::write(
        base_src.join("serving.yaml"),
        "name: runtime\nmodel-type: python:3.6\ncontract:\n  f:\n    inputs:\n      x: {type: string, shape: scalar}\n    outputs:\n      y: {type: string, shape: scalar}\n",
    )
    .unwrap();
    let base = format!("oci:{}:v1", work.path().join("base").display());
    run_ok(
        mlambda(home.path())
            .args(["build", "--base", "scratch", "-o", &base])
            .arg(&base_src),
    );
    let first = json_of(&run_ok(&mut upload_to(
        home.path(),
        &proxy.url("team"),
        &["--base", &base, "--name", "first"],
    )));
    assert_eq!(first["status"], "Finished");
    proxy.take_log();
    let second = json_of(&run_ok(&mut upload_to(
        home.path(),
        &proxy.url("team"),
        &["--base", &base, "--name", "second"],
    )));
    assert_eq!(second["status"], "Finished");
    let log = proxy.take_log();

    let base_dir = work.path().join("base");
    let base_index: Value =
        serde_json::from_slice(&std::fs::read(base_dir.join("index.json")).unwrap()).unwrap();
    let base_manifest = base_index["manifests"][0]["digest"].as_str().unwrap();
    let base_manifest: Value = serde_json::from_slice(
        &std::fs::read(base_dir.join("blobs/sha256").join(&base_manifest[7..])).unwrap(),
    )
    .unwrap();
    let base_layers: Vec<String> = base_manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    assert!(!base_layers.is_empty());
    let second_layers = layout_layers(&home.path().join("registry/second"), "1");
    let mounted: BTreeSet<String> = log
        .iter()
        .filter(|l| l.status == 201 && l.target.contains("/team/second/"))
        .filter_map(mount_digest)
        .collect();
    let uploaded: Vec<String> = log.iter().filter_map(put_digest).collect();
    for layer in &base_layers {
        assert!(second_layers.contains(layer));
        assert!(mounted.contains(layer), "{layer} not mounted: {log:#?}");
        assert!(!uploaded.contains(layer), "{layer} uploaded: {log:#?}");
    }
    assert!(second["blobs"]["mounted"].as_u64().unwrap() >= base_layers.len() as u64);
    if let Some(skopeo) = tool("skopeo") {
        let raw = skopeo_raw_manifest(
            &skopeo,
            &format!("{}/team/second:1", registry.authority()),
            &["--tls-verify=false"],
        );
        assert_eq!(sha256_hex(&raw), second["digest"].as_str().unwrap());
    }
}

#[test]
fn faults_503_429_and_cut_connections_are_retried_to_the_right_digests() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    proxy.set(|s| {
        s.fail_first = 3;
        s.too_many_once = true;
        s.cut_uploads = 2;
    });
    let home = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let output = run_ok(&mut upload_to(home.path(), &proxy.url("faults"), &[]));
    let uploaded = json_of(&output);
    assert_eq!(uploaded["status"], "Finished");
    assert_eq!(uploaded["pushed_digest"], uploaded["digest"]);
    let log = proxy.take_log();
    assert_eq!(log.iter().filter(|l| l.status == 503).count(), 3);
    assert_eq!(log.iter().filter(|l| l.status == 429).count(), 1);
    assert_eq!(log.iter().filter(|l| l.status == 0).count(), 2, "{log:#?}");
    // Retry-After: 1 was honoured.
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retrying"), "{stderr}");
    if let Some(skopeo) = tool("skopeo") {
        let raw = skopeo_raw_manifest(
            &skopeo,
            &format!("{}/faults/{MODEL}:1", registry.authority()),
            &["--tls-verify=false"],
        );
        assert_eq!(sha256_hex(&raw), uploaded["digest"].as_str().unwrap());
        let out = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!(
                    "docker://{}/faults/{MODEL}:1",
                    registry.authority()
                ))
                .arg(format!("oci:{}:x", out.path().join("l").display())),
        );
    }
}

#[test]
fn chunked_uploads_when_the_registry_asks_survive_a_cut_chunk() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    proxy.set(|s| {
        s.chunk_min = Some(100);
        s.cut_uploads = 1;
    });
    let home = tempfile::tempdir().unwrap();
    let uploaded = json_of(&run_ok(&mut upload_to(
        home.path(),
        &proxy.url("chunks"),
        &[],
    )));
    assert_eq!(uploaded["status"], "Finished");
    let log = proxy.take_log();
    let patches = log.iter().filter(|l| l.method == "PATCH").count();
    assert!(patches >= 2, "chunked: {log:#?}");
    assert!(log.iter().all(
        |l| !(l.method == "PUT" && l.target.contains("/blobs/uploads/"))
            || l.status != 201
            || put_digest(l).is_some()
    ));
    if let Some(skopeo) = tool("skopeo") {
        let raw = skopeo_raw_manifest(
            &skopeo,
            &format!("{}/chunks/{MODEL}:1", registry.authority()),
            &["--tls-verify=false"],
        );
        assert_eq!(sha256_hex(&raw), uploaded["digest"].as_str().unwrap());
        let out = tempfile::tempdir().unwrap();
        run_ok(
            Command::new(&skopeo)
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!(
                    "docker://{}/chunks/{MODEL}:1",
                    registry.authority()
                ))
                .arg(format!("oci:{}:x", out.path().join("l").display())),
        );
    }
}

#[test]
fn when_retries_run_out_the_version_fails_clearly_and_push_sends_it_later() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    proxy.set(|s| s.fail_first = 1_000);
    let home = tempfile::tempdir().unwrap();
    let stderr = run_fail(&mut upload_to(home.path(), &proxy.url("later"), &[]));
    assert!(stderr.contains("gave up after"), "{stderr}");
    assert!(stderr.contains("503"), "{stderr}");
    let shown = record(home.path(), &format!("{MODEL}:1"));
    assert_eq!(shown["status"], "Failed");
    assert!(shown["error"].as_str().unwrap().contains("gave up after"));
    assert!(shown["digest"].as_str().unwrap().starts_with("sha256:"));

    proxy.set(|s| s.fail_first = 0);
    let pushed = json_of(&run_ok(mlambda(home.path()).args([
        "push",
        &format!("{MODEL}:1"),
        "--registry",
        &proxy.url("later"),
        "--json",
    ])));
    assert_eq!(pushed["status"], "Finished");
    assert_eq!(pushed["pushed_digest"], shown["digest"]);
    let shown = record(home.path(), &format!("{MODEL}:1"));
    assert_eq!(shown["status"], "Finished");
    assert_eq!(shown["error"], Value::Null);
    assert_eq!(
        shown["image"],
        format!("127.0.0.1:{}/later/{MODEL}:1", proxy.port)
    );
}

#[test]
fn basic_auth_with_good_wrong_and_no_credentials() {
    let Some(registry) = Distribution::start(RegistryOptions {
        basic_auth: Some(("ci".into(), "s3cret-pass".into())),
        tls: false,
    }) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let empty_docker = tempfile::tempdir().unwrap();

    // None.
    let stderr = run_fail(
        upload_to(home.path(), &registry.url(), &[]).env("DOCKER_CONFIG", empty_docker.path()),
    );
    assert!(stderr.contains("requires authentication"), "{stderr}");
    assert_eq!(
        record(home.path(), &format!("{MODEL}:1"))["status"],
        "Failed"
    );

    // Wrong ones, from stdin.
    let mut child = upload_to(
        home.path(),
        &registry.url(),
        &["--username", "ci", "--password-stdin"],
    )
    .env("DOCKER_CONFIG", empty_docker.path())
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"wrong-pass\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("rejected the credentials"), "{stderr}");
    assert!(!stderr.contains("wrong-pass"));
    let failed = record(home.path(), &format!("{MODEL}:2"));
    assert_eq!(failed["status"], "Failed");
    assert!(!failed.to_string().contains("wrong-pass"));

    // Good ones, from the environment.
    let ok = json_of(&run_ok(
        upload_to(home.path(), &registry.url(), &[])
            .env("DOCKER_CONFIG", empty_docker.path())
            .env("MLAMBDA_REGISTRY_USERNAME", "ci")
            .env("MLAMBDA_REGISTRY_PASSWORD", "s3cret-pass"),
    ));
    assert_eq!(ok["status"], "Finished");

    // Good ones, from a docker config.json (`auths` with base64 `auth`).
    let docker = tempfile::tempdir().unwrap();
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "ci:s3cret-pass");
    std::fs::write(
        docker.path().join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            registry.authority()
        ),
    )
    .unwrap();
    let pushed = json_of(&run_ok(
        mlambda(home.path())
            .args([
                "push",
                &format!("{MODEL}:1"),
                "--registry",
                &registry.url(),
                "--json",
            ])
            .env("DOCKER_CONFIG", docker.path()),
    ));
    assert_eq!(pushed["status"], "Finished");
    let all = run_ok(mlambda(home.path()).args(["versions", MODEL, "--json"]));
    let text = String::from_utf8_lossy(&all.stdout);
    assert!(!text.contains("s3cret-pass"));
    if let Some(skopeo) = tool("skopeo") {
        let raw = skopeo_raw_manifest(
            &skopeo,
            &format!("{}/{MODEL}:3", registry.authority()),
            &["--tls-verify=false", "--creds", "ci:s3cret-pass"],
        );
        assert_eq!(sha256_hex(&raw), ok["digest"].as_str().unwrap());
    }
}

#[test]
fn self_signed_tls_needs_the_ca_cert() {
    let Some(registry) = Distribution::start(RegistryOptions {
        basic_auth: None,
        tls: true,
    }) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let stderr = run_fail(&mut upload_to(home.path(), &registry.url(), &[]));
    assert!(stderr.contains("--ca-cert"), "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert_eq!(
        record(home.path(), &format!("{MODEL}:1"))["status"],
        "Failed"
    );

    let ca = registry.ca_cert();
    let ok = json_of(&run_ok(&mut upload_to(
        home.path(),
        &registry.url(),
        &["--ca-cert", ca.to_str().unwrap()],
    )));
    assert_eq!(ok["status"], "Finished");
    if let Some(skopeo) = tool("skopeo") {
        let cert_dir = registry.cert_dir();
        let raw = skopeo_raw_manifest(
            &skopeo,
            &format!("{}/{MODEL}:2", registry.authority()),
            &["--cert-dir", cert_dir.to_str().unwrap()],
        );
        assert_eq!(sha256_hex(&raw), ok["digest"].as_str().unwrap());
    }
}

#[test]
fn bearer_tokens_are_fetched_with_credentials_and_renewed_when_refused() {
    let Some(registry) = Distribution::start(RegistryOptions::default()) else {
        return;
    };
    let proxy = Proxy::start(registry.port);
    // Each token serves 4 requests, then the registry refuses it as expired.
    proxy.set(|s| s.bearer = Some(("robot".into(), "t0ken-pass".into(), 4)));
    let home = tempfile::tempdir().unwrap();
    let mut child = upload_to(
        home.path(),
        &proxy.url("tokens"),
        &["--username", "robot", "--password-stdin"],
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"t0ken-pass\n")
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let uploaded = json_of(&output);
    assert_eq!(uploaded["pushed_digest"], uploaded["digest"]);
    let issued = proxy.state.lock().unwrap().tokens_issued;
    assert!(issued >= 2, "tokens renewed mid-push: {issued}");

    // Without credentials the token server refuses.
    let stderr = run_fail(
        upload_to(home.path(), &proxy.url("tokens"), &[]).env("DOCKER_CONFIG", home.path()),
    );
    assert!(stderr.contains("requires authentication"), "{stderr}");
}

#[test]
fn plain_http_to_a_remote_host_needs_insecure_and_nothing_is_recorded() {
    let home = tempfile::tempdir().unwrap();
    let stderr = run_fail(&mut upload_to(
        home.path(),
        "http://registry.example.com/team",
        &[],
    ));
    assert!(stderr.contains("--insecure"), "{stderr}");
    let out = mlambda(home.path())
        .args(["versions", MODEL])
        .output()
        .unwrap();
    assert!(!out.status.success(), "no version was taken");
}
