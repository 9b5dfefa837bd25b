//! TLS to PostgreSQL, with libpq's meaning of the URL's `sslmode` and `sslrootcert` (which
//! tokio-postgres does not read): `disable` is plain; `prefer` (the default) and `require`
//! encrypt without checking who answers, as libpq does; `verify-ca` and `verify-full` check the
//! server's certificate and name against the system's roots plus `sslrootcert`. A
//! `sslrootcert` given with `prefer` or `require` also turns the check on, as in libpq.

use super::CatalogError;
use super::location::redact;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The connection settings of `url`, and the TLS connector its `sslmode` asks for (`None`: plain).
pub fn config(url: &str) -> Result<(postgres::Config, Option<MakeRustlsConnect>), CatalogError> {
    let invalid = |why: String| {
        CatalogError::Invalid(format!(
            "--catalog {}: {why}; write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?sslmode=verify-full&sslrootcert=CA.pem]",
            redact(url)
        ))
    };
    let mut parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let mut mode = String::from("prefer");
    let mut root_cert = None;
    let mut kept = Vec::new();
    for (key, value) in parsed.query_pairs() {
        match &*key {
            "sslmode" => mode = value.into_owned(),
            "sslrootcert" => root_cert = Some(PathBuf::from(value.into_owned())),
            _ => kept.push((key.into_owned(), value.into_owned())),
        }
    }
    let (tokio_mode, verify) = match mode.as_str() {
        "disable" => ("disable", false),
        "allow" | "prefer" => ("prefer", root_cert.is_some()),
        "require" => ("require", root_cert.is_some()),
        "verify-ca" | "verify-full" => ("require", true),
        other => {
            return Err(invalid(format!(
                "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            )));
        }
    };
    kept.push(("sslmode".into(), tokio_mode.into()));
    parsed.set_query(None);
    parsed.query_pairs_mut().extend_pairs(kept);
    let config: postgres::Config = parsed
        .as_str()
        .parse()
        .map_err(|e: postgres::Error| invalid(e.to_string()))?;
    if tokio_mode == "disable" {
        return Ok((config, None));
    }
    let client = if verify {
        crate::remote::tls_config(root_cert.as_ref())
            .map_err(|e| invalid(format!("sslrootcert: {e}")))?
    } else {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS setup: {e}")))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider)))
            .with_no_client_auth()
    };
    Ok((config, Some(MakeRustlsConnect::new(client))))
}

/// `sslmode=prefer`/`require`: the channel is encrypted, the server's identity not checked
/// (libpq's behaviour; `verify-full` is the mode that checks). The handshake's signatures are
/// still verified, so the session key belongs to whoever holds the certificate's key.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
