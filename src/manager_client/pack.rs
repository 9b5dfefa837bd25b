//! The model folder as the tar.gz an upload sends, packed while it is sent. Small files are
//! deflated (level 1: the archive only travels); big files — weights that do not compress, and
//! that go uncompressed into the image anyway — are stored, so packing runs at the speed of
//! the disk instead of the compressor's.

use crate::model::payload::{CONTRACT_FILES, EntryKind};
use crate::model::spec::ModelSpec;
use crate::model_image::layer::BIG_FILE_THRESHOLD;
use crate::packages::resolve::PACKAGE_FILES;
use flate2::{Compress, Compression, Crc, FlushCompress, Status};
use std::io::{self, Write};
use std::path::Path;

/// A file of the folder that cannot go into the archive.
#[derive(Debug, thiserror::Error)]
#[error("cannot pack {path}: {message}")]
pub struct PackError {
    pub path: String,
    pub message: String,
}

/// One file of the archive: where it is read and its path in the folder.
pub struct ArchiveEntry {
    source: std::path::PathBuf,
    path: String,
    kind: EntryKind,
}

/// What the server needs to build as this machine would: the payload and the files that
/// describe the model (serving.yaml, contract files, requirements), at their paths in the folder.
pub fn archive_entries(spec: &ModelSpec) -> Result<Vec<ArchiveEntry>, PackError> {
    let root = std::fs::canonicalize(&spec.dir).map_err(|e| PackError {
        path: spec.dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut entries = Vec::new();
    let described_by = CONTRACT_FILES.iter().chain(PACKAGE_FILES);
    for name in described_by.clone() {
        let source = root.join(name);
        if let Ok(meta) = std::fs::metadata(&source)
            && meta.is_file()
        {
            entries.push(ArchiveEntry {
                source,
                path: name.to_string(),
                kind: EntryKind::File {
                    size: meta.len(),
                    executable: false,
                },
            });
        }
    }
    for entry in &spec.payload.entries {
        let canonical_parent = entry
            .source
            .parent()
            .and_then(|p| std::fs::canonicalize(p).ok())
            .map(|p| p.join(entry.source.file_name().unwrap_or_default()));
        let Some(relative) = canonical_parent
            .as_deref()
            .and_then(|p| p.strip_prefix(&root).ok())
            .map(Path::to_path_buf)
        else {
            return Err(PackError {
                path: entry.source.display().to_string(),
                message: "this payload entry is outside the model folder; a server receives only the folder".into(),
            });
        };
        let path = relative.to_string_lossy().into_owned();
        if path.is_empty() || described_by.clone().any(|name| *name == path) {
            continue;
        }
        entries.push(ArchiveEntry {
            source: entry.source.clone(),
            path,
            kind: entry.kind.clone(),
        });
    }
    Ok(entries)
}

/// Why packing stopped: the folder, or where the archive goes.
#[derive(Debug)]
pub enum PackFailure {
    /// A file of the folder could not be read ("<path>: <why>").
    Read(String),
    /// The archive could not be written out: what it feeds (the upload) stopped taking it,
    /// and says why itself.
    Send,
}

/// Writes the archive of `entries` to `out`, telling a file that cannot be read apart from
/// an `out` that stops taking bytes (tar reports both as one I/O error of the entry).
pub fn pack(entries: &[ArchiveEntry], out: &mut impl Write) -> Result<(), PackFailure> {
    let mut out = Outgoing { out, broken: false };
    match pack_into(entries, &mut out) {
        Ok(()) => Ok(()),
        Err(_) if out.broken => Err(PackFailure::Send),
        Err(reading) => Err(PackFailure::Read(reading)),
    }
}

/// A writer that remembers whether it failed.
struct Outgoing<W> {
    out: W,
    broken: bool,
}

impl<W: Write> Write for Outgoing<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let written = self.out.write(data);
        self.broken |= written.is_err();
        written
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = self.out.flush();
        self.broken |= flushed.is_err();
        flushed
    }
}

fn pack_into(entries: &[ArchiveEntry], out: &mut impl Write) -> Result<(), String> {
    let gzip = GzipWriter::new(out).map_err(|e| e.to_string())?;
    let mut tar = tar::Builder::new(gzip);
    tar.follow_symlinks(false);
    for entry in entries {
        let failed = |e: std::io::Error| format!("{}: {e}", entry.source.display());
        match &entry.kind {
            EntryKind::Dir => tar.append_dir(&entry.path, &entry.source).map_err(failed)?,
            EntryKind::File { size, .. } => {
                tar.get_mut()
                    .set_stored(*size >= BIG_FILE_THRESHOLD)
                    .map_err(failed)?;
                let mut file = std::fs::File::open(&entry.source).map_err(failed)?;
                tar.append_file(&entry.path, &mut file).map_err(failed)?;
            }
            EntryKind::Symlink { target } => {
                let mut header = tar::Header::new_gnu();
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                header.set_mode(0o777);
                tar.append_link(&mut header, &entry.path, target)
                    .map_err(failed)?;
            }
        }
    }
    let gzip = tar.into_inner().map_err(|e| e.to_string())?;
    gzip.finish().map_err(|e| e.to_string())?;
    Ok(())
}

