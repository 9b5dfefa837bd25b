//! HTTP as the tests speak it: one blocking client, the parts of an answer they read, and
//! the real `mlambda` servers (`registry serve`, `serve`) started on a free port of 127.0.0.1,
//! up once they answer, and killed when dropped.

use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A blocking client for the tests' own requests; redirects are the test's to follow.
pub fn client() -> Client {
    // reqwest is built without a default TLS provider (mlambda picks ring itself); these
    // requests are plain HTTP, but building a client still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A header's value, or "" when absent.
pub fn header(response: &Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

pub fn json(response: Response) -> serde_json::Value {
    let bytes = response.bytes().unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)))
}

/// The first error code of a distribution-spec error body.
pub fn error_code(response: Response) -> String {
    let body = json(response);
    body["errors"][0]["code"].as_str().unwrap().to_string()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// How a server is known to be up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    /// The port accepts connections.
    Listening,
    /// `GET /v2/` answers, with anything but 404.
    Registry,
}

/// A server the test started: `mlambda … --addr 127.0.0.1:<port>`, its stderr in a log file.
pub struct Served {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Served {
    /// `command(port)` started until it is `ready` (five tries, each on a fresh port, in case
    /// another process took the port first); its log is `<log_base>.serve-<port>.log`.
    pub fn start(log_base: &Path, ready: Ready, command: impl Fn(u16) -> Command) -> Served {
        for attempt in 0..5 {
            let port = free_port();
            let log = log_base.with_extension(format!("serve-{port}.log"));
            let child = command(port)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("mlambda starts");
            let mut served = Served { child, port, log };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = served.child.try_wait() {
                    break;
                }
                let up = match ready {
                    Ready::Listening => std::net::TcpStream::connect(("127.0.0.1", port)).is_ok(),
                    Ready::Registry => client()
                        .get(served.url("/v2/"))
                        .send()
                        .is_ok_and(|r| r.status() != StatusCode::NOT_FOUND),
                };
                if up {
                    return served;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            eprintln!(
                "attempt {attempt}: the server did not come up: {}",
                served.log_text()
            );
            served.kill_hard();
        }
        panic!("the server never came up");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `127.0.0.1:<port>`, as image references name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request to `path` with the shared client, to add headers to before `send`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        client().request(method, self.url(path))
    }

    pub fn get(&self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path).send().unwrap()
    }

    pub fn head(&self, path: &str) -> Response {
        self.request(reqwest::Method::HEAD, path).send().unwrap()
    }

    pub fn delete(&self, path: &str) -> Response {
        self.request(reqwest::Method::DELETE, path).send().unwrap()
    }

    pub fn post(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.request(reqwest::Method::POST, path)
            .body(body)
            .send()
            .unwrap()
    }

    pub fn put(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.request(reqwest::Method::PUT, path)
            .body(body)
            .send()
            .unwrap()
    }

    pub fn patch(&self, path: &str, body: impl Into<reqwest::blocking::Body>) -> Response {
        self.request(reqwest::Method::PATCH, path)
            .body(body)
            .send()
            .unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        self.kill_hard();
    }
}
