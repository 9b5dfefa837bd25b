//! What both servers (`mlambda registry serve` and the manager) need from HTTP: a listener
//! with optional TLS that stops on SIGINT/SIGTERM and bounds what hostile clients can hold
//! (timeouts, a connection limit), htpasswd credentials, and query parsing.
//! Each server answers in its own error envelope; nothing here writes a response body.

mod accept;
mod connection;
mod htpasswd;
mod limits;
mod query;

pub use htpasswd::{CHALLENGE, Htpasswd, Unauthorized};
pub use limits::Limits;
pub use query::{percent_decode, query_pairs, query_value};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    limits: Limits,
}

/// Binds `addr`; `tls` is the PEM certificate chain and key. The [`Limits`] are the
/// defaults or what the environment says.
pub async fn bind(
    addr: SocketAddr,
    tls: Option<&(PathBuf, PathBuf)>,
) -> Result<Listener, ListenError> {
    let limits = Limits::from_env()?;
    let tls = tls.map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError::Bind { addr, source })?;
    tracing::info!(
        "at most {} connections at once; one without a request in progress closes after {}s",
        limits.connections,
        limits.timeout.as_secs()
    );
    Ok(Listener { tcp, tls, limits })
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
        accept::serve(self.tcp, self.tls, app, self.limits, shutdown).await;
        Ok(())
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
