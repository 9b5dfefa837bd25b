//! What an ELF file needs from the dynamic linker: its `DT_NEEDED` libraries and its own
//! `DT_SONAME`. Only the file header, the program headers, the dynamic segment and the few
//! strings they name are read (through `object`'s `ReadCache`), so a 1 GiB library costs a few
//! reads and kilobytes of memory. The program headers are used, not the section headers: they
//! are what the loader reads, and stripped libraries may have no sections at all.

use object::elf::{self, FileHeader32, FileHeader64};
use object::read::elf::{Dyn, FileHeader, ProgramHeader};
use object::read::{ReadCache, ReadRef};
use object::{Endianness, FileKind};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ElfInfo {
    /// The `DT_NEEDED` entries, in the order the loader searches them.
    pub needed: Vec<String>,
    pub soname: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a well-formed ELF file ({problem}); it may be truncated or corrupt")]
    Malformed { path: PathBuf, problem: String },
}

/// More program headers than any real file has (the loader maps them all): a hostile count
/// would otherwise make us read and keep most of the file.
const MAX_PROGRAM_HEADERS: u32 = 4096;

/// A real dynamic segment holds a few dozen entries; this bounds what we read and keep.
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;

/// Each needed name costs up to 4 KiB of reading: a real library needs a few dozen.
const MAX_NEEDED: usize = 1024;

pub fn is_elf(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(&elf::ELFMAG)
}

