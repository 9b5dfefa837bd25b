//! `mlambda upload --host H --port P`: the folder goes to a manager (`mlambda serve`) as a
//! tar.gz packed while it is sent, then the build log is followed until the build ends.

mod pack;

use crate::model::spec::ModelSpec;
use crate::remote::{ConnectOptions, is_loopback, tls_config};
use crate::remote::{Credential, find_credential};
use pack::{PackError, PackFailure, archive_entries, pack};
use reqwest::blocking::{Client, RequestBuilder, multipart};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::time::Duration;
use url::Url;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Config(String),
    #[error("cannot reach the manager at {url}: {message}")]
    Connect { url: String, message: String },
    /// The server's own words (`{"error": ...}`) with the status.
    #[error("the manager refused the upload (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error(
        "lost the connection to the manager at {url} while sending the folder ({message}); check that `mlambda serve` still runs there (its log says why it stopped, or whether the folder is above its --max-upload), then upload again"
    )]
    Lost { url: String, message: String },
    #[error(transparent)]
    Pack(#[from] PackError),
    #[error("the build log of {0} ended before the build did, and could not be resumed")]
    LogLost(String),
}

/// Where `mlambda serve` listens unless told otherwise.
pub const DEFAULT_PORT: u16 = 8080;

/// A manager's address and how to talk to it.
pub struct ManagerClient {
    base: Url,
    http: Client,
    credential: Option<(String, String)>,
}

impl ManagerClient {
    /// `host` is a name or address, or a URL `http(s)://host[:port]`; `port` applies when the
    /// host does not give one. Plain HTTP is for loopback hosts unless `insecure`.
    pub fn connect(
        host: &str,
        port: Option<u16>,
        options: &ConnectOptions,
    ) -> Result<ManagerClient, ClientError> {
        let config = |m: String| ClientError::Config(m);
        let text = if host.contains("://") {
            host.to_string()
        } else if host.matches(':').count() > 1 && !host.starts_with('[') {
            format!("http://[{host}]")
        } else {
            format!("http://{host}")
        };
        let mut base = Url::parse(&text).map_err(|e| config(format!("--host {host}: {e}")))?;
        // A bare host means `mlambda serve`'s own default port.
        let port =
            port.or((!host.contains("://") && base.port().is_none()).then_some(DEFAULT_PORT));
        if let Some(port) = port {
            base.set_port(Some(port))
                .map_err(|()| config(format!("--host {host}: cannot take a port")))?;
        }
        base.set_path("/");
        if base.scheme() == "http" && !options.insecure && !is_loopback(&base) {
            return Err(config(format!(
                "--host {host}: plain HTTP sends the model and credentials unencrypted; use https://{host} or pass --insecure (loopback hosts need neither)"
            )));
        }
        if !matches!(base.scheme(), "http" | "https") {
            return Err(config(format!(
                "--host {host}: the scheme must be http or https"
            )));
        }
        let authority = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().unwrap_or("")),
            None => base.host_str().unwrap_or("").to_string(),
        };
        let credential = find_credential(&authority, options.credential.clone())
            .map_err(|e| config(e.to_string()))?
            .and_then(|found| match found.credential {
                Credential::Basic { username, password } => Some((username, password)),
                Credential::IdentityToken(_) => None,
            });
        let http = Client::builder()
            .tls_backend_preconfigured(
                tls_config(options.ca_cert.as_ref()).map_err(|e| config(e.to_string()))?,
            )
            .user_agent(concat!("mlambda/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .timeout(None::<Duration>)
            .build()
            .map_err(|e| config(format!("cannot set up HTTP: {e}")))?;
        Ok(ManagerClient {
            base,
            http,
            credential,
        })
    }

    pub fn url(&self) -> &Url {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        let url = self.base.join(path).unwrap_or_else(|_| self.base.clone());
        let request = self.http.request(method, url);
        match &self.credential {
            Some((user, password)) => request.basic_auth(user, Some(password)),
            None => request,
        }
    }

    /// Whether the manager answers and takes our credentials, before any byte of the model
    /// is sent (a server refuses a request before reading its body, and a client still
    /// sending it would only see the connection close).
    pub fn check(&self) -> Result<(), ClientError> {
        let response = self
            .request(reqwest::Method::GET, "api/v2/model")
            .send()
            .map_err(|e| self.unreachable(e))?;
        match response.status().as_u16() {
            401 => Err(ClientError::Refused {
                status: 401,
                message: if self.credential.is_some() {
                    "the credentials were refused".into()
                } else {
                    "the manager needs credentials: --username with --password-stdin, MLAMBDA_REGISTRY_USERNAME/MLAMBDA_REGISTRY_PASSWORD, or a docker config entry for it".into()
                },
            }),
            _ => read_json(response).map(|_| ()),
        }
    }

    /// Sends the folder and its metadata; the answer is the accepted version (`Pending`).
    pub fn upload(&self, spec: &ModelSpec, metadata: &Value) -> Result<Value, ClientError> {
        self.check()?;
        let (reader, mut writer) = std::io::pipe().map_err(|e| {
            ClientError::Pack(PackError {
                path: spec.dir.display().to_string(),
                message: e.to_string(),
            })
        })?;
        let files = archive_entries(spec)?;
        let packer = std::thread::spawn(move || {
            let result = pack(&files, &mut writer);
            drop(writer);
            result
        });
        let form = multipart::Form::new()
            .part(
                "metadata",
                multipart::Part::text(metadata.to_string())
                    .mime_str("application/json")
                    .map_err(|e| ClientError::Config(e.to_string()))?,
            )
            .part(
                "payload",
                multipart::Part::reader(reader)
                    .file_name("model.tar.gz")
                    .mime_str("application/gzip")
                    .map_err(|e| ClientError::Config(e.to_string()))?,
            );
        let sent = self
            .request(reqwest::Method::POST, "api/v2/model/upload")
            .multipart(form)
            .send();
        // After a failed request the packer may still wait on the pipe: it is waited for only
        // when it ended already, so that a file that could not be read is still the one blamed.
        let packed = if sent.is_ok() || packer.is_finished() {
            packer
                .join()
                .unwrap_or_else(|_| Err(PackFailure::Read("the packing thread failed".into())))
        } else {
            Err(PackFailure::Send)
        };
        if let Err(PackFailure::Read(message)) = packed {
            return Err(ClientError::Pack(PackError {
                path: spec.dir.display().to_string(),
                message,
            }));
        }
        // Packing stops when the request stops taking the archive: the request says why.
        let response = sent.map_err(|e| {
            if e.is_connect() {
                self.unreachable(e)
            } else {
                ClientError::Lost {
                    url: self.base.to_string(),
                    message: causes(&e),
                }
            }
        })?;
        read_json(response)
    }

    /// The version as the manager knows it now.
    pub fn version(&self, name: &str, version: u32) -> Result<Value, ClientError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v2/model/version/{name}/{version}"),
            )
            .send()
            .map_err(|e| self.unreachable(e))?;
        read_json(response)
    }

    /// Follows the build log (`on_line` hears each line once, across reconnections) until the
    /// build ends; returns the final status event's data.
    pub fn follow(
        &self,
        name: &str,
        version: u32,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Value, ClientError> {
        let mut seen = 0usize;
        let mut failures = 0;
        loop {
            match self.follow_once(name, version, &mut seen, on_line) {
                Ok(Some(status)) => return Ok(status),
                Ok(None) | Err(_) if failures < 20 => {
                    failures += 1;
                    std::thread::sleep(Duration::from_millis(500));
                }
                Ok(None) => return Err(ClientError::LogLost(format!("{name}:{version}"))),
                Err(error) => return Err(error),
            }
        }
    }

    /// One connection to the log stream; `None` when it ended without a final status.
    fn follow_once(
        &self,
        name: &str,
        version: u32,
        seen: &mut usize,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Option<Value>, ClientError> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("api/v2/model/version/{name}/{version}/logs"),
            )
            .header("Accept", "text/event-stream")
            .header("Last-Event-ID", seen.to_string())
            .send()
            .map_err(|e| self.unreachable(e))?;
        if !response.status().is_success() {
            return read_json(response).map(|_| None);
        }
        let mut event = SseEvent::default();
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else {
                return Ok(None);
            };
            if !line.is_empty() {
                event.add(&line);
                continue;
            }
            match event.kind.as_str() {
                "log" => {
                    let id = event.id.unwrap_or(*seen + 1);
                    if id > *seen {
                        on_line(&event.data);
                        *seen = id;
                    }
                }
                "status" => {
                    let status: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                    if matches!(status["status"].as_str(), Some("Finished" | "Failed")) {
                        return Ok(Some(status));
                    }
                }
                _ => {}
            }
            event = SseEvent::default();
        }
        Ok(None)
    }

    fn unreachable(&self, error: reqwest::Error) -> ClientError {
        let mut message = causes(&error);
        if error.is_connect() {
            message.push_str(" (is `mlambda serve` running there?)");
        }
        ClientError::Connect {
            url: self.base.to_string(),
            message,
        }
    }
}

