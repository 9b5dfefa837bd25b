//! `mlambda registry serve`: the OCI distribution-spec v1.1 HTTP API over the file-backed
//! store, so what `mlambda upload` writes is pullable, and what any client pushes lands in
//! plain OCI image layouts that skopeo and umoci read with no server.
//!
//! Repository names hold slashes, so one handler parses the path itself (see [`Route`]) and
//! hands over to one module per part of the API. Request bodies are streamed to disk while
//! hashed and blobs are streamed out, so memory stays flat whatever the blob size.

pub mod auth;
mod blobs;
pub mod errors;
mod manifests;
mod tags;
mod uploads;

use crate::registry::store::{Store, StoreError, check_repository};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use errors::{ApiError, ApiResult, Code};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub root: PathBuf,
    pub addr: SocketAddr,
    pub htpasswd: Option<PathBuf>,
    /// With `htpasswd`: pulls need no credentials, pushes and deletes do.
    pub anonymous_read: bool,
    pub tls: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("cannot listen on {addr} (another server there? choose an address with --addr)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server: {0}")]
    Io(#[from] std::io::Error),
}

/// What every request handler shares.
pub(crate) struct AppState {
    store: Store,
    auth: Option<Arc<auth::Htpasswd>>,
    anonymous_read: bool,
    /// Upload sessions with a digest computed as their bytes arrived.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<uploads::Progress>>>>,
}

type Shared = Arc<AppState>;

/// Runs the registry until SIGINT or SIGTERM; `ready` is told the address it listens on.
pub async fn serve(config: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let store = Store::open(&config.root)?;
    let auth = load_htpasswd(config.htpasswd.as_deref())?;
    let app = router(store, auth, config.anonymous_read)?;
    let listener = bind(config.addr, config.tls.as_ref()).await?;
    ready(listener.local_addr()?);
    listener.run(app).await
}

/// The credentials of `--htpasswd`, when given.
pub fn load_htpasswd(
    path: Option<&std::path::Path>,
) -> Result<Option<Arc<auth::Htpasswd>>, ServeError> {
    path.map(|path| {
        auth::Htpasswd::load(path)
            .map(Arc::new)
            .map_err(ServeError::Config)
    })
    .transpose()
}

/// The distribution API over `store` as a router with a fallback for every path, so that a
/// server with more to offer (the manager) can put its own routes in front.
pub fn router(
    store: Store,
    auth: Option<Arc<auth::Htpasswd>>,
    anonymous_read: bool,
) -> Result<axum::Router, ServeError> {
    let (expired, _) = store
        .uploads()
        .expire(crate::registry::store::uploads::UPLOAD_MAX_AGE, false)?;
    if expired > 0 {
        tracing::info!("removed {expired} expired upload(s)");
    }
    let state = Arc::new(AppState {
        store: store.clone(),
        auth,
        anonymous_read,
        sessions: Mutex::new(HashMap::new()),
    });
    tokio::spawn(expire_uploads_hourly(store));
    Ok(axum::Router::new().fallback(handle).with_state(state))
}

/// A bound socket, with TLS when asked, ready to serve a router.
pub struct Listener {
    tcp: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Binds `addr`; `tls` is the PEM certificate chain and key.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
) -> Result<Listener, ServeError> {
    let tls = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    Ok(Listener { tcp, tls })
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self, app: axum::Router) -> Result<(), ServeError> {
        self.run_until(app, shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets open requests finish.
    pub async fn run_until(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        match self.tls {
            None => axum::serve(self.tcp, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ServeError::Io),
            Some(acceptor) => serve_tls(self.tcp, acceptor, app, shutdown).await,
        }
    }
}

async fn expire_uploads_hourly(store: Store) {
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let uploads = store.uploads();
        let result = tokio::task::spawn_blocking(move || {
            uploads.expire(crate::registry::store::uploads::UPLOAD_MAX_AGE, false)
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!("cannot expire old uploads: {e}");
        }
    }
}

/// SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ServeError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ServeError::Config(format!("{}: cannot read certificates: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(ServeError::Config(format!(
            "{}: holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ServeError::Config(format!("{}: cannot read the key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ServeError::Config(format!("TLS: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match acceptor.accept(tcp).await {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::info!("TLS handshake with {peer} failed: {e}");
                    return;
                }
            };
            let service = TowerToHyperService::new(app);
            if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!("connection with {peer}: {e}");
            }
        });
    }
}

/// What a request path names. Repository names may hold slashes, so the path is read from
/// its end.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Base,
    Catalog,
    Tags(String),
    Manifest(String, String),
    Referrers(String, String),
    Blob(String, String),
    Upload(String, Option<String>),
}

fn route(path: &str) -> Option<Route> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    let segments: Vec<String> = rest.split('/').map(percent_decode).collect::<Option<_>>()?;
    let n = segments.len();
    let name = |count: usize| segments[..n - count].join("/");
    let at = |i: usize| segments.get(n.wrapping_sub(i)).map(String::as_str);
    let routed = match (at(3), at(2), at(1)) {
        (Some("blobs"), Some("uploads"), Some(id)) if n > 3 => {
            let id = (!id.is_empty()).then(|| id.to_string());
            Route::Upload(name(3), id)
        }
        (_, Some("blobs"), Some("uploads")) if n > 2 => Route::Upload(name(2), None),
        (_, Some("tags"), Some("list")) if n > 2 => Route::Tags(name(2)),
        (_, Some("manifests"), Some(reference)) if n > 2 => {
            Route::Manifest(name(2), reference.to_string())
        }
        (_, Some("referrers"), Some(digest)) if n > 2 => {
            Route::Referrers(name(2), digest.to_string())
        }
        (_, Some("blobs"), Some(digest)) if n > 2 => Route::Blob(name(2), digest.to_string()),
        _ => return None,
    };
    Some(routed)
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The query's parameters in order (a key may repeat, as `tag` does).
pub(crate) fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| percent_decode(&s.replace('+', " "));
            Some((decode(key)?, decode(value)?))
        })
        .collect()
}

