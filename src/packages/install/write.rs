//! Writing: each planned file streamed once from its zip entry into the tar, its size and hash
//! checked against RECORD on the way (a wheel that fails leaves no layer), and an ELF object
//! copied to a temporary file as it passes so that the libraries it needs and provides can be
//! read from its dynamic section.

use super::super::elf;
use super::ElfFile;
use super::InstallError;
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
            if let Some(copy) = stream_entry(tar, wheel, path, &mut header, entry, hash)? {
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
    let corrupt = |problem: String| InstallError::Corrupt {
        wheel: wheel.filename.clone(),
        path: entry.name.clone(),
        problem,
    };
    let temp_failed = |source: io::Error| InstallError::Io {
        wheel: wheel.filename.clone(),
        what: format!(
            "copying {} to a temporary file to read its libraries",
            entry.name
        ),
        source,
    };
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
    use super::super::Scheme;
    use super::super::test_wheels::*;
    use std::path::Path;

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
