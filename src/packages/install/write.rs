//! Writing: each planned file streamed once from its zip entry into the tar, its size and hash
//! checked against RECORD on the way (a wheel that fails leaves no layer), and an ELF object
//! copied to a temporary file as it passes so that the libraries it needs and provides can be
//! read from its dynamic section. A big deflated entry goes into a gzip layer still deflated
//! (inflated only to be checked): deflating it again cost more than the rest of the install.

use super::super::elf;
use super::ElfFile;
use super::InstallError;
use super::beside::Beside;
use super::plan::{Content, Planned};
use super::record::{Checked, Hash, Hasher, mismatch};
use super::wheel::{Entry, Wheel};
use crate::model_image::layer::{LayerOptions, LayerTar, header};
use std::collections::BTreeSet;
use std::io::{self, BufWriter, Read, Write};

#[derive(Default)]
pub(super) struct Found {
    pub(super) libraries: Vec<ElfFile>,
    pub(super) provides: BTreeSet<String>,
}

/// A shared library by its name: `libz.so`, `libz.so.1.3`, `_core.cpython-311-x86_64-linux-gnu.so`.
fn looks_like_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

pub(super) fn write_file(
    tar: &mut LayerTar,
    wheel: &mut Wheel,
    path: &str,
    planned: &Planned,
    options: &LayerOptions,
    found: &mut Found,
) -> Result<(), InstallError> {
    if looks_like_library(path) {
        let name = path.rsplit('/').next().unwrap_or(path);
        found.provides.insert(name.to_string());
    }
    match &planned.content {
        Content::Bytes(bytes) => {
            let size = bytes.len() as u64;
            let mut header = header(tar::EntryType::Regular, planned.mode, size, options);
            tar.append(&mut header, path, bytes.as_slice())
                .map_err(|source| written(&wheel.filename, path, source))
        }
        Content::Zip { entry, hash } => {
            let mut header = header(tar::EntryType::Regular, planned.mode, entry.size, options);
            let copy = if is_spliced(wheel, entry)? {
                splice_entry(tar, wheel, path, &mut header, entry, hash)?
            } else {
                stream_entry(tar, wheel, path, &mut header, entry, hash)?
            };
            if let Some(copy) = copy {
                read_libraries(wheel, path, &copy, found)?;
            }
            Ok(())
        }
    }
}

fn written(wheel: &str, path: &str, source: io::Error) -> InstallError {
    InstallError::Io {
        wheel: wheel.to_string(),
        what: format!("writing {path} into the layer"),
        source,
    }
}

/// Deflated entries at least this big (compressed) are put in as they are: below it, their
/// neighbours' matches and one block for many small files compress them better.
const SPLICED_FROM: u64 = 16 * 1024;

fn is_spliced(wheel: &mut Wheel, entry: &Entry) -> Result<bool, InstallError> {
    let spliced = wheel.archive.by_index_raw(entry.index).map(|file| {
        file.compression() == zip::CompressionMethod::Deflated
            && file.compressed_size() >= SPLICED_FROM
    });
    spliced.map_err(|e| wheel.corrupt(&entry.name, format!("cannot be read: {e}")))
}

/// [`stream_entry`] for a deflated entry: its raw deflate stream goes into the layer (see
/// [`LayerTar::append_deflated`]), its inflated bytes are checked and copied the same way.
fn splice_entry(
    tar: &mut LayerTar,
    wheel: &mut Wheel,
    path: &str,
    header: &mut tar::Header,
    entry: &Entry,
    hash: &Hash,
) -> Result<Option<tempfile::NamedTempFile>, InstallError> {
    let filename = wheel.filename.clone();
    let corrupt = |problem: String| corrupt_entry(&filename, entry, problem);
    let mut raw = wheel
        .archive
        .by_index_raw(entry.index)
        .map_err(|e| corrupt(format!("cannot be read: {e}")))?;
    let (inspected, outcome) = std::thread::scope(|scope| {
        let (mut beside, inspector) = Beside::start(scope, Inspected::new(hash));
        let outcome = tar.append_deflated(header, path, &mut raw, &mut beside);
        drop(beside);
        let inspected = inspector
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (inspected, outcome)
    });
    // A failed copy is the temporary file's fault (the layer's writes failed after it), a
    // stream that does not inflate (or not to its size) the wheel's, else the layer's.
    let (inspected, copied) = inspected;
    copied.map_err(|source| copy_failed(&filename, entry, source))?;
    match outcome {
        Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(corrupt(e.to_string())),
        Err(e) => return Err(written(&filename, path, e)),
        Ok(()) => {}
    }
    if inspected.hasher.finish() != *hash {
        return Err(corrupt(mismatch(hash.kind)));
    }
    match inspected.copy {
        Some(copy) => copy
            .into_inner()
            .map(Some)
            .map_err(|e| copy_failed(&filename, entry, e.into_error())),
        None => Ok(None),
    }
}

/// The wheel's entry is not what its zip header or RECORD says.
fn corrupt_entry(wheel: &str, entry: &Entry, problem: String) -> InstallError {
    InstallError::Corrupt {
        wheel: wheel.to_string(),
        path: entry.name.clone(),
        problem,
    }
}

