//! `mlambda registry serve`: the OCI distribution-spec v1.1 HTTP API over the file-backed
//! store, so what `mlambda upload` writes is pullable, and what any client pushes lands in
//! plain OCI image layouts that skopeo and umoci read with no server.
//!
//! Repository names hold slashes, so one handler parses the path itself (see [`Route`]) and
//! hands over to one module per part of the API. Request bodies are streamed to disk while
//! hashed and blobs are streamed out, so memory stays flat whatever the blob size.

mod blobs;
pub mod errors;
mod manifests;
mod sessions;
mod tags;
mod uploads;

use crate::http::{self, CHALLENGE, Htpasswd, ListenError, percent_decode, query_pairs};
use crate::store::{Mutability, Store, StoreError, check_repository};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use errors::{ApiError, ApiResult, Code};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    pub tags: TagRules,
}

/// Which pushed tags become immutable (never moved to another manifest), and whether a
/// delete may remove one. The rule itself is the store's; this says where it applies.
#[derive(Debug, Clone, Copy, Default)]
pub struct TagRules {
    pub immutable: ImmutableTags,
    /// An admin's override: immutable tags, and the manifests they name, may be deleted.
    pub allow_delete_immutable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImmutableTags {
    /// Tags move, except those already immutable (a version `upload` recorded).
    #[default]
    None,
    /// Numeric tags, mlambda's version tags (the manager).
    Numeric,
    /// Every tag (`registry serve --immutable-tags`).
    All,
}

impl TagRules {
    pub(crate) fn mutability(&self, tag: &str) -> Mutability {
        let numeric = !tag.is_empty() && tag.bytes().all(|b| b.is_ascii_digit());
        match self.immutable {
            ImmutableTags::All => Mutability::Immutable,
            ImmutableTags::Numeric if numeric => Mutability::Immutable,
            _ => Mutability::Mutable,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

impl From<std::io::Error> for ServeError {
    fn from(error: std::io::Error) -> ServeError {
        ServeError::Listen(ListenError::Io(error))
    }
}

/// What every request handler shares.
pub(crate) struct AppState {
    store: Store,
    auth: Option<Arc<Htpasswd>>,
    anonymous_read: bool,
    tags: TagRules,
    /// Upload sessions with a digest computed as their bytes arrived.
    sessions: Arc<sessions::Sessions>,
}

type Shared = Arc<AppState>;

/// Runs the registry until SIGINT or SIGTERM; `ready` is told the address it listens on.
pub async fn serve(config: ServeConfig, ready: impl FnOnce(SocketAddr)) -> Result<(), ServeError> {
    let store = Store::open(&config.root)?;
    let auth = http::load_htpasswd(config.htpasswd.as_deref())?;
    let app = router(store, auth, config.anonymous_read, config.tags)?;
    let listener = http::bind(config.addr, config.tls.as_ref()).await?;
    ready(listener.local_addr()?);
    Ok(listener.run(app).await?)
}

/// The distribution API over `store` as a router with a fallback for every path, so that a
/// server with more to offer (the manager) can put its own routes in front.
pub fn router(
    store: Store,
    auth: Option<Arc<Htpasswd>>,
    anonymous_read: bool,
    tags: TagRules,
) -> Result<axum::Router, ServeError> {
    let (expired, _) = store
        .uploads()
        .expire(crate::store::uploads::UPLOAD_MAX_AGE, false)?;
    if expired > 0 {
        tracing::info!("removed {expired} expired upload(s)");
    }
    let sessions = Arc::new(sessions::Sessions::default());
    let state = Arc::new(AppState {
        store: store.clone(),
        auth,
        anonymous_read,
        tags,
        sessions: sessions.clone(),
    });
    tokio::spawn(expire_uploads_hourly(store, sessions));
    Ok(axum::Router::new().fallback(handle).with_state(state))
}

/// Expires abandoned uploads on disk, and drops the memory of sessions whose files are gone
/// (expired here or by a `registry gc`) or that nobody touched for as long.
async fn expire_uploads_hourly(store: Store, sessions: Arc<sessions::Sessions>) {
    use crate::store::uploads::UPLOAD_MAX_AGE;
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        let uploads = store.uploads();
        let sessions = sessions.clone();
        let result = tokio::task::spawn_blocking(move || {
            let expired = uploads.expire(UPLOAD_MAX_AGE, false);
            sessions.prune(&uploads, UPLOAD_MAX_AGE);
            expired
        })
        .await;
        if let Ok(Err(e)) = result {
            tracing::warn!("cannot expire old uploads: {e}");
        }
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
            auth.check(authorization).await.map_err(|refused| {
                ApiError::new(Code::Unauthorized, refused.0)
                    .header(header::WWW_AUTHENTICATE, CHALLENGE)
            })?;
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
        Route::Catalog if reading => {
            without_body_for_head(&method, tags::catalog(state, call).await)
        }
        Route::Tags(name) if reading => {
            check_name(&name)?;
            without_body_for_head(&method, tags::list(state, &name, call).await)
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

/// HEAD is answered as GET, headers (`Content-Length` too) and all, without the body.
fn without_body_for_head(method: &Method, result: ApiResult) -> ApiResult {
    let response = result?;
    if method != Method::HEAD {
        return Ok(response);
    }
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
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
}
