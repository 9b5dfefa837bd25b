//! `mlambda registry serve` as a client sees it: the real binary on a free port of 127.0.0.1,
//! driven over plain HTTP (mirroring the OCI conformance suite's categories: pull, push,
//! content discovery, content management), with real clients (skopeo, umoci), auth, TLS,
//! many concurrent pushers, and garbage collection.

use crate::common;

use common::http::{Served as Server, client, error_code, header, json};
use common::registry::registry_serve;
use common::*;
use mlambda::oci::digest::sha256_of;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use std::path::{Path, PathBuf};
use std::process::Command;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const EMPTY: &str = "application/vnd.oci.empty.v1+json";

trait JsonBody {
    fn json_body(self) -> serde_json::Value;
}

impl JsonBody for Response {
    fn json_body(self) -> serde_json::Value {
        json(self)
    }
}

fn push_blob(s: &Server, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256_of(bytes);
    let r = s.post(
        &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
        bytes.to_vec(),
    );
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().unwrap());
    digest
}

fn image(
    config: &str,
    layers: &[(&str, usize)],
    subject: Option<&str>,
    artifact: Option<&str>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": EMPTY, "digest": config, "size": 2},
        "layers": layers.iter().map(|(d, s)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": s
        })).collect::<Vec<_>>(),
    });
    if let Some(subject) = subject {
        m["subject"] = serde_json::json!({"mediaType": MANIFEST, "digest": subject, "size": 1});
    }
    if let Some(artifact) = artifact {
        m["artifactType"] = artifact.into();
        m["annotations"] = serde_json::json!({"org.example.kind": artifact});
    }
    serde_json::to_vec(&m).unwrap()
}

fn put_manifest(s: &Server, repo: &str, reference: &str, media: &str, bytes: &[u8]) -> Response {
    client()
        .put(s.url(&format!("/v2/{repo}/manifests/{reference}")))
        .header("Content-Type", media)
        .body(bytes.to_vec())
        .send()
        .unwrap()
}

/// A small image in `repo`: config `{}` and one layer; its manifest bytes.
fn small_image(s: &Server, repo: &str, tag: &str, layer: &[u8]) -> Vec<u8> {
    let config = push_blob(s, repo, b"{}");
    let layer_digest = push_blob(s, repo, layer);
    let manifest = image(&config, &[(&layer_digest, layer.len())], None, None);
    let r = put_manifest(s, repo, tag, MANIFEST, &manifest);
    assert_eq!(r.status(), StatusCode::CREATED);
    manifest
}

#[test]
fn base_endpoint_and_invalid_names_digests_and_references() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let c = client();
    let r = s.get("/v2/");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        header(&r, "Docker-Distribution-API-Version"),
        "registry/2.0"
    );

    let good = sha256_of(b"x");
    for (path, status, expected) in [
        ("/v2/Bad/manifests/1", 400, "NAME_INVALID"),
        ("/v2/a/..%2Fb/manifests/1", 400, "NAME_INVALID"),
        ("/v2/a/%2E%2E%2F%2E%2E%2Fb/tags/list", 400, "NAME_INVALID"),
        ("/v2/_blobs/tags/list", 400, "NAME_INVALID"),
        ("/v2/a/blobs/sha256:1234", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/sha256:..%2F..%2Fetc", 400, "DIGEST_INVALID"),
        ("/v2/a/blobs/md5:00", 400, "DIGEST_INVALID"),
        ("/v2/a/manifests/sha256:zz", 400, "DIGEST_INVALID"),
        ("/v2/a/manifests/.bad", 404, "MANIFEST_UNKNOWN"),
        ("/v2/a/referrers/nope", 400, "DIGEST_INVALID"),
        ("/v2/nothere/manifests/1", 404, "NAME_UNKNOWN"),
        ("/v2/nothere/tags/list", 404, "NAME_UNKNOWN"),
        (&format!("/v2/nothere/blobs/{good}"), 404, "BLOB_UNKNOWN"),
        ("/v2/a/blobs/uploads/../../x", 404, "UNSUPPORTED"),
        (
            "/v2/a/blobs/uploads/00000000000000000000000000000000",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
        (
            "/v2/a/blobs/uploads/..%2F..%2Fx",
            404,
            "BLOB_UPLOAD_UNKNOWN",
        ),
    ] {
        let r = s.get(path);
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(error_code(r), expected, "{path}");
    }
    // Existing repository, unknown content.
    small_image(&s, "a", "1", b"layer");
    let r = s.get("/v2/a/manifests/2");
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "MANIFEST_UNKNOWN".into())
    );
    let r = c
        .get(s.url(&format!("/v2/a/blobs/{}", sha256_of(b"nope"))))
        .send()
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "BLOB_UNKNOWN".into())
    );
    let r = c
        .delete(s.url(&format!("/v2/a/manifests/{}", sha256_of(b"nope"))))
        .send()
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "MANIFEST_UNKNOWN".into())
    );
    // Upload ids belong to their repository.
    let r = c.post(s.url("/v2/a/blobs/uploads/")).send().unwrap();
    let location = header(&r, "Location");
    let other = location.replace("/v2/a/", "/v2/b/");
    let r = s.get(&other);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    // Nothing outside the store was touched, and the server logs one line per request.
    assert!(!dir.path().join("etc").exists());
    let log = s.log_text();
    assert!(log.contains("GET /v2/ 200"), "{log}");
}