pub(crate) fn query_value<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A request as the handlers see it.
pub(crate) struct Call {
    pub method: Method,
    pub headers: HeaderMap,
    pub query: Vec<(String, String)>,
    pub body: Body,
}

async fn handle(State(state): State<Shared>, request: Request) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let mut response = match dispatch(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    response.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    let bytes = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    tracing::info!(
        "{method} {path} {} {bytes} {:.1}ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

async fn dispatch(state: &Shared, request: Request) -> ApiResult {
    let (parts, body) = request.into_parts();
    let reading = matches!(parts.method, Method::GET | Method::HEAD);
    if let Some(auth) = &state.auth {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if !(reading && state.anonymous_read && authorization.is_none()) {
            auth.check(authorization).await?;
        }
    }
    let route = route(parts.uri.path()).ok_or_else(|| {
        ApiError::new(Code::Unsupported, "no such endpoint").status(StatusCode::NOT_FOUND)
    })?;
    let call = Call {
        method: parts.method,
        headers: parts.headers,
        query: query_pairs(parts.uri.query()),
        body,
    };
    let check_name = |name: &str| {
        check_repository(name).map_err(|message| ApiError::new(Code::NameInvalid, message))
    };
    let method = call.method.clone();
    match route {
        Route::Base => match method {
            Method::GET | Method::HEAD => Ok((
                [(header::CONTENT_TYPE, "application/json")],
                if method == Method::GET { "{}" } else { "" },
            )
                .into_response()),
            _ => Err(not_allowed()),
        },
        Route::Catalog if method == Method::GET => tags::catalog(state, call).await,
        Route::Tags(name) if method == Method::GET => {
            check_name(&name)?;
            tags::list(state, &name, call).await
        }
        Route::Referrers(name, digest) if method == Method::GET => {
            check_name(&name)?;
            manifests::referrers(state, &name, &digest, call).await
        }
        Route::Manifest(name, reference) => {
            check_name(&name)?;
            match method {
                Method::GET | Method::HEAD => manifests::get(state, &name, &reference, call).await,
                Method::PUT => manifests::put(state, &name, &reference, call).await,
                Method::DELETE => manifests::delete(state, &name, &reference).await,
                _ => Err(not_allowed()),
            }
        }
        Route::Blob(name, digest) => {
            check_name(&name)?;
            match method {
                Method::GET | Method::HEAD => blobs::get(state, &name, &digest, call).await,
                Method::DELETE => blobs::delete(state, &name, &digest).await,
                _ => Err(not_allowed()),
            }
        }
        Route::Upload(name, None) if method == Method::POST => {
            check_name(&name)?;
            uploads::start(state, &name, call).await
        }
        Route::Upload(name, Some(id)) => {
            check_name(&name)?;
            match method {
                Method::GET => uploads::status(state, &name, &id).await,
                Method::PATCH => uploads::patch(state, &name, &id, call).await,
                Method::PUT => uploads::finish(state, &name, &id, call).await,
                Method::DELETE => uploads::cancel(state, &name, &id).await,
                _ => Err(not_allowed()),
            }
        }
        _ => Err(not_allowed()),
    }
}

fn not_allowed() -> ApiError {
    ApiError::new(Code::Unsupported, "method not allowed here")
}

/// A response with headers and an optional body; `Content-Length` set when known.
pub(crate) fn respond(
    status: StatusCode,
    headers: &[(&str, String)],
    body: Body,
    length: Option<u64>,
) -> Response {
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    if let Some(length) = length {
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    response
}

/// Runs filesystem work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_from_the_end() {
        let r = |p| route(p);
        assert_eq!(r("/v2/"), Some(Route::Base));
        assert_eq!(r("/v2"), Some(Route::Base));
        assert_eq!(r("/v2/_catalog"), Some(Route::Catalog));
        assert_eq!(r("/v2/a/b/tags/list"), Some(Route::Tags("a/b".into())));
        assert_eq!(
            r("/v2/a/manifests/1"),
            Some(Route::Manifest("a".into(), "1".into()))
        );
        assert_eq!(
            r("/v2/blobs/blobs/sha256%3Aab"),
            Some(Route::Blob("blobs".into(), "sha256:ab".into()))
        );
        assert_eq!(
            r("/v2/a/b/blobs/uploads/"),
            Some(Route::Upload("a/b".into(), None))
        );
        assert_eq!(
            r("/v2/a/blobs/uploads"),
            Some(Route::Upload("a".into(), None))
        );
        assert_eq!(
            r("/v2/a/blobs/uploads/xyz"),
            Some(Route::Upload("a".into(), Some("xyz".into())))
        );
        assert_eq!(
            r("/v2/a/referrers/sha256:x"),
            Some(Route::Referrers("a".into(), "sha256:x".into()))
        );
        assert_eq!(r("/v2/manifests/x"), None);
        assert_eq!(r("/v3/a/manifests/x"), None);
        assert_eq!(r("/v2/a/%zz/tags/list"), None);
    }

    #[test]
    fn query_pairs_keep_repeats_and_decode() {
        let pairs = query_pairs(Some("tag=a&tag=b&last=x%2Fy&n=2"));
        assert_eq!(pairs.len(), 4);
        assert_eq!(query_value(&pairs, "tag"), Some("a"));
        assert_eq!(query_value(&pairs, "last"), Some("x/y"));
    }
}
