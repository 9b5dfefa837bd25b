//! The accept loop of both servers: at most `limits.connections` connections at once (more
//! wait in the kernel's queue until one closes), accept errors such as running out of file
//! descriptors answered by waiting rather than by spinning, TLS handshakes bounded by the
//! timeout, and, on stop, no new connection while the open ones finish what they serve.

use super::Limits;
use super::connection;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The first wait after a failed accept; it doubles with each failure in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest wait after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `shutdown` completes, then until the open connections
/// are done.
pub(super) async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let stop = CancellationToken::new();
    let slots_total = u32::try_from(limits.connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(slots_total as usize));
    let builder = Arc::new(connection::builder(limits.timeout));
    let accepting = async {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    if !dropped_by_the_peer(&e) {
                        tracing::warn!(
                            "cannot accept a connection (trying again in {backoff:?}): {e}"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                    continue;
                }
            };
            backoff = FIRST_BACKOFF;
            let (tls, app, builder, stop) =
                (tls.clone(), app.clone(), builder.clone(), stop.clone());
            tokio::spawn(async move {
                let served = match tls {
                    None => connection::serve(tcp, app, &builder, limits.timeout, &stop).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(limits.timeout, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                connection::serve(stream, app, &builder, limits.timeout, &stop)
                                    .await
                            }
                            Ok(Err(e)) => Err(format!("TLS handshake failed: {e}").into()),
                            Err(_) => Err(format!(
                                "no TLS handshake within {}s",
                                limits.timeout.as_secs()
                            )
                            .into()),
                        }
                    }
                };
                if let Err(e) = served {
                    tracing::debug!("connection with {peer}: {e}");
                }
                drop(slot);
            });
        }
    };
    tokio::select! {
        () = accepting => {}
        () = shutdown => {}
    }
    drop(listener);
    stop.cancel();
    // Each connection holds a slot until it ends: all slots back means all connections done.
    let _ = slots.acquire_many(slots_total).await;
}

/// An accept error about one connection the peer gave up on, not about the server.
fn dropped_by_the_peer(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
    )
}
