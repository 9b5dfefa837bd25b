//! Pulling from a registry: a manifest (or index) by tag or digest, its bytes kept exactly as
//! served, and a blob's body from any offset, left to stream (whoever reads it checks its
//! digest). Same authentication, TLS and retries as a push.

use super::{Fault, Progress, Registry, RemoteError, error_detail};
use crate::oci;
use reqwest::StatusCode;
use reqwest::blocking::Response;
use reqwest::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE, RANGE};
use std::io::{self, Read};
use std::time::Duration;

/// Every manifest kind an import understands, OCI first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// A manifest or index as the registry served it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// From `Content-Type`, else the document's own `mediaType`.
    pub media_type: String,
    /// The sha256 of `bytes`.
    pub digest: String,
}

impl Registry {
    /// The digest of the manifest `tag` names in `repository`, or `None` when there is no
    /// such tag (nor repository).
    pub fn tag_digest(
        &self,
        repository: &str,
        tag: &str,
        progress: &dyn Progress,
    ) -> Result<Option<String>, RemoteError> {
        match self.get_manifest(repository, tag, progress) {
            Ok(found) => Ok(Some(found.digest)),
            Err(RemoteError::Status { status: 404, .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// `GET /v2/<repository>/manifests/<reference>`; a digest reference must match the bytes,
    /// and so must the registry's `Docker-Content-Digest`.
    pub fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
        progress: &dyn Progress,
    ) -> Result<FetchedManifest, RemoteError> {
        let url = self.url(&format!("v2/{repository}/manifests/{reference}"))?;
        let scopes = vec![format!("repository:{repository}:pull")];
        let what = format!("manifest {repository}:{reference}");
        self.retrying(&what, progress, |_| {
            let response = self.send(&what, &scopes, &|http| {
                Ok(http
                    .get(url.clone())
                    .header(ACCEPT, MANIFEST_ACCEPT)
                    .timeout(Duration::from_secs(120)))
            })?;
            let status = response.status();
            if !status.is_success() {
                let what = if status == StatusCode::NOT_FOUND {
                    format!(
                        "{}/{repository}:{reference}: no such image (unknown repository or tag)",
                        self.target.authority
                    )
                } else {
                    format!("GET {what}")
                };
                return Err(Fault::Fatal(RemoteError::Status {
                    what,
                    registry: self.target.authority.clone(),
                    status: status.as_u16(),
                    detail: error_detail(response),
                }));
            }
            let content_type = response
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(';').next().unwrap_or_default().trim().to_string());
            let served_digest = response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let mut bytes = Vec::new();
            response
                .take(super::upload::MANIFEST_LIMIT + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Fault::Transient {
                    message: format!("{what}: {e}"),
                    retry_after: None,
                })?;
            if bytes.len() as u64 > super::upload::MANIFEST_LIMIT {
                return Err(Fault::Fatal(RemoteError::Protocol(format!(
                    "{what}: larger than {} bytes",
                    super::upload::MANIFEST_LIMIT
                ))));
            }
            let digest = crate::oci::digest::sha256_of(&bytes);
            for expected in [served_digest.as_deref(), Some(reference)]
                .into_iter()
                .flatten()
                .filter(|d| d.starts_with("sha256:"))
            {
                if expected != digest {
                    return Err(Fault::Fatal(RemoteError::Protocol(format!(
                        "{what}: the registry served bytes with digest {digest}, not {expected}"
                    ))));
                }
            }
            let media_type = match content_type {
                Some(t) if t.starts_with("application/vnd.") => t,
                _ => serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| oci::MEDIA_MANIFEST.to_string()),
            };
            Ok(FetchedManifest {
                bytes,
                media_type,
                digest,
            })
        })
    }

    /// `GET /v2/<repository>/blobs/<digest>` from byte `offset` on (`Range`), the body
    /// left to stream. A registry that ignores the range sends the whole blob; its first
    /// `offset` bytes are skipped here.
    pub fn get_blob(
        &self,
        repository: &str,
        digest: &str,
        offset: u64,
        progress: &dyn Progress,
    ) -> Result<Response, RemoteError> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let scopes = vec![format!("repository:{repository}:pull")];
        let what = format!("blob {digest}");
        self.retrying(&what, progress, |_| {
            let mut response = self.send(&what, &scopes, &|http| {
                let request = http.get(url.clone());
                Ok(if offset > 0 {
                    request.header(RANGE, format!("bytes={offset}-"))
                } else {
                    request
                })
            })?;
            let status = response.status();
            if !status.is_success() {
                return Err(Fault::Fatal(RemoteError::Status {
                    what: format!("GET {what} of {repository}"),
                    registry: self.target.authority.clone(),
                    status: status.as_u16(),
                    detail: error_detail(response),
                }));
            }
            if offset > 0 && status != StatusCode::PARTIAL_CONTENT {
                io::copy(&mut (&mut response).take(offset), &mut io::sink()).map_err(|e| {
                    Fault::Transient {
                        message: format!("{what}: {e}"),
                        retry_after: None,
                    }
                })?;
            }
            Ok(response)
        })
    }

    /// `HEAD /v2/<repository>/blobs/<digest>`: its size, or `None` when the registry does not
    /// have it.
    pub fn blob_size(
        &self,
        repository: &str,
        digest: &str,
        progress: &dyn Progress,
    ) -> Result<Option<u64>, RemoteError> {
        let url = self.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let scopes = vec![format!("repository:{repository}:pull")];
        let what = format!("HEAD blob {digest}");
        self.retrying(&what, progress, |_| {
            let response = self.send(&what, &scopes, &|http| {
                Ok(http.head(url.clone()).timeout(Duration::from_secs(60)))
            })?;
            match response.status() {
                StatusCode::NOT_FOUND => Ok(None),
                status if status.is_success() => Ok(response
                    .headers()
                    .get(CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())),
                status => Err(Fault::Fatal(RemoteError::Status {
                    what: format!("{what} of {repository}"),
                    registry: self.target.authority.clone(),
                    status: status.as_u16(),
                    detail: error_detail(response),
                })),
            }
        })
    }
}
