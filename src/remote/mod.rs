//! A registry over the distribution HTTP API: a repository read as an image source (pull) and
//! written as an image sink (push), from or to any other source or sink of `crate::image`.
//!
//! Written on `reqwest` (blocking, rustls; blob bodies by its async client: see `Streamer`)
//! rather than `oci-client`: its high-level push holds every layer in memory, does not HEAD
//! before uploading, treats a 202 answer to a mount as an error, and has no retries and no
//! docker config. Here blobs stream from their source, what the registry has is skipped, base
//! layers are mounted from a repository they were pushed to before, transient faults are retried
//! with backoff, and credentials come from the places docker looks.
//!
//! - `auth`: credentials, the challenge, bearer tokens per scope.
//! - `retry`: backoff, `Retry-After`, what is transient.
//! - `pull`: a manifest by tag or digest, a blob's body from any offset, a blob's size.
//! - `upload`: one blob (HEAD, mount, monolithic or chunked upload, resume) and the manifest.
//! - `image`: `RemoteImage` (a source) and `RemotePush` (a sink) over the two.

mod auth;
mod image;
mod pull;
mod retry;
mod upload;

use crate::image::{Fetched, ImageError, Source};
use crate::oci::RegistryReference;
use crate::oci::name::host_of;
use auth::Auth;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{StatusCode, Url};
use retry::{error_chain, is_transient_error, is_transient_status};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use crate::image::BlobOutcome;
pub use auth::{Credential, find_credential};
pub use image::{RemoteImage, RemotePush, quiet};
pub use pull::{FetchedManifest, MANIFEST_ACCEPT};
pub use retry::RetryPolicy;

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Auth(String),
    #[error("{what}: {registry} answered HTTP {status}{detail}")]
    Status {
        what: String,
        registry: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: gave up after {attempts} attempts; the last error: {last}")]
    RetriesExhausted {
        what: String,
        attempts: u32,
        last: String,
    },
    #[error("{0}")]
    Transport(String),
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Image(ImageError),
}

/// How one try of an operation failed: worth another try, or not.
#[derive(Debug)]
pub enum Fault {
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    Fatal(RemoteError),
}

impl Fault {
    pub(crate) fn from_transport(what: &str, error: reqwest::Error) -> Fault {
        let certificate = retry::is_certificate_error(&error);
        let transient = is_transient_error(&error);
        // Upload URLs carry long session states; the operation names what was being done.
        let detail = error_chain(&error.without_url());
        if certificate {
            let hint = if detail.contains("CaUsedAsEndEntity") {
                "the registry's certificate is marked as a CA (basicConstraints CA:TRUE), which \
                 TLS clients refuse as a server certificate: sign a server certificate with that \
                 CA, or make the self-signed one with CA:FALSE"
            } else {
                "for a registry with its own CA, pass --ca-cert FILE"
            };
            return Fault::Fatal(RemoteError::Transport(format!(
                "{what}: TLS failed: {detail} ({hint})"
            )));
        }
        if transient {
            Fault::Transient {
                message: format!("{what}: {detail}"),
                retry_after: None,
            }
        } else {
            Fault::Fatal(RemoteError::Transport(format!("{what}: {detail}")))
        }
    }
}

impl From<RemoteError> for Fault {
    fn from(error: RemoteError) -> Fault {
        Fault::Fatal(error)
    }
}

/// A registry URL: `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `scheme://host[:port]/`.
    pub base: Url,
    /// `host[:port]`, as it appears in image references.
    pub authority: String,
    /// Repository path prefix, without slashes at either end; may be empty.
    pub prefix: String,
}

impl Target {
    /// Parses `--registry`. Plain HTTP is refused unless `insecure` or the host is loopback.
    pub fn parse(text: &str, insecure: bool) -> Result<Target, RemoteError> {
        let bad = |why: &str| {
            RemoteError::Config(format!(
                "--registry {text}: {why} (expected http://host:port[/prefix], https://host[/prefix] or file:DIR)"
            ))
        };
        let url = Url::parse(text).map_err(|_| bad("not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if !insecure && !is_loopback(&url) {
                    return Err(RemoteError::Config(format!(
                        "--registry {text}: plain HTTP sends images and credentials unencrypted; use https:// or pass --insecure (loopback hosts need neither)"
                    )));
                }
            }
            _ => return Err(bad("unknown scheme")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; use --username with --password-stdin",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let prefix = url.path().trim_matches('/').to_string();
        if !prefix.is_empty() {
            crate::oci::check_repository(&prefix).map_err(|why| bad(&why))?;
        }
        let mut base = url.clone();
        base.set_path("/");
        Ok(Target {
            base,
            authority,
            prefix,
        })
    }

    /// The registry of an image reference: https unless the reference says otherwise, or a
    /// loopback host or `--insecure` without `--ca-cert` (plain HTTP, as a local test
    /// registry is).
    pub fn for_reference(
        reference: &RegistryReference,
        options: &ConnectOptions,
    ) -> Result<Target, RemoteError> {
        let scheme = match &reference.scheme {
            Some(scheme) => scheme.as_str(),
            None => {
                let loopback = crate::oci::name::is_loopback(host_of(&reference.authority));
                if (loopback || options.insecure) && options.ca_cert.is_none() {
                    "http"
                } else {
                    "https"
                }
            }
        };
        Target::parse(
            &format!("{scheme}://{}", reference.authority),
            options.insecure,
        )
    }

    /// The repository of a model under this target's prefix.
    pub fn repository(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `host[:port]/repository:tag`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.authority)
    }
}

