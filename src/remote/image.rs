//! A repository of a registry as an image source (what `base import` pulls) and as a sink
//! (what a push writes): the same walks as for a layout or an archive, over HTTP.

use super::{Registry, Watcher, upload};
use crate::image::{BlobOutcome, BlobReader, Fetched, ImageError, Sink, Source};
use crate::oci::Descriptor;
use reqwest::blocking::Response;
use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::Arc;

/// One repository of a registry, read.
pub struct RemoteImage {
    registry: Arc<Registry>,
    repository: String,
    progress: Watcher,
}

impl RemoteImage {
    pub fn new(registry: Arc<Registry>, repository: &str, progress: Watcher) -> RemoteImage {
        RemoteImage {
            registry,
            repository: repository.to_string(),
            progress,
        }
    }
}

impl Source for RemoteImage {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.target.authority, self.repository)
    }

    fn manifest(&self, reference: Option<&str>) -> Result<Fetched, ImageError> {
        let fetched = self
            .registry
            .get_manifest(
                &self.repository,
                reference.unwrap_or("latest"),
                self.progress.as_ref(),
            )
            .map_err(ImageError::place)?;
        let size = fetched.bytes.len() as u64;
        Ok(Fetched {
            descriptor: Descriptor::new(&fetched.media_type, fetched.digest, size),
            bytes: fetched.bytes,
        })
    }

    fn blob(&self, digest: &str, offset: u64) -> Result<BlobReader, ImageError> {
        let response = self
            .registry
            .get_blob(&self.repository, digest, offset, self.progress.as_ref())
            .map_err(ImageError::place)?;
        Ok(Box::new(Resuming {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            digest: digest.to_string(),
            progress: self.progress.clone(),
            response: Some(response),
            position: offset,
            resumes_left: self.registry.policy.attempts,
        }))
    }

    fn blob_size(&self, digest: &str) -> Result<u64, ImageError> {
        self.registry
            .blob_size(&self.repository, digest, self.progress.as_ref())
            .map_err(ImageError::place)?
            .ok_or_else(|| ImageError::invalid(self.name(), format!("has no blob {digest}")))
    }
}

/// A blob's body that, when the connection breaks mid-way, asks again from where it got to
/// (`Range`), as often as the retry policy allows a request.
struct Resuming {
    registry: Arc<Registry>,
    repository: String,
    digest: String,
    progress: Watcher,
    response: Option<Response>,
    position: u64,
    resumes_left: u32,
}

impl Read for Resuming {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let response = match &mut self.response {
                Some(response) => response,
                None => self.response.insert(
                    self.registry
                        .get_blob(
                            &self.repository,
                            &self.digest,
                            self.position,
                            self.progress.as_ref(),
                        )
                        .map_err(io::Error::other)?,
                ),
            };
            match response.read(buf) {
                Ok(n) => {
                    self.position += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if self.resumes_left > 0 => {
                    self.resumes_left -= 1;
                    let what = format!("blob {}", self.digest);
                    let wait = self.registry.policy.delay(1, None);
                    self.progress.retrying(&what, &e.to_string(), wait);
                    std::thread::sleep(wait);
                    self.response = None;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// One repository of a registry, written: blobs streamed from any source (skipped when the
/// registry has them, mounted from a repository that does), the manifest last.
pub struct RemotePush<'a> {
    pub registry: &'a Registry,
    pub repository: &'a str,
    /// For each blob, repositories of the same registry that already hold it.
    pub known_locations: &'a HashMap<String, Vec<String>>,
    pub progress: &'a Watcher,
    pub parallel: usize,
    /// Never move an existing tag to another manifest.
    pub keep_tag: bool,
}

impl RemotePush<'_> {
    /// Fails with [`RemoteError::TagTaken`] when `tag` already names a manifest other than
    /// `ours`; a tag that names `ours` (a push done again) or none at all is fine.
    pub fn ensure_tag_free(&self, tag: &str, ours: &str) -> Result<(), super::RemoteError> {
        let existing = self
            .registry
            .tag_digest(self.repository, tag, self.progress.as_ref())?;
        match existing {
            Some(existing) if existing != ours => Err(super::RemoteError::TagTaken {
                reference: self.registry.target.reference(self.repository, tag),
                existing,
                ours: ours.to_string(),
            }),
            _ => Ok(()),
        }
    }
}

impl Sink for RemotePush<'_> {
    fn name(&self) -> String {
        format!("{}/{}", self.registry.target.authority, self.repository)
    }

    fn put_blob(&self, blob: &Descriptor, source: &dyn Source) -> Result<BlobOutcome, ImageError> {
        let sources = self
            .known_locations
            .get(&blob.digest)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let outcome = upload::push_blob(
            self.registry,
            source,
            self.repository,
            blob,
            sources,
            self.progress,
        )
        .map_err(ImageError::place)?;
        self.progress.blob_finished(&blob.digest, outcome);
        Ok(outcome)
    }

    fn put_manifest(&self, manifest: &Fetched, tag: Option<&str>) -> Result<String, ImageError> {
        let reference = tag.unwrap_or(&manifest.descriptor.digest);
        if let (true, Some(tag)) = (self.keep_tag, tag) {
            // Again, as late as can be: another host may have pushed while the blobs went.
            self.ensure_tag_free(tag, &manifest.descriptor.digest)
                .map_err(ImageError::place)?;
        }
        upload::put_manifest(
            self.registry,
            self.repository,
            reference,
            &manifest.bytes,
            &manifest.descriptor.media_type,
            &manifest.descriptor.digest,
            self.progress,
        )
        .map_err(ImageError::place)
    }

    fn parallel(&self) -> usize {
        self.parallel
    }
}

/// Progress nobody watches, for a pull.
pub fn quiet() -> Watcher {
    Arc::new(super::Quiet)
}
