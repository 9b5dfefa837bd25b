//! One OCI image layout on disk (`oci-layout`, `index.json`, `blobs/sha256/…`).
//!
//! Blobs are written to a temporary file, verified against their digest, fsynced and renamed,
//! and `index.json` is replaced atomically under a lock, so a crash or a concurrent writer
//! never leaves a half-written blob or index visible. In the local store, blobs live once in a
//! shared pool and each repository holds hard links to them.

use super::manifests::Mutability;
use super::writeback::WritingBack;
use crate::image::{Mirror, MirrorStream, pick_tagged};
use crate::oci::digest::{HashingWriter, digest_of, parse_digest};
use crate::oci::{Descriptor, Index};
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    #[error("{path}: {problem}")]
    Invalid { path: PathBuf, problem: String },
    #[error("blob {digest} is not in {layout}")]
    MissingBlob { digest: String, layout: PathBuf },
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{layout}: tag {tag} is immutable and names {digest}: a version tag never moves; use another tag"
    )]
    Immutable {
        tag: String,
        digest: String,
        layout: PathBuf,
    },
    #[error("the manifest names {what} {digest}, which is not in the repository")]
    Unresolved { what: &'static str, digest: String },
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// Where a layout keeps what is not part of the layout itself.
#[derive(Debug, Clone)]
pub(crate) struct Housekeeping {
    /// Temporary files; on the same filesystem as the blobs so that rename is atomic.
    pub tmp: PathBuf,
    /// The lock taken around every read-modify-write of `index.json`.
    pub lock: PathBuf,
    /// The store's shared blob pool; `None` for a stand-alone layout.
    pub pool: Option<PathBuf>,
    /// The store's writers lock (see `writers.rs`); `None` for a stand-alone layout.
    pub writers: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Layout {
    dir: PathBuf,
    house: Housekeeping,
    /// The writers lock, taken at the first write and held until this layout and all its
    /// clones are dropped: a build's blobs stay safe from gc until its tag names them.
    writing: Arc<Mutex<Option<File>>>,
    /// Where the blobs written through [`Layout::blob_writer`] are also sent as they are
    /// written (`upload --registry`: the build and the push in one pass).
    mirror: Option<Arc<dyn Mirror>>,
}

impl Layout {
    /// A stand-alone layout at `dir` (created when missing), e.g. `mlambda build --output oci:DIR`.
    pub fn create(dir: &Path) -> Result<Layout, StoreError> {
        let house = Housekeeping {
            tmp: dir.join(".mlambda-tmp"),
            lock: dir.join(".mlambda-lock"),
            pool: None,
            writers: None,
        };
        Layout::create_with(dir, house)
    }

    /// Creates the layout when missing: `index.json` first and the `oci-layout` marker last,
    /// so that a folder with the marker (what lists a repository) is always a valid layout.
    pub(crate) fn create_with(dir: &Path, house: Housekeeping) -> Result<Layout, StoreError> {
        let layout = Layout::open_with(dir, house);
        layout.writing()?;
        let house = &layout.house;
        fs::create_dir_all(dir.join("blobs/sha256"))
            .map_err(io_err(dir, "cannot create the layout"))?;
        fs::create_dir_all(&house.tmp).map_err(io_err(&house.tmp, "cannot create"))?;
        let marker = dir.join(LAYOUT_FILE);
        if !marker.exists() {
            let _lock = layout.lock()?;
            if !dir.join("index.json").exists() {
                layout.write_index(&Index::default())?;
            }
            write_atomically(&house.tmp, &marker, LAYOUT_CONTENT.as_bytes())?;
        }
        Ok(layout)
    }

    /// An existing layout, for reading (a base image, an earlier version).
    pub fn open(dir: &Path) -> Result<Layout, StoreError> {
        if !dir.join(LAYOUT_FILE).is_file() {
            return Err(StoreError::Invalid {
                path: dir.to_path_buf(),
                problem: "is not an OCI image layout (no oci-layout file)".into(),
            });
        }
        let house = Housekeeping {
            tmp: dir.join(".mlambda-tmp"),
            lock: dir.join(".mlambda-lock"),
            pool: None,
            writers: None,
        };
        Ok(Layout::open_with(dir, house))
    }

    pub(crate) fn open_with(dir: &Path, house: Housekeeping) -> Layout {
        Layout {
            dir: dir.to_path_buf(),
            house,
            writing: Arc::new(Mutex::new(None)),
            mirror: None,
        }
    }

    /// Takes the store's writers lock for this layout, once, before its first write.
    pub(crate) fn writing(&self) -> Result<(), StoreError> {
        let Some(path) = &self.house.writers else {
            return Ok(());
        };
        let mut held = match self.writing.lock() {
            Ok(held) => held,
            Err(poisoned) => poisoned.into_inner(),
        };
        if held.is_none() {
            *held = Some(super::writers::share(path)?);
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, StoreError> {
        blob_path_in(&self.dir, digest)
    }

    pub fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// Whether the blob is here, after hard-linking it from the store's pool when only the
    /// pool has it (a blob that disappears meanwhile, by a gc, is simply not here). The caller
    /// means to use the blob, so the writers lock is taken first: once this says yes, gc
    /// leaves the blob alone until this layout is dropped.
    pub fn has_or_link_pooled(&self, digest: &str) -> bool {
        if self.writing().is_err() {
            return false;
        }
        if self.has_blob(digest) {
            return true;
        }
        let (Some(pool), Ok(target)) = (&self.house.pool, self.blob_path(digest)) else {
            return false;
        };
        let Ok(pooled) = blob_path_in(pool, digest) else {
            return false;
        };
        if let Some(parent) = target.parent()
            && fs::create_dir_all(parent).is_err()
        {
            return false;
        }
        match fs::hard_link(&pooled, &target) {
            Ok(()) => sync_parent(&target).is_ok(),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => true,
            Err(_) => false,
        }
    }

    /// For a mount that names no source: whether the blob is here, after linking it from the
    /// pool when another repository of the store holds it too (the pooled file has more links
    /// than its own). A blob that only the pool keeps, deleted everywhere and waiting for a
    /// gc, is not brought back.
    pub fn has_or_link_held_elsewhere(&self, digest: &str) -> bool {
        if self.has_blob(digest) {
            return true;
        }
        let held = self
            .house
            .pool
            .as_ref()
            .is_some_and(|pool| held_in_pool(pool, digest));
        held && self.has_or_link_pooled(digest)
    }

    pub fn open_blob(&self, digest: &str) -> Result<File, StoreError> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|_| StoreError::MissingBlob {
            digest: digest.into(),
            layout: self.dir.clone(),
        })
    }

    pub fn read_blob(&self, digest: &str, limit: u64) -> Result<Vec<u8>, StoreError> {
        let path = self.blob_path(digest)?;
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err(&path, "cannot read"))?;
        if bytes.len() as u64 > limit {
            return Err(StoreError::Invalid {
                path,
                problem: format!("is larger than {limit} bytes"),
            });
        }
        let algorithm = parse_digest(digest)
            .map_err(|problem| StoreError::Invalid {
                path: path.clone(),
                problem,
            })?
            .0;
        let actual = digest_of(algorithm, &bytes);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                what: path.display().to_string(),
                expected: digest.into(),
                actual,
            });
        }
        Ok(bytes)
    }

    /// This layout, with the blobs written through [`Layout::mirrored_blob_writer`] also sent
    /// to `mirror` as they are written.
    pub fn mirrored(&self, mirror: Arc<dyn Mirror>) -> Layout {
        Layout {
            mirror: Some(mirror),
            ..self.clone()
        }
    }

    /// A writer for a new blob whose digest is known only once it has all been written.
    pub fn blob_writer(&self) -> Result<BlobWriter, StoreError> {
        self.writing()?;
        let file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.house.tmp)
            .map_err(io_err(&self.house.tmp, "cannot create a temporary file"))?;
        Ok(BlobWriter {
            inner: HashingWriter::new(BufWriter::with_capacity(1 << 20, WritingBack::new(file))),
            mirror: None,
        })
    }

    /// [`Layout::blob_writer`] for a big blob that is new (a model file not seen before, a
    /// package layer not built before): sent to the layout's mirror, when it has one, while
    /// it is written. Other blobs go with the push after the build, which skips what the
    /// registry has — a stream cannot, as the digest is known only at its end.
    pub fn mirrored_blob_writer(&self) -> Result<BlobWriter, StoreError> {
        let mut writer = self.blob_writer()?;
        writer.mirror = self.mirror.as_ref().and_then(|m| m.open());
        Ok(writer)
    }

    /// Makes a finished blob visible under its digest (fsync, then rename or link).
    pub fn commit_blob(&self, writer: BlobWriter) -> Result<(String, u64), StoreError> {
        let BlobWriter { inner, mut mirror } = writer;
        let (buffered, digest, size) = inner.finish();
        // The copy is closed on its own thread while the file is flushed and fsynced here;
        // it is waited for only when the blob is in place, and not at all when it is not.
        if let Some(copy) = mirror.as_mut() {
            copy.close(&digest, size);
        }
        let file = buffered
            .into_inner()
            .map_err(|e| StoreError::Io {
                path: self.house.tmp.clone(),
                action: "cannot write",
                source: e.into_error(),
            })?
            .into_inner();
        if !self.has_blob(&digest) {
            file.as_file()
                .sync_all()
                .map_err(io_err(file.path(), "cannot fsync"))?;
            self.place(file, &digest)?;
        }
        if let Some(copy) = mirror {
            copy.wait();
        }
        Ok((digest, size))
    }

    pub fn put_blob(&self, bytes: &[u8]) -> Result<(String, u64), StoreError> {
        let mut writer = self.blob_writer()?;
        writer
            .write_all(bytes)
            .map_err(io_err(&self.house.tmp, "cannot write"))?;
        self.commit_blob(writer)
    }

    /// Writes `bytes` as the blob `digest` (which they must match, in either algorithm).
    pub fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (algorithm, _) = parse_digest(digest).map_err(|problem| StoreError::Invalid {
            path: self.dir.clone(),
            problem,
        })?;
        let actual = digest_of(algorithm, bytes);
        if actual != digest {
            return Err(StoreError::DigestMismatch {
                what: "content".into(),
                expected: digest.into(),
                actual,
            });
        }
        // Before the check: a blob found here must stay until the writer is done with it.
        self.writing()?;
        if self.has_blob(digest) {
            return Ok(());
        }
        let mut file = tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&self.house.tmp)
            .map_err(io_err(&self.house.tmp, "cannot create a temporary file"))?;
        file.write_all(bytes)
            .map_err(io_err(file.path(), "cannot write"))?;
        file.as_file()
            .sync_all()
            .map_err(io_err(file.path(), "cannot fsync"))?;
        self.adopt_file(file.path(), digest)
    }

    /// Publishes a finished file whose content was already verified to be `digest` and
    /// fsynced, by hard links only: into the pool (never replacing a blob already there), then
    /// into this layout. The file itself stays where it is; the caller removes it.
    pub fn adopt_file(&self, file: &Path, digest: &str) -> Result<(), StoreError> {
        self.writing()?;
        fs::set_permissions(file, fs::Permissions::from_mode(0o644))
            .map_err(io_err(file, "cannot set permissions"))?;
        let target = self.blob_path(digest)?;
        let Some(pool) = &self.house.pool else {
            return link_or_copy(file, &target, &self.house.tmp);
        };
        let pooled = blob_path_in(pool, digest)?;
        // A garbage collection may remove an old pooled copy between the two links: then the
        // second link finds nothing, and the next round puts this file into the pool again.
        for _ in 0..3 {
            link_new(file, &pooled)?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
            }
            match fs::hard_link(&pooled, &target) {
                Ok(()) => return sync_parent(&target),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(_) => return link_or_copy(file, &target, &self.house.tmp),
            }
        }
        link_or_copy(file, &target, &self.house.tmp)
    }

    /// Removes this layout's link to a blob (the pool keeps its copy until gc); whether it was here.
    pub fn remove_blob(&self, digest: &str) -> Result<bool, StoreError> {
        self.writing()?;
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => sync_parent(&path).map(|()| true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io {
                path,
                action: "cannot remove",
                source: e,
            }),
        }
    }

    fn place(&self, file: tempfile::NamedTempFile, digest: &str) -> Result<(), StoreError> {
        let target = self.blob_path(digest)?;
        match &self.house.pool {
            None => persist(file, &target),
            Some(pool) => {
                let pooled = blob_path_in(pool, digest)?;
                if !pooled.is_file() {
                    persist(file, &pooled)?;
                }
                link_or_copy(&pooled, &target, &self.house.tmp)
            }
        }
    }

    pub fn read_index(&self) -> Result<Index, StoreError> {
        let path = self.dir.join("index.json");
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Invalid {
                path,
                problem: format!("is not a valid OCI index: {e}"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Index::default()),
            Err(e) => Err(StoreError::Io {
                path,
                action: "cannot read",
                source: e,
            }),
        }
    }

    /// Points `tag` at `manifest` (replacing what it pointed at), atomically and under the
    /// lock; an immutable tag is only ever set again to the same manifest.
    pub fn set_tag(&self, tag: &str, manifest: Descriptor) -> Result<(), StoreError> {
        self.set_tag_as(tag, manifest, Mutability::Mutable)
    }

    /// [`Layout::set_tag`], and marks the tag immutable with [`Mutability::Immutable`] (a
    /// version's tag).
    pub fn set_tag_as(
        &self,
        tag: &str,
        manifest: Descriptor,
        mutability: Mutability,
    ) -> Result<(), StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        self.place_tag(&mut index, tag, manifest, mutability)?;
        self.write_index(&index)
    }

    pub fn write_index(&self, index: &Index) -> Result<(), StoreError> {
        self.writing()?;
        let bytes = serde_json::to_vec(index).expect("an index always serialises");
        write_atomically(&self.house.tmp, &self.dir.join("index.json"), &bytes)
    }

    /// The manifest descriptor for `tag`, or the only one when no tag is given.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Descriptor, StoreError> {
        let index = self.read_index()?;
        pick_tagged(&index, tag).map_err(|problem| StoreError::Invalid {
            path: self.dir.clone(),
            problem,
        })
    }

    /// The store's shared blob pool, for a layout of the store.
    pub(super) fn pool(&self) -> Option<&Path> {
        self.house.pool.as_deref()
    }

    pub(crate) fn lock(&self) -> Result<File, StoreError> {
        if let Some(parent) = self.house.lock.parent() {
            fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.house.lock)
            .map_err(io_err(&self.house.lock, "cannot open the lock file"))?;
        file.lock()
            .map_err(io_err(&self.house.lock, "cannot lock"))?;
        Ok(file)
    }
}