/// The error and its causes, as one line.
fn causes(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    message
}

#[derive(Default)]
struct SseEvent {
    id: Option<usize>,
    kind: String,
    data: String,
}

impl SseEvent {
    fn add(&mut self, line: &str) {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = value.parse().ok(),
            "event" => self.kind = value.to_string(),
            "data" if self.data.is_empty() => self.data = value.to_string(),
            "data" => {
                self.data.push('\n');
                self.data.push_str(value);
            }
            _ => {}
        }
    }
}

fn read_json(response: reqwest::blocking::Response) -> Result<Value, ClientError> {
    let status = response.status();
    let text = response.text().unwrap_or_default();
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let message = value["error"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| text.trim().chars().take(500).collect());
    Err(ClientError::Refused {
        status: status.as_u16(),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_of(host: &str, port: Option<u16>) -> String {
        ManagerClient::connect(host, port, &ConnectOptions::default())
            .map(|m| m.url().to_string())
            .unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn hosts_ports_and_schemes() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert_eq!(url_of("127.0.0.1", Some(9090)), "http://127.0.0.1:9090/");
        assert_eq!(url_of("localhost", None), "http://localhost:8080/");
        assert_eq!(url_of("127.0.0.1:9000", None), "http://127.0.0.1:9000/");
        assert_eq!(url_of("::1", Some(81)), "http://[::1]:81/");
        assert_eq!(
            url_of("https://models.example", None),
            "https://models.example/"
        );
        assert!(url_of("models.example", None).contains("plain HTTP"));
        assert!(url_of("ftp://localhost", None).contains("scheme"));
    }
}