#[test]
fn push_and_pull_blobs_monolithic_chunked_ranged_and_sha512() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let c = client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let digest = sha256_of(&data);

    // Monolithic POST ?digest=.
    assert_eq!(push_blob(&s, "team/blobs", &data), digest);
    let r = s.head(&format!("/v2/team/blobs/blobs/{digest}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Length"), data.len().to_string());
    assert_eq!(header(&r, "Docker-Content-Digest"), digest);
    let r = s.get(&format!("/v2/team/blobs/blobs/{digest}"));
    assert_eq!(r.bytes().unwrap().as_ref(), &data[..]);
    // Range.
    let r = c
        .get(s.url(&format!("/v2/team/blobs/blobs/{digest}")))
        .header("Range", "bytes=10-19")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        header(&r, "Content-Range"),
        format!("bytes 10-19/{}", data.len())
    );
    assert_eq!(r.bytes().unwrap().as_ref(), &data[10..20]);
    let r = c
        .get(s.url(&format!("/v2/team/blobs/blobs/{digest}")))
        .header("Range", "bytes=-5")
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &data[data.len() - 5..]);
    let r = c
        .get(s.url(&format!("/v2/team/blobs/blobs/{digest}")))
        .header("Range", "bytes=100000-")
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);

    // Monolithic with the wrong digest: refused, nothing stored.
    let wrong = sha256_of(b"something else");
    let r = s.post(
        &format!("/v2/team/blobs/blobs/uploads/?digest={wrong}"),
        data.clone(),
    );
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "DIGEST_INVALID".into())
    );
    assert!(!root.join("_blobs/blobs/sha256").join(&wrong[7..]).exists());

    // Chunked: POST, PATCH in order, a repeated and an out-of-order chunk (416), status, PUT
    // with the last chunk.
    let chunked: Vec<u8> = data.iter().rev().copied().collect();
    let chunked_digest = sha256_of(&chunked);
    let r = c.post(s.url("/v2/chunky/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let mut location = header(&r, "Location");
    assert!(location.starts_with("/v2/chunky/blobs/uploads/"));
    let id = location.rsplit('/').next().unwrap().to_string();
    assert_eq!(id.len(), 32);
    assert!(!header(&r, "Docker-Upload-UUID").is_empty());
    let patch = |location: &str, from: usize, to: usize| {
        c.patch(s.url(location))
            .header("Content-Type", "application/octet-stream")
            .header("Content-Range", format!("{from}-{}", to - 1))
            .body(chunked[from..to].to_vec())
            .send()
            .unwrap()
    };
    let r = patch(&location, 0, 40_000);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(header(&r, "Range"), "0-39999");
    location = header(&r, "Location");
    let r = patch(&location, 0, 40_000);
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "a repeated chunk"
    );
    assert_eq!(header(&r, "Range"), "0-39999");
    let r = patch(&location, 50_000, 60_000);
    assert_eq!(
        r.status(),
        StatusCode::RANGE_NOT_SATISFIABLE,
        "a chunk out of order"
    );
    let r = patch(&location, 40_000, 70_000);
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    location = header(&r, "Location");
    let r = s.get(&location);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "Range"), "0-69999");
    let r = c
        .put(s.url(&format!("{location}?digest={chunked_digest}")))
        .header("Content-Range", format!("70000-{}", chunked.len() - 1))
        .body(chunked[70_000..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "Docker-Content-Digest"), chunked_digest);
    assert_eq!(
        header(&r, "Location"),
        format!("/v2/chunky/blobs/{chunked_digest}")
    );
    let r = s.get(&header(&r, "Location"));
    assert_eq!(r.bytes().unwrap().as_ref(), &chunked[..]);
    let r = s.get(&location);
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "a finished session is gone"
    );

    // Streamed PATCH without Content-Range, then PUT without a body.
    let r = c.post(s.url("/v2/chunky/blobs/uploads/")).send().unwrap();
    let location = header(&r, "Location");
    let r = s.patch(&location, b"hello ".to_vec());
    let location = header(&r, "Location");
    let r = s.patch(&location, b"world".to_vec());
    let location = header(&r, "Location");
    let hello = sha256_of(b"hello world");
    let r = c
        .put(s.url(&format!("{location}?digest={hello}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // PUT without a digest, or a wrong one.
    let r = c.post(s.url("/v2/chunky/blobs/uploads/")).send().unwrap();
    let location = header(&r, "Location");
    let r = s.put(&location, b"abc".to_vec());
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "DIGEST_INVALID".into())
    );
    let r = s.put(&format!("{location}?digest={hello}"), b"abc".to_vec());
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "DIGEST_INVALID".into())
    );
    // Cancel.
    let r = c.post(s.url("/v2/chunky/blobs/uploads/")).send().unwrap();
    let location = header(&r, "Location");
    let r = s.delete(&location);
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = s.get(&location);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "BLOB_UPLOAD_UNKNOWN".into())
    );
    let r = s.delete(&location);
    assert_eq!(r.status(), StatusCode::NOT_FOUND);

    // sha512, stored under blobs/sha512 of the layout.
    let d512 = mlambda::oci::digest::digest_of(mlambda::oci::digest::Algorithm::Sha512, &data);
    let r = s.post(
        &format!("/v2/chunky/blobs/uploads/?digest={d512}"),
        data.clone(),
    );
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get(&format!("/v2/chunky/blobs/{d512}"));
    assert_eq!(header(&r, "Docker-Content-Digest"), d512);
    assert_eq!(r.bytes().unwrap().as_ref(), &data[..]);
    assert!(root.join("chunky/blobs/sha512").join(&d512[7..]).is_file());

    // Blob delete removes the repository's link; the pool keeps its copy for gc.
    let r = s.delete(&format!("/v2/chunky/blobs/{hello}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = s.head(&format!("/v2/chunky/blobs/{hello}"));
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = s.delete(&format!("/v2/chunky/blobs/{hello}"));
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "BLOB_UNKNOWN".into())
    );
    assert!(root.join("_blobs/blobs/sha256").join(&hello[7..]).is_file());
    // No upload is left behind.
    assert_eq!(std::fs::read_dir(root.join("_uploads")).unwrap().count(), 0);
}