pub struct BlobWriter {
    inner: HashingWriter<BufWriter<WritingBack<tempfile::NamedTempFile>>>,
    mirror: Option<Box<dyn MirrorStream>>,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(copy) = self.mirror.as_mut() {
            copy.write(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Whether a repository of the store holds the pool's blob: the pooled file has another
/// link than its own.
pub(super) fn held_in_pool(pool: &Path, digest: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    blob_path_in(pool, digest)
        .ok()
        .and_then(|pooled| fs::metadata(pooled).ok())
        .is_some_and(|meta| meta.is_file() && meta.nlink() > 1)
}

/// `DIR/blobs/<algorithm>/<hex>` for a well-formed sha256 or sha512 digest; anything else is
/// refused before it can become a path.
pub(crate) fn blob_path_in(dir: &Path, digest: &str) -> Result<PathBuf, StoreError> {
    let (algorithm, hex) = parse_digest(digest).map_err(|problem| StoreError::Invalid {
        path: dir.to_path_buf(),
        problem,
    })?;
    Ok(dir.join("blobs").join(algorithm.name()).join(hex))
}

/// Hard-links `from` to `to` unless `to` exists already (then that copy, with the same
/// content, is kept).
fn link_new(from: &Path, to: &Path) -> Result<(), StoreError> {
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
    }
    match fs::hard_link(from, to) {
        Ok(()) => sync_parent(to),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: to.to_path_buf(),
            action: "cannot link into the pool",
            source: e,
        }),
    }
}

