//! The registries the tests run: `mlambda registry serve`, and the CNCF distribution registry
//! (`docker-registry`) on a free loopback port with optional htpasswd auth and TLS; both
//! killed when dropped.

use super::http::{Ready, Served};
use super::{run_ok, self_signed_cert, tool};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Default, Clone)]
pub struct RegistryOptions {
    /// htpasswd (bcrypt) basic auth with this user and password.
    pub basic_auth: Option<(String, String)>,
    /// A self-signed certificate for 127.0.0.1; its PEM is `Distribution::ca_cert`.
    pub tls: bool,
}

pub struct Distribution {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub tls: bool,
}

impl Distribution {
    /// `None` when docker-registry is not installed (the test is skipped loudly; fails on CI).
    pub fn start(options: RegistryOptions) -> Option<Distribution> {
        let program = tool("docker-registry")?;
        let dir = tempfile::tempdir().unwrap();
        let mut extra = String::new();
        if let Some((user, pass)) = &options.basic_auth {
            let htpasswd = tool("htpasswd")?;
            let out = run_ok(Command::new(htpasswd).args(["-Bbn", user, pass]));
            std::fs::write(dir.path().join("htpasswd"), &out.stdout).unwrap();
            extra.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        let mut tls = String::new();
        if options.tls {
            self_signed_cert(dir.path())?;
            tls = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            );
        }
        for _ in 0..5 {
            let port = free_port();
            let config = format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls}{extra}",
                dir.path().join("data").display()
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, config).unwrap();
            let mut child = Command::new(&program)
                .arg("serve")
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break; // the port was taken meanwhile: try another
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Some(Distribution {
                        child,
                        port,
                        dir,
                        tls: options.tls,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("docker-registry did not start");
    }

    pub fn authority(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// A folder holding only the CA (`skopeo --cert-dir`).
    pub fn cert_dir(&self) -> PathBuf {
        let dir = self.dir.path().join("certs.d");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(self.ca_cert(), dir.join("ca.crt")).unwrap();
        dir
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub use super::http::free_port;

/// `mlambda registry serve --root ROOT --addr 127.0.0.1:<free>` plus `extra`, once `/v2/`
/// answers (or, over TLS, the port accepts).
pub fn registry_serve(root: &Path, extra: &[&str]) -> Served {
    let ready = if extra.contains(&"--tls-cert") {
        Ready::Listening
    } else {
        Ready::Registry
    };
    Served::start(root, ready, |port| {
        let mut command = Command::new(super::mlambda_bin());
        command
            .args(["registry", "serve", "--root"])
            .arg(root)
            .args(["--addr", &format!("127.0.0.1:{port}")])
            .args(extra);
        command
    })
}

/// `skopeo inspect --raw` of a reference on a registry: the exact manifest bytes.
pub fn skopeo_raw_manifest(skopeo: &Path, reference: &str, extra: &[&str]) -> Vec<u8> {
    run_ok(
        Command::new(skopeo)
            .args(["inspect", "--raw"])
            .args(extra)
            .arg(format!("docker://{reference}")),
    )
    .stdout
}
