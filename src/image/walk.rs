//! The walks over an image, written once for every source and sink: which manifest a tag
//! names in an index, an index resolved to a platform (nested at most four deep), a
//! manifest's config, a blob read with its digest checked as it streams, and a copy.

use super::{BlobOutcome, Fetched, ImageError, JSON_LIMIT, Sink, Source};
use crate::oci::digest::{Hasher, parse_digest};
use crate::oci::{Descriptor, Index, Manifest, WantedPlatform, is_index_media_type};
use serde_json::Value;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Mutex;

/// The entry of `index` tagged `tag` (`org.opencontainers.image.ref.name`), or its only entry
/// when no tag is asked for.
pub fn pick_tagged(index: &Index, tag: Option<&str>) -> Result<Descriptor, String> {
    let tags = || {
        index
            .manifests
            .iter()
            .filter_map(Descriptor::ref_name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found: Vec<&Descriptor> = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .filter(|m| m.ref_name() == Some(tag))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    match (found.as_slice(), tag) {
        ([one], _) => Ok((*one).clone()),
        ([], Some(tag)) => Err(format!("has no image tagged '{tag}' (tags: {})", tags())),
        ([], None) => Err("holds no image".into()),
        (_, _) => Err(format!(
            "holds several images; name one with :TAG (tags: {})",
            tags()
        )),
    }
}

/// An image manifest found from a reference.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// What the reference itself named: an index, or the manifest.
    pub top: Descriptor,
    /// The image manifest (chosen from the index for the platform), its exact bytes.
    pub manifest: Fetched,
    pub parsed: Manifest,
}

/// The image manifest `reference` names in `source`; an index is resolved to `platform`.
pub fn resolve(
    source: &dyn Source,
    reference: Option<&str>,
    platform: &WantedPlatform,
) -> Result<Resolved, ImageError> {
    let mut fetched = source.manifest(reference)?;
    let top = fetched.descriptor.clone();
    for _ in 0..4 {
        if is_index_media_type(&fetched.descriptor.media_type) {
            let index: Index = serde_json::from_slice(&fetched.bytes).map_err(|e| {
                ImageError::invalid(
                    source.name(),
                    format!("index {}: {e}", fetched.descriptor.digest),
                )
            })?;
            let chosen = platform
                .pick(&index)
                .map_err(|problem| ImageError::invalid(source.name(), problem))?;
            fetched = source.manifest(Some(&chosen.digest))?;
            fetched.descriptor.platform = chosen.platform;
            continue;
        }
        let parsed = parse_manifest(source, &fetched)?;
        return Ok(Resolved {
            top,
            manifest: fetched,
            parsed,
        });
    }
    Err(ImageError::invalid(
        source.name(),
        "image indexes nest too deeply",
    ))
}

/// The image manifest in `fetched`.
pub fn parse_manifest(source: &dyn Source, fetched: &Fetched) -> Result<Manifest, ImageError> {
    serde_json::from_slice(&fetched.bytes).map_err(|e| {
        ImageError::invalid(
            source.name(),
            format!(
                "manifest {} ({}) is not an image manifest: {e}",
                fetched.descriptor.digest, fetched.descriptor.media_type
            ),
        )
    })
}

/// The image's config, as JSON.
pub fn read_config(source: &dyn Source, manifest: &Manifest) -> Result<Value, ImageError> {
    let bytes = read_small_blob(source, &manifest.config)?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ImageError::invalid(source.name(), format!("invalid image config: {e}")))
}

/// A small blob (a config) read whole, its digest checked.
fn read_small_blob(source: &dyn Source, blob: &Descriptor) -> Result<Vec<u8>, ImageError> {
    if blob.size > JSON_LIMIT {
        return Err(ImageError::invalid(
            source.name(),
            format!("blob {} is larger than {JSON_LIMIT} bytes", blob.digest),
        ));
    }
    let mut bytes = Vec::new();
    verified(source.blob(&blob.digest, 0)?, &blob.digest, blob.size)?
        .read_to_end(&mut bytes)
        .map_err(|e| copy_error(source, &blob.digest, e))?;
    Ok(bytes)
}

/// `reader` checked as it is read: at its end, its bytes must have `digest` and number
/// `size`, or the last read fails with `InvalidData` (so no copy of them is ever committed).
pub fn verified(
    reader: impl Read,
    digest: &str,
    size: u64,
) -> Result<Verified<impl Read>, ImageError> {
    let (algorithm, _) =
        parse_digest(digest).map_err(|problem| ImageError::invalid("blob", problem))?;
    Ok(Verified {
        inner: reader.take(size + 1),
        hasher: Some(Hasher::new(algorithm)),
        digest: digest.to_string(),
        size,
        read: 0,
    })
}

