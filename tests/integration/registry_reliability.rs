//! `mlambda registry serve` (and the manager's `/v2/`) under races, hostile requests,
//! killed writers and garbage collection: every answer is one a client can trust, and the
//! store stays one that skopeo and umoci read (checked with `common::store_check`).

use crate::common;

use common::http::{Served as Server, client, header, json};
use common::manager::ManagerServer;
use common::registry::registry_serve;
use common::store_check::{assert_store_consistent, repositories};
use common::*;
use mlambda::oci::digest::sha256_of;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

fn push_blob(s: &Server, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_of(bytes);
    let r = s.post(
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        bytes.to_vec(),
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    digest
}

fn put_manifest(s: &Server, repo: &str, reference: &str, media: &str, bytes: &[u8]) -> Response {
    client()
        .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", media)
        .body(bytes.to_vec())
        .send()
        .unwrap()
}

/// A real (tiny) image in `repo`: an empty tar layer, an OCI image config, and a manifest
/// whose annotation `note` makes its digest unique. Pushes the blobs; returns the manifest.
fn real_image(s: &Server, repo: &str, note: &str) -> Vec<u8> {
    let layer = vec![0u8; 1024];
    let layer_digest = push_blob(s, repo, &layer);
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    }))
    .unwrap();
    let config_digest = push_blob(s, repo, &config);
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": LAYER, "digest": layer_digest, "size": layer.len()}],
        "annotations": {"note": note},
    }))
    .unwrap()
}

fn status_and_code(r: Response) -> (u16, String) {
    let status = r.status().as_u16();
    let text = r.text().unwrap();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["errors"][0]["code"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status, code)
}

