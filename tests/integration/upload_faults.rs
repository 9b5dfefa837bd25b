//! An upload that goes wrong on the client's side or on the wire: the manager answers 400
//! (not 500) for what the client sent, and `upload --host` blames the lost connection, not
//! the model file, when the manager goes away mid-upload.

use crate::common::manager::{ManagerServer, post_upload};
use crate::common::{mlambda_bin, run_fail};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(encoder);
    for (path, data) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        // `append_data` writes a GNU long-name entry for paths over 100 bytes.
        tar.append_data(&mut header, path, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn assert_nothing_left(server: &ManagerServer) {
    let uploads = server.home.join("manager/uploads");
    let left: Vec<_> = std::fs::read_dir(&uploads).unwrap().collect();
    assert!(left.is_empty(), "left in {}: {left:?}", uploads.display());
}

#[test]
fn a_file_name_longer_than_the_file_system_allows_is_refused_with_400() {
    let work = TempDir::new().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    let long = "w".repeat(300);
    let nested = format!("{}/weights.bin", "d".repeat(300));
    for name in [long.as_str(), nested.as_str()] {
        let payload = tar_gz(&[("serving.yaml", b"kind: Model\n"), (name, b"weights")]);
        let (status, body) = post_upload(
            &server,
            payload,
            r#"{"name": "long", "runtime": "scratch"}"#,
        );
        let error = body["error"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{name}: {body}");
        assert!(error.contains("too long"), "{body}");
        assert!(
            !error.contains(&server.home.display().to_string()),
            "the server's paths leak: {body}"
        );
        assert_nothing_left(&server);
    }
}

#[test]
fn a_body_cut_off_by_the_client_is_answered_400() {
    let work = TempDir::new().unwrap();
    let server = ManagerServer::start(&work.path().join("server"), &[]);
    let boundary = "cut-off-boundary";
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"payload\"; filename=\"model.tar.gz\"\r\n\
         Content-Type: application/gzip\r\n\r\n"
    );
    let payload = tar_gz(&[
        ("serving.yaml", b"kind: Model\n"),
        ("weights.bin", &[7u8; 200_000]),
    ]);
    let mut stream = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    write!(
        stream,
        "POST /api/v2/model/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\n\
         Content-Length: {}\r\n\r\n{head}",
        head.len() + payload.len() + 1000
    )
    .unwrap();
    stream.write_all(&payload[..payload.len() / 2]).unwrap();
    // The client stops sending (it crashed, or its network went): the body ends early, and
    // the connection with it, so the answer is read in the server's request log.
    stream.shutdown(Shutdown::Write).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let logged = loop {
        let log = server.log_text();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("POST /api/v2/model/upload"))
        {
            break line.to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no request logged: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        logged.contains("/api/v2/model/upload 400"),
        "a body cut off by the client got: {logged}\n{}",
        server.log_text()
    );
    assert_nothing_left(&server);
}

/// A model folder whose 80 MiB of weights go over the wire uncompressed.
fn big_model(dir: &Path) -> PathBuf {
    let model = dir.join("big_model");
    std::fs::create_dir_all(&model).unwrap();
    std::fs::write(
        model.join("serving.yaml"),
        "kind: Model\nname: big_model\nmodel-type: python:3.11\npayload: [weights.bin]\ncontract:\n  predict:\n    inputs:\n      x: {shape: [-1], type: float32}\n    outputs:\n      y: {shape: [-1], type: float32}\n",
    )
    .unwrap();
    // Bytes that do not compress (zeros would shrink to nothing on the wire).
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let chunk: Vec<u8> = (0..8 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let mut weights = std::fs::File::create(model.join("weights.bin")).unwrap();
    for _ in 0..10 {
        weights.write_all(&chunk).unwrap();
    }
    model
}

/// Reads an HTTP request's head from `stream`.
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "the request ended early"
        );
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[test]
fn upload_host_blames_the_lost_connection_when_the_manager_dies_mid_upload() {
    let work = TempDir::new().unwrap();
    let model = big_model(work.path());
    // A manager that answers the client's checks (GET), then dies 1 MiB into the upload.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let manager = std::thread::spawn(move || {
        loop {
            let (mut stream, _) = listener.accept().unwrap();
            if read_head(&mut stream).starts_with("GET ") {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n[]")
                    .unwrap();
                continue;
            }
            let mut received = vec![0u8; 1 << 20];
            stream.read_exact(&mut received).unwrap();
            // Unread bytes left in the socket: closing it resets the connection, as a crash does.
            return;
        }
    });
    let stderr = run_fail(
        Command::new(mlambda_bin())
            .env("MLAMBDA_HOME", work.path().join("client"))
            .arg("upload")
            .arg(&model)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--base", "scratch"]),
    );
    manager.join().unwrap();
    assert!(
        stderr.contains("lost the connection to the manager at http://127.0.0.1:"),
        "{stderr}"
    );
    assert!(!stderr.contains("cannot pack"), "{stderr}");
    assert!(!stderr.contains("weights.bin"), "{stderr}");
}