fn copy_failed(wheel: &str, entry: &Entry, source: io::Error) -> InstallError {
    InstallError::Io {
        wheel: wheel.to_string(),
        what: format!(
            "copying {} to a temporary file to read its libraries",
            entry.name
        ),
        source,
    }
}

/// A spliced entry's inflated bytes: hashed for RECORD, and copied to a temporary file when
/// its first four bytes say ELF.
struct Inspected {
    hasher: Hasher,
    head: Vec<u8>,
    copy: Option<BufWriter<tempfile::NamedTempFile>>,
}

impl Inspected {
    fn new(hash: &Hash) -> Self {
        Inspected {
            hasher: Hasher::new(hash.kind),
            head: Vec::with_capacity(4),
            copy: None,
        }
    }
}

impl Write for Inspected {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        let mut rest = buf;
        if self.head.len() < 4 {
            let wanted = (4 - self.head.len()).min(rest.len());
            self.head.extend_from_slice(&rest[..wanted]);
            rest = &rest[wanted..];
            if self.head.len() == 4 && elf::is_elf(&self.head) {
                let mut copy = BufWriter::new(tempfile::NamedTempFile::new()?);
                copy.write_all(&self.head)?;
                self.copy = Some(copy);
            }
        }
        if let Some(copy) = &mut self.copy {
            copy.write_all(rest)?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Streams a zip entry into the tar, checking its size and hash against RECORD; an ELF
/// object is also copied to a temporary file, returned, for its dynamic section.
fn stream_entry(
    tar: &mut LayerTar,
    wheel: &mut Wheel,
    path: &str,
    header: &mut tar::Header,
    entry: &Entry,
    hash: &Hash,
) -> Result<Option<tempfile::NamedTempFile>, InstallError> {
    let corrupt = |problem: String| corrupt_entry(&wheel.filename, entry, problem);
    let temp_failed = |source: io::Error| copy_failed(&wheel.filename, entry, source);
    let file = wheel
        .archive
        .by_index(entry.index)
        .map_err(|e| corrupt(format!("cannot be read: {e}")))?;
    let mut source = Checked {
        inner: file,
        hasher: Some(Hasher::new(hash.kind)),
        left: entry.size,
        failure: None,
    };
    let mut head = [0u8; 4];
    let got = read_up_to(&mut source, &mut head);
    let got = got.map_err(|e| corrupt(source.failure.take().unwrap_or_else(|| e.to_string())))?;
    let mut copy = if elf::is_elf(&head[..got]) {
        Some(tempfile::NamedTempFile::new().map_err(temp_failed)?)
    } else {
        None
    };
    let (outcome, copy_failure) = {
        let mut tee = Tee {
            inner: (&head[..got]).chain(&mut source),
            copy: copy.as_mut().map(|c| BufWriter::new(c.as_file_mut())),
            failure: None,
        };
        let outcome = tar.append(header, path, &mut tee);
        let flushed = tee.copy.take().map_or(Ok(()), |mut c| c.flush());
        (outcome, tee.failure.take().or(flushed.err()))
    };
    // A failed read is the wheel's fault, a failed copy the temporary file's, else the layer's.
    if let Err(e) = outcome {
        return Err(match (source.failure.take(), copy_failure) {
            (Some(problem), _) => corrupt(problem),
            (None, Some(e)) => temp_failed(e),
            (None, None) => written(&wheel.filename, path, e),
        });
    }
    if let Some(e) = copy_failure {
        return Err(temp_failed(e));
    }
    // The entry must end where its zip header says; reading on also checks its CRC.
    match source.inner.read(&mut [0u8; 1]) {
        Ok(0) => {}
        Ok(_) => return Err(corrupt("holds more bytes than its zip header says".into())),
        Err(e) => return Err(corrupt(format!("cannot be read: {e}"))),
    }
    if source.hasher.take().map(Hasher::finish).as_ref() != Some(hash) {
        return Err(corrupt(mismatch(hash.kind)));
    }
    Ok(copy)
}

/// Reads until `buf` is full or the source ends.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match source.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn read_libraries(
    wheel: &Wheel,
    path: &str,
    copy: &tempfile::NamedTempFile,
    found: &mut Found,
) -> Result<(), InstallError> {
    match elf::dynamic_info(copy.path()) {
        Ok(info) => {
            found.provides.extend(info.soname.clone());
            found.libraries.push(ElfFile {
                path: path.to_string(),
                soname: info.soname,
                needed: info.needed,
            });
            Ok(())
        }
        // A file that only starts like ELF (a test fixture, a truncated sample) cannot be
        // loaded, so it needs nothing: installed as pip would, without libraries.
        Err(elf::ElfError::Malformed { .. }) => Ok(()),
        Err(elf::ElfError::Io { source, .. }) => Err(InstallError::Io {
            wheel: wheel.filename.clone(),
            what: format!("reading the libraries of {path}"),
            source,
        }),
    }
}

/// Passes the bytes on and writes them to `copy` as well.
struct Tee<R, W> {
    inner: R,
    copy: Option<W>,
    failure: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(copy) = &mut self.copy
            && let Err(e) = copy.write_all(&buf[..n])
        {
            let kind = e.kind();
            self.failure = Some(e);
            return Err(io::Error::new(kind, "the temporary copy failed"));
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_wheels::*;
    use super::super::{InstallError, Scheme};
    use crate::oci::digest::sha256_of;
    use std::io::Read;
    use std::path::Path;

    /// Bytes that deflate to more than [`super::SPLICED_FROM`], but not to nothing.
    fn big_file(len: usize) -> Vec<u8> {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 3 == 0 {
                    b'.'
                } else {
                    (state % 251) as u8
                }
            })
            .collect()
    }

