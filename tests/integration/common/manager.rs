//! `mlambda serve` as the tests run it: the real binary in a private home, on a free port of
//! 127.0.0.1, up once its API answers.

use super::{mlambda, mlambda_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ManagerServer {
    pub child: Child,
    pub port: u16,
    pub home: PathBuf,
    log: PathBuf,
}

impl ManagerServer {
    /// `mlambda serve --addr 127.0.0.1:<free>` in `home`, plus `extra`.
    pub fn start(home: &Path, extra: &[&str]) -> ManagerServer {
        for attempt in 0..5 {
            let port = super::registry::free_port();
            let log = home.with_extension(format!("serve-{port}.log"));
            let child = mlambda(home)
                .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("mlambda starts");
            let mut server = ManagerServer {
                child,
                port,
                home: home.to_path_buf(),
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = server.child.try_wait() {
                    break;
                }
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "attempt {attempt}: the manager did not come up: {}",
                server.log_text()
            );
            let _ = server.child.kill();
        }
        panic!("the manager never came up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `mlambda upload DIR --host 127.0.0.1 --port P` plus `extra`, in a home of its own so
    /// that nothing is built on the client's side by mistake.
    pub fn upload(&self, client_home: &Path, dir: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(mlambda_bin());
        command
            .env("MLAMBDA_HOME", client_home)
            .env_remove("SOURCE_DATE_EPOCH")
            .arg("upload")
            .arg(dir)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(extra);
        command
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ManagerServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP client for the tests' own requests.
pub fn http() -> reqwest::blocking::Client {
    // reqwest is built without a default TLS provider (mlambda picks ring itself).
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// GET a JSON document of the API.
pub fn get_json(server: &ManagerServer, path: &str) -> serde_json::Value {
    let response = http().get(server.url(path)).send().unwrap();
    let status = response.status();
    let text = response.text().unwrap();
    assert!(status.is_success(), "GET {path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {text}"))
}

/// Waits until the version's status is one of `statuses`; returns the version document.
pub fn wait_for_status(
    server: &ManagerServer,
    name: &str,
    version: u64,
    statuses: &[&str],
    timeout: Duration,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let document = get_json(server, &format!("/api/v2/model/version/{name}/{version}"));
        let status = document["status"].as_str().unwrap_or("").to_string();
        if statuses.contains(&status.as_str()) {
            return document;
        }
        assert!(
            Instant::now() < deadline,
            "{name}:{version} stayed {status}, expected one of {statuses:?}: {document}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
