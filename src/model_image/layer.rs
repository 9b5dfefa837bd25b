//! Writes the model's layers: deterministic tar streams, hashed (uncompressed for the diff_id,
//! compressed for the blob digest) in the same pass that stores them. An uncompressed layer is
//! hashed once: its diff_id is its blob digest.

use super::gzip::ParallelGzEncoder;
use crate::model::payload::{EntryKind, Payload, PayloadEntry};
use crate::oci::digest::{Algorithm, Hasher};
use crate::oci::{Descriptor, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};
use crate::store::{BlobWriter, Layout, StoreError};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{SystemTime, UNIX_EPOCH};

/// Files at least this big get their own uncompressed layer: weights rarely compress, gzip is
/// the slowest step of a build, and a layer per file lets a registry dedupe unchanged weights.
pub const BIG_FILE_THRESHOLD: u64 = 64 * 1024 * 1024;

pub const MODEL_DIR: &str = "model";
pub const FILES_DIR: &str = "model/files";
pub const CONTRACT_PATH: &str = "model/contract.protobin";
/// The lock of the Python packages in the image (PEP 751), beside the contract.
pub const LOCK_PATH: &str = "model/pylock.toml";

#[derive(Debug, Clone)]
pub struct LayerOptions {
    /// The mtime of every entry: `SOURCE_DATE_EPOCH`, or 0.
    pub mtime: u64,
    pub big_file_threshold: u64,
    /// For the layers of small files and the contract; big files are never compressed.
    pub compression: Compression,
}

impl Default for LayerOptions {
    fn default() -> Self {
        LayerOptions {
            mtime: 0,
            big_file_threshold: BIG_FILE_THRESHOLD,
            compression: Compression::Gzip,
        }
    }
}

/// A layer as the manifest and the config need it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub descriptor: Descriptor,
    /// Digest of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// What the layer holds, for the image history and the build log.
    pub comment: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {problem}")]
    Source { path: String, problem: String },
    #[error("writing the {layer} layer: {source}")]
    Write { layer: String, source: io::Error },
}

/// Bumped whenever the bytes of a big file's layer change for the same inputs (tar header
/// format, path prefix, modes), so that cached digests of an older mlambda are never reused.
pub const LAYER_FORMAT: u32 = 1;

/// What a big file's layer is a function of: the file (identified by its canonical path and
/// what `stat` says about it, ctime included, so an in-place edit with a restored mtime is
/// seen) and the layer's own inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    pub source: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
    pub rel: String,
    pub executable: bool,
    pub build_mtime: u64,
    pub format: u32,
}

/// What `stat` says about a file that moves whenever its bytes do (ctime too: an in-place
/// edit that restores the mtime still moves it), or whenever another file takes its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
    pub dev: u64,
}