/// Whether the URL's host is this machine (plain HTTP needs no `--insecure` there).
pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(crate::oci::name::is_loopback)
}

/// How to reach and talk to a registry.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub insecure: bool,
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub ca_cert: Option<PathBuf>,
    /// From the flags; else the environment and the docker config are looked at.
    pub credential: Option<Credential>,
    pub retry: RetryPolicy,
    /// Blobs uploaded at once.
    pub parallel: usize,
}

/// What the watcher of a push is told (from several threads at once).
pub trait Progress: Send + Sync {
    fn blob_started(&self, _digest: &str, _size: u64) {}
    /// `sent` bytes of the blob are with the registry (may go back on a retry).
    fn blob_position(&self, _digest: &str, _sent: u64) {}
    fn blob_finished(&self, _digest: &str, _outcome: BlobOutcome) {}
    /// A try failed and will be repeated.
    fn retrying(&self, _what: &str, _message: &str, _wait: Duration) {}
}

/// A push's watcher, shared with the threads that stream the blobs.
pub type Watcher = Arc<dyn Progress>;

/// A watcher that wants to know nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// A connection to one registry.
pub struct Registry {
    http: Client,
    target: Target,
    auth: Auth,
    policy: RetryPolicy,
    /// For blob bodies: see `Streamer`. Idle ones, kept with their open connections.
    streamers: Mutex<Vec<Streamer>>,
    tls: rustls::ClientConfig,
}

/// What a request's sender yields to `Registry::exchange`: the status, the headers, the text.
pub(crate) trait Answer {
    fn status(&self) -> StatusCode;
    fn headers(&self) -> &HeaderMap;
    /// The registry's error text, short, for messages.
    fn detail(self) -> String;
}

impl Answer for Response {
    fn status(&self) -> StatusCode {
        Response::status(self)
    }
    fn headers(&self) -> &HeaderMap {
        Response::headers(self)
    }
    fn detail(self) -> String {
        error_detail(self)
    }
}

/// An answer to a streamed blob request, its body read (the first 64 KiB of it).
pub(crate) struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer for Reply {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        &self.headers
    }
    fn detail(self) -> String {
        detail_of(&self.text)
    }
}

/// Sends blob bodies: an async client on a runtime of its own, driven by the thread that
/// uploads (`block_on`), so the file is read and written to the socket on that thread in
/// 1 MiB pieces. reqwest's blocking `Body` hands a reader over to its runtime thread in 8 KiB
/// pieces through a channel: a third of a push's time went into those thread hand-offs.
struct Streamer {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
}

