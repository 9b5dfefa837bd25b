//! `mlambda serve` and `mlambda upload --host`, as a user of Hydrosphere's manager sees them:
//! the real binaries on a loopback port, images pulled back with skopeo, concurrent uploads,
//! a server killed during a build, the build log's event stream, credentials, and every kind
//! of hostile archive refused with nothing left behind.

use crate::common;

use common::http::{client, json};
use common::manager::*;
use common::registry::skopeo_raw_manifest;
use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tempfile::TempDir;

const BUILD: Duration = Duration::from_secs(300);

fn shared_savedmodel() -> Option<PathBuf> {
    Some(shared_fixtures()?.join("tf_savedmodel/serving_saved_model_half_plus_two_cpu/00000123"))
}

#[test]
fn the_tokenizer_and_a_savedmodel_are_built_by_the_server_and_pulled_back_with_skopeo() {
    let Some(skopeo) = tool("skopeo") else { return };
    let Some(savedmodel) = shared_savedmodel() else {
        return;
    };
    let work = TempDir::new().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    let client_home = work.path().join("client");

    // The tokenizer on its model-type's runtime (python-3.11, assembled by the server).
    let output = run_ok(&mut server.upload(&client_home, &example_dir(), &["--json"]));
    let tokenizer = json_of(&output);
    assert_eq!(tokenizer["status"], "Finished", "{tokenizer}");
    assert_eq!(tokenizer["version"], 1);
    assert_eq!(
        tokenizer["image"],
        format!("{}/example_tokenizer_model:1", server.host())
    );
    assert_eq!(tokenizer["base_image"], "runtime python-3.11");
    assert_eq!(
        tokenizer["contract"]["signatures"][0]["name"], "tokenize",
        "{tokenizer}"
    );

    // A TensorFlow Serving folder with no serving.yaml: the name comes from the folder above
    // the version folder, the contract from saved_model.pb, on the client and server alike.
    let output = run_ok(&mut server.upload(&client_home, &savedmodel, &["--json"]));
    let tf = json_of(&output);
    assert_eq!(tf["status"], "Finished", "{tf}");
    assert_eq!(tf["name"], "serving_saved_model_half_plus_two_cpu");
    assert!(
        tf["model_type"]
            .as_str()
            .unwrap()
            .starts_with("tensorflow:"),
        "{tf}"
    );
    assert_eq!(
        tf["contract_source"],
        "inferred from TensorFlow SavedModel (saved_model.pb)"
    );
    let signatures: Vec<&str> = tf["contract"]["signatures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(signatures.contains(&"regress_x2_to_y3"), "{signatures:?}");

    // Pulled back through /v2/ by skopeo: the digests the API reports, and the files.
    for (document, file) in [
        (&tokenizer, "model/files/src/func_main.py"),
        (&tf, "model/files/saved_model.pb"),
    ] {
        let reference = document["image"].as_str().unwrap();
        let raw = skopeo_raw_manifest(&skopeo, reference, &["--tls-verify=false"]);
        assert_eq!(
            mlambda::oci::digest::sha256_of(&raw),
            document["digest"].as_str().unwrap(),
            "{reference}"
        );
        let layout = work
            .path()
            .join(format!("pulled-{}", document["name"].as_str().unwrap()));
        run_ok(std::process::Command::new(&skopeo).args([
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:pulled", layout.display()),
        ]));
        let bundle = work
            .path()
            .join(format!("bundle-{}", document["name"].as_str().unwrap()));
        let Some(rootfs) = umoci_unpack(&format!("{}:pulled", layout.display()), &bundle) else {
            return;
        };
        assert!(rootfs.join(file).is_file(), "{file} in {reference}");
        let contract = std::fs::read(rootfs.join("model/contract.protobin")).unwrap();
        let (model_name, _) = decode_contract(&contract);
        assert_eq!(model_name, document["name"].as_str().unwrap());
    }

    // The same layers as `mlambda upload` on this machine builds (the config differs only by
    // the version number in its labels).
    let local = json_of(&run_ok(
        mlambda(&work.path().join("local"))
            .args(["upload", "--json", "--base", "scratch"])
            .arg(&savedmodel),
    ));
    let remote = json_of(&run_ok(&mut server.upload(
        &client_home,
        &savedmodel,
        &["--json", "--base", "scratch"],
    )));
    assert_eq!(remote["version"], 2);
    let layers = |raw: Vec<u8>| {
        let manifest: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        manifest["layers"].clone()
    };
    let local_manifest = run_ok(
        std::process::Command::new(&skopeo)
            .args(["inspect", "--raw"])
            .arg(local["image"].as_str().unwrap()),
    )
    .stdout;
    let remote_manifest = skopeo_raw_manifest(
        &skopeo,
        remote["image"].as_str().unwrap(),
        &["--tls-verify=false"],
    );
    assert_eq!(layers(local_manifest), layers(remote_manifest));

    let models = get_json(&server, "/api/v2/model");
    let names: Vec<&str> = models
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "example_tokenizer_model",
            "serving_saved_model_half_plus_two_cpu"
        ]
    );
    let model = get_json(
        &server,
        "/api/v2/model/serving_saved_model_half_plus_two_cpu",
    );
    assert_eq!(model["versions"].as_array().unwrap().len(), 2);
    // Nothing of the uploads is left once they are built.
    let uploads = server.home.join("manager/uploads");
    assert_eq!(std::fs::read_dir(uploads).unwrap().count(), 0);
}