fn tags(s: &Server, repo: &str) -> Vec<String> {
    let r = s.get(&format!("/v2/{repo}/tags/list"));
    if r.status() != StatusCode::OK {
        return Vec::new();
    }
    let body = json(r);
    body["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn catalog(s: &Server) -> Vec<String> {
    let body = json(s.get("/v2/_catalog"));
    body["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

fn gc(root: &Path, extra: &[&str]) -> serde_json::Value {
    let out = run_ok(
        Command::new(mlambda_bin())
            .args(["registry", "gc", "--json", "--root"])
            .arg(root)
            .args(extra),
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Item 1 of issue #16: a PUT of a tag and a DELETE of the same manifest by digest, sent at
/// once, never both succeed into a tag that names a manifest that is gone.
#[test]
fn a_manifest_put_racing_a_delete_of_its_digest_has_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = Arc::new(registry_serve(&root, &[]));
    for attempt in 0..60 {
        let manifest = real_image(&s, "tok", &format!("attempt {attempt}"));
        let digest = sha256_of(&manifest);
        // The manifest is stored once, so that the DELETE has something to remove.
        let r = put_manifest(&s, "tok", &digest, MANIFEST, &manifest);
        assert_eq!(r.status(), StatusCode::CREATED);
        let barrier = Arc::new(Barrier::new(2));
        let (s2, b2, d2) = (s.clone(), barrier.clone(), digest.clone());
        let deleter = std::thread::spawn(move || {
            b2.wait();
            s2.delete(&format!("/v2/tok/manifests/{d2}")).status()
        });
        barrier.wait();
        let put = put_manifest(&s, "tok", "t", MANIFEST, &manifest).status();
        let deleted = deleter.join().unwrap();
        assert!(put.is_success() || put == StatusCode::BAD_REQUEST, "{put}");
        assert!(deleted.is_success() || deleted == StatusCode::NOT_FOUND);
        if tags(&s, "tok").contains(&"t".to_string()) {
            let r = s.get("/v2/tok/manifests/t");
            assert_eq!(
                r.status(),
                StatusCode::OK,
                "attempt {attempt}: t is listed but cannot be read (PUT {put}, DELETE {deleted})"
            );
        }
    }
    assert_store_consistent(&root, None);
}

/// Item 3: a blob DELETE of a manifest's digest is not a way around the manifest API.
#[test]
fn a_blob_delete_never_removes_a_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let manifest = real_image(&s, "m", "tagged");
    let digest = sha256_of(&manifest);
    assert_eq!(
        put_manifest(&s, "m", "t", MANIFEST, &manifest).status(),
        StatusCode::CREATED
    );
    // A child of an index, pushed by digest only.
    let child = real_image(&s, "m", "child");
    let child_digest = sha256_of(&child);
    assert_eq!(
        put_manifest(&s, "m", &child_digest, MANIFEST, &child).status(),
        StatusCode::CREATED
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": child_digest, "size": child.len()}],
    }))
    .unwrap();
    assert_eq!(
        put_manifest(&s, "m", "multi", INDEX, &index).status(),
        StatusCode::CREATED
    );
    for target in [&digest, &child_digest] {
        let r = s.delete(&format!("/v2/m/blobs/{target}"));
        assert_eq!(status_and_code(r), (404, "BLOB_UNKNOWN".into()), "{target}");
    }
    assert_eq!(s.get("/v2/m/manifests/t").status(), StatusCode::OK);
    assert_eq!(
        s.get(&format!("/v2/m/manifests/{child_digest}")).status(),
        StatusCode::OK
    );
    assert_store_consistent(&root, None);
}

/// Item 4 (and issue #15): the version `upload` records is immutable in the registry that
/// serves the store: another image pushed to `name:1` is refused with DENIED.
#[test]
fn a_version_tag_recorded_by_upload_cannot_be_replaced_through_registry_serve() {
    let Some(skopeo) = tool("skopeo") else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let uploaded = json_of(&run_ok(
        mlambda(&home)
            .args(["upload", "--json", "--base", "scratch"])
            .arg(example_dir()),
    ));
    let digest = uploaded["digest"].as_str().unwrap().to_string();
    let name = uploaded["name"].as_str().unwrap().to_string();
    let other = dir.path().join("other");
    copy_tree(&example_dir(), &other);
    std::fs::write(other.join("src/extra.txt"), "another image").unwrap();
    let layout = dir.path().join("layout");
    run_ok(
        mlambda(&dir.path().join("builder"))
            .arg("build")
            .arg(&other)
            .args(["--base", "scratch", "--output"])
            .arg(format!("oci:{}:1", layout.display())),
    );
    let s = registry_serve(&home.join("registry"), &[]);
    let out = Command::new(&skopeo)
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{}/{name}:1", s.host()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the overwrite was accepted");
    assert!(stderr.to_lowercase().contains("denied"), "{stderr}");
    assert!(!stderr.contains(&home.display().to_string()), "{stderr}");
    let shown = json_of(&run_ok(mlambda(&home).args([
        "show",
        &format!("{name}:1"),
        "--json",
    ])));
    assert_eq!(shown["digest"], digest.as_str());
    let r = s.head(&format!("/v2/{name}/manifests/1"));
    assert_eq!(header(&r, "Docker-Content-Digest"), digest);
    // Nor may a client delete it, by tag or by digest.
    for reference in ["1", digest.as_str()] {
        let r = s.delete(&format!("/v2/{name}/manifests/{reference}"));
        assert_eq!(
            status_and_code(r),
            (405, "UNSUPPORTED".into()),
            "{reference}"
        );
    }
    drop(s);
    assert_store_consistent(&home.join("registry"), Some(&home));
}