#[test]
fn an_upload_survives_a_restart_of_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let c = client();
    let location = {
        let s = registry_serve(&root, &[]);
        let r = c.post(s.url("/v2/r/blobs/uploads/")).send().unwrap();
        let r = c
            .patch(s.url(&header(&r, "Location")))
            .header("Content-Range", "0-4")
            .body(b"first".to_vec())
            .send()
            .unwrap();
        header(&r, "Location")
    };
    let s = registry_serve(&root, &[]);
    let r = s.get(&location);
    assert_eq!(header(&r, "Range"), "0-4");
    let digest = sha256_of(b"first,second");
    let r = c
        .put(s.url(&format!("{location}?digest={digest}")))
        .header("Content-Range", "5-11")
        .body(b",second".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
}

#[test]
fn manifests_by_tag_and_digest_exact_bytes_limits_index_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let c = client();
    let manifest = small_image(&s, "m", "v1", b"layer one");
    let digest = sha256_of(&manifest);
    for reference in ["v1", digest.as_str()] {
        let r = s.get(&format!("/v2/m/manifests/{reference}"));
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(header(&r, "Content-Type"), MANIFEST);
        assert_eq!(header(&r, "Docker-Content-Digest"), digest);
        assert_eq!(r.bytes().unwrap().as_ref(), &manifest[..]);
        let r = s.head(&format!("/v2/m/manifests/{reference}"));
        assert_eq!(header(&r, "Content-Length"), manifest.len().to_string());
        assert_eq!(header(&r, "Docker-Content-Digest"), digest);
    }
    // Several tags at once by digest.
    let r = c
        .put(s.url(&format!("/v2/m/manifests/{digest}?tag=a&tag=b")))
        .header("Content-Type", MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "Location"), format!("/v2/m/manifests/{digest}"));
    let tags: serde_json::Value = s.get("/v2/m/tags/list").json_body();
    assert_eq!(
        tags,
        serde_json::json!({"name": "m", "tags": ["a", "b", "v1"]})
    );
    // Refusals: missing blob, bad JSON, digest mismatch, bad ?tag=.
    let missing = image(&sha256_of(b"{}"), &[(&sha256_of(b"absent"), 6)], None, None);
    let r = put_manifest(&s, "m", "x", MANIFEST, &missing);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let r = put_manifest(&s, "m", "x", MANIFEST, b"{not json");
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_INVALID".into())
    );
    let r = put_manifest(&s, "m", &sha256_of(b"other"), MANIFEST, &manifest);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "DIGEST_INVALID".into())
    );
    let r = c
        .put(s.url(&format!("/v2/m/manifests/{digest}?tag=-bad")))
        .header("Content-Type", MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // Up to 4 MiB accepted, above refused with 413.
    let config = sha256_of(b"{}");
    let big = |size: usize| {
        let mut m: serde_json::Value =
            serde_json::from_slice(&image(&config, &[], None, None)).unwrap();
        m["annotations"] = serde_json::json!({"pad": ""});
        let base = serde_json::to_vec(&m).unwrap().len();
        m["annotations"]["pad"] = "x".repeat(size - base).into();
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(bytes.len(), size);
        bytes
    };
    let r = put_manifest(&s, "m", "big", MANIFEST, &big(4 << 20));
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/m/manifests/big");
    assert_eq!(r.bytes().unwrap().len(), 4 << 20);
    let r = put_manifest(&s, "m", "bigger", MANIFEST, &big((4 << 20) + 1));
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);

    // An index whose children are pushed by digest: they stay in index.json, untagged.
    let child = small_image(&s, "m", "child-tmp", b"child layer");
    let child_digest = sha256_of(&child);
    s.delete("/v2/m/manifests/child-tmp");
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": child_digest, "size": child.len(),
                       "platform": {"architecture": "amd64", "os": "linux"}}]
    }))
    .unwrap();
    let r = put_manifest(&s, "m", "multi", INDEX, &index);
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = s.get("/v2/m/manifests/multi");
    assert_eq!(header(&r, "Content-Type"), INDEX);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("m/index.json")).unwrap()).unwrap();
    let entries = on_disk["manifests"].as_array().unwrap();
    let child_entry = entries
        .iter()
        .find(|e| e["digest"] == child_digest.as_str())
        .unwrap();
    assert!(child_entry.get("annotations").is_none(), "{child_entry}");
    let missing_child = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": sha256_of(b"no child"), "size": 3}]
    }))
    .unwrap();
    let r = put_manifest(&s, "m", "broken", INDEX, &missing_child);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );

    // Delete by tag leaves the manifest reachable by digest; by digest removes it.
    let r = s.delete("/v2/m/manifests/a");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    assert_eq!(s.get("/v2/m/manifests/a").status(), StatusCode::NOT_FOUND);
    assert_eq!(s.get("/v2/m/manifests/b").status(), StatusCode::OK);
    let r = s.delete(&format!("/v2/m/manifests/{digest}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for reference in ["b", "v1", digest.as_str()] {
        let r = s.get(&format!("/v2/m/manifests/{reference}"));
        assert_eq!(
            (r.status().as_u16(), error_code(r)),
            (404, "MANIFEST_UNKNOWN".into())
        );
    }
    assert!(!root.join("m/blobs/sha256").join(&digest[7..]).exists());
}