#[test]
fn four_uploads_at_once_get_four_distinct_versions() {
    let work = TempDir::new().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    let children: Vec<_> = (0..4)
        .map(|i| {
            server
                .upload(
                    &work.path().join(format!("client{i}")),
                    &example_dir(),
                    &["--json", "--base", "scratch"],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let versions = versions_of_uploads(children);
    assert_eq!(versions, [1, 2, 3, 4]);
    let tags = get_json(&server, "/v2/example_tokenizer_model/tags/list");
    let mut tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    tags.sort();
    assert_eq!(tags, ["1", "2", "3", "4"]);
}

/// A model whose build takes a while: a weights file of `size` bytes (sparse: cheap to make).
fn slow_model(dir: &Path, size: u64) -> PathBuf {
    let model = dir.join("slow_model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("serving.yaml"),
        "kind: Model\nname: slow_model\nmodel-type: python:3.11\npayload: [weights.bin]\ncontract:\n  predict:\n    inputs:\n      x: {shape: [-1], type: float32}\n    outputs:\n      y: {shape: [-1], type: float32}\n",
    )
    .unwrap();
    std::fs::File::create(model.join("weights.bin"))
        .unwrap()
        .set_len(size)
        .unwrap();
    model
}

#[test]
fn a_server_killed_during_a_build_shows_it_failed_after_restart_and_the_queue_refuses_when_full() {
    let work = TempDir::new().unwrap();
    let home = work.path().join("server");
    let mut server = ManagerServer::start(&home, &["--builders", "1", "--queue", "1"]);
    let model = slow_model(work.path(), 1 << 30);
    let accepted = json_of(&run_ok(&mut server.upload(
        &work.path().join("client"),
        &model,
        &["--json", "--async", "--base", "scratch"],
    )));
    assert_eq!(accepted["status"], "Pending");
    assert_eq!(accepted["version"], 1);

    // One place in the queue, taken: the next upload is refused, not piled up.
    let refused = run_fail(&mut server.upload(
        &work.path().join("client"),
        &example_dir(),
        &["--base", "scratch"],
    ));
    assert!(
        refused.contains("HTTP 503") && refused.contains("queue is full"),
        "{refused}"
    );

    wait_for_status(&server, "slow_model", 1, &["Running"], BUILD);
    server.kill_hard();

    let server = ManagerServer::start(&home, &[]);
    let failed = get_json(&server, "/api/v2/model/version/slow_model/1");
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("ended before the build finished"),
        "{failed}"
    );
    let uploads = home.join("manager/uploads");
    assert_eq!(std::fs::read_dir(&uploads).unwrap().count(), 0);

    let next = json_of(&run_ok(&mut server.upload(
        &work.path().join("client"),
        &example_dir(),
        &["--json", "--base", "scratch"],
    )));
    assert_eq!(next["status"], "Finished");
    assert_eq!(next["version"], 1);
    let slow_again = json_of(&run_ok(&mut server.upload(
        &work.path().join("client"),
        &slow_model(work.path(), 1 << 20),
        &["--json", "--base", "scratch"],
    )));
    assert_eq!(slow_again["version"], 2);
    assert_eq!(slow_again["status"], "Finished");
}

#[test]
fn sigterm_stops_the_server_promptly_and_marks_the_unfinished_build_failed() {
    let work = TempDir::new().unwrap();
    let home = work.path().join("server");
    let mut server = ManagerServer::start(&home, &[]);
    let model = slow_model(work.path(), 1 << 30);
    run_ok(&mut server.upload(
        &work.path().join("client"),
        &model,
        &["--async", "--base", "scratch"],
    ));
    wait_for_status(&server, "slow_model", 1, &["Running"], BUILD);
    // A client following the log must not keep the server from stopping.
    let stream = client()
        .get(server.url("/api/v2/model/version/slow_model/1/logs"))
        .send()
        .unwrap();
    assert_eq!(stream.status(), 200);
    run_ok(std::process::Command::new("kill").args(["-TERM", &server.child.id().to_string()]));
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not stop: {}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    drop(stream);
    let server = ManagerServer::start(&home, &[]);
    let failed = get_json(&server, "/api/v2/model/version/slow_model/1");
    assert_eq!(failed["status"], "Failed", "{failed}");
    assert!(
        failed["error"].as_str().unwrap().contains("server stopped"),
        "{failed}"
    );
}

/// The events of a finished version's log stream: (event, id, data).
fn events(
    server: &ManagerServer,
    path: &str,
    last_event_id: Option<&str>,
) -> Vec<(String, String, String)> {
    let mut request = client().get(server.url(path));
    if let Some(id) = last_event_id {
        request = request.header("Last-Event-ID", id);
    }
    let response = request.send().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let text = response.text().unwrap();
    text.split("\n\n")
        .filter(|block| !block.trim().is_empty() && !block.starts_with(':'))
        .map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .filter_map(|l| l.strip_prefix(&format!("{name}: ")))
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            (field("event"), field("id"), field("data"))
        })
        .collect()
}