/// A gzip stream (RFC 1952) in which runs of data can go as stored deflate blocks, uncompressed,
/// and the rest deflated. A full flush before a stored run means the deflater never refers
/// back into bytes it did not see, so one stream reads back with any gzip reader.
struct GzipWriter<W: Write> {
    out: W,
    deflate: Compress,
    crc: Crc,
    buffer: Vec<u8>,
    stored: bool,
}

/// The most a stored block holds (its length is 16 bits).
const STORED_BLOCK: usize = 65_535;

impl<W: Write> GzipWriter<W> {
    fn new(mut out: W) -> io::Result<GzipWriter<W>> {
        // No name, no mtime, unknown OS: the same folder gives the same bytes.
        out.write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255])?;
        Ok(GzipWriter {
            out,
            deflate: Compress::new(Compression::fast(), false),
            crc: Crc::new(),
            buffer: vec![0; 256 * 1024],
            stored: false,
        })
    }

    /// `true`: what follows is written uncompressed; `false`: deflated.
    fn set_stored(&mut self, stored: bool) -> io::Result<()> {
        if stored && !self.stored {
            self.run(&[], FlushCompress::Full)?;
        }
        self.stored = stored;
        Ok(())
    }

    /// Feeds `input` to the deflater and writes what comes out.
    fn run(&mut self, mut input: &[u8], flush: FlushCompress) -> io::Result<Status> {
        loop {
            let (read, written) = (self.deflate.total_in(), self.deflate.total_out());
            let status = self
                .deflate
                .compress(input, &mut self.buffer, flush)
                .map_err(io::Error::other)?;
            let consumed = (self.deflate.total_in() - read) as usize;
            let produced = (self.deflate.total_out() - written) as usize;
            input = &input[consumed..];
            self.out.write_all(&self.buffer[..produced])?;
            let drained = produced < self.buffer.len();
            if status == Status::StreamEnd || (input.is_empty() && drained) {
                return Ok(status);
            }
        }
    }

    /// Non-final stored blocks: a byte of header (BFINAL 0, BTYPE 00), LEN and its complement.
    fn write_stored(&mut self, data: &[u8]) -> io::Result<()> {
        for block in data.chunks(STORED_BLOCK) {
            let len = block.len() as u16;
            self.out.write_all(&[0])?;
            self.out.write_all(&len.to_le_bytes())?;
            self.out.write_all(&(!len).to_le_bytes())?;
            self.out.write_all(block)?;
        }
        Ok(())
    }

    fn finish(mut self) -> io::Result<W> {
        while self.run(&[], FlushCompress::Finish)? != Status::StreamEnd {}
        self.out.write_all(&self.crc.sum().to_le_bytes())?;
        self.out.write_all(&self.crc.amount().to_le_bytes())?;
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.crc.update(data);
        if self.stored {
            self.write_stored(data)?;
        } else {
            self.run(data, FlushCompress::None)?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn the_stream_reads_back_across_level_changes() {
        let mut gzip = GzipWriter::new(Vec::new()).unwrap();
        let text = b"a model file, compressible ".repeat(5000);
        let noise: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        gzip.write_all(&text).unwrap();
        gzip.set_stored(true).unwrap();
        gzip.write_all(&noise).unwrap();
        gzip.set_stored(false).unwrap();
        gzip.write_all(&text).unwrap();
        gzip.write_all(&noise[..1000]).unwrap();
        let bytes = gzip.finish().unwrap();
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, [&text[..], &noise, &text, &noise[..1000]].concat());
        assert!(bytes.len() < noise.len() + text.len());
    }

    fn file_entry(source: &Path, size: u64) -> ArchiveEntry {
        ArchiveEntry {
            source: source.to_path_buf(),
            path: "weights.bin".into(),
            kind: EntryKind::File {
                size,
                executable: false,
            },
        }
    }

    /// Takes `room` bytes, then fails as a pipe whose reader is gone.
    struct Closing {
        room: usize,
    }

    impl Write for Closing {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = data.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_file_that_cannot_be_read_is_blamed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("weights.bin");
        match pack(&[file_entry(&missing, 10)], &mut Vec::new()) {
            Err(PackFailure::Read(message)) => {
                assert!(message.contains("weights.bin"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_upload_that_stops_taking_the_archive_is_not_blamed_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("weights.bin");
        std::fs::write(&weights, vec![7u8; 1 << 20]).unwrap();
        let packed = pack(
            &[file_entry(&weights, 1 << 20)],
            &mut Closing { room: 4096 },
        );
        assert!(matches!(packed, Err(PackFailure::Send)), "{packed:?}");
    }
}