#[test]
fn tags_and_catalog_paginate_with_link() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let manifest = small_image(&s, "p/q", "t0", b"x");
    let digest = sha256_of(&manifest);
    for tag in ["t1", "t2", "t3", "t4"] {
        let r = put_manifest(&s, "p/q", tag, MANIFEST, &manifest);
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let _ = digest;
    let mut seen = Vec::new();
    let mut next = "/v2/p/q/tags/list?n=2".to_string();
    loop {
        let r = s.get(&next);
        assert_eq!(r.status(), StatusCode::OK);
        let link = header(&r, "Link");
        let body: serde_json::Value = r.json_body();
        assert_eq!(body["name"], "p/q");
        let page: Vec<String> = serde_json::from_value(body["tags"].clone()).unwrap();
        assert!(page.len() <= 2);
        seen.extend(page);
        if link.is_empty() {
            break;
        }
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        next = link[1..link.find('>').unwrap()].to_string();
    }
    assert_eq!(seen, ["t0", "t1", "t2", "t3", "t4"]);
    let body: serde_json::Value = s.get("/v2/p/q/tags/list?last=t2").json_body();
    assert_eq!(body["tags"], serde_json::json!(["t3", "t4"]));
    let body: serde_json::Value = s.get("/v2/p/q/tags/list?n=0").json_body();
    assert_eq!(body["tags"], serde_json::json!([]));

    small_image(&s, "a", "1", b"y");
    small_image(&s, "z/last", "1", b"z");
    let r = s.get("/v2/_catalog");
    let body: serde_json::Value = r.json_body();
    assert_eq!(
        body["repositories"],
        serde_json::json!(["a", "p/q", "z/last"])
    );
    let r = s.get("/v2/_catalog?n=1");
    assert_eq!(
        header(&r, "Link"),
        "</v2/_catalog?n=1&last=a>; rel=\"next\""
    );
    let r = s.get("/v2/_catalog?n=1&last=a");
    let body: serde_json::Value = r.json_body();
    assert_eq!(body["repositories"], serde_json::json!(["p/q"]));
}

#[test]
fn referrers_with_artifact_type_filter() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let c = client();
    let subject = small_image(&s, "r", "1", b"subject layer");
    let subject_digest = sha256_of(&subject);
    let config = sha256_of(b"{}");
    let mut pushed = Vec::new();
    for artifact in [
        "application/vnd.example.sbom",
        "application/vnd.example.sig",
    ] {
        let referrer = image(&config, &[], Some(&subject_digest), Some(artifact));
        let digest = sha256_of(&referrer);
        let r = put_manifest(&s, "r", &digest, MANIFEST, &referrer);
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(header(&r, "OCI-Subject"), subject_digest);
        pushed.push(digest);
    }
    let r = s.get(&format!("/v2/r/referrers/{subject_digest}"));
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Type"), INDEX);
    assert_eq!(header(&r, "OCI-Filters-Applied"), "");
    let body: serde_json::Value = r.json_body();
    assert_eq!(body["schemaVersion"], 2);
    let listed: Vec<&str> = body["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    for digest in &pushed {
        assert!(listed.contains(&digest.as_str()));
    }
    let r = s.get(&format!(
        "/v2/r/referrers/{subject_digest}?artifactType=application/vnd.example.sig"
    ));
    assert_eq!(header(&r, "OCI-Filters-Applied"), "artifactType");
    let body: serde_json::Value = r.json_body();
    let manifests = body["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(manifests[0]["mediaType"], MANIFEST);
    assert_eq!(
        manifests[0]["annotations"]["org.example.kind"],
        "application/vnd.example.sig"
    );
    // No referrers: an empty index, not a 404.
    let r = c
        .get(s.url(&format!("/v2/r/referrers/{}", sha256_of(b"none"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: serde_json::Value = r.json_body();
    assert_eq!(body["manifests"], serde_json::json!([]));
}

#[test]
fn impossible_tags_are_not_found_but_refused_as_push_targets() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let c = client();
    small_image(&s, "a", "1", b"layer");
    // No manifest can have a name that is no tag: looking one up is a 404, as the
    // conformance suite's pull tests expect; pushing under it stays a 400.
    for repo in ["a", "nothere"] {
        let url = s.url(&format!("/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"));
        let r = c.get(&url).send().unwrap();
        assert_eq!(
            (r.status().as_u16(), error_code(r)),
            (404, "MANIFEST_UNKNOWN".into())
        );
        let r = c.head(&url).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        let r = c.delete(&url).send().unwrap();
        assert_eq!(
            (r.status().as_u16(), error_code(r)),
            (404, "MANIFEST_UNKNOWN".into())
        );
    }
    let config = sha256_of(b"{}");
    let manifest = image(&config, &[], None, None);
    let r = put_manifest(&s, "a", ".bad", MANIFEST, &manifest);
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // A malformed digest stays a client error.
    let r = s.get("/v2/a/manifests/sha256:totallywrong");
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "DIGEST_INVALID".into())
    );
}

#[test]
fn a_refused_manifest_push_leaves_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let missing = sha256_of(b"never pushed");
    let manifest = image(&missing, &[], None, None);
    let r = put_manifest(&s, "ghost", "1", MANIFEST, &manifest);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{"mediaType": MANIFEST, "digest": sha256_of(&manifest), "size": manifest.len()}],
    }))
    .unwrap();
    let r = put_manifest(&s, "ghost", "2", INDEX, &index);
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
    assert!(!root.join("ghost").exists());
    let r = s.get("/v2/ghost/tags/list");
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (404, "NAME_UNKNOWN".into())
    );
}