#[test]
fn the_build_log_streams_as_events_that_resume_after_the_last_id() {
    let work = TempDir::new().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    run_ok(&mut server.upload(
        &work.path().join("client"),
        &example_dir(),
        &["--base", "scratch"],
    ));
    let path = "/api/v2/model/version/example_tokenizer_model/1/logs";
    let all = events(&server, path, None);
    let logs: Vec<_> = all.iter().filter(|e| e.0 == "log").collect();
    assert!(logs.len() >= 3, "{all:?}");
    for (i, event) in logs.iter().enumerate() {
        assert_eq!(event.1, (i + 1).to_string());
    }
    assert!(
        logs.iter().any(|e| e.2.starts_with("manifest sha256:")),
        "{logs:?}"
    );
    let last = all.last().unwrap();
    assert_eq!(last.0, "status");
    let status: serde_json::Value = serde_json::from_str(&last.2).unwrap();
    assert_eq!(status["status"], "Finished");
    assert_eq!(
        status["image"],
        format!("{}/example_tokenizer_model:1", server.host())
    );

    // A client that had line 1 gets the rest, then the final status.
    let resumed = events(&server, path, Some("1"));
    let resumed_logs: Vec<_> = resumed.iter().filter(|e| e.0 == "log").collect();
    assert_eq!(resumed_logs.len(), logs.len() - 1);
    assert_eq!(resumed_logs[0].1, "2");
    assert_eq!(resumed.last().unwrap().0, "status");
    // The query form, for clients that cannot set headers.
    let by_query = events(
        &server,
        &format!("{path}?last-event-id={}", logs.len()),
        None,
    );
    assert!(by_query.iter().all(|e| e.0 == "status"), "{by_query:?}");

    let missing = client()
        .get(server.url("/api/v2/model/version/example_tokenizer_model/9/logs"))
        .send()
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body = json(missing);
    assert!(body["error"].as_str().unwrap().contains("no version 9"));
}

