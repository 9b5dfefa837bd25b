//! Clients that open connections and never finish a request: a half-sent header, an idle
//! keep-alive, a stalled TLS handshake, thousands of such sockets. Both servers share the
//! listener (`src/http`), so `registry serve` stands for both; the timeout is shortened with
//! `MLAMBDA_HTTP_TIMEOUT` so that the tests wait seconds, not the default 30.

use crate::common::http::{Ready, Served, client};
use crate::common::{mlambda_bin, self_signed_cert};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// Seconds a connection may go without a request in progress, in these tests.
const TIMEOUT: &str = "2";

/// `mlambda registry serve` with the short timeout, `extra` arguments, run by `sh -c` after
/// `prelude` (e.g. `ulimit -n 64`).
fn serve(root: &Path, ready: Ready, prelude: &str, extra: &[&str]) -> Served {
    Served::start(root, ready, |port| {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{prelude}\nexec \"$0\" \"$@\""))
            .arg(mlambda_bin())
            .args(["registry", "serve", "--root"])
            .arg(root)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("MLAMBDA_HTTP_TIMEOUT", TIMEOUT);
        command
    })
}

fn connect(server: &Served) -> TcpStream {
    TcpStream::connect(("127.0.0.1", server.port)).unwrap()
}

/// Whether the server closes `stream` within `limit` (whatever it sends before closing).
fn closed_within(mut stream: TcpStream, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn connections_without_a_request_in_progress_are_closed_after_the_timeout() {
    let work = tempfile::tempdir().unwrap();
    let server = serve(&work.path().join("root"), Ready::Registry, "", &[]);
    let openings: [(&str, &[u8]); 4] = [
        ("nothing sent", b""),
        (
            "a half-sent header",
            b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",
        ),
        (
            "an HTTP/2 preface alone",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ),
        ("half an HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ];
    let streams: Vec<_> = openings
        .iter()
        .map(|(what, bytes)| {
            let mut stream = connect(&server);
            stream.write_all(bytes).unwrap();
            (what, stream)
        })
        .collect();
    // A request answered, then the connection left idle (keep-alive).
    let mut idle = connect(&server);
    idle.write_all(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut answer = [0u8; 12];
    idle.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    for (what, stream) in streams.into_iter().chain([(&"an idle keep-alive", idle)]) {
        assert!(
            closed_within(stream, Duration::from_secs(20)),
            "a connection with {what} stayed open: {}",
            server.log_text()
        );
    }
    assert_eq!(server.get("/v2/").status(), 200);
}

#[test]
fn a_stalled_tls_handshake_is_cut_off() {
    let work = tempfile::tempdir().unwrap();
    let Some((cert, key)) = self_signed_cert(work.path()) else {
        eprintln!("SKIPPED: openssl is not installed");
        return;
    };
    let server = serve(
        &work.path().join("root"),
        Ready::Listening,
        "",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let silent = connect(&server);
    let mut half_hello = connect(&server);
    // The first bytes of a TLS 1.2 ClientHello record, the rest never sent.
    half_hello
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .unwrap();
    for (what, stream) in [("nothing sent", silent), ("half a ClientHello", half_hello)] {
        assert!(
            closed_within(stream, Duration::from_secs(20)),
            "a TLS connection with {what} stayed open: {}",
            server.log_text()
        );
    }
}

#[test]
fn idle_sockets_beyond_the_open_file_limit_do_not_lock_new_clients_out() {
    let work = tempfile::tempdir().unwrap();
    // 64 descriptors for the whole server: the idle sockets below exhaust them unless the
    // server limits its connections below that and times the idle ones out.
    let server = serve(
        &work.path().join("root"),
        Ready::Registry,
        "ulimit -n 64",
        &[],
    );
    let idle: Vec<TcpStream> = (0..150).map(|_| connect(&server)).collect();
    let started = Instant::now();
    let response = client()
        .get(server.url("/v2/"))
        .timeout(Duration::from_secs(60))
        .send();
    assert!(
        response.as_ref().is_ok_and(|r| r.status() == 200),
        "a new client was not served after {:?}: {response:?}\n{}",
        started.elapsed(),
        server.log_text()
    );
    drop(idle);
}

#[test]
fn a_request_in_progress_at_sigterm_is_finished() {
    let work = tempfile::tempdir().unwrap();
    let mut server = serve(&work.path().join("root"), Ready::Registry, "", &[]);
    let body = b"a blob finished after SIGTERM";
    let digest = mlambda::oci::digest::sha256_of(body);
    let mut stream = connect(&server);
    write!(
        stream,
        "POST /v2/late/blobs/uploads/?digest={digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    stream.write_all(&body[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body[10..]).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the upload in progress at SIGTERM got: {answer:?}\n{}",
        server.log_text()
    );
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}: {}", server.log_text());
}