/// A failed copy of a blob from `source`: a check of [`verified`] says what the bytes were,
/// any other error what failed.
pub fn copy_error(source: &dyn Source, digest: &str, error: io::Error) -> ImageError {
    if error.kind() == io::ErrorKind::InvalidData {
        ImageError::invalid(source.name(), error)
    } else {
        ImageError::invalid(source.name(), format!("blob {digest}: {error}"))
    }
}

pub struct Verified<R> {
    inner: io::Take<R>,
    hasher: Option<Hasher>,
    digest: String,
    size: u64,
    read: u64,
}

impl<R: Read> Read for Verified<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} has more than the {} bytes its manifest says",
                    self.digest, self.size
                ),
            ));
        }
        match (&mut self.hasher, n) {
            (Some(hasher), n) if n > 0 => hasher.update(&buf[..n]),
            (Some(_), _) => {
                let actual = self.hasher.take().map(Hasher::finish).unwrap_or_default();
                if self.read != self.size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "blob {} has {} bytes, its manifest says {}",
                            self.digest, self.read, self.size
                        ),
                    ));
                }
                if actual != self.digest {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("blob {} has digest {actual}", self.digest),
                    ));
                }
            }
            (None, _) => {}
        }
        Ok(n)
    }
}

/// What a copy did.
#[derive(Debug, Clone)]
pub struct Copied {
    /// The manifest digest the sink confirmed.
    pub digest: String,
    /// Every blob of the image and how it got there, by digest.
    pub blobs: Vec<(String, BlobOutcome)>,
}

/// Copies the image manifest `manifest` of `source` into `sink`: its config and layers (each
/// once, as many at once as the sink takes), then the manifest, tagged `tag`.
pub fn copy(
    source: &dyn Source,
    manifest: &Fetched,
    sink: &dyn Sink,
    tag: Option<&str>,
) -> Result<Copied, ImageError> {
    let parsed = parse_manifest(source, manifest)?;
    let mut blobs = vec![parsed.config.clone()];
    for layer in parsed.layers {
        if !blobs.iter().any(|b| b.digest == layer.digest) {
            blobs.push(layer);
        }
    }
    let queue = Mutex::new(blobs.iter().collect::<VecDeque<_>>());
    let done = Mutex::new(Vec::new());
    let first_error: Mutex<Option<ImageError>> = Mutex::new(None);
    let failed = || first_error.lock().map_or(true, |e| e.is_some());
    std::thread::scope(|scope| {
        for _ in 0..sink.parallel().clamp(1, 16).min(blobs.len().max(1)) {
            scope.spawn(|| {
                while !failed() {
                    let Some(blob) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                        return;
                    };
                    match sink.put_blob(blob, source) {
                        Ok(outcome) => {
                            if let Ok(mut done) = done.lock() {
                                done.push((blob.digest.clone(), outcome));
                            }
                        }
                        Err(error) => {
                            if let Ok(mut slot) = first_error.lock() {
                                slot.get_or_insert(error);
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    if let Some(error) = first_error.into_inner().ok().flatten() {
        return Err(error);
    }
    let digest = sink.put_manifest(manifest, tag)?;
    let mut blobs = done.into_inner().unwrap_or_default();
    blobs.sort();
    Ok(Copied { digest, blobs })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::digest::sha256_of;

    #[test]
    fn a_verified_reader_refuses_other_bytes() {
        let data = b"weights";
        let digest = sha256_of(data);
        let mut out = Vec::new();
        verified(&data[..], &digest, 7)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, data);
        for (bytes, size) in [
            (&b"weightz"[..], 7),
            (&b"weights"[..], 6),
            (&b"weight"[..], 7),
        ] {
            let error = verified(bytes, &digest, size)
                .unwrap()
                .read_to_end(&mut Vec::new())
                .unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        }
    }

    #[test]
    fn tags_pick_one_entry() {
        let mut tagged = Descriptor::new("m", "sha256:a".into(), 1);
        tagged
            .annotations
            .insert(crate::oci::ANNOTATION_REF_NAME.into(), "1".into());
        let index = Index {
            manifests: vec![tagged.clone(), Descriptor::new("m", "sha256:b".into(), 1)],
            ..Default::default()
        };
        assert_eq!(pick_tagged(&index, Some("1")).unwrap(), tagged);
        assert!(
            pick_tagged(&index, Some("2"))
                .unwrap_err()
                .contains("tags: 1")
        );
        assert!(pick_tagged(&index, None).unwrap_err().contains("several"));
    }
}