/// Item 4: `--immutable-tags` makes every pushed tag immutable; an identical push is fine,
/// and only `--allow-delete-immutable` lets a tag be deleted.
#[test]
fn immutable_tags_refuse_any_move_and_accept_an_identical_push() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &["--immutable-tags"]);
    let first = real_image(&s, "i", "first");
    let second = real_image(&s, "i", "second");
    assert_eq!(
        put_manifest(&s, "i", "latest", MANIFEST, &first).status(),
        StatusCode::CREATED
    );
    assert_eq!(
        put_manifest(&s, "i", "latest", MANIFEST, &first).status(),
        StatusCode::CREATED,
        "an identical re-push is idempotent"
    );
    let r = put_manifest(&s, "i", "latest", MANIFEST, &second);
    assert_eq!(status_and_code(r), (403, "DENIED".into()));
    let r = s.head("/v2/i/manifests/latest");
    assert_eq!(header(&r, "Docker-Content-Digest"), sha256_of(&first));
    // The tag parameter is held to the same rule.
    let r = client()
        .put(s.url(&format!(
            "/v2/i/manifests/{}?tag=latest",
            sha256_of(&second)
        )))
        .header("Content-Type", MANIFEST)
        .body(second.clone())
        .send()
        .unwrap();
    assert_eq!(status_and_code(r), (403, "DENIED".into()));
    let r = s.delete("/v2/i/manifests/latest");
    assert_eq!(status_and_code(r), (405, "UNSUPPORTED".into()));
    drop(s);
    let s = registry_serve(&root, &["--immutable-tags", "--allow-delete-immutable"]);
    assert_eq!(
        s.delete("/v2/i/manifests/latest").status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        put_manifest(&s, "i", "latest", MANIFEST, &second).status(),
        StatusCode::CREATED
    );
    assert_store_consistent(&root, None);

    // skopeo pushes under the flag as under no flag, and gets DENIED for a moved tag.
    let Some(skopeo) = tool("skopeo") else { return };
    let layout = dir.path().join("layout");
    run_ok(
        mlambda(&dir.path().join("home"))
            .arg("build")
            .arg(example_dir())
            .args(["--base", "scratch", "--output"])
            .arg(format!("oci:{}:1", layout.display())),
    );
    let push = |tag: &str| {
        Command::new(&skopeo)
            .args(["copy", "--preserve-digests", "--dest-tls-verify=false"])
            .arg(format!("oci:{}:1", layout.display()))
            .arg(format!("docker://{}/i:{tag}", s.host()))
            .output()
            .unwrap()
    };
    assert!(push("v1").status.success());
    assert!(push("v1").status.success(), "an identical re-push");
    let out = push("latest");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .to_lowercase()
            .contains("denied")
    );
}

/// Item 4: the manager's `/v2/` keeps numeric (version) tags immutable; others move.
#[test]
fn the_managers_registry_keeps_numeric_tags_immutable() {
    let dir = tempfile::tempdir().unwrap();
    let manager = ManagerServer::start(&dir.path().join("home"), &[]);
    let first = real_image(&manager, "n", "first");
    let second = real_image(&manager, "n", "second");
    for tag in ["7", "edge"] {
        assert_eq!(
            put_manifest(&manager, "n", tag, MANIFEST, &first).status(),
            StatusCode::CREATED
        );
    }
    let r = put_manifest(&manager, "n", "7", MANIFEST, &second);
    assert_eq!(status_and_code(r), (403, "DENIED".into()));
    assert_eq!(
        put_manifest(&manager, "n", "edge", MANIFEST, &second).status(),
        StatusCode::CREATED
    );
    let r = manager.delete("/v2/n/manifests/7");
    assert_eq!(status_and_code(r), (405, "UNSUPPORTED".into()));
}

/// Item 9: what a killed build or an abandoned push left in a repository (blobs that no
/// manifest names) is garbage, collected from the repository and the pool.
#[test]
fn gc_collects_repository_blobs_that_no_manifest_names() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let kept = real_image(&s, "g", "kept");
    assert_eq!(
        put_manifest(&s, "g", "1", MANIFEST, &kept).status(),
        StatusCode::CREATED
    );
    let big = vec![7u8; 1 << 20];
    let orphan = push_blob(&s, "g", &big);
    push_blob(&s, "lonely", b"only a blob");
    drop(s);
    let report = gc(&root, &["--grace", "0s"]);
    assert!(
        report["bytes"].as_u64().unwrap() >= 1 << 20,
        "freed {report}"
    );
    assert!(!root.join("g/blobs/sha256").join(&orphan[7..]).exists());
    assert!(!root.join("_blobs/blobs/sha256").join(&orphan[7..]).exists());
    // The repository left with nothing in it is gone; the image is whole.
    assert_eq!(repositories(&root), ["g"]);
    assert_store_consistent(&root, None);
    let s = registry_serve(&root, &[]);
    assert_eq!(s.get("/v2/g/manifests/1").status(), StatusCode::OK);
}