#[test]
fn referrers_of_a_repository_that_does_not_exist_are_an_empty_index() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let r = client()
        .get(s.url(&format!("/v2/nothere/referrers/{}", sha256_of(b"x"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "Content-Type"), INDEX);
    let body = r.json_body();
    assert_eq!(body["schemaVersion"], 2);
    assert_eq!(body["mediaType"], INDEX);
    assert_eq!(body["manifests"], serde_json::json!([]));
    assert!(!root.join("nothere").exists());
}

#[test]
fn tag_parameters_are_answered_with_oci_tag_and_keep_a_sha512_digest() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let c = client();
    let config = push_blob(&s, "tp", b"{}");
    let layer = push_blob(&s, "tp", b"a layer");
    let manifest = image(&config, &[(&layer, 7)], None, None);
    // A manifest addressed by sha512 can be tagged only through `?tag=`: a push by tag
    // names no algorithm, so the registry would use sha256.
    let d512 = mlambda::oci::digest::digest_of(mlambda::oci::digest::Algorithm::Sha512, &manifest);
    let r = c
        .put(s.url(&format!("/v2/tp/manifests/{d512}?tag=one&tag=two&tag=one")))
        .header("Content-Type", MANIFEST)
        .body(manifest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(header(&r, "Docker-Content-Digest"), d512);
    let oci_tags: Vec<&str> = r
        .headers()
        .get_all("OCI-Tag")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(oci_tags, ["one", "two"]);
    for tag in ["one", "two"] {
        for method in [reqwest::Method::GET, reqwest::Method::HEAD] {
            let r = c
                .request(method.clone(), s.url(&format!("/v2/tp/manifests/{tag}")))
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{method} {tag}");
            assert_eq!(header(&r, "Docker-Content-Digest"), d512, "{method} {tag}");
        }
    }
    // A plain push by digest tags nothing and sends no OCI-Tag.
    let r = put_manifest(&s, "tp", &sha256_of(&manifest), MANIFEST, &manifest);
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(r.headers().get("OCI-Tag").is_none());
}

#[test]
fn non_distributable_layers_need_not_be_pushed() {
    let dir = tempfile::tempdir().unwrap();
    let s = registry_serve(&dir.path().join("root"), &[]);
    let config = push_blob(&s, "nd", b"{}");
    let local = push_blob(&s, "nd", b"a normal layer");
    let foreign = sha256_of(b"a layer that lives elsewhere");
    let manifest = |foreign_type: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": EMPTY, "digest": config, "size": 2},
            "layers": [
                {"mediaType": foreign_type, "digest": foreign, "size": 28,
                 "urls": [format!("https://store.example.com/blobs/{foreign}")]},
                {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": local, "size": 14},
            ],
        }))
        .unwrap()
    };
    for foreign_type in [
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    ] {
        let r = put_manifest(&s, "nd", "foreign", MANIFEST, &manifest(foreign_type));
        assert_eq!(r.status(), StatusCode::CREATED, "{foreign_type}");
    }
    // A distributable layer must be there.
    let r = put_manifest(
        &s,
        "nd",
        "broken",
        MANIFEST,
        &manifest("application/vnd.oci.image.layer.v1.tar+gzip"),
    );
    assert_eq!(
        (r.status().as_u16(), error_code(r)),
        (400, "MANIFEST_BLOB_UNKNOWN".into())
    );
}

