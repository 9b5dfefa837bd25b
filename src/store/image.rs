//! A layout is an image source and an image sink: what `base import`, the build's base layers,
//! a push and a pull read or write through [`crate::image`]. A blob another layout of the
//! same store holds is hard-linked from the pool instead of copied.

use super::layout::{Layout, StoreError};
use crate::image::{
    BlobOutcome, BlobReader, Fetched, ImageError, JSON_LIMIT, PooledFile, Sink, Source, walk,
};
use crate::oci::{Descriptor, Reference};
use std::fs;
use std::io::{self, Seek, SeekFrom};

impl Source for Layout {
    fn name(&self) -> String {
        self.dir().display().to_string()
    }

    fn manifest(&self, reference: Option<&str>) -> Result<Fetched, ImageError> {
        let (entry, bytes) = match reference.filter(|r| r.contains(':')) {
            Some(digest) => self
                .manifest(Reference::Digest(digest))
                .map_err(ImageError::place)?
                .ok_or_else(|| {
                    ImageError::invalid(Source::name(self), format!("has no manifest {digest}"))
                })?,
            None => {
                let entry = self.resolve(reference).map_err(ImageError::place)?;
                let bytes = self
                    .read_blob(&entry.digest, JSON_LIMIT)
                    .map_err(ImageError::place)?;
                (entry, bytes)
            }
        };
        Ok(Fetched::listed(entry, bytes))
    }

    fn blob(&self, digest: &str, offset: u64) -> Result<BlobReader, ImageError> {
        let mut file = self.open_blob(digest).map_err(ImageError::place)?;
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(ImageError::io(Source::name(self)))?;
        }
        Ok(Box::new(file))
    }

    fn blob_size(&self, digest: &str) -> Result<u64, ImageError> {
        let path = self.blob_path(digest).map_err(ImageError::place)?;
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => Ok(meta.len()),
            _ => Err(ImageError::place(StoreError::MissingBlob {
                digest: digest.into(),
                layout: self.dir().to_path_buf(),
            })),
        }
    }

    fn pooled_file(&self, digest: &str) -> Option<PooledFile> {
        let path = self.blob_path(digest).ok().filter(|p| p.is_file())?;
        Some(PooledFile {
            pool: self.pool()?.to_path_buf(),
            path,
        })
    }
}

impl Sink for Layout {
    fn name(&self) -> String {
        self.dir().display().to_string()
    }

    fn put_blob(&self, blob: &Descriptor, source: &dyn Source) -> Result<BlobOutcome, ImageError> {
        // Before the check: a blob found here must stay until the image is tagged.
        self.writing().map_err(ImageError::place)?;
        if self.has_blob(&blob.digest) {
            return Ok(BlobOutcome::Existed);
        }
        // Within one store a blob is a file of the pool: link it, keep one copy.
        if let Some(pooled) = source.pooled_file(&blob.digest)
            && Some(pooled.pool.as_path()) == self.pool()
        {
            let target = self.blob_path(&blob.digest).map_err(ImageError::place)?;
            if fs::hard_link(&pooled.path, &target).is_ok() || target.is_file() {
                return Ok(BlobOutcome::Mounted);
            }
        }
        let mut reader = walk::verified(source.blob(&blob.digest, 0)?, &blob.digest, blob.size)?;
        let mut writer = self.blob_writer().map_err(ImageError::place)?;
        io::copy(&mut reader, &mut writer)
            .map_err(|e| walk::copy_error(source, &blob.digest, e))?;
        self.commit_blob(writer).map_err(ImageError::place)?;
        Ok(BlobOutcome::Uploaded)
    }

    fn put_manifest(&self, manifest: &Fetched, tag: Option<&str>) -> Result<String, ImageError> {
        let digest = &manifest.descriptor.digest;
        self.put_bytes(digest, &manifest.bytes)
            .map_err(ImageError::place)?;
        if let Some(tag) = tag {
            self.set_tag(tag, manifest.descriptor.clone())
                .map_err(ImageError::place)?;
        }
        Ok(digest.clone())
    }
}
