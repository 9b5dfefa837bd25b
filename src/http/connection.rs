//! One connection, from its first byte to its close: served by hyper (HTTP/1 or HTTP/2, as
//! the client speaks), closed once it has gone `timeout` without a request in progress, and
//! asked to close when the server stops, after what it is serving.
//!
//! hyper times out an HTTP/1 header (and the wait for the next request of a kept-alive
//! connection) itself; it has no such limit while it tells HTTP/1 from HTTP/2, nor for an
//! HTTP/2 connection that opens no stream. So the connection counts its requests in
//! progress, each until its response body is sent, and is closed when none ran for that long.

use axum::body::{Body, Bytes};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The HTTP settings every connection is served with.
pub(super) fn builder(timeout: Duration) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timeout);
    // Pings find HTTP/2 peers that vanished while a response streams to them.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(timeout);
    builder
}

/// Serves `io` until the client closes it, it stays `timeout` without a request in
/// progress, or `stop` is cancelled and what was in progress is done.
pub(super) async fn serve<I>(
    io: I,
    app: axum::Router,
    builder: &auto::Builder<TokioExecutor>,
    timeout: Duration,
    stop: &CancellationToken,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (busy, mut watched) = watch::channel(0usize);
    let busy = Arc::new(busy);
    let service = counted(app, busy.clone());
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(connection);
    let mut asked_to_close = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => return result,
            () = stop.cancelled(), if !asked_to_close => {}
            () = quiet_for(&mut watched, timeout) => {
                if asked_to_close {
                    // Asked, and still open with nothing in progress: dropping it closes it.
                    return Ok(());
                }
            }
        }
        // HTTP/1 closes once its response is sent (at once when idle); HTTP/2 says GOAWAY.
        connection.as_mut().graceful_shutdown();
        asked_to_close = true;
    }
}

/// Completes once no request has been in progress for `timeout`.
async fn quiet_for(busy: &mut watch::Receiver<usize>, timeout: Duration) {
    loop {
        if *busy.borrow_and_update() > 0 {
            // The sender lives as long as the connection: `changed` cannot fail here.
            let _ = busy.changed().await;
        } else if tokio::time::timeout(timeout, busy.changed()).await.is_err() {
            return;
        }
    }
}

/// `app`, counting in `busy` each request from its head to the end of its response body.
fn counted(app: axum::Router, busy: Arc<watch::Sender<usize>>) -> Counting {
    Counting {
        app: TowerToHyperService::new(app),
        busy,
    }
}

struct Counting {
    app: TowerToHyperService<axum::Router>,
    busy: Arc<watch::Sender<usize>>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Counting {
    type Response = hyper::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<hyper::Response<Body>, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let working = Working::start(self.busy.clone());
        let response = self.app.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| {
                Body::new(Counted {
                    body,
                    _working: working,
                })
            }))
        })
    }
}

/// One request in progress, counted until dropped.
struct Working(Arc<watch::Sender<usize>>);

impl Working {
    fn start(busy: Arc<watch::Sender<usize>>) -> Working {
        busy.send_modify(|n| *n += 1);
        Working(busy)
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// A response body that keeps its request counted until it is sent (or dropped).
struct Counted {
    body: Body,
    _working: Working,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}