/// The needed libraries and the soname of the ELF file at `path` (a shared object or an
/// executable, 32 or 64 bits, either byte order). A static binary, or an object with no
/// dynamic segment, needs nothing.
pub fn dynamic_info(path: &Path) -> Result<ElfInfo, ElfError> {
    let file = File::open(path).map_err(|source| ElfError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let cache = ReadCache::new(file);
    let malformed = |problem: String| ElfError::Malformed {
        path: path.to_path_buf(),
        problem,
    };
    let kind = FileKind::parse(&cache).map_err(|e| malformed(e.to_string()))?;
    match kind {
        FileKind::Elf32 => read_dynamic::<FileHeader32<Endianness>>(&cache),
        FileKind::Elf64 => read_dynamic::<FileHeader64<Endianness>>(&cache),
        other => Err(format!("is a {other:?} file, not ELF")),
    }
    .map_err(malformed)
}

fn read_dynamic<Elf: FileHeader<Endian = Endianness>>(
    data: &ReadCache<File>,
) -> Result<ElfInfo, String> {
    let header = Elf::parse(data).map_err(|e| e.to_string())?;
    let endian = header.endian().map_err(|e| e.to_string())?;
    let count = header.phnum(endian, data).map_err(|e| e.to_string())?;
    if count > MAX_PROGRAM_HEADERS {
        return Err(format!("claims {count} program headers"));
    }
    let segments = header
        .program_headers(endian, data)
        .map_err(|e| e.to_string())?;
    let Some(dynamic) = segments
        .iter()
        .find(|s| s.p_type(endian) == elf::PT_DYNAMIC)
    else {
        return Ok(ElfInfo::default());
    };
    let size: u64 = dynamic.p_filesz(endian).into();
    if size > MAX_DYNAMIC_BYTES {
        return Err(format!("a dynamic segment of {size} bytes"));
    }
    let entries = dynamic
        .dynamic(endian, data)
        .map_err(|e| e.to_string())?
        .unwrap_or(&[]);

    let (mut needed, mut soname) = (Vec::new(), None);
    let (mut strtab, mut strsz) = (None, None);
    for entry in entries {
        let tag = entry.tag(endian);
        let value = entry.val(endian);
        match tag {
            elf::DT_NULL => break,
            elf::DT_NEEDED => needed.push(value),
            elf::DT_SONAME => soname = Some(value),
            elf::DT_STRTAB => strtab = Some(value),
            elf::DT_STRSZ => strsz = Some(value),
            _ => {}
        }
    }
    if needed.is_empty() && soname.is_none() {
        return Ok(ElfInfo::default());
    }
    if needed.len() > MAX_NEEDED {
        return Err(format!("claims {} needed libraries", needed.len()));
    }
    let address = strtab.ok_or("DT_NEEDED or DT_SONAME without a DT_STRTAB")?;
    let strings = string_table::<Elf>(segments, endian, data, address, strsz)?;
    let read = |offset: u64| read_string(data, &strings, offset);
    Ok(ElfInfo {
        needed: needed.into_iter().map(read).collect::<Result<_, _>>()?,
        soname: soname.map(read).transpose()?,
    })
}

/// The file range of the dynamic string table: `DT_STRTAB` is an address in memory, mapped back
/// to the file through the loadable segment that holds it.
fn string_table<Elf: FileHeader<Endian = Endianness>>(
    segments: &[Elf::ProgramHeader],
    endian: Endianness,
    data: &ReadCache<File>,
    address: u64,
    size: Option<u64>,
) -> Result<std::ops::Range<u64>, String> {
    let unmapped = || format!("DT_STRTAB {address:#x} is in no loadable segment");
    let load = segments
        .iter()
        .filter(|s| s.p_type(endian) == elf::PT_LOAD)
        .find(|s| {
            let start: u64 = s.p_vaddr(endian).into();
            let filesz: u64 = s.p_filesz(endian).into();
            address >= start && address - start < filesz
        })
        .ok_or_else(unmapped)?;
    let vaddr: u64 = load.p_vaddr(endian).into();
    let (offset, filesz) = load.file_range(endian);
    let start = offset.checked_add(address - vaddr).ok_or_else(unmapped)?;
    let segment_end = offset.checked_add(filesz).ok_or_else(unmapped)?;
    let file_len = data.len().map_err(|()| "cannot tell the file's length")?;
    // Without DT_STRSZ the table runs at most to the end of its segment.
    let end = match size {
        Some(size) => start.checked_add(size).ok_or("DT_STRSZ overflows")?,
        None => segment_end,
    };
    if end > file_len {
        return Err(format!(
            "the string table ends at byte {end}, past the end of the file ({file_len} bytes)"
        ));
    }
    Ok(start..end)
}

fn read_string(
    data: &ReadCache<File>,
    table: &std::ops::Range<u64>,
    offset: u64,
) -> Result<String, String> {
    let start = table
        .start
        .checked_add(offset)
        .filter(|start| *start < table.end)
        .ok_or_else(|| format!("string offset {offset} is outside the string table"))?;
    // ReadCache reads up to 4 KiB looking for the terminating NUL: a name longer than that is
    // refused rather than read on and on.
    let bytes = data
        .read_bytes_at_until(start..table.end, 0)
        .map_err(|()| format!("no terminated string at string table offset {offset}"))?;
    String::from_utf8(bytes.to_vec())
        .map_err(|_| format!("the string at string table offset {offset} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_needs_libc() {
        let exe = std::env::current_exe().unwrap();
        let info = dynamic_info(&exe).unwrap();
        assert!(
            info.needed.iter().any(|n| n == "libc.so.6"),
            "{:?}",
            info.needed
        );
        assert_eq!(info.soname, None);
    }

    const LIBZ: &str = "/lib/x86_64-linux-gnu/libz.so.1";

    #[test]
    fn a_system_library_has_its_soname() {
        if !Path::new(LIBZ).exists() {
            eprintln!("SKIPPED: {LIBZ} is not on this machine");
            return;
        }
        let info = dynamic_info(Path::new(LIBZ)).unwrap();
        assert_eq!(info.soname.as_deref(), Some("libz.so.1"));
        assert!(info.needed.iter().any(|n| n == "libc.so.6"), "{info:?}");
    }

    #[test]
    fn a_truncated_library_is_an_error_that_names_it() {
        let source = if Path::new(LIBZ).exists() {
            PathBuf::from(LIBZ)
        } else {
            std::env::current_exe().unwrap()
        };
        let bytes = std::fs::read(&source).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Cut inside the header, after the program headers, and halfway: the dynamic segment
        // of a real library is in its data segment, past its code.
        for keep in [40, 4096, bytes.len() / 2] {
            let path = dir.path().join(format!("cut-{keep}.so"));
            std::fs::write(&path, &bytes[..keep]).unwrap();
            let error = dynamic_info(&path).unwrap_err();
            let message = error.to_string();
            assert!(
                matches!(error, ElfError::Malformed { .. }),
                "{keep}: {message}"
            );
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn elf_is_told_by_its_magic() {
        assert!(is_elf(b"\x7fELF\x02\x01\x01"));
        assert!(!is_elf(b"\x7fEL"));
        assert!(!is_elf(b"#!/bin/sh"));
    }

    /// A minimal ELF file: a header, a PT_LOAD covering the whole file at address 0x10000, a
    /// PT_DYNAMIC, the dynamic entries and their string table.
    fn synthetic(class64: bool, big: bool, dynamic: &[(i64, u64)], strings: &[u8]) -> Vec<u8> {
        let word = if class64 { 8 } else { 4 };
        let put = |out: &mut Vec<u8>, value: u64, size: usize| {
            let bytes = value.to_le_bytes();
            if big {
                out.extend(bytes[..size].iter().rev());
            } else {
                out.extend(&bytes[..size]);
            }
        };
        let (ehsize, phentsize) = if class64 { (64, 56) } else { (52, 32) };
        let dyn_offset = ehsize + 2 * phentsize;
        let dyn_size = (dynamic.len() + 1) * 2 * word;
        let str_offset = dyn_offset + dyn_size;
        let total = str_offset + strings.len();
        let base = 0x10000u64;

        let mut out = b"\x7fELF".to_vec();
        out.extend([if class64 { 2 } else { 1 }, if big { 2 } else { 1 }, 1]);
        out.resize(16, 0);
        put(&mut out, 3, 2); // ET_DYN
        put(&mut out, 62, 2);
        put(&mut out, 1, 4);
        put(&mut out, 0, word); // entry
        put(&mut out, ehsize as u64, word); // phoff
        put(&mut out, 0, word); // shoff
        put(&mut out, 0, 4);
        put(&mut out, ehsize as u64, 2);
        put(&mut out, phentsize as u64, 2);
        put(&mut out, 2, 2);
        put(&mut out, 0, 2);
        put(&mut out, 0, 2);
        put(&mut out, 0, 2);
        let segments = [
            (1u64, 0u64, base, total as u64),
            (
                2,
                dyn_offset as u64,
                base + dyn_offset as u64,
                dyn_size as u64,
            ),
        ];
        for (kind, offset, vaddr, size) in segments {
            put(&mut out, kind, 4);
            if class64 {
                put(&mut out, 6, 4); // flags
                put(&mut out, offset, 8);
                put(&mut out, vaddr, 8);
                put(&mut out, vaddr, 8);
                put(&mut out, size, 8);
                put(&mut out, size, 8);
                put(&mut out, 8, 8);
            } else {
                put(&mut out, offset, 4);
                put(&mut out, vaddr, 4);
                put(&mut out, vaddr, 4);
                put(&mut out, size, 4);
                put(&mut out, size, 4);
                put(&mut out, 6, 4);
                put(&mut out, 4, 4);
            }
        }
        assert_eq!(out.len(), dyn_offset);
        for (tag, value) in dynamic.iter().chain(&[(0, 0)]) {
            let value = if *tag == 5 {
                base + str_offset as u64
            } else {
                *value
            };
            put(&mut out, *tag as u64, word);
            put(&mut out, value, word);
        }
        out.extend(strings);
        out
    }

    fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn both_classes_and_byte_orders_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let strings = b"\0libfoo.so.1\0libm.so.6\0libbar.so.2\0";
        // DT_NEEDED 1, DT_SONAME 14, DT_STRTAB 5 (patched), DT_STRSZ 10.
        let dynamic = [
            (1, 13),
            (1, 1),
            (14, 23),
            (5, 0),
            (10, strings.len() as u64),
        ];
        for class64 in [false, true] {
            for big in [false, true] {
                let name = format!("lib-{class64}-{big}.so");
                let path = write_temp(
                    dir.path(),
                    &name,
                    &synthetic(class64, big, &dynamic, strings),
                );
                let info = dynamic_info(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(info.needed, ["libm.so.6", "libfoo.so.1"], "{name}");
                assert_eq!(info.soname.as_deref(), Some("libbar.so.2"), "{name}");
            }
        }
    }

    #[test]
    fn a_file_without_a_dynamic_segment_needs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // A static executable: the header with no program headers at all.
        let mut bytes = synthetic(true, false, &[], b"");
        bytes.truncate(64);
        bytes[32..40].fill(0); // e_phoff
        bytes[56..58].fill(0); // e_phnum
        let path = write_temp(dir.path(), "static", &bytes);
        assert_eq!(dynamic_info(&path).unwrap(), ElfInfo::default());
        // A dynamic segment with no needed libraries and no soname.
        let path = write_temp(dir.path(), "empty", &synthetic(true, false, &[], b"\0"));
        assert_eq!(dynamic_info(&path).unwrap(), ElfInfo::default());
    }

    #[test]
    fn hostile_dynamic_entries_are_errors_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let strings = b"\0libfoo.so.1\0";
        let mut many = vec![(1, 1); MAX_NEEDED + 1];
        many.extend([(5, 0), (10, 13)]);
        let cases: [(&str, Vec<(i64, u64)>); 5] = [
            ("offset past the table", vec![(1, 99), (5, 0), (10, 13)]),
            (
                "size past the file",
                vec![(1, 1), (5, 0), (10, u64::MAX / 2)],
            ),
            ("no string table", vec![(1, 1)]),
            ("unterminated", vec![(1, 1), (5, 0), (10, 5)]),
            ("too many needed", many),
        ];
        for (what, dynamic) in cases {
            let path = write_temp(dir.path(), what, &synthetic(true, true, &dynamic, strings));
            let error = dynamic_info(&path).expect_err(what);
            assert!(
                matches!(error, ElfError::Malformed { .. }),
                "{what}: {error}"
            );
        }
        let path = write_temp(dir.path(), "not elf", b"#!/bin/sh\necho hi\n");
        assert!(dynamic_info(&path).is_err());
        let missing = dir.path().join("missing.so");
        assert!(matches!(dynamic_info(&missing), Err(ElfError::Io { .. })));
    }
}
