//! An image wherever it lives, as one abstraction: a manifest plus blobs, read as streams from
//! a [`Source`] and written to a [`Sink`] (go-containerregistry's `v1.Image` and ocipkg's
//! `Image`/`ImageBuilder` are the same idea). The store's layouts, the registries, the
//! single-file archives and the runtimes being assembled are each one implementation; the
//! walks over them are written once, in [`walk`]: an index resolved to a platform, a
//! manifest's config, and a copy from any source to any sink.

pub mod archive;
pub mod walk;

pub use walk::{Copied, Resolved, copy, pick_tagged, resolve};

use crate::oci::Descriptor;
use serde::Serialize;
use std::io::{self, Read};
use std::path::PathBuf;

/// The largest manifest, index or config anything here reads.
pub const JSON_LIMIT: u64 = 4 << 20;

/// A blob's bytes as a stream, read on whatever thread takes it.
pub type BlobReader = Box<dyn Read + Send>;

/// A manifest or an index, with its exact bytes (its digest is theirs).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Media type, digest and size of `bytes`; the platform when an index chose it.
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
}

impl Fetched {
    /// A manifest read from where an index entry pointed: its media type is the one the
    /// document declares (older tools wrote wrong ones in their index), else the entry's; the
    /// entry's platform is kept, its annotations (a tag) are not.
    pub fn listed(entry: Descriptor, bytes: Vec<u8>) -> Fetched {
        let declared = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["mediaType"].as_str().map(str::to_string));
        let mut descriptor = Descriptor::new(
            declared.as_deref().unwrap_or(&entry.media_type),
            entry.digest,
            bytes.len() as u64,
        );
        descriptor.platform = entry.platform;
        Fetched { descriptor, bytes }
    }
}

/// Where an image can be read from.
pub trait Source: Send + Sync {
    /// How messages name it: a folder, an archive, `host/repository`.
    fn name(&self) -> String;

    /// The manifest or index `reference` names: a tag, a digest, or `None` for the only image
    /// there. The bytes are checked against the digest they are stored under.
    fn manifest(&self, reference: Option<&str>) -> Result<Fetched, ImageError>;

    /// A blob's bytes from `offset` on, as stored; whoever reads them checks the digest.
    fn blob(&self, digest: &str, offset: u64) -> Result<BlobReader, ImageError>;

    /// A blob's size, without reading it; an error when the source does not have it.
    fn blob_size(&self, digest: &str) -> Result<u64, ImageError>;

    /// The blob as a file of a store's shared pool, so that a sink of the same store can link
    /// it instead of copying it.
    fn pooled_file(&self, _digest: &str) -> Option<PooledFile> {
        None
    }
}

/// A blob that is a file in a store whose blobs live once, in `pool`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PooledFile {
    pub pool: PathBuf,
    pub path: PathBuf,
}

/// Where an image can be written to. Blobs come first (in any order, from several threads
/// when [`Sink::parallel`] allows), the manifest last, so that a sink never names a blob it
/// does not hold.
pub trait Sink: Send + Sync {
    fn name(&self) -> String;

    /// Stores `blob`, read from `source` unless the sink has it already, verified against its
    /// digest and size.
    fn put_blob(&self, blob: &Descriptor, source: &dyn Source) -> Result<BlobOutcome, ImageError>;

    /// Stores the manifest's exact bytes, tagged `tag` when given; returns the digest the sink
    /// confirmed.
    fn put_manifest(&self, manifest: &Fetched, tag: Option<&str>) -> Result<String, ImageError>;

    /// Blobs it takes at once.
    fn parallel(&self) -> usize {
        1
    }
}

/// A sink that takes `blobs` at once: a local layout filled from a registry, where the time
/// goes in waiting on the network rather than on the disk.
pub struct Concurrent<'a> {
    pub sink: &'a dyn Sink,
    pub blobs: usize,
}

impl Sink for Concurrent<'_> {
    fn name(&self) -> String {
        self.sink.name()
    }

    fn put_blob(&self, blob: &Descriptor, source: &dyn Source) -> Result<BlobOutcome, ImageError> {
        self.sink.put_blob(blob, source)
    }

    fn put_manifest(&self, manifest: &Fetched, tag: Option<&str>) -> Result<String, ImageError> {
        self.sink.put_manifest(manifest, tag)
    }

    fn parallel(&self) -> usize {
        self.blobs.max(1)
    }
}

/// Where the blobs being written can also be sent while they are written: a build and its
/// push in one pass (the distribution spec's upload session, PATCHed as the layer is written
/// and closed with the digest once known). A mirror never fails what it mirrors: a copy that
/// cannot be made is given up, and the push after the build sends that blob as usual.
pub trait Mirror: Send + Sync + std::fmt::Debug {
    /// A copy for one new blob, or `None` when none can be made now.
    fn open(&self) -> Option<Box<dyn MirrorStream>>;

    /// The registry it sends to (`host[:port]`), under which the catalogue remembers where
    /// blobs were pushed.
    fn registry(&self) -> String;

    /// Blobs the image will hold that exist already (a base's layers), readable from
    /// `source`: sent, or mounted from a repository of `mount_from` (digest → repositories),
    /// in the background while the build goes on.
    fn existing(
        &self,
        blobs: &[Descriptor],
        source: std::sync::Arc<dyn Source>,
        mount_from: &std::collections::HashMap<String, Vec<String>>,
    );
}

/// One blob's copy as it is written. Dropped without [`MirrorStream::close`], it is abandoned
/// (the build failed): nothing of it may become a blob where it was sent.
pub trait MirrorStream: Send {
    /// The blob's next bytes (a copy that broke ignores them).
    fn write(&mut self, bytes: &[u8]);
    /// The blob's end: the copy is closed under `digest` on its own thread.
    fn close(&mut self, digest: &str, size: u64);
    /// Until the copy is in place (or given up).
    fn wait(self: Box<Self>);
}

/// How a blob got into a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobOutcome {
    /// The sink had it already (for a registry: HEAD answered 200).
    Existed,
    /// Linked from another repository of the same store or registry.
    Mounted,
    /// Its bytes were written or sent.
    Uploaded,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// What a source holds is not a usable image, or not what its manifest says.
    #[error("{place}: {problem}")]
    Invalid { place: String, problem: String },
    #[error("{place}: {source}")]
    Io { place: String, source: io::Error },
    /// The error of the store or registry behind a source or sink, as it said it.
    #[error(transparent)]
    Place(Box<dyn std::error::Error + Send + Sync>),
}

impl ImageError {
    pub fn invalid(place: impl std::fmt::Display, problem: impl std::fmt::Display) -> ImageError {
        ImageError::Invalid {
            place: place.to_string(),
            problem: problem.to_string(),
        }
    }

    pub fn io(place: impl std::fmt::Display) -> impl FnOnce(io::Error) -> ImageError {
        let place = place.to_string();
        move |source| ImageError::Io { place, source }
    }

    /// The error of the place behind a source or sink, kept whole.
    pub fn place(error: impl std::error::Error + Send + Sync + 'static) -> ImageError {
        ImageError::Place(Box::new(error))
    }
}
