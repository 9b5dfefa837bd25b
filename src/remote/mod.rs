//! A registry over the distribution HTTP API: a repository read as an image source (pull) and
//! written as an image sink (push), from or to any other source or sink of `crate::image`.
//!
//! Written on `reqwest` (blocking, rustls; blob bodies by its async client: see `Streamer`)
//! rather than `oci-client`: its high-level push holds every layer in memory, does not HEAD
//! before uploading, treats a 202 answer to a mount as an error, and has no retries and no
//! docker config. Here blobs stream from their source, what the registry has is skipped, base
//! layers are mounted from a repository they were pushed to before, transient faults are retried
//! with backoff, and credentials come from the places docker looks.
//!
//! - `target`: which registry (`--registry` URLs, image references) and how to reach it.
//! - `transport`: the connection: authenticated requests, retries, blob bodies streamed.
//! - `error`: what failed, and whether another try may do better.
//! - `auth`: credentials, the challenge, bearer tokens per scope.
//! - `retry`: backoff, `Retry-After`, what is transient.
//! - `pull`: a manifest by tag or digest, a blob's body from any offset, a blob's size.
//! - `upload`: one blob (HEAD, mount, monolithic or chunked upload, resume) and the manifest.
//! - `image`: `RemoteImage` (a source) and `RemotePush` (a sink) over the two.
//! - `mirror`: a build's new blobs streamed to the registry while they are written.

mod auth;
mod error;
mod image;
mod mirror;
mod pull;
mod retry;
mod target;
mod transport;
mod upload;

use crate::image::{Fetched, Source};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub use crate::image::BlobOutcome;
pub use auth::{Credential, find_credential};
pub use error::RemoteError;
pub use image::{RemoteImage, RemotePush, quiet};
pub use mirror::{MirrorReport, RegistryMirror};
pub use pull::{FetchedManifest, MANIFEST_ACCEPT};
pub use retry::{RetryPolicy, error_chain, is_transient_error, is_transient_status, retry_after};
pub use target::{ConnectOptions, Target, is_loopback};
pub use transport::{Registry, tls_config};

use error::{Fault, error_detail};
use transport::Answer;

/// What the watcher of a push is told (from several threads at once).
pub trait Progress: Send + Sync {
    fn blob_started(&self, _digest: &str, _size: u64) {}
    /// `sent` bytes of the blob are with the registry (may go back on a retry).
    fn blob_position(&self, _digest: &str, _sent: u64) {}
    fn blob_finished(&self, _digest: &str, _outcome: BlobOutcome) {}
    /// A try failed and will be repeated.
    fn retrying(&self, _what: &str, _message: &str, _wait: Duration) {}
}

/// A push's watcher, shared with the threads that stream the blobs.
pub type Watcher = Arc<dyn Progress>;

/// A watcher that wants to know nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// What to push: an image manifest of any source, to a repository and tag of the registry.
pub struct PushRequest<'a> {
    pub source: &'a dyn Source,
    pub manifest: &'a Fetched,
    pub repository: &'a str,
    pub tag: &'a str,
    /// For each blob, repositories of the same registry that already hold it (mount sources).
    pub known_locations: &'a HashMap<String, Vec<String>>,
    /// The tag names a version: refuse to move it to another image (checked before the blobs
    /// are sent and again right before the manifest).
    pub keep_tag: bool,
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `host[:port]/repository:tag`.
    pub reference: String,
    pub repository: String,
    /// The manifest digest the registry confirmed.
    pub digest: String,
    /// Every blob of the image and how it got there.
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Pushes the image: every blob (`parallel` at once, streamed from the source), then the
/// manifest.
pub fn push_image(
    registry: &Registry,
    request: &PushRequest,
    parallel: usize,
    progress: &Watcher,
) -> Result<Pushed, RemoteError> {
    registry.ping(progress.as_ref())?;
    let sink = RemotePush {
        registry,
        repository: request.repository,
        known_locations: request.known_locations,
        progress,
        parallel,
        keep_tag: request.keep_tag,
    };
    if request.keep_tag {
        sink.ensure_tag_free(request.tag, &request.manifest.descriptor.digest)?;
    }
    let copied = crate::image::copy(request.source, request.manifest, &sink, Some(request.tag))?;
    Ok(Pushed {
        reference: registry.target.reference(request.repository, request.tag),
        repository: request.repository.to_string(),
        digest: copied.digest,
        blobs: copied.blobs,
    })
}