    /// A zip entry's bytes as they are stored (deflated).
    fn raw_entry(wheel: &Path, name: &str) -> Vec<u8> {
        let mut archive = zip::ZipArchive::new(std::fs::File::open(wheel).unwrap()).unwrap();
        let mut raw = Vec::new();
        archive
            .by_name_raw(name.as_bytes())
            .unwrap()
            .read_to_end(&mut raw)
            .unwrap();
        raw
    }

    #[test]
    fn big_deflated_files_go_into_the_layer_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let big = big_file(300_000);
        let mut files = dist("demo", "1.0", false);
        files.push(file("demo/weights.bin", &big, 0o644));
        files.push(file("demo/small.py", b"x = 1\n", 0o644));
        let w = wheel(dir.path(), "demo-1.0-cp311-cp311-linux_x86_64.whl", &files);
        let raw = raw_entry(&w.path, "demo/weights.bin");
        assert!(raw.len() as u64 >= super::SPLICED_FROM, "{}", raw.len());
        let (installed, layout) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let layer = &installed.layer;
        let got = files_of(&entries(&layout, layer));
        assert_eq!(got[&format!("{SITE}/demo/weights.bin")].1, big);
        check_record(&got, &format!("{SITE}/demo-1.0.dist-info/RECORD"), SITE);
        // Not deflated again: the layer holds the entry's deflated bytes (the first half of
        // them: its last block's header, nearer the end, has its BFINAL bit cleared).
        let mut blob = Vec::new();
        let mut file = layout.open_blob(&layer.descriptor.digest).unwrap();
        file.read_to_end(&mut blob).unwrap();
        let inner = &raw[1..raw.len() / 2];
        assert!(
            blob.windows(inner.len()).any(|w| w == inner),
            "the deflated bytes are not in the layer"
        );
        // Its diff_id is the tar's, and gzip and Python read it.
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(&blob[..])
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(layer.diff_id, sha256_of(&tar));
        for (program, args) in [
            ("gzip", vec!["-t", "-"]),
            (
                "python3",
                vec![
                    "-c",
                    "import gzip, sys; gzip.decompress(sys.stdin.buffer.read())",
                ],
            ),
        ] {
            let mut child = std::process::Command::new(program)
                .args(&args)
                .stdin(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&blob).unwrap();
            assert!(
                child.wait().unwrap().success(),
                "{program} refused the layer"
            );
        }
    }

    #[test]
    fn a_big_deflated_file_that_does_not_match_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", false);
        files.push(file("demo/weights.bin", &big_file(200_000), 0o644));
        let record = record_of(&files, "demo-1.0.dist-info");
        files[2].1[1000] ^= 1;
        let w = write_wheel(
            dir.path(),
            "demo-1.0-cp311-cp311-linux_x86_64.whl",
            &files,
            Some(record),
            |_| {},
        );
        let error = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Corrupt { .. }), "{error}");
        assert!(error.to_string().contains("demo/weights.bin"), "{error}");
        // A layer that failed is not in the store.
        let blobs = std::fs::read_dir(dir.path().join("layout/blobs/sha256")).unwrap();
        assert_eq!(blobs.count(), 0);
    }

    #[test]
    fn libraries_are_read_from_the_elf_files() {
        let libz = Path::new("/lib/x86_64-linux-gnu/libz.so.1");
        if !libz.exists() {
            eprintln!("SKIPPED: {} is not on this machine", libz.display());
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", false);
        files.push(file(
            "demo.libs/libz-1234abcd.so.1",
            &std::fs::read(libz).unwrap(),
            0o755,
        ));
        files.push(file("demo/notes.sources.txt", b"not a library", 0o644));
        files.push(file("demo/fake.so", b"\x7fELF but nothing more", 0o644));
        let w = wheel(dir.path(), "demo-1.0-cp311-cp311-linux_x86_64.whl", &files);
        let (installed, _) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let libz = installed
            .libraries
            .iter()
            .find(|l| l.path == format!("{SITE}/demo.libs/libz-1234abcd.so.1"))
            .unwrap();
        assert!(libz.needed.iter().any(|n| n == "libc.so.6"), "{libz:?}");
        assert_eq!(libz.soname.as_deref(), Some("libz.so.1"));
        let provides: Vec<&str> = installed.provides.iter().map(String::as_str).collect();
        assert_eq!(provides, ["fake.so", "libz-1234abcd.so.1", "libz.so.1"]);
    }
}