/// Item 10: a repository appears only once something is in it, and is valid from the start.
#[test]
fn refused_or_cancelled_uploads_leave_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    // POST, then cancel.
    let r = s.post("/v2/cancelled/blobs/uploads/", Vec::new());
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "Location");
    assert_eq!(s.delete(&location).status(), StatusCode::NO_CONTENT);
    // A monolithic push with the wrong digest.
    let r = s.post(
        &format!("/v2/wrong/blobs/uploads/?digest={}", sha256_of(b"other")),
        b"content".to_vec(),
    );
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A mount from nowhere falls back to a session, which is abandoned.
    let r = s.post(
        &format!(
            "/v2/mounted/blobs/uploads/?mount={}&from=nowhere",
            sha256_of(b"x")
        ),
        Vec::new(),
    );
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(catalog(&s), Vec::<String>::new());
    for name in ["cancelled", "wrong", "mounted"] {
        assert!(!root.join(name).exists(), "{name} was left");
    }
    // A repository exists as soon as a blob lands, and is a valid layout at once.
    push_blob(&s, "landed", b"a blob");
    assert_eq!(catalog(&s), ["landed"]);
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("landed/index.json")).unwrap()).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    if let Some(umoci) = tool("umoci") {
        run_ok(
            Command::new(umoci)
                .args(["ls", "--layout"])
                .arg(root.join("landed")),
        );
    }
    // An invalid leftover of an older version (a layout with no index.json) is not listed,
    // and gc removes it.
    let leftover = root.join("old/leftover");
    std::fs::create_dir_all(leftover.join("blobs/sha256")).unwrap();
    std::fs::write(
        leftover.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    assert_eq!(catalog(&s), ["landed"]);
    drop(s);
    gc(&root, &["--grace", "0s"]);
    assert!(!root.join("old").exists());
}

/// Item 11: a gc with no grace at all, run again and again during builds, fails none of
/// them; what a killed build leaves is still collected.
#[test]
fn gc_with_no_grace_during_builds_fails_none_of_them() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let model = dir.path().join("model");
    copy_tree(&example_dir(), &model);
    // Enough bytes that each build spends a while writing its layer.
    let weights: Vec<u8> = (0..24u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(model.join("src/weights.bin"), weights).unwrap();
    let root = home.join("registry");
    std::fs::create_dir_all(&root).unwrap();
    let builds: Vec<_> = (0..4)
        .map(|_| {
            mlambda(&home)
                .args(["upload", "--json", "--base", "scratch"])
                .arg(&model)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let collector = {
        let (stop, root) = (stop.clone(), root.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                run_ok(
                    Command::new(mlambda_bin())
                        .args(["registry", "gc", "--grace", "0s", "--root"])
                        .arg(&root),
                );
                rounds += 1;
            }
            rounds
        })
    };
    for build in builds {
        let out = build.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a build failed during gc: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(collector.join().unwrap() > 0);
    assert_store_consistent(&root, Some(&home));
}

/// Item 12: manifests skopeo and umoci could not read are refused as distribution does.
#[test]
fn manifests_that_are_not_valid_oci_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let good: serde_json::Value = serde_json::from_slice(&real_image(&s, "v", "good")).unwrap();
    let mut no_media = good.clone();
    no_media.as_object_mut().unwrap().remove("mediaType");
    let mut index_with_layers = good.clone();
    index_with_layers["mediaType"] = INDEX.into();
    let mut object_annotation = good.clone();
    object_annotation["annotations"] = serde_json::json!({"a": {"nested": true}});
    for (what, content_type, body) in [
        ("unknown content type", "application/x-foo", &no_media),
        (
            "index carrying config and layers",
            INDEX,
            &index_with_layers,
        ),
        ("annotation that is an object", MANIFEST, &object_annotation),
    ] {
        let bytes = serde_json::to_vec(body).unwrap();
        let r = put_manifest(&s, "v", "t", content_type, &bytes);
        assert_eq!(
            status_and_code(r),
            (400, "MANIFEST_INVALID".into()),
            "{what}"
        );
    }
    assert!(tags(&s, "v").is_empty());
    // Docker schema 2 stays welcome.
    let mut docker = good.clone();
    docker["mediaType"] = "application/vnd.docker.distribution.manifest.v2+json".into();
    docker["config"]["mediaType"] = "application/vnd.docker.container.image.v1+json".into();
    docker["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.diff.tar".into();
    let r = put_manifest(
        &s,
        "v",
        "docker",
        "application/vnd.docker.distribution.manifest.v2+json",
        &serde_json::to_vec(&docker).unwrap(),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_store_consistent(&root, None);
}

/// Item 13: the longest names the spec allows work end to end; no answer carries a path
/// of the server.
#[test]
fn names_of_251_to_255_characters_work_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    for length in [251, 255] {
        let name = "n".repeat(length);
        let manifest = real_image(&s, &name, "long");
        let r = put_manifest(&s, &name, "1", MANIFEST, &manifest);
        let status = r.status();
        let text = r.text().unwrap();
        assert_eq!(status, StatusCode::CREATED, "{length}: {text}");
        assert_eq!(
            s.get(&format!("/v2/{name}/manifests/1")).status(),
            StatusCode::OK
        );
        assert!(catalog(&s).contains(&name));
    }
    let r = s.get(&format!("/v2/{}/tags/list", "n".repeat(256)));
    assert_eq!(status_and_code(r), (400, "NAME_INVALID".into()));
    assert!(!s.log_text().contains(" 500 "), "{}", s.log_text());
    assert_store_consistent(&root, None);
}

/// Item 17: HEAD answers like GET without a body; a Range that cannot be parsed is ignored.
#[test]
fn head_on_lists_and_unparseable_ranges_are_answered_like_get() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let blob = push_blob(&s, "h", b"0123456789");
    for path in ["/v2/_catalog", "/v2/h/tags/list"] {
        let get = s.get(path);
        let length = header(&get, "Content-Length");
        let r = s.head(path);
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(header(&r, "Content-Length"), length, "{path}");
        assert!(r.bytes().unwrap().is_empty());
    }
    for range in ["garbage", "bytes=3-2", "items=0-1", "bytes=0-1,3-4"] {
        let r = client()
            .get(s.url(&format!("/v2/h/blobs/{blob}")))
            .header("Range", range)
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{range}");
        assert_eq!(r.bytes().unwrap().as_ref(), b"0123456789");
    }
    let r = client()
        .get(s.url(&format!("/v2/h/blobs/{blob}")))
        .header("Range", "bytes=20-")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
}

