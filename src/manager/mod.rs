//! `mlambda serve`: Hydrosphere's manager in one process. Clients upload a model folder
//! (a tar.gz and its metadata); the server unpacks it, takes a version at once, builds the
//! image in a bounded queue, keeps the build log in the catalogue, shows the models on a web
//! page, and serves the images over the OCI distribution API at `/v2/` from the same store.

mod api;
mod builds;
mod page;
pub mod unpack;
mod upload;

use crate::http::{self, CHALLENGE, Htpasswd};
use crate::pipeline::Home;
use crate::server::{self, ServeError};
use crate::store::Store;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// How the manager is started.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    pub home: Home,
    pub addr: SocketAddr,
    pub htpasswd: Option<PathBuf>,
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Bytes of one upload's request body.
    pub max_upload: u64,
    /// Bytes of one uploaded folder once unpacked.
    pub max_unpacked: u64,
    /// Builds running at once.
    pub builders: usize,
    /// Builds accepted and not finished (waiting or running) before uploads are refused.
    pub queue: usize,
    /// Where versions are pushed once built; without it they stay in the home's store.
    pub remote: Option<crate::pipeline::push::Remote>,
}

/// What every handler of the manager shares.
pub(crate) struct Manager {
    home: Home,
    store: Store,
    auth: Option<Arc<Htpasswd>>,
    builds: builds::Builds,
    limits: unpack::Limits,
    max_upload: u64,
    /// Cancelled on SIGINT/SIGTERM, so that log streams end and the server can stop.
    stopping: tokio_util::sync::CancellationToken,
}

type Shared = Arc<Manager>;

/// Runs the manager and the registry until SIGINT or SIGTERM; `ready` hears the address.
pub async fn serve(
    config: ManagerConfig,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), ServeError> {
    let home = config.home.clone();
    let store = home.store()?;
    // Opening the catalogue marks the builds of a server that died `Failed`.
    let opening = home.clone();
    tokio::task::spawn_blocking(move || opening.open_catalog().map(drop))
        .await
        .map_err(|e| ServeError::Config(e.to_string()))?
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let uploads = upload::clean_upload_area(&home)?;
    let auth = http::load_htpasswd(config.htpasswd.as_deref())?;
    let manager = Arc::new(Manager {
        home,
        store: store.clone(),
        auth: auth.clone(),
        builds: builds::Builds::new(
            config.builders.max(1),
            config.queue.max(1),
            uploads,
            config.remote.clone(),
        ),
        limits: unpack::Limits {
            unpacked_bytes: config.max_unpacked,
            entries: 1_000_000,
        },
        max_upload: config.max_upload,
        stopping: tokio_util::sync::CancellationToken::new(),
    });
    // Any uploader can push here: the version tags the builds record never move.
    let tags = server::TagRules {
        immutable: server::ImmutableTags::Numeric,
        allow_delete_immutable: false,
    };
    let registry = server::router(store, auth, false, tags)?;
    let app = router(manager.clone()).fallback_service(registry);
    let listener = http::bind(config.addr, config.tls.as_ref()).await?;
    ready(listener.local_addr()?);
    let stopping = manager.stopping.clone();
    let stop = async move {
        http::shutdown_signal().await;
        tracing::info!("stopping: open log streams end, unfinished builds are marked Failed");
        stopping.cancel();
    };
    let served = listener.run_until(app, stop).await;
    let stopped = manager.clone();
    let _ =
        tokio::task::spawn_blocking(move || stopped.builds.abandon(&stopped.home.catalog)).await;
    Ok(served?)
}

fn router(manager: Shared) -> axum::Router {
    axum::Router::new()
        .route("/", get(page::models))
        .route("/models/{name}", get(page::model))
        .route("/models/{name}/{version}", get(page::version))
        .route("/openapi.yaml", get(api::openapi))
        .route(
            "/api/v2/model/upload",
            // The payload's size is checked as it streams (`--max-upload`), so that an
            // oversized upload is answered 413 after its excess is drained, not cut off.
            post(upload::upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v2/model", get(api::models))
        .route("/api/v2/model/{name}", get(api::model))
        .route("/api/v2/model/version/{name}/{version}", get(api::version))
        .route(
            "/api/v2/model/version/{name}/{version}/logs",
            get(api::logs),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            manager.clone(),
            authenticate,
        ))
        .route_layer(axum::middleware::from_fn(log_request))
        .with_state(manager)
}

/// With `--htpasswd`, the API and the pages need the same credentials as the registry.
async fn authenticate(State(manager): State<Shared>, request: Request, next: Next) -> Response {
    if let Some(auth) = &manager.auth {
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if let Err(refused) = auth.check(authorization).await {
            let mut response = json_error(StatusCode::UNAUTHORIZED, refused.0).into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(CHALLENGE),
            );
            return response;
        }
    }
    next.run(request).await
}

/// One line per request, as the registry logs its own.
async fn log_request(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    tracing::info!(
        "{method} {path} {} {:.1}ms",
        response.status().as_u16(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    response
}

/// Why a request failed, answered as `{"error": "..."}` by every API endpoint.
#[derive(Debug)]
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({ "error": self.message }).to_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("10"));
        }
        response
    }
}

pub(crate) fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Failure {
    Failure {
        status,
        message: message.to_string(),
    }
}

/// Runs blocking work (SQLite, the file system) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, Failure> + Send + 'static,
) -> Result<T, Failure> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, e)))
}