#[test]
fn htpasswd_protects_the_api_the_page_and_the_registry() {
    let Some(htpasswd) = tool("htpasswd") else {
        return;
    };
    let work = TempDir::new().unwrap();
    let file = work.path().join("htpasswd");
    let output = run_ok(std::process::Command::new(htpasswd).args(["-Bbn", "alice", "s3cret"]));
    std::fs::write(&file, output.stdout).unwrap();
    let server = ManagerServer::start(
        &work.path().join("server"),
        &["--htpasswd", file.to_str().unwrap()],
    );
    for path in ["/", "/api/v2/model", "/v2/", "/openapi.yaml"] {
        let response = client().get(server.url(path)).send().unwrap();
        assert_eq!(response.status(), 401, "{path}");
        assert!(
            response.headers().contains_key("www-authenticate"),
            "{path}"
        );
        // Each server answers in its own envelope: the registry's `errors` at /v2/, the
        // manager's `error` everywhere else.
        let body = json(response);
        if path == "/v2/" {
            assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
        } else {
            assert!(body["error"].is_string(), "{path}: {body}");
        }
        let response = client()
            .get(server.url(path))
            .basic_auth("alice", Some("s3cret"))
            .send()
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
    }
    let refused = run_fail(&mut server.upload(
        &work.path().join("client"),
        &example_dir(),
        &["--base", "scratch"],
    ));
    assert!(refused.contains("401"), "{refused}");
    let output = run_ok(
        server
            .upload(
                &work.path().join("client"),
                &example_dir(),
                &["--json", "--base", "scratch"],
            )
            .env("MLAMBDA_REGISTRY_USERNAME", "alice")
            .env("MLAMBDA_REGISTRY_PASSWORD", "s3cret"),
    );
    assert_eq!(json_of(&output)["status"], "Finished");
}

