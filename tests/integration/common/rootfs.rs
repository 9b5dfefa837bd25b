//! Running what is inside an image: its unpacked rootfs entered with chroot (as root, as in
//! CI), and a small HTTP client for the runtime it serves.

use super::run_ok;
use std::path::Path;
use std::process::Command;

pub fn is_root() -> bool {
    let probe = tempfile::NamedTempFile::new().unwrap();
    std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(probe.path()).unwrap()) == 0
}

/// chroot needs root; CI runs as root, so there the test never skips.
pub fn can_chroot() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("CI must run as root to chroot into the images");
    }
    eprintln!("SKIPPED: chroot into the image needs root");
    false
}

pub fn chroot(rootfs: &Path, args: &[&str]) -> String {
    let out = run_ok(
        Command::new("chroot")
            .arg(rootfs)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A minimal HTTP/1.1 request on loopback, retried while the server starts: the status and
/// the body.
pub fn request(port: u16, method: &str, path: &str, body: &str) -> (u16, String) {
    request_with(port, method, path, "", body.as_bytes())
}

/// [`request`] with more header lines (each ending in `\r\n`) and a body of any bytes.
pub fn request_with(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            write!(
                stream,
                "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
                body.len()
            )
            .unwrap();
            stream.write_all(body).unwrap();
            let mut response = String::new();
            stream.read_to_string(&mut response).unwrap();
            let (head, body) = response.split_once("\r\n\r\n").unwrap();
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            return (status, body.to_string());
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime never listened on {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// Whether something listens on `port` within `seconds` (an engine that copies an image
/// first is slow).
pub fn listening_within(port: u16, seconds: u64) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    true
}

/// Waits until the runtime on `port` says it is ready (it loads the model after it listens).
pub fn wait_ready(port: u16) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while request(port, "GET", "/v2/health/ready", "").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime on {port} never became ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A POST that must answer 200 once the runtime is ready: its body.
pub fn post_json(port: u16, path: &str, body: &str) -> String {
    wait_ready(port);
    let (status, answer) = request(port, "POST", path, body);
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

/// The image's Python runtime (`/runtime/serve.py`) serving on 127.0.0.1:`port` inside the
/// rootfs; stopped when dropped.
pub struct Serving(std::process::Child);

pub fn serve_python(rootfs: &Path, port: u16) -> Serving {
    let child = Command::new("/usr/sbin/chroot")
        .arg(rootfs)
        .args([
            "/usr/bin/python3",
            "/runtime/serve.py",
            "--host",
            "127.0.0.1",
            "--port",
        ])
        .arg(port.to_string())
        .env_clear()
        .envs(image_env(rootfs))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    Serving(child)
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The environment the image's config gives its program (umoci writes it beside the rootfs).
pub fn image_env(rootfs: &Path) -> Vec<(String, String)> {
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(rootfs.parent().unwrap().join("config.json")).unwrap(),
    )
    .unwrap();
    config["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            let (k, v) = e.as_str()?.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// `mlambda run` of `reference` in `home` on 127.0.0.1:`port`; stopped when dropped.
pub struct Running(pub std::process::Child);

pub fn mlambda_run(home: &Path, reference: &str, port: u16) -> Running {
    let child = super::mlambda(home)
        .args(["run", reference, "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    Running(child)
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The image `tag` of the layout `layout`, unpacked by umoci: the bundle (removed when
/// dropped) and its rootfs; `None` when umoci is missing (skipped loudly).
pub fn unpacked(layout: &Path, tag: &str) -> Option<(tempfile::TempDir, std::path::PathBuf)> {
    let bundle = tempfile::tempdir().unwrap();
    let image = format!("{}:{tag}", layout.display());
    let rootfs = super::umoci_unpack(&image, &bundle.path().join("b"))?;
    Some((bundle, rootfs))
}
