//! `mlambda serve` as the tests run it: the real binary in a private home, on a free port of
//! 127.0.0.1, up once its API answers.

use super::http::{Ready, Served, client, json};
use super::{mlambda, mlambda_bin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `mlambda serve` on its port (everything of [`Served`]), and its home.
pub struct ManagerServer {
    served: Served,
    pub home: PathBuf,
}

impl std::ops::Deref for ManagerServer {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.served
    }
}

impl std::ops::DerefMut for ManagerServer {
    fn deref_mut(&mut self) -> &mut Served {
        &mut self.served
    }
}

impl ManagerServer {
    /// `mlambda serve --addr 127.0.0.1:<free>` in `home`, plus `extra`.
    pub fn start(home: &Path, extra: &[&str]) -> ManagerServer {
        let served = Served::start(home, Ready::Listening, |port| {
            let mut command = mlambda(home);
            command
                .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
                .args(extra);
            command
        });
        ManagerServer {
            served,
            home: home.to_path_buf(),
        }
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
}

/// GET a JSON document of the API.
pub fn get_json(server: &ManagerServer, path: &str) -> serde_json::Value {
    let response = client().get(server.url(path)).send().unwrap();
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

/// POST /api/v2/model/upload with `payload` (a tar.gz) and `metadata` (JSON): the status
/// and the JSON answer.
pub fn post_upload(
    server: &ManagerServer,
    payload: Vec<u8>,
    metadata: &str,
) -> (u16, serde_json::Value) {
    let form = reqwest::blocking::multipart::Form::new()
        .text("metadata", metadata.to_string())
        .part(
            "payload",
            reqwest::blocking::multipart::Part::bytes(payload).file_name("model.tar.gz"),
        );
    let response = client()
        .post(server.url("/api/v2/model/upload"))
        .multipart(form)
        .send()
        .unwrap();
    let status = response.status().as_u16();
    (status, json(response))
}