#[test]
fn mount_without_from_links_a_blob_another_repository_holds() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let c = client();
    let digest = push_blob(&s, "base/python", b"shared base layer");
    let r = c
        .post(s.url(&format!("/v2/models/y/blobs/uploads/?mount={digest}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "Location"),
        format!("/v2/models/y/blobs/{digest}")
    );
    assert_eq!(header(&r, "Docker-Content-Digest"), digest);
    let r = s.get(&format!("/v2/models/y/blobs/{digest}"));
    assert_eq!(r.bytes().unwrap().as_ref(), b"shared base layer");
    // A blob deleted from the only repository that held it is not brought back from the
    // pool, and an unknown one is not invented: both fall back to an upload session.
    let gone = push_blob(&s, "lonely", b"deleted content");
    let r = s.delete(&format!("/v2/lonely/blobs/{gone}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    for absent in [gone, sha256_of(b"never pushed")] {
        let r = c
            .post(s.url(&format!("/v2/models/z/blobs/uploads/?mount={absent}")))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED, "{absent}");
        assert!(header(&r, "Location").starts_with("/v2/models/z/blobs/uploads/"));
        let r = s.head(&format!("/v2/models/z/blobs/{absent}"));
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{absent}");
    }
}

#[test]
fn cross_repository_mount_201_or_fallback_202() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let c = client();
    let digest = push_blob(&s, "base/python", b"base layer");
    let r = c
        .post(s.url(&format!(
            "/v2/models/x/blobs/uploads/?mount={digest}&from=base/python"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        header(&r, "Location"),
        format!("/v2/models/x/blobs/{digest}")
    );
    assert_eq!(header(&r, "Docker-Content-Digest"), digest);
    let r = s.get(&format!("/v2/models/x/blobs/{digest}"));
    assert_eq!(r.bytes().unwrap().as_ref(), b"base layer");
    {
        use std::os::unix::fs::MetadataExt;
        let ino = |p: PathBuf| std::fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(root.join("models/x/blobs/sha256").join(&digest[7..])),
            ino(root.join("base/python/blobs/sha256").join(&digest[7..]))
        );
    }
    for from in ["elsewhere", "base/python"] {
        let absent = sha256_of(b"absent");
        let r = c
            .post(s.url(&format!(
                "/v2/models/x/blobs/uploads/?mount={absent}&from={from}"
            )))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let location = header(&r, "Location");
        let r = s.put(&format!("{location}?digest={absent}"), b"absent".to_vec());
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "the 202 session is a normal one"
        );
    }
}

fn htpasswd_file(dir: &Path) -> Option<PathBuf> {
    let htpasswd = tool("htpasswd")?;
    let out = run_ok(Command::new(htpasswd).args(["-Bbn", "user", "secret"]));
    let path = dir.join("htpasswd");
    std::fs::write(&path, out.stdout).unwrap();
    Some(path)
}

