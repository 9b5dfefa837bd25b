//! What both servers (`mlambda registry serve` and the manager) need from HTTP: a listener
//! with optional TLS that stops on SIGINT/SIGTERM, htpasswd credentials, and query parsing.
//! Each server answers in its own error envelope; nothing here writes a response body.

mod htpasswd;
mod query;

pub use htpasswd::{CHALLENGE, Htpasswd, Unauthorized};
pub use query::{percent_decode, query_pairs, query_value};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ListenError {
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

/// The credentials of `--htpasswd`, when given.
pub fn load_htpasswd(path: Option<&Path>) -> Result<Option<Arc<Htpasswd>>, ListenError> {
    path.map(|path| {
        Htpasswd::load(path)
            .map(Arc::new)
            .map_err(ListenError::Config)
    })
    .transpose()
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
) -> Result<Listener, ListenError> {
    let tls = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    Ok(Listener { tcp, tls })
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serves until SIGINT or SIGTERM.
    pub async fn run(self, app: axum::Router) -> Result<(), ListenError> {
        self.run_until(app, shutdown_signal()).await
    }

    /// Serves until `shutdown` completes, then lets open requests finish.
    pub async fn run_until(
        self,
        app: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ListenError> {
        match self.tls {
            None => axum::serve(self.tcp, app)
                .with_graceful_shutdown(shutdown)
                .await
                .map_err(ListenError::Io),
            Some(acceptor) => serve_tls(self.tcp, acceptor, app, shutdown).await,
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

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, ListenError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            ListenError::Config(format!("{}: cannot read certificates: {e}", cert.display()))
        })?;
    if certs.is_empty() {
        return Err(ListenError::Config(format!(
            "{}: holds no certificate",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ListenError::Config(format!("{}: cannot read the key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ListenError::Config(format!("TLS: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: axum::Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ListenError> {
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