impl FileState {
    pub fn of(meta: &std::fs::Metadata) -> FileState {
        FileState {
            size: meta.size(),
            mtime_ns: meta.mtime().saturating_mul(1_000_000_000) + meta.mtime_nsec(),
            ctime_ns: meta.ctime().saturating_mul(1_000_000_000) + meta.ctime_nsec(),
            inode: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// A big file's layer as it was built last time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedLayer {
    pub digest: String,
    pub diff_id: String,
    pub size: u64,
}

/// Remembers the layers of big files between builds (the catalogue implements it). Best
/// effort: a lookup that fails is a miss, a record that fails is forgotten.
pub trait DigestCache {
    fn lookup(&self, key: &CacheKey) -> Option<CachedLayer>;
    fn record(&self, key: &CacheKey, layer: &CachedLayer);
}

/// A file whose ctime is this close to now may still be changed within the same clock tick
/// without its ctime moving: it is not recorded (git's "racily clean" entries).
const RACY_WINDOW_NS: i64 = 1_000_000_000;

fn cache_key(entry: &PayloadEntry, options: &LayerOptions) -> Option<CacheKey> {
    let EntryKind::File { executable, size } = entry.kind else {
        return None;
    };
    let source = std::fs::canonicalize(&entry.source).ok()?;
    let meta = std::fs::metadata(&source).ok()?;
    if !meta.is_file() || meta.size() != size {
        return None;
    }
    let state = FileState::of(&meta);
    Some(CacheKey {
        source: source.to_string_lossy().into_owned(),
        size: state.size,
        mtime_ns: state.mtime_ns,
        ctime_ns: state.ctime_ns,
        inode: state.inode,
        dev: state.dev,
        rel: entry.rel.clone(),
        executable,
        build_mtime: options.mtime,
        format: LAYER_FORMAT,
    })
}

fn is_racy(key: &CacheKey) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    now.saturating_sub(key.ctime_ns.max(key.mtime_ns)) < RACY_WINDOW_NS
}

/// A big file's layer when the cache knows it (and the store still has its blob).
fn cached_big_file_layer(
    entry: &PayloadEntry,
    layout: &Layout,
    key: &CacheKey,
    cache: &dyn DigestCache,
) -> Option<Layer> {
    let hit = cache.lookup(key)?;
    (hit.size > key.size && layout.has_or_link_pooled(&hit.digest)).then(|| Layer {
        descriptor: Descriptor::new(MEDIA_LAYER_TAR, hit.digest, hit.size),
        diff_id: hit.diff_id,
        comment: format!("model file {} (cached)", entry.rel),
    })
}

/// A big file's own uncompressed layer, and the cache key to remember it by: only when the
/// file did not change while it was read, with the stat taken before reading, so that a
/// change during the read can never be remembered as the old bytes.
fn big_file_layer(
    entry: &PayloadEntry,
    layout: &Layout,
    options: &LayerOptions,
    before: Option<CacheKey>,
) -> Result<(Layer, Option<CacheKey>), LayerError> {
    let mut tar = LayerTar::start_mirrored(layout, Compression::None)?;
    tar.append_entry(entry, options)?;
    let layer = tar.finish(layout, format!("model file {}", entry.rel))?;
    let unchanged = before
        .filter(|before| cache_key(entry, options).as_ref() == Some(before) && !is_racy(before));
    Ok((layer, unchanged))
}

/// The layer of the folders and every small file (it also creates `/model` and `/model/files`).
fn small_files_layer(
    small: &[&PayloadEntry],
    layout: &Layout,
    options: &LayerOptions,
) -> Result<Layer, LayerError> {
    let comment = format!("model payload: {} entries", small.len());
    let mut tar = LayerTar::start(layout, options.compression)?;
    tar.append_dir(MODEL_DIR, options)
        .map_err(write_error(&comment))?;
    tar.append_dir(FILES_DIR, options)
        .map_err(write_error(&comment))?;
    for entry in small {
        tar.append_entry(entry, options)?;
    }
    tar.finish(layout, comment)
}

/// Layers written at once: each is read, hashed and written by a thread of its own, so a
/// model with several big files uses the cores, but never more threads than this.
const LAYERS_AT_ONCE: usize = 4;

/// One layer to write: the small files, or a big file with its cache key.
enum LayerJob<'a> {
    Small(Vec<&'a PayloadEntry>),
    Big(&'a PayloadEntry, Option<CacheKey>),
}

/// The payload layers: one gzip layer with the folders and every small file, then one
/// uncompressed layer per big file, in path order. With a `cache`, unchanged big files are
/// neither read nor written again. The layers are written by up to [`LAYERS_AT_ONCE`]
/// threads; their order, and so the digests, do not depend on which finishes first.
pub fn write_payload_layers(
    payload: &Payload,
    layout: &Layout,
    options: &LayerOptions,
    cache: Option<&dyn DigestCache>,
) -> Result<Vec<Layer>, LayerError> {
    let is_big = |e: &PayloadEntry| matches!(e.kind, EntryKind::File { size, .. } if size >= options.big_file_threshold);
    let small: Vec<&PayloadEntry> = payload.entries.iter().filter(|e| !is_big(e)).collect();
    let mut layers: Vec<Option<Layer>> = Vec::new();
    let mut jobs = vec![(0, LayerJob::Small(small))];
    layers.push(None);
    // The cache is read and written here only: the catalogue behind it is one connection.
    for entry in payload.entries.iter().filter(|e| is_big(e)) {
        let key = cache.and_then(|_| cache_key(entry, options));
        let hit = cache
            .zip(key.as_ref())
            .and_then(|(cache, key)| cached_big_file_layer(entry, layout, key, cache));
        if hit.is_none() {
            jobs.push((layers.len(), LayerJob::Big(entry, key)));
        }
        layers.push(hit);
    }
    for (index, outcome) in run_layer_jobs(jobs, layout, options) {
        let (layer, remember) = outcome?;
        if let (Some(cache), Some(key)) = (cache, remember) {
            cache.record(
                &key,
                &CachedLayer {
                    digest: layer.descriptor.digest.clone(),
                    diff_id: layer.diff_id.clone(),
                    size: layer.descriptor.size,
                },
            );
        }
        layers[index] = Some(layer);
    }
    Ok(layers.into_iter().flatten().collect())
}

type LayerOutcome = Result<(Layer, Option<CacheKey>), LayerError>;

/// Runs the jobs on up to [`LAYERS_AT_ONCE`] threads; each outcome comes with its job's index.
fn run_layer_jobs(
    jobs: Vec<(usize, LayerJob<'_>)>,
    layout: &Layout,
    options: &LayerOptions,
) -> Vec<(usize, LayerOutcome)> {
    let run = |job: LayerJob| match job {
        LayerJob::Small(small) => small_files_layer(&small, layout, options).map(|l| (l, None)),
        LayerJob::Big(entry, key) => big_file_layer(entry, layout, options, key),
    };
    let threads = LAYERS_AT_ONCE.min(jobs.len());
    if threads <= 1 {
        return jobs.into_iter().map(|(i, job)| (i, run(job))).collect();
    }
    let queue = std::sync::Mutex::new(jobs.into_iter());
    let next = || queue.lock().unwrap_or_else(|e| e.into_inner()).next();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    while let Some((index, job)) = next() {
                        done.push((index, run(job)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker that panicked passes the panic on, as one thread would have.
            .flat_map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// The contract (and the package lock, when there is one) alone, so that changing it
/// re-uploads nothing else.
pub fn write_contract_layer(
    contract: &[u8],
    lock: Option<&str>,
    layout: &Layout,
    options: &LayerOptions,
) -> Result<Layer, LayerError> {
    let comment = match lock {
        None => "model contract".to_string(),
        Some(_) => "model contract and package lock".to_string(),
    };
    let mut tar = LayerTar::start(layout, options.compression)?;
    let files = [
        (CONTRACT_PATH, Some(contract)),
        (LOCK_PATH, lock.map(str::as_bytes)),
    ];
    for (path, bytes) in files {
        let Some(bytes) = bytes else { continue };
        let mut header = header(tar::EntryType::Regular, 0o644, bytes.len() as u64, options);
        tar.builder
            .append_data(&mut header, path, bytes)
            .map_err(write_error(&comment))?;
    }
    tar.finish(layout, comment)
}

/// How many layers [`write_payload_layers`] writes for `payload`: the small files' one and
/// one per big file.
pub fn payload_layer_count(payload: &Payload, options: &LayerOptions) -> usize {
    1 + payload
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { size, .. } if size >= options.big_file_threshold))
        .count()
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    None,
    #[default]
    Gzip,
    Zstd,
}

/// Where the tar bytes go after the diff_id hash: straight into the blob, or through gzip.
enum Encoder {
    Plain(BlobWriter),
    Gzip(Box<ParallelGzEncoder<BlobWriter>>),
    Zstd(Box<zstd::stream::write::Encoder<'static, BlobWriter>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Plain(w) => w.write(buf),
            Encoder::Gzip(w) => w.write(buf),
            Encoder::Zstd(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Plain(w) => w.flush(),
            Encoder::Gzip(w) => w.flush(),
            Encoder::Zstd(w) => w.flush(),
        }
    }
}

/// Where the tar stream goes: into the encoder, and through the diff_id hash when the layer is
/// compressed. An uncompressed layer's diff_id is its blob digest, which the blob writer
/// computes anyway: hashing the same bytes twice was the costliest step of a big file's layer.
struct TarSink {
    encoder: Encoder,
    diff_id: Option<Hasher>,
}

impl Write for TarSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.write(buf)?;
        if let Some(hasher) = &mut self.diff_id {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.encoder.flush()
    }
}

/// Bytes on their way to `inner`, hashed for the diff_id as they pass (when it is wanted).
struct Hashed<'a, W> {
    diff_id: &'a mut Option<Hasher>,
    inner: &'a mut W,
}

impl<W: Write> Write for Hashed<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if let Some(hasher) = self.diff_id {
            hasher.update(&buf[..n]);
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The piece in which a file's bytes are read and passed on: tar's own copy goes 8 KiB at a
/// time, which costs a read syscall and a trip through every writer per 8 KiB.
const COPY_BUFFER: usize = 1 << 20;

/// A layer being written: a tar stream hashed for its diff_id (when compressed), compressed
/// or not, hashed for its digest, and stored.
pub struct LayerTar {
    builder: tar::Builder<TarSink>,
    media_type: &'static str,
    /// Allocated on the first file, reused for the next ones.
    buffer: Vec<u8>,
}

impl LayerTar {
    pub fn start(layout: &Layout, compression: Compression) -> Result<LayerTar, LayerError> {
        LayerTar::begin(layout.blob_writer()?, compression)
    }

    /// [`LayerTar::start`] for a big layer that is new: sent to the layout's mirror while it
    /// is written (see [`Layout::mirrored_blob_writer`]).
    pub fn start_mirrored(
        layout: &Layout,
        compression: Compression,
    ) -> Result<LayerTar, LayerError> {
        LayerTar::begin(layout.mirrored_blob_writer()?, compression)
    }

    fn begin(blob: BlobWriter, compression: Compression) -> Result<LayerTar, LayerError> {
        let (encoder, media_type) = match compression {
            Compression::None => (Encoder::Plain(blob), MEDIA_LAYER_TAR),
            // Level 6 as gzip's default: small files are mostly text and code. Deflated on
            // every core (a package's layer can be a gigabyte); the bytes do not depend on it.
            Compression::Gzip => (
                Encoder::Gzip(Box::new(ParallelGzEncoder::new(blob, 6))),
                MEDIA_LAYER_GZIP,
            ),
            // Level 3, single-threaded: the same bytes on every machine.
            Compression::Zstd => (
                Encoder::Zstd(Box::new(
                    zstd::stream::write::Encoder::new(blob, 3).map_err(|source| {
                        LayerError::Write {
                            layer: "zstd".into(),
                            source,
                        }
                    })?,
                )),
                MEDIA_LAYER_ZSTD,
            ),
        };
        let diff_id = match compression {
            Compression::None => None,
            Compression::Gzip | Compression::Zstd => Some(Hasher::new(Algorithm::Sha256)),
        };
        let mut builder = tar::Builder::new(TarSink { encoder, diff_id });
        builder.mode(tar::HeaderMode::Deterministic);
        builder.follow_symlinks(false);
        Ok(LayerTar {
            builder,
            media_type,
            buffer: Vec::new(),
        })
    }

    /// Appends an entry whose header the caller built (see [`header`]).
    pub fn append(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        data: impl Read,
    ) -> io::Result<()> {
        self.builder.append_data(header, path, data)
    }

    /// Appends a file whose bytes come as a raw deflate stream (a wheel's zip entry), `header`
    /// giving their inflated size: into a gzip layer the deflated bytes go as they are, not
    /// deflated again; into any other they are inflated. The inflated bytes are also written to `seen`, for the caller's checks.
    /// A stream that does not inflate to the header's size is an `InvalidData` error.
    pub fn append_deflated(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        raw: &mut impl Read,
        seen: &mut impl Write,
    ) -> io::Result<()> {
        let size = header.size()?;
        self.builder.append_data(header, path, io::empty())?;
        let mut limited = AtMost {
            inner: seen,
            left: size,
        };
        let sink = self.builder.get_mut();
        let length = if let Encoder::Gzip(gz) = &mut sink.encoder {
            let mut hashed = Hashed {
                diff_id: &mut sink.diff_id,
                inner: &mut limited,
            };
            gz.write_deflated(raw, &mut hashed)?
        } else {
            self.copy_data(ReadCopy {
                inner: flate2::read::DeflateDecoder::new(raw),
                copy: &mut limited,
            })?
        };
        if length != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("inflates to {length} bytes, not the {size} its zip header says"),
            ));
        }
        self.pad(length)
    }

    /// Appends a symlink or hard link entry.
    pub fn append_link(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        target: &str,
    ) -> io::Result<()> {
        self.builder.append_link(header, path, target)
    }

    pub fn append_dir(&mut self, path: &str, options: &LayerOptions) -> io::Result<()> {
        let mut header = header(tar::EntryType::Directory, 0o755, 0, options);
        self.builder
            .append_data(&mut header, format!("{path}/"), io::empty())
    }

    fn append_entry(
        &mut self,
        entry: &PayloadEntry,
        options: &LayerOptions,
    ) -> Result<(), LayerError> {
        let path = format!("{FILES_DIR}/{}", entry.rel);
        let failed = source_error(entry);
        match &entry.kind {
            EntryKind::Dir => self
                .append_dir(&path, options)
                .map_err(|e| failed(e.to_string())),
            EntryKind::Symlink { target } => {
                let mut header = header(tar::EntryType::Symlink, 0o777, 0, options);
                self.builder
                    .append_link(&mut header, &path, target)
                    .map_err(|e| failed(e.to_string()))
            }
            EntryKind::File { size, executable } => {
                let file =
                    File::open(&entry.source).map_err(|e| failed(format!("cannot open: {e}")))?;
                let before = file
                    .metadata()
                    .map_err(|e| failed(format!("cannot stat: {e}")))?;
                let mode = if *executable { 0o755 } else { 0o644 };
                let mut header = header(tar::EntryType::Regular, mode, *size, options);
                self.append_file(&mut header, &path, entry, FileState::of(&before), file)
            }
        }
    }

    /// Appends `entry`'s file under `header` (which says the size it was listed with), its
    /// bytes read from `data`, opened when `before` was taken. A file written to, resized or
    /// replaced at any point of the read fails: the layer would hold bytes of neither version.
    /// (A write within the clock tick of the one before the open moves no timestamp: no
    /// `stat` can see it.)
    fn append_file(
        &mut self,
        header: &mut tar::Header,
        path: &str,
        entry: &PayloadEntry,
        before: FileState,
        data: impl Read,
    ) -> Result<(), LayerError> {
        let failed = source_error(entry);
        let size = header
            .size()
            .map_err(|e| failed(format!("a bad tar header: {e}")))?;
        // tar writes the header (long names included) for `size` bytes; the bytes follow in
        // large pieces, then the padding to a whole block.
        self.builder
            .append_data(header, path, io::empty())
            .map_err(|e| failed(e.to_string()))?;
        let copied = self
            .copy_data(data.take(size))
            .map_err(|e| failed(e.to_string()))?;
        let after = std::fs::metadata(&entry.source).map(|m| FileState::of(&m));
        let change = if copied != size {
            Some(format!("{size} bytes expected, {copied} read"))
        } else if before.size != size {
            Some(format!(
                "{size} bytes when listed, {} when read",
                before.size
            ))
        } else {
            match after {
                Err(e) => Some(format!("it cannot be found any more: {e}")),
                Ok(after) if (after.inode, after.dev) != (before.inode, before.dev) => {
                    Some("another file took its name".into())
                }
                Ok(after) if after != before => Some("it was written to".into()),
                Ok(_) => None,
            }
        };
        if let Some(change) = change {
            return Err(failed(format!(
                "changed while it was being read ({change}); upload (or build) again once it is completely written"
            )));
        }
        self.pad(copied).map_err(|e| failed(e.to_string()))
    }

    /// Copies `data` into the tar stream in [`COPY_BUFFER`] pieces; returns the bytes copied.
    fn copy_data(&mut self, mut data: impl Read) -> io::Result<u64> {
        if self.buffer.is_empty() {
            self.buffer = vec![0; COPY_BUFFER];
        }
        let sink = self.builder.get_mut();
        let mut copied = 0u64;
        loop {
            let n = match data.read(&mut self.buffer) {
                Ok(0) => return Ok(copied),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sink.write_all(&self.buffer[..n])?;
            copied += n as u64;
        }
    }

    /// Zeroes up to the next 512-byte block, as tar does after an entry's data.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let partial = (len % 512) as usize;
        if partial == 0 {
            return Ok(());
        }
        self.builder
            .get_mut()
            .write_all(&[0u8; 512][..512 - partial])
    }

    pub fn finish(self, layout: &Layout, comment: String) -> Result<Layer, LayerError> {
        let sink = self.builder.into_inner().map_err(write_error(&comment))?;
        let blob = match sink.encoder {
            Encoder::Plain(blob) => blob,
            Encoder::Gzip(gz) => gz.finish().map_err(write_error(&comment))?,
            Encoder::Zstd(zst) => zst.finish().map_err(write_error(&comment))?,
        };
        let (digest, size) = layout.commit_blob(blob)?;
        let diff_id = sink.diff_id.map_or_else(|| digest.clone(), Hasher::finish);
        Ok(Layer {
            descriptor: Descriptor::new(self.media_type, digest, size),
            diff_id,
            comment,
        })
    }
}

/// Reads from `inner` and writes what it read to `copy` as well.
struct ReadCopy<'a, R, W> {
    inner: R,
    copy: &'a mut W,
}