#[test]
fn basic_auth_with_htpasswd_and_anonymous_read() {
    let dir = tempfile::tempdir().unwrap();
    let Some(file) = htpasswd_file(dir.path()) else {
        return;
    };
    let file = file.to_str().unwrap();
    let s = registry_serve(&dir.path().join("root"), &["--htpasswd", file]);
    let c = client();
    let r = s.get("/v2/");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(header(&r, "WWW-Authenticate"), "Basic realm=\"mlambda\"");
    assert_eq!(error_code(r), "UNAUTHORIZED");
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("user", Some("wrong"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("nobody", Some("secret"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = c
        .get(s.url("/v2/"))
        .basic_auth("user", Some("secret"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .post(s.url(&format!("/v2/a/blobs/uploads/?digest={}", sha256_of(b"x"))))
        .basic_auth("user", Some("secret"))
        .body(b"x".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    drop(s);

    let s = registry_serve(
        &dir.path().join("root"),
        &["--htpasswd", file, "--anonymous-read"],
    );
    let r = c
        .get(s.url(&format!("/v2/a/blobs/{}", sha256_of(b"x"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "pulls need no credentials");
    let r = c.post(s.url("/v2/a/blobs/uploads/")).send().unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "pushes do");
    let r = c
        .delete(s.url(&format!("/v2/a/blobs/{}", sha256_of(b"x"))))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "deletes do");
    let r = c
        .post(s.url("/v2/a/blobs/uploads/"))
        .basic_auth("user", Some("secret"))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
}

/// An image made by `mlambda build` in an OCI layout (the example model, on scratch).
fn built_layout(dir: &Path) -> PathBuf {
    let layout = dir.join("layout");
    run_ok(
        mlambda(&dir.join("home"))
            .arg("build")
            .arg(example_dir())
            .args(["--base", "scratch", "--output"])
            .arg(format!("oci:{}:1", layout.display())),
    );
    layout
}

#[test]
fn skopeo_reads_what_mlambda_upload_stored_through_the_server() {
    let Some(skopeo) = tool("skopeo") else { return };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let uploaded = json_of(&run_ok(
        mlambda(&home)
            .args(["upload", "--json", "--base", "scratch"])
            .arg(example_dir()),
    ));
    let digest = uploaded["digest"].as_str().unwrap().to_string();
    let s = registry_serve(&home.join("registry"), &[]);
    let image = format!("docker://{}/example_tokenizer_model:1", s.host());
    let out = run_ok(Command::new(&skopeo).args(["inspect", "--tls-verify=false", &image]));
    let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inspected["Digest"], digest.as_str());
    let raw =
        run_ok(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false", &image]));
    assert_eq!(sha256_of(&raw.stdout), digest);
    let out_dir = dir.path().join("pulled");
    run_ok(Command::new(&skopeo).args([
        "copy",
        "--preserve-digests",
        "--src-tls-verify=false",
        &image,
        &format!("oci:{}:1", out_dir.display()),
    ]));
    let pulled = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", out_dir.display()),
    ]));
    assert_eq!(sha256_of(&pulled.stdout), digest);
}

#[test]
fn mlambda_pushes_to_its_own_server_and_skopeo_reads_the_recorded_digest() {
    let Some(skopeo) = tool("skopeo") else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = registry_serve(&dir.path().join("served"), &[]);
    // The building host has its own home: the image travels over HTTP, not through the folder.
    let home = dir.path().join("builder");
    let registry = format!("http://{}/team", server.host());
    let push = |extra: &[&str]| {
        json_of(&run_ok(
            mlambda(&home)
                .args([
                    "upload",
                    "--json",
                    "--base",
                    "scratch",
                    "--registry",
                    &registry,
                ])
                .args(extra)
                .arg(example_dir()),
        ))
    };
    let first = push(&[]);
    assert_eq!(first["status"], "Finished");
    let recorded = first["pushed_digest"].as_str().unwrap().to_string();
    assert_eq!(first["digest"], recorded.as_str());
    let image = format!("docker://{}/team/example_tokenizer_model:1", server.host());
    let raw =
        run_ok(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false", &image]));
    assert_eq!(sha256_of(&raw.stdout), recorded);
    let pulled = dir.path().join("pulled");
    run_ok(Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        &image,
        &format!("oci:{}:1", pulled.display()),
    ]));
    // The served folder is itself a layout that needs no server to be read.
    let served = dir.path().join("served/team/example_tokenizer_model");
    let local = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", served.display()),
    ]));
    assert_eq!(sha256_of(&local.stdout), recorded);

    // A second version re-sends nothing but what changed: the server's log shows no blob
    // upload for the layers it already has.
    let before = server.log_text().matches("POST").count();
    assert!(
        before >= 2,
        "the first push uploaded its layers: {}",
        server.log_text()
    );
    let second = push(&[]);
    assert_eq!(second["version"], 2);
    let after = server.log_text();
    let new_uploads = after.matches("POST").count() - before;
    assert!(
        new_uploads <= 1,
        "only the new config may be uploaded, saw {new_uploads} uploads:\n{after}"
    );
}

#[test]
fn skopeo_push_lands_in_a_layout_that_umoci_and_skopeo_read_without_the_server() {
    let Some(skopeo) = tool("skopeo") else { return };
    let dir = tempfile::tempdir().unwrap();
    let layout = built_layout(dir.path());
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    run_ok(Command::new(&skopeo).args([
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        &format!("oci:{}:1", layout.display()),
        &format!("docker://{}/team/other:1", s.host()),
    ]));
    let source = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", layout.display()),
    ]));
    let r = s.get("/v2/team/other/manifests/1");
    assert_eq!(r.bytes().unwrap().as_ref(), &source.stdout[..]);
    drop(s);
    // The storage folder, copied elsewhere, is read with no server.
    let copy = dir.path().join("copy");
    run_ok(Command::new("cp").arg("-a").arg(&root).arg(&copy));
    let stored = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}/team/other:1", copy.display()),
    ]));
    assert_eq!(stored.stdout, source.stdout);
    run_ok(Command::new(&skopeo).args([
        "copy",
        &format!("oci:{}/team/other:1", copy.display()),
        &format!("oci:{}:1", dir.path().join("again").display()),
    ]));
    let image = format!("{}/team/other:1", root.display());
    if let Some(rootfs) = umoci_unpack(&image, &dir.path().join("bundle")) {
        assert!(rootfs.join("model/contract.protobin").is_file());
        assert!(rootfs.join("model/files").is_dir());
    }
}

