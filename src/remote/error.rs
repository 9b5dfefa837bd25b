//! What went wrong talking to a registry, and whether another try may do better.

use super::retry::{self, error_chain, is_transient_error};
use crate::image::ImageError;
use reqwest::blocking::Response;
use std::time::Duration;

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
    /// The tag names another image: pushing would move it, and a version tag never moves.
    #[error(
        "{reference} already holds {existing}, and this version is {ours}: a version is never overwritten, so the registry was left as it was. \
         Another build host has probably numbered its own build of this model the same way: let the hosts share one catalogue (--catalog postgres://… or MLAMBDA_CATALOG), \
         or push under another model name or --prefix"
    )]
    TagTaken {
        reference: String,
        existing: String,
        ours: String,
    },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Image(ImageError),
}

impl From<ImageError> for RemoteError {
    /// A registry's own error comes back as it was; any other is the image's.
    fn from(error: ImageError) -> RemoteError {
        match error {
            ImageError::Place(boxed) => match boxed.downcast::<RemoteError>() {
                Ok(remote) => *remote,
                Err(other) => RemoteError::Image(ImageError::Place(other)),
            },
            other => RemoteError::Image(other),
        }
    }
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
    pub(super) fn from_transport(what: &str, error: reqwest::Error) -> Fault {
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

/// The registry's error text, short, for messages.
pub(super) fn error_detail(response: Response) -> String {
    detail_of(&response.text().unwrap_or_default())
}

pub(super) fn detail_of(text: &str) -> String {
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