impl<R: Read, W: Write> Read for ReadCopy<'_, R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.copy.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Fails once more than `left` bytes come: a deflated file that inflates past its size (a
/// zip bomb) is stopped there, not written out whole.
struct AtMost<'a, W> {
    inner: &'a mut W,
    left: u64,
}

impl<W: Write> Write for AtMost<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "inflates to more bytes than its zip header says",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reproducible header: owner 0:0, no user or group names, the build's mtime.
pub fn header(kind: tar::EntryType, mode: u32, size: u64, options: &LayerOptions) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(options.mtime);
    header.set_size(size);
    header
}

/// An error about a payload entry's file, named by where it is read.
fn source_error(entry: &PayloadEntry) -> impl Fn(String) -> LayerError + '_ {
    move |problem| LayerError::Source {
        path: entry.source.display().to_string(),
        problem,
    }
}

fn write_error(layer: &str) -> impl FnOnce(io::Error) -> LayerError + '_ {
    move |source| LayerError::Write {
        layer: layer.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::OpenOptions;
    use std::os::unix::fs::FileExt;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    /// A file's reader that does `during` after its first piece: another process changing
    /// the file at a fixed point of the build's read (the first MiB read, the rest not yet).
    struct ChangedDuringRead<F: FnOnce()> {
        file: File,
        during: Option<F>,
        pieces: u32,
    }

    impl<F: FnOnce()> Read for ChangedDuringRead<F> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.pieces += 1;
            if self.pieces == 2
                && let Some(during) = self.during.take()
            {
                during();
            }
            self.file.read(buf)
        }
    }

    /// A 3 MiB file listed in the payload, its mtime long past: any write moves it, however
    /// coarse the file system's clock.
    fn listed_file(dir: &Path) -> PayloadEntry {
        let source = dir.join("weights.bin");
        let bytes: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
        std::fs::write(&source, &bytes).unwrap();
        File::options()
            .write(true)
            .open(&source)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        PayloadEntry {
            rel: "weights.bin".into(),
            source,
            kind: EntryKind::File {
                size: bytes.len() as u64,
                executable: false,
            },
        }
    }

    /// Appends `entry` as a layer does, with `during` run once the read has begun.
    fn append_changing(entry: &PayloadEntry, during: impl FnOnce()) -> Result<Layer, LayerError> {
        let store = tempfile::tempdir().unwrap();
        let layout = Layout::create(store.path()).unwrap();
        let mut tar = LayerTar::start(&layout, Compression::None).unwrap();
        let file = File::open(&entry.source).unwrap();
        let before = FileState::of(&file.metadata().unwrap());
        let EntryKind::File { size, .. } = entry.kind else {
            panic!("a file entry")
        };
        let options = LayerOptions::default();
        let mut header = header(tar::EntryType::Regular, 0o644, size, &options);
        let data = ChangedDuringRead {
            file,
            during: Some(during),
            pieces: 0,
        };
        tar.append_file(&mut header, "model/files/weights.bin", entry, before, data)?;
        tar.finish(&layout, "test".into())
    }

    fn changed_message(result: Result<Layer, LayerError>) -> String {
        let error = result.expect_err("the layer must fail").to_string();
        assert!(
            error.contains("weights.bin: changed while it was being read")
                && error.contains("again once it is completely written"),
            "{error}"
        );
        error
    }

    /// A layer of one file appended from its raw deflate stream; the tar read back.
    fn deflated_layer(bytes: &[u8], size: u64, compression: Compression) -> io::Result<Vec<u8>> {
        let store = tempfile::tempdir().unwrap();
        let layout = Layout::create(store.path()).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        raw.write_all(bytes).unwrap();
        let raw = raw.finish().unwrap();
        let mut tar = LayerTar::start(&layout, compression).unwrap();
        let mut header = header(
            tar::EntryType::Regular,
            0o644,
            size,
            &LayerOptions::default(),
        );
        let mut seen = Vec::new();
        tar.append_deflated(&mut header, "lib/weights.so", &mut &raw[..], &mut seen)?;
        assert_eq!(seen, bytes);
        let layer = tar.finish(&layout, "test".into()).unwrap();
        let blob = layout.open_blob(&layer.descriptor.digest).unwrap();
        let mut plain = Vec::new();
        match compression {
            Compression::None => io::BufReader::new(blob).read_to_end(&mut plain),
            Compression::Gzip => flate2::read::GzDecoder::new(blob).read_to_end(&mut plain),
            Compression::Zstd => zstd::stream::read::Decoder::new(blob)?.read_to_end(&mut plain),
        }?;
        assert_eq!(layer.diff_id, crate::oci::digest::sha256_of(&plain));
        Ok(plain)
    }

    #[test]
    fn a_deflated_file_is_the_same_file_in_every_compression() {
        let bytes: Vec<u8> = (0..200_000u64).map(|i| (i * i % 251) as u8).collect();
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let plain = deflated_layer(&bytes, bytes.len() as u64, compression).unwrap();
            let mut archive = tar::Archive::new(&plain[..]);
            let mut entries = archive.entries().unwrap();
            let mut entry = entries.next().unwrap().unwrap();
            assert_eq!(entry.path().unwrap().to_str(), Some("lib/weights.so"));
            let mut got = Vec::new();
            entry.read_to_end(&mut got).unwrap();
            assert!(got == bytes, "{compression:?}");
        }
    }

    #[test]
    fn a_deflated_file_that_is_not_its_size_fails() {
        let bytes = vec![7u8; 100_000];
        for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
            for size in [99_999, 100_001] {
                let error = deflated_layer(&bytes, size, compression).unwrap_err();
                assert_eq!(
                    error.kind(),
                    io::ErrorKind::InvalidData,
                    "{compression:?} {size}"
                );
            }
        }
    }

    #[test]
    fn an_unchanged_file_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let entry = listed_file(dir.path());
        let layer = append_changing(&entry, || {}).unwrap();
        assert!(layer.descriptor.size > 3 << 20);
    }

    #[test]
    fn a_file_written_in_place_during_the_read_fails() {
        let dir = tempfile::tempdir().unwrap();
        let entry = listed_file(dir.path());
        let write_at = |at: u64| {
            let file = OpenOptions::new().write(true).open(&entry.source).unwrap();
            file.write_all_at(b"torn", at).unwrap();
        };
        // `dd conv=notrunc` behind the read and ahead of it: same size, torn bytes.
        let error = changed_message(append_changing(&entry, || {
            write_at(0);
            write_at(3 << 19);
        }));
        assert!(error.contains("it was written to"), "{error}");
    }

    #[test]
    fn a_file_replaced_or_resized_during_the_read_fails() {
        let dir = tempfile::tempdir().unwrap();
        let entry = listed_file(dir.path());
        let other: PathBuf = dir.path().join("new.bin");
        let error = changed_message(append_changing(&entry, || {
            std::fs::copy(&entry.source, &other).unwrap();
            std::fs::rename(&other, &entry.source).unwrap();
        }));
        assert!(error.contains("another file took its name"), "{error}");

        let entry = listed_file(dir.path());
        let error = changed_message(append_changing(&entry, || {
            let file = OpenOptions::new().write(true).open(&entry.source).unwrap();
            file.set_len(1 << 20).unwrap();
        }));
        assert!(error.contains("bytes expected, 1048576 read"), "{error}");

        // Grown after it was listed: the header's size would cut it short.
        let entry = listed_file(dir.path());
        let file = OpenOptions::new().append(true).open(&entry.source).unwrap();
        file.write_all_at(b"more", 3 << 20).unwrap();
        let error = changed_message(append_changing(&entry, || {}));
        assert!(error.contains("when listed"), "{error}");
    }
}