/// The conformance suite's categories (pull, push, discovery, management) hold with
/// `--immutable-tags` on, as long as no tag is moved; deletes need the admin override.
#[test]
fn the_protocol_holds_with_immutable_tags_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &["--immutable-tags", "--allow-delete-immutable"]);
    // Push: a chunked blob upload, then a manifest by digest, by tag and by tag parameters.
    let r = s.post("/v2/c/r1/blobs/uploads/", Vec::new());
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let location = header(&r, "Location");
    let r = client()
        .patch(s.url(&location))
        .header("Content-Range", "0-4")
        .body(b"chunk".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let digest = sha256_of(b"chunk");
    let r = s.put(
        &format!("{}?digest={digest}", header(&r, "Location")),
        Vec::new(),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    let manifest = real_image(&s, "c/r1", "conformance");
    let manifest_digest = sha256_of(&manifest);
    for reference in [manifest_digest.as_str(), "tagtest0", "tagtest0"] {
        let r = put_manifest(&s, "c/r1", reference, MANIFEST, &manifest);
        assert_eq!(r.status(), StatusCode::CREATED, "{reference}");
    }
    let r = client()
        .put(s.url(&format!(
            "/v2/c/r1/manifests/{manifest_digest}?tag=tagtest1&tag=tagtest2"
        )))
        .header("Content-Type", MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Pull and discovery.
    assert_eq!(
        s.get(&format!("/v2/c/r1/blobs/{digest}"))
            .bytes()
            .unwrap()
            .as_ref(),
        b"chunk"
    );
    assert_eq!(
        s.get("/v2/c/r1/manifests/tagtest2")
            .bytes()
            .unwrap()
            .as_ref(),
        &manifest[..]
    );
    assert_eq!(tags(&s, "c/r1"), ["tagtest0", "tagtest1", "tagtest2"]);
    let r = s.get(&format!("/v2/c/r1/referrers/{manifest_digest}"));
    assert_eq!(r.status(), StatusCode::OK);
    // A cross-repository mount.
    let r = s.post(
        &format!("/v2/c/r2/blobs/uploads/?mount={digest}&from=c/r1"),
        Vec::new(),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_store_consistent(&root, None);
    // Management: tags, then the manifest, then blobs.
    for tag in ["tagtest0", "tagtest1"] {
        let r = s.delete(&format!("/v2/c/r1/manifests/{tag}"));
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{tag}");
    }
    let r = s.delete(&format!("/v2/c/r1/manifests/{manifest_digest}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(
        s.get("/v2/c/r1/manifests/tagtest2").status(),
        StatusCode::NOT_FOUND
    );
    let r = s.delete(&format!("/v2/c/r1/blobs/{digest}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_store_consistent(&root, None);
}