#[test]
fn tls_with_a_self_signed_certificate_and_skopeo_cert_dir() {
    let (Some(skopeo), Some(openssl)) = (tool("skopeo"), tool("openssl")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    let (cert, key) = (certs.join("ca.crt"), dir.path().join("key.pem"));
    run_ok(Command::new(openssl).args([
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-sha256",
        "-days",
        "1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ]));
    let layout = built_layout(dir.path());
    let s = registry_serve(
        &dir.path().join("root"),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let target = format!("docker://{}/secure/model:1", s.host());
    run_ok(Command::new(&skopeo).args([
        "copy",
        "--preserve-digests",
        "--dest-cert-dir",
        certs.to_str().unwrap(),
        &format!("oci:{}:1", layout.display()),
        &target,
    ]));
    let out = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        "--cert-dir",
        certs.to_str().unwrap(),
        &target,
    ]));
    let source = run_ok(Command::new(&skopeo).args([
        "inspect",
        "--raw",
        &format!("oci:{}:1", layout.display()),
    ]));
    assert_eq!(out.stdout, source.stdout);
    // Without the certificate, the client refuses the server.
    let refused = run_fail(Command::new(&skopeo).args(["inspect", "--raw", &target]));
    assert!(refused.contains("certificate"), "{refused}");
}

#[test]
fn eight_concurrent_pushers_then_every_blob_pulled_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let url = s.url("");
    let pushers: Vec<_> = (0..8u32)
        .map(|p| {
            let url = url.clone();
            std::thread::spawn(move || {
                let c = client();
                let repo = format!("load/p{}", p % 4);
                let mut pushed = Vec::new();
                for b in 0..50u32 {
                    // Every fifth blob is the same for all pushers: same blob, same time.
                    let bytes: Vec<u8> = if b % 5 == 0 {
                        format!("shared blob {b}").repeat(64).into_bytes()
                    } else {
                        format!("pusher {p} blob {b} ")
                            .repeat(40 + b as usize)
                            .into_bytes()
                    };
                    let digest = sha256_of(&bytes);
                    if b % 2 == 0 {
                        let r = c
                            .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={digest}"))
                            .body(bytes.clone())
                            .send()
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::CREATED);
                    } else {
                        let r = c
                            .post(format!("{url}/v2/{repo}/blobs/uploads/"))
                            .send()
                            .unwrap();
                        let mut location = header(&r, "Location");
                        let half = bytes.len() / 2;
                        let r = c
                            .patch(format!("{url}{location}"))
                            .header("Content-Range", format!("0-{}", half - 1))
                            .body(bytes[..half].to_vec())
                            .send()
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::ACCEPTED);
                        location = header(&r, "Location");
                        let r = c
                            .put(format!("{url}{location}?digest={digest}"))
                            .body(bytes[half..].to_vec())
                            .send()
                            .unwrap();
                        assert_eq!(r.status(), StatusCode::CREATED);
                    }
                    pushed.push((repo.clone(), digest, bytes.len()));
                }
                let config = sha256_of(b"{}");
                let r = c
                    .post(format!("{url}/v2/{repo}/blobs/uploads/?digest={config}"))
                    .body(b"{}".to_vec())
                    .send()
                    .unwrap();
                assert_eq!(r.status(), StatusCode::CREATED);
                let layers: Vec<(&str, usize)> =
                    pushed.iter().map(|(_, d, n)| (d.as_str(), *n)).collect();
                let manifest = image(&config, &layers, None, None);
                for tag in [format!("p{p}"), "shared".to_string()] {
                    let r = c
                        .put(format!("{url}/v2/{repo}/manifests/{tag}"))
                        .header("Content-Type", MANIFEST)
                        .body(manifest.clone())
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), StatusCode::CREATED);
                }
                (repo, format!("p{p}"), sha256_of(&manifest), pushed)
            })
        })
        .collect();
    let results: Vec<_> = pushers.into_iter().map(|h| h.join().unwrap()).collect();
    let mut blobs = 0;
    for (repo, tag, manifest_digest, pushed) in &results {
        let r = s.get(&format!("/v2/{repo}/manifests/{tag}"));
        assert_eq!(header(&r, "Docker-Content-Digest"), *manifest_digest);
        for (_, digest, size) in pushed {
            let r = s.get(&format!("/v2/{repo}/blobs/{digest}"));
            assert_eq!(r.status(), StatusCode::OK);
            let bytes = r.bytes().unwrap();
            assert_eq!(bytes.len(), *size);
            assert_eq!(sha256_of(&bytes), *digest);
            blobs += 1;
        }
        // The shared tag points at one of the pushed manifests, whole.
        let r = s.get(&format!("/v2/{repo}/manifests/shared"));
        let bytes = r.bytes().unwrap();
        assert!(results.iter().any(|(_, _, d, _)| *d == sha256_of(&bytes)));
    }
    assert_eq!(blobs, 400);
    // Every index is valid JSON with one entry per tag, and no temporary file is left.
    for p in 0..4 {
        let index: serde_json::Value = serde_json::from_slice(
            &std::fs::read(root.join(format!("load/p{p}/index.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(index["manifests"].as_array().unwrap().len(), 3);
    }
    assert_eq!(std::fs::read_dir(root.join("_uploads")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(root.join("_tmp")).unwrap().count(), 0);
}

#[test]
fn gc_frees_unreferenced_pool_blobs_after_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let s = registry_serve(&root, &[]);
    let manifest = small_image(&s, "g", "1", b"kept layer");
    let orphan = push_blob(&s, "g", b"orphan blob");
    let r = s.delete(&format!("/v2/g/blobs/{orphan}"));
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let pooled = root.join("_blobs/blobs/sha256").join(&orphan[7..]);
    assert!(pooled.is_file());
    let gc = |extra: &[&str]| {
        let out = run_ok(
            Command::new(mlambda_bin())
                .args(["registry", "gc", "--json", "--root"])
                .arg(&root)
                .args(extra),
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    // Young: kept by the default grace period.
    let report = gc(&[]);
    assert_eq!(report["blob_count"], 0);
    assert_eq!(report["kept_young"], 1);
    let report = gc(&["--grace", "0s", "--dry-run"]);
    assert_eq!(report["blob_count"], 1);
    assert!(pooled.is_file(), "a dry run removes nothing");
    let report = gc(&["--grace", "0s"]);
    assert_eq!(report["blob_count"], 1);
    assert_eq!(report["bytes"], 11);
    assert_eq!(report["blobs"][0]["digest"], orphan.as_str());
    assert!(!pooled.exists());
    // What the image uses is still all there.
    let r = s.get("/v2/g/manifests/1");
    assert_eq!(r.bytes().unwrap().as_ref(), &manifest[..]);
    let text = run_ok(
        Command::new(mlambda_bin())
            .args(["registry", "gc", "--grace", "0s", "--root"])
            .arg(&root),
    );
    assert!(String::from_utf8_lossy(&text.stdout).contains("freed 0 bytes"));
}