#[test]
fn over_https_the_client_trusts_the_servers_certificate_only_when_told() {
    let work = TempDir::new().unwrap();
    let Some((cert, key)) = self_signed_cert(work.path()) else {
        return;
    };
    let server = ManagerServer::start(
        &work.path().join("server"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let upload = |extra: &[&str]| {
        let mut command = mlambda(&work.path().join("client"));
        command
            .arg("upload")
            .arg(example_dir())
            .args([
                "--host",
                "https://127.0.0.1",
                "--port",
                &server.port.to_string(),
            ])
            .args(["--base", "scratch", "--json"])
            .args(extra);
        command
    };
    let refused = run_fail(&mut upload(&[]));
    assert!(refused.contains("certificate"), "{refused}");
    let document = json_of(&run_ok(&mut upload(&["--ca-cert", cert.to_str().unwrap()])));
    assert_eq!(document["status"], "Finished", "{document}");
}

// ---- Hostile and broken uploads: refused with a JSON error, nothing recorded or left. ----

/// A tar entry written byte by byte, so that names and links a well-behaved archiver refuses
/// can be made.
fn raw_entry(out: &mut Vec<u8>, name: &str, kind: tar::EntryType, link: &str, data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn gzip(tar_bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(tar_bytes).unwrap();
    encoder.finish().unwrap()
}

/// A good folder's entries (serving.yaml and one source file), then `extra`.
fn archive_with(extra: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut tar_bytes = Vec::new();
    let serving = std::fs::read(example_dir().join("serving.yaml")).unwrap();
    raw_entry(
        &mut tar_bytes,
        "serving.yaml",
        tar::EntryType::Regular,
        "",
        &serving,
    );
    raw_entry(&mut tar_bytes, "src/", tar::EntryType::Directory, "", b"");
    raw_entry(
        &mut tar_bytes,
        "src/func_main.py",
        tar::EntryType::Regular,
        "",
        b"def tokenize(x):\n    return x\n",
    );
    raw_entry(
        &mut tar_bytes,
        "requirements.txt",
        tar::EntryType::Regular,
        "",
        b"nltk\n",
    );
    extra(&mut tar_bytes);
    tar_bytes.extend_from_slice(&[0u8; 1024]);
    tar_bytes
}

/// The good folder plus one entry without data (a link, a device, a directory).
fn with_entry(name: &str, kind: tar::EntryType, link: &str) -> Vec<u8> {
    gzip(&archive_with(|t| raw_entry(t, name, kind, link, b"")))
}

fn assert_nothing_left(server: &ManagerServer, outside: &Path) {
    assert_eq!(get_json(server, "/api/v2/model"), serde_json::json!([]));
    let uploads = server.home.join("manager/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(left.is_empty(), "left in {}: {left:?}", uploads.display());
    assert!(!outside.exists(), "{} was written", outside.display());
}

#[test]
fn hostile_archives_are_refused_with_400_and_nothing_is_left_behind() {
    let work = TempDir::new().unwrap();
    let home = work.path().join("server");
    let server = ManagerServer::start(&home, &["--max-unpacked", "8M"]);
    // Where an escaping entry would land: beside the uploads area, in the server's home.
    let outside = home.join("manager/evil");
    let metadata = r#"{"name": "hostile", "runtime": "scratch"}"#;
    type Case = (&'static str, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (
            "not gzip",
            b"PK\x03\x04 this is a zip, not a tar.gz".to_vec(),
            400,
            "not a gzip",
        ),
        ("plain tar", archive_with(|_| {}), 400, "not a gzip"),
        (
            "gzip of garbage",
            gzip(&[7u8; 4096]),
            400,
            "not a valid tar",
        ),
        (
            "dot-dot path",
            gzip(&archive_with(|t| {
                raw_entry(t, "../evil", tar::EntryType::Regular, "", b"x")
            })),
            400,
            "'..'",
        ),
        (
            "absolute path",
            gzip(&archive_with(|t| {
                raw_entry(t, "/tmp/mlambda-evil", tar::EntryType::Regular, "", b"x")
            })),
            400,
            "absolute",
        ),
        (
            "symlink to an absolute path",
            with_entry("passwd", tar::EntryType::Symlink, "/etc/passwd"),
            400,
            "points outside",
        ),
        (
            "symlink climbing out",
            with_entry("up", tar::EntryType::Symlink, "../../evil"),
            400,
            "points outside",
        ),
        (
            "symlink chain resolving outside",
            gzip(&archive_with(|t| {
                raw_entry(t, "x/", tar::EntryType::Directory, "", b"");
                raw_entry(t, "x/a", tar::EntryType::Symlink, "..", b"");
                raw_entry(t, "b", tar::EntryType::Symlink, "x/a/..", b"");
            })),
            400,
            "resolves outside",
        ),
        (
            "file written through a symlink",
            gzip(&archive_with(|t| {
                raw_entry(t, "inside", tar::EntryType::Symlink, "src", b"");
                raw_entry(t, "inside/evil.py", tar::EntryType::Regular, "", b"x");
            })),
            400,
            "symbolic link",
        ),
        (
            "hard link out",
            with_entry("h", tar::EntryType::Link, "../../evil"),
            400,
            "outside",
        ),
        (
            "hard link to a system file",
            with_entry("h", tar::EntryType::Link, "/etc/passwd"),
            400,
            "outside",
        ),
        (
            "character device",
            with_entry("null", tar::EntryType::Char, ""),
            400,
            "device",
        ),
        (
            "block device",
            with_entry("sda", tar::EntryType::Block, ""),
            400,
            "device",
        ),
        (
            "fifo",
            with_entry("pipe", tar::EntryType::Fifo, ""),
            400,
            "pipes",
        ),
        (
            "size bomb",
            gzip(&archive_with(|t| {
                raw_entry(
                    t,
                    "zeros.bin",
                    tar::EntryType::Regular,
                    "",
                    &vec![0u8; 16 << 20],
                )
            })),
            413,
            "more than 8388608 bytes",
        ),
    ];
    for (name, payload, status, words) in cases {
        let (got, body) = post_upload(&server, payload, metadata);
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{name}: {body}");
        assert!(error.contains(words), "{name}: '{words}' not in: {error}");
        assert_nothing_left(&server, &outside);
        assert!(!Path::new("/tmp/mlambda-evil").exists());
    }
}

#[test]
fn broken_uploads_say_what_is_wrong_and_record_nothing() {
    let work = TempDir::new().unwrap();
    let home = work.path().join("server");
    let server = ManagerServer::start(&home, &["--max-upload", "1M"]);
    let good = || gzip(&archive_with(|_| {}));
    let outside = home.join("manager/evil");

    let (status, body) = post_upload(&server, good(), "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("not valid JSON"),
        "{body}"
    );

    // No name anywhere: the server's folder name means nothing, so it is not used.
    let nameless = gzip(&archive_with_serving(
        "kind: Model\nmodel-type: python:3.11\ncontract:\n  f:\n    inputs: {x: {type: string}}\n    outputs: {y: {type: string}}\n",
    ));
    let (status, body) = post_upload(&server, nameless, "{}");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no name"),
        "{body}"
    );

    // A serving.yaml mistake is located as on the command line.
    let typo = gzip(&archive_with_serving(
        "kind: Model\nname: typo\nmodel-type: python:3.11\ncontract:\n  f:\n    inputs: {x: {type: strnig}}\n    outputs: {y: {type: string}}\n",
    ));
    let (status, body) = post_upload(&server, typo, "{}");
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("serving.yaml:6:") && error.contains("did you mean 'string'"),
        "{error}"
    );

    let (status, body) = post_upload(&server, good(), r#"{"runtime": "no-such-runtime"}"#);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not in this server's store"),
        "{body}"
    );

    let (status, body) = post_upload(
        &server,
        good(),
        r#"{"contract": {"f": {"inputs": {"x": {"type": "flaot"}}, "outputs": {"y": {"type": "string"}}}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("did you mean 'float'"),
        "{body}"
    );

    let too_big = gzip(&archive_with(|t| {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..(3u32 << 20))
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        raw_entry(t, "noise.bin", tar::EntryType::Regular, "", &noise)
    }));
    assert!(too_big.len() > 1 << 20);
    let (status, body) = post_upload(&server, too_big, "{}");
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("--max-upload"),
        "{body}"
    );

    let form = reqwest::blocking::multipart::Form::new().text("metadata", "{}");
    let response = client()
        .post(server.url("/api/v2/model/upload"))
        .multipart(form)
        .send()
        .unwrap();
    assert_eq!(response.status(), 400);
    let body = json(response);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no `payload` part"),
        "{body}"
    );
    assert_nothing_left(&server, &outside);

    // The metadata's contract and metadata win over the folder's.
    let (status, body) = post_upload(
        &server,
        good(),
        r#"{"name": "given", "contract": {"g": {"inputs": {"a": {"type": "int64", "shape": [2]}}, "outputs": {"b": {"type": "string"}}}}, "metadata": {"team": "nlp", "epochs": 3}}"#,
    );
    assert_eq!(status, 201, "{body}");
    let version = wait_for_status(&server, "given", 1, &["Finished", "Failed"], BUILD);
    assert_eq!(version["status"], "Finished", "{version}");
    assert_eq!(version["contract"]["signatures"][0]["name"], "g");
    assert_eq!(version["contract_source"], "the upload's metadata");
}

fn archive_with_serving(serving: &str) -> Vec<u8> {
    let mut tar_bytes = Vec::new();
    raw_entry(
        &mut tar_bytes,
        "serving.yaml",
        tar::EntryType::Regular,
        "",
        serving.as_bytes(),
    );
    raw_entry(
        &mut tar_bytes,
        "main.py",
        tar::EntryType::Regular,
        "",
        b"pass\n",
    );
    tar_bytes.extend_from_slice(&[0u8; 1024]);
    tar_bytes
}