impl Streamer {
    fn new(tls: &rustls::ClientConfig) -> Result<Streamer, RemoteError> {
        let setup =
            |e: &dyn std::fmt::Display| RemoteError::Config(format!("cannot set up HTTP: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| setup(&e))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .user_agent(concat!("mlambda/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| setup(&error_chain(&e)))?;
        Ok(Streamer { runtime, http })
    }

    fn send(&self, what: &str, request: reqwest::RequestBuilder) -> Result<Reply, Fault> {
        self.runtime.block_on(async {
            let mut response = request
                .send()
                .await
                .map_err(|e| Fault::from_transport(what, e))?;
            let (status, headers) = (response.status(), response.headers().clone());
            let mut body = Vec::new();
            while body.len() < 64 << 10 {
                match response.chunk().await {
                    Ok(Some(piece)) => body.extend_from_slice(&piece),
                    _ => break,
                }
            }
            Ok(Reply {
                status,
                headers,
                text: String::from_utf8_lossy(&body).into_owned(),
            })
        })
    }
}

impl Registry {
    pub fn connect(target: &Target, options: &ConnectOptions) -> Result<Registry, RemoteError> {
        let found = auth::find_credential(&target.authority, options.credential.clone())?;
        let tls = tls_config(options.ca_cert.as_ref())?;
        let http = Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .user_agent(concat!("mlambda/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(30))
            // Uploads of large blobs take long; each request sets its own timeout.
            .timeout(None::<Duration>)
            .tcp_keepalive(Duration::from_secs(30))
            .build()
            .map_err(|e| RemoteError::Config(format!("cannot set up HTTP: {}", error_chain(&e))))?;
        Ok(Registry {
            http,
            target: target.clone(),
            auth: Auth::new(found),
            policy: options.retry.clone(),
            streamers: Mutex::new(Vec::new()),
            tls,
        })
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    fn url(&self, path: &str) -> Result<Url, RemoteError> {
        self.target
            .base
            .join(path)
            .map_err(|e| RemoteError::Protocol(format!("bad URL path {path}: {e}")))
    }

    /// One request, authenticated: a 401 takes the registry's challenge (a fresh bearer token
    /// when one expired mid-push) and sends again. Transient answers and transport errors come
    /// back as `Fault::Transient`; any other answer is the caller's to read.
    fn send(
        &self,
        what: &str,
        scopes: &[String],
        build: &dyn Fn(&Client) -> Result<RequestBuilder, RemoteError>,
    ) -> Result<Response, Fault> {
        self.exchange(what, scopes, |header| {
            let mut request = build(&self.http)?;
            if let Some(header) = header {
                request = request.header(AUTHORIZATION, header);
            }
            request.send().map_err(|e| Fault::from_transport(what, e))
        })
    }

    /// `send` for a request with a blob's body (`upload::file_stream`), sent by a `Streamer`.
    fn send_streamed(
        &self,
        what: &str,
        scopes: &[String],
        build: &dyn Fn(&reqwest::Client) -> Result<reqwest::RequestBuilder, RemoteError>,
    ) -> Result<Reply, Fault> {
        let idle = self
            .streamers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let streamer = match idle {
            Some(streamer) => streamer,
            None => Streamer::new(&self.tls)?,
        };
        let result = self.exchange(what, scopes, |header| {
            let mut request = build(&streamer.http)?;
            if let Some(header) = header {
                request = request.header(AUTHORIZATION, header);
            }
            streamer.send(what, request)
        });
        self.streamers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(streamer);
        result
    }

    /// The rounds of `send`: `attempt` sends once with the `Authorization` header given.
    fn exchange<A: Answer>(
        &self,
        what: &str,
        scopes: &[String],
        mut attempt: impl FnMut(Option<reqwest::header::HeaderValue>) -> Result<A, Fault>,
    ) -> Result<A, Fault> {
        let mut sent_auth = false;
        for _round in 0..4 {
            let header = self.auth.header(&self.http, scopes)?;
            sent_auth |= header.is_some();
            let response = attempt(header)?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED {
                if self
                    .auth
                    .unauthorized(response.headers(), scopes, sent_auth)
                {
                    continue;
                }
                return Err(Fault::Fatal(self.auth.rejected(&self.target.authority)));
            }
            if status == StatusCode::FORBIDDEN {
                return Err(Fault::Fatal(RemoteError::Auth(format!(
                    "{what}: {} refused access (HTTP 403){}",
                    self.target.authority,
                    self.auth
                        .source()
                        .map(|s| format!(" to the credentials from {s}"))
                        .unwrap_or_default()
                ))));
            }
            if is_transient_status(status) {
                let retry_after = retry::retry_after(response.headers());
                return Err(Fault::Transient {
                    message: format!("{what}: HTTP {status}{}", response.detail()),
                    retry_after,
                });
            }
            return Ok(response);
        }
        Err(Fault::Fatal(self.auth.rejected(&self.target.authority)))
    }

    /// `operation` tried until it succeeds, fails for good, or the tries run out.
    fn retrying<T>(
        &self,
        what: &str,
        progress: &dyn Progress,
        mut operation: impl FnMut(u32) -> Result<T, Fault>,
    ) -> Result<T, RemoteError> {
        let attempts = self.policy.attempts.max(1);
        let mut attempt = 1;
        loop {
            match operation(attempt) {
                Ok(value) => return Ok(value),
                Err(Fault::Fatal(error)) => return Err(error),
                Err(Fault::Transient {
                    message,
                    retry_after,
                }) => {
                    if attempt >= attempts {
                        return Err(RemoteError::RetriesExhausted {
                            what: what.to_string(),
                            attempts,
                            last: message,
                        });
                    }
                    let wait = self.policy.delay(attempt, retry_after);
                    progress.retrying(what, &message, wait);
                    std::thread::sleep(wait);
                    attempt += 1;
                }
            }
        }
    }

    /// `GET /v2/`: checks the registry answers the distribution API and learns its challenge.
    pub fn ping(&self, progress: &dyn Progress) -> Result<(), RemoteError> {
        let url = self.url("v2/")?;
        self.retrying("connecting to the registry", progress, |_| {
            let response = self.send("GET /v2/", &[], &|http| {
                Ok(http.get(url.clone()).timeout(Duration::from_secs(60)))
            })?;
            let status = response.status();
            if status.is_success() {
                Ok(())
            } else {
                Err(Fault::Fatal(RemoteError::Status {
                    what: "GET /v2/ (is this a registry?)".into(),
                    registry: self.target.authority.clone(),
                    status: status.as_u16(),
                    detail: error_detail(response),
                }))
            }
        })
    }
}

/// The registry's error text, short, for messages.
fn error_detail(response: Response) -> String {
    detail_of(&response.text().unwrap_or_default())
}

fn detail_of(text: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let message = parsed
        .as_ref()
        .and_then(|v| v["errors"].as_array())
        .map(|errors| {
            errors
                .iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["code"].as_str().unwrap_or_default(),
                        e["message"].as_str().unwrap_or_default()
                    )
                    .trim()
                    .to_string()
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| text.chars().take(200).collect::<String>());
    let message = message.trim();
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// rustls with the system's roots plus `--ca-cert`.
pub(crate) fn tls_config(ca_cert: Option<&PathBuf>) -> Result<rustls::ClientConfig, RemoteError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = ca_cert {
        let bad = |why: String| RemoteError::Config(format!("--ca-cert {}: {why}", path.display()));
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
            let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(bad("holds no PEM certificate".into()));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RemoteError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// What to push: an image manifest of any source, to a repository and tag of the registry.
pub struct PushRequest<'a> {
    pub source: &'a dyn Source,
    pub manifest: &'a Fetched,
    pub repository: &'a str,
    pub tag: &'a str,
    /// For each blob, repositories of the same registry that already hold it (mount sources).
    pub known_locations: &'a HashMap<String, Vec<String>>,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `host[:port]/repository:tag`.
    pub reference: String,
    pub repository: String,
    /// The manifest digest the registry confirmed.
    pub digest: String,
    /// Every blob of the image and how it got there.
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Pushes the image: every blob (`parallel` at once, streamed from the source), then the
/// manifest.
pub fn push_image(
    registry: &Registry,
    request: &PushRequest,
    parallel: usize,
    progress: &Watcher,
) -> Result<Pushed, RemoteError> {
    registry.ping(progress.as_ref())?;
    let sink = RemotePush {
        registry,
        repository: request.repository,
        known_locations: request.known_locations,
        progress,
        parallel,
    };
    let copied = crate::image::copy(request.source, request.manifest, &sink, Some(request.tag))?;
    Ok(Pushed {
        reference: registry.target.reference(request.repository, request.tag),
        repository: request.repository.to_string(),
        digest: copied.digest,
        blobs: copied.blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `mlambda serve` pushes from its blocking pool: a streamer's runtime must run and drop
    /// there.
    #[test]
    fn a_streamer_works_on_a_blocking_pool_thread() {
        let outer = tokio::runtime::Runtime::new().unwrap();
        outer.block_on(async {
            tokio::task::spawn_blocking(|| {
                let streamer = Streamer::new(&tls_config(None).unwrap()).unwrap();
                assert_eq!(streamer.runtime.block_on(async { 7 }), 7);
            })
            .await
            .unwrap()
        });
    }

    #[test]
    fn targets() {
        let t = Target::parse("https://registry.example.com/team", false).unwrap();
        assert_eq!(t.authority, "registry.example.com");
        assert_eq!(t.prefix, "team");
        assert_eq!(t.repository("model"), "team/model");
        assert_eq!(
            t.reference("team/model", "2"),
            "registry.example.com/team/model:2"
        );
        let t = Target::parse("http://127.0.0.1:5000", false).unwrap();
        assert_eq!(t.authority, "127.0.0.1:5000");
        assert_eq!(t.prefix, "");
        assert!(Target::parse("http://[::1]:5000/x/", false).is_ok());
        assert!(Target::parse("http://localhost:5000", false).is_ok());
        let err = Target::parse("http://registry.example.com", false).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(Target::parse("http://registry.example.com", true).is_ok());
        assert!(Target::parse("https://u:p@r.example.com", false).is_err());
        assert!(Target::parse("https://r.example.com/Bad", false).is_err());
        assert!(Target::parse("registry.example.com", false).is_err());
    }
}