fn persist(file: tempfile::NamedTempFile, target: &Path) -> Result<(), StoreError> {
    // Temporary files are private (0600); what the store publishes is for every reader.
    file.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .map_err(io_err(target, "cannot set permissions"))?;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
    }
    file.persist(target).map_err(|e| StoreError::Io {
        path: target.to_path_buf(),
        action: "cannot rename into place",
        source: e.error,
    })?;
    sync_parent(target)
}

fn link_or_copy(from: &Path, to: &Path, tmp: &Path) -> Result<(), StoreError> {
    if to.is_file() {
        return Ok(());
    }
    if let Some(parent) = to.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
    }
    match fs::hard_link(from, to) {
        Ok(()) => sync_parent(to),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => {
            // Hard links can be refused (another filesystem, a FUSE mount): keep one more copy.
            let mut copy = tempfile::NamedTempFile::new_in(tmp)
                .map_err(io_err(tmp, "cannot create a temporary file"))?;
            io::copy(
                &mut File::open(from).map_err(io_err(from, "cannot open"))?,
                &mut copy,
            )
            .map_err(io_err(from, "cannot copy"))?;
            copy.as_file()
                .sync_all()
                .map_err(io_err(to, "cannot fsync"))?;
            persist(copy, to)
        }
    }
}

/// Replaces `target` with `bytes` so that readers see the old or the new content, never a mix.
pub(crate) fn write_atomically(tmp: &Path, target: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    fs::create_dir_all(tmp).map_err(io_err(tmp, "cannot create"))?;
    let mut file = tempfile::NamedTempFile::new_in(tmp)
        .map_err(io_err(tmp, "cannot create a temporary file"))?;
    file.write_all(bytes)
        .map_err(io_err(target, "cannot write"))?;
    file.as_file()
        .sync_all()
        .map_err(io_err(target, "cannot fsync"))?;
    persist(file, target)
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    if let Some(parent) = path.parent() {
        File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(io_err(parent, "cannot fsync the folder"))?;
    }
    Ok(())
}
