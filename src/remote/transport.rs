//! The connection to one registry: requests authenticated (a 401 answered with the
//! registry's challenge), transient failures retried with backoff, TLS with the system's
//! roots plus `--ca-cert`, and blob bodies sent by an async client on the uploading thread.

use super::auth::{self, Auth};
use super::error::{Fault, RemoteError, detail_of, error_detail};
use super::retry::{self, RetryPolicy, error_chain, is_transient_status};
use super::{ConnectOptions, Progress, Target};
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{AUTHORIZATION, HeaderMap};
use reqwest::{StatusCode, Url};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A connection to one registry.
pub struct Registry {
    http: Client,
    pub(super) target: Target,
    auth: Auth,
    pub(super) policy: RetryPolicy,
    /// For blob bodies: see `Streamer`. Idle ones, kept with their open connections.
    streamers: Mutex<Vec<Streamer>>,
    tls: rustls::ClientConfig,
}

/// What a request's sender yields to `Registry::exchange`: the status, the headers, the text.
pub(super) trait Answer {
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
pub(super) struct Reply {
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

    pub(super) fn url(&self, path: &str) -> Result<Url, RemoteError> {
        self.target
            .base
            .join(path)
            .map_err(|e| RemoteError::Protocol(format!("bad URL path {path}: {e}")))
    }

    /// One request, authenticated: a 401 takes the registry's challenge (a fresh bearer token
    /// when one expired mid-push) and sends again. Transient answers and transport errors come
    /// back as `Fault::Transient`; any other answer is the caller's to read.
    pub(super) fn send(
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
    pub(super) fn send_streamed(
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
    pub(super) fn retrying<T>(
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

/// rustls with the system's roots plus `--ca-cert`.
pub fn tls_config(ca_cert: Option<&PathBuf>) -> Result<rustls::ClientConfig, RemoteError> {
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
}
