//! Opening a wheel: its zip directory read and checked (every entry a regular file at a safe
//! path, inside the one `.dist-info` of the project the file name names), and the small
//! `.dist-info` files the plan needs read whole and checked against RECORD: RECORD itself, WHEEL
//! (its format version and where the root goes) and entry_points.txt. Nothing else of the wheel
//! is read here; the rest is streamed once, when it is written.

use super::record::{Hash, Recorded, mismatch, parse_record};
use super::scripts::{EntryPoint, parse_entry_points};
use super::{InstallError, WheelFile};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read};
use zip::ZipArchive;

/// The most of a wheel's file mlambda reads into memory (RECORD, WHEEL, entry_points.txt,
/// `#!python` scripts): real ones are far smaller.
const SMALL_FILE_LIMIT: u64 = 16 << 20;

pub(super) const S_IFMT: u32 = 0o170000;
pub(super) const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// One entry of a wheel's zip directory.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) index: usize,
    pub(super) name: String,
    pub(super) size: u64,
    /// The unix mode in the entry's external attributes (0 when the zip has none).
    pub(super) mode: u32,
}

/// A wheel opened and read: its archive and what its .dist-info says.
pub(super) struct Wheel {
    pub(super) filename: String,
    pub(super) archive: ZipArchive<File>,
    /// The files (directories are left out: as pip, only files are installed).
    pub(super) entries: Vec<Entry>,
    pub(super) dist_info: String,
    pub(super) record: BTreeMap<String, Recorded>,
    pub(super) root_is_purelib: bool,
    pub(super) entry_points: Vec<EntryPoint>,
    /// Small files already read and checked (WHEEL, entry_points.txt): not read again.
    pub(super) read: BTreeMap<String, Vec<u8>>,
}

impl Wheel {
    pub(super) fn invalid(&self, problem: String) -> InstallError {
        InstallError::Invalid {
            wheel: self.filename.clone(),
            problem,
        }
    }

    pub(super) fn corrupt(&self, path: &str, problem: String) -> InstallError {
        InstallError::Corrupt {
            wheel: self.filename.clone(),
            path: path.to_string(),
            problem,
        }
    }

    fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The hash RECORD gives for the entry; its size must be the zip entry's.
    pub(super) fn recorded(&self, entry: &Entry) -> Result<Hash, InstallError> {
        let recorded = self
            .record
            .get(&entry.name)
            .ok_or_else(|| self.corrupt(&entry.name, "is not listed in RECORD".into()))?;
        let hash = recorded
            .hash
            .clone()
            .ok_or_else(|| self.corrupt(&entry.name, "has no hash in RECORD".into()))?;
        match recorded.size {
            Some(size) if size == entry.size => Ok(hash),
            Some(size) => Err(self.corrupt(
                &entry.name,
                format!("is {} bytes, but RECORD says {size} bytes", entry.size),
            )),
            None => Err(self.corrupt(&entry.name, "has no size in RECORD".into())),
        }
    }

    /// A small file of the wheel, whole; checked against RECORD when `hash` is given.
    pub(super) fn read_small(
        &mut self,
        entry: &Entry,
        hash: Option<&Hash>,
    ) -> Result<Vec<u8>, InstallError> {
        if entry.size > SMALL_FILE_LIMIT {
            return Err(self.invalid(format!(
                "{} is {} bytes; mlambda reads at most {SMALL_FILE_LIMIT} bytes of such a file into memory, and no sound wheel has one that big",
                entry.name, entry.size
            )));
        }
        let mut bytes = Vec::new();
        let read = self
            .archive
            .by_index(entry.index)
            .map_err(io::Error::from)
            .and_then(|file| file.take(SMALL_FILE_LIMIT + 1).read_to_end(&mut bytes));
        if let Err(e) = read {
            return Err(self.corrupt(&entry.name, format!("cannot be read: {e}")));
        }
        if bytes.len() as u64 != entry.size {
            return Err(self.corrupt(
                &entry.name,
                format!(
                    "holds {} bytes, but its zip header says {}",
                    bytes.len(),
                    entry.size
                ),
            ));
        }
        if let Some(expected) = hash
            && Hash::of(expected.kind, &bytes) != *expected
        {
            return Err(self.corrupt(&entry.name, mismatch(expected.kind)));
        }
        Ok(bytes)
    }
}

pub(super) fn open_wheel(file: &WheelFile) -> Result<Wheel, InstallError> {
    let invalid = |problem: String| InstallError::Invalid {
        wheel: file.filename.clone(),
        problem,
    };
    let project = wheel_project(&file.filename).map_err(invalid)?;
    let handle = File::open(&file.path).map_err(|source| InstallError::Io {
        wheel: file.filename.clone(),
        what: format!("cannot open {}", file.path.display()),
        source,
    })?;
    let archive = ZipArchive::new(handle).map_err(|e| {
        invalid(format!(
            "{} is not a readable zip archive ({e}); download it again",
            file.path.display()
        ))
    })?;
    if archive.has_duplicate_names() {
        return Err(invalid(
            "has two zip entries with the same name; a sound wheel never has".into(),
        ));
    }
    let entries = list_entries(&file.filename, &archive)?;
    let dist_info = find_dist_info(&entries, &project).map_err(invalid)?;
    let mut wheel = Wheel {
        filename: file.filename.clone(),
        archive,
        entries,
        dist_info,
        record: BTreeMap::new(),
        root_is_purelib: false,
        entry_points: Vec::new(),
        read: BTreeMap::new(),
    };
    let record_name = format!("{}/RECORD", wheel.dist_info);
    let record = wheel
        .entry(&record_name)
        .cloned()
        .ok_or_else(|| wheel.invalid(format!("has no {record_name}")))?;
    let text = utf8(wheel.read_small(&record, None)?, &wheel, &record_name)?;
    wheel.record = parse_record(&text).map_err(|e| wheel.invalid(format!("{record_name}: {e}")))?;

    let metadata_name = format!("{}/WHEEL", wheel.dist_info);
    let metadata = wheel
        .entry(&metadata_name)
        .cloned()
        .ok_or_else(|| wheel.invalid(format!("has no {metadata_name}")))?;
    let hash = wheel.recorded(&metadata)?;
    let bytes = wheel.read_small(&metadata, Some(&hash))?;
    let text = utf8(bytes.clone(), &wheel, &metadata_name)?;
    wheel.root_is_purelib =
        root_is_purelib(&text).map_err(|e| wheel.invalid(format!("{metadata_name}: {e}")))?;
    wheel.read.insert(metadata_name, bytes);

    let points_name = format!("{}/entry_points.txt", wheel.dist_info);
    if let Some(points) = wheel.entry(&points_name).cloned() {
        let hash = wheel.recorded(&points)?;
        let bytes = wheel.read_small(&points, Some(&hash))?;
        let text = utf8(bytes.clone(), &wheel, &points_name)?;
        wheel.entry_points =
            parse_entry_points(&text).map_err(|e| wheel.invalid(format!("{points_name}: {e}")))?;
        wheel.read.insert(points_name, bytes);
    }
    Ok(wheel)
}

fn utf8(bytes: Vec<u8>, wheel: &Wheel, name: &str) -> Result<String, InstallError> {
    String::from_utf8(bytes).map_err(|_| wheel.invalid(format!("{name} is not UTF-8 text")))
}

/// The distribution name in a wheel's file name:
/// `{name}-{version}(-{build})?-{python}-{abi}-{platform}.whl`.
fn wheel_project(filename: &str) -> Result<String, String> {
    let shape =
        "is not a wheel file name ({name}-{version}[-{build}]-{python}-{abi}-{platform}.whl)";
    let stem = filename
        .strip_suffix(".whl")
        .ok_or_else(|| shape.to_string())?;
    let parts: Vec<&str> = stem.split('-').collect();
    if !(5..=6).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
        return Err(shape.to_string());
    }
    Ok(parts[0].to_string())
}

/// PEP 503's normal form, to compare the names in the file name and in the .dist-info.
fn canonical(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if matches!(c, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

fn list_entries(filename: &str, archive: &ZipArchive<File>) -> Result<Vec<Entry>, InstallError> {
    let mut entries = Vec::new();
    for index in 0..archive.len() {
        let invalid = |problem: String| InstallError::Invalid {
            wheel: filename.to_string(),
            problem,
        };
        let data = archive
            .by_index_data(index)
            .map_err(|e| invalid(format!("zip entry {index} cannot be read: {e}")))?;
        let name = data
            .name()
            .map_err(|e| invalid(format!("zip entry {index} has an unreadable name: {e}")))?
            .into_owned();
        let refuse = |problem: &str| InstallError::Unsafe {
            wheel: filename.to_string(),
            path: name.clone(),
            problem: problem.to_string(),
        };
        if let Some(problem) = unsafe_path(&name) {
            return Err(refuse(problem));
        }
        // pip reads the mode from the high half of the external attributes whatever system
        // made the zip; so does this.
        let mode = data.external_attributes() >> 16;
        if mode & S_IFMT == S_IFLNK {
            return Err(refuse("it is a symbolic link"));
        }
        if data.encrypted() {
            return Err(invalid(format!("{name} is encrypted")));
        }
        if name.ends_with('/') {
            continue;
        }
        entries.push(Entry {
            index,
            size: data.size(),
            name,
            mode,
        });
    }
    Ok(entries)
}

/// Why a path from a wheel (or a scheme) could reach outside where it is put, if it could.
pub(super) fn unsafe_path(name: &str) -> Option<&'static str> {
    if name.contains('\0') {
        return Some("the name holds a NUL byte");
    }
    if name.contains('\\') {
        return Some("the name holds a backslash");
    }
    if name.starts_with('/') {
        return Some("it is an absolute path");
    }
    let trimmed = name.strip_suffix('/').unwrap_or(name);
    for component in trimmed.split('/') {
        match component {
            "" => return Some("the path has an empty component"),
            "." | ".." => return Some("the path has a '.' or '..' component"),
            _ => {}
        }
    }
    None
}

/// The one top-level `*.dist-info` directory, which must be the wheel's own project.
fn find_dist_info(entries: &[Entry], project: &str) -> Result<String, String> {
    let found: BTreeSet<&str> = entries
        .iter()
        .filter_map(|e| e.name.split_once('/'))
        .map(|(top, _)| top)
        .filter(|top| top.ends_with(".dist-info"))
        .collect();
    let dist_info = match found.len() {
        0 => return Err("has no .dist-info directory".into()),
        1 => found.into_iter().next().unwrap_or_default(),
        _ => {
            let names: Vec<&str> = found.into_iter().collect();
            return Err(format!(
                "has several .dist-info directories ({}); a wheel holds one distribution",
                names.join(", ")
            ));
        }
    };
    let named = dist_info.split('-').next().unwrap_or_default();
    if canonical(named) != canonical(project) {
        return Err(format!(
            "its {dist_info} is not for the project {project} of its file name"
        ));
    }
    Ok(dist_info.to_string())
}

/// `Root-Is-Purelib` from the WHEEL file, after checking its `Wheel-Version`.
fn root_is_purelib(text: &str) -> Result<bool, String> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case(key)
                .then(|| value.trim().to_string())
        })
    };
    let version = field("Wheel-Version").ok_or("has no Wheel-Version")?;
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok());
    if major != Some(1) {
        return Err(format!(
            "is wheel format {version}; mlambda installs format 1.x only: use a release of the package built as such a wheel"
        ));
    }
    // As pip: anything but "true" means platlib.
    Ok(field("Root-Is-Purelib").is_some_and(|v| v.eq_ignore_ascii_case("true")))
}

#[cfg(test)]
mod tests {
    use super::super::test_wheels::*;
    use super::super::{InstallError, Scheme};
    use super::*;
    use zip::write::SimpleFileOptions;

    #[test]
    fn paths_out_of_the_scheme_and_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (number, name) in [
            "../x",
            "demo/../../x",
            "/etc/passwd",
            "demo\\..\\x",
            "demo//x",
        ]
        .iter()
        .enumerate()
        {
            let mut files = dist("demo", "1.0", true);
            files.push(file(name, b"x", 0o644));
            let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
            let error = install(
                &dir.path().join(number.to_string()),
                &[w],
                &Scheme::debian("3.11"),
            )
            .unwrap_err();
            assert!(
                matches!(error, InstallError::Unsafe { .. }),
                "{name}: {error}"
            );
            assert!(error.to_string().contains(&format!("{name:?}")), "{error}");
        }
        let files = dist("demo", "1.0", true);
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            None,
            |zip| {
                zip.add_symlink("demo/link", "/etc/shadow", SimpleFileOptions::default())
                    .unwrap();
            },
        );
        let error = install(&dir.path().join("link"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(error.to_string().contains("symbolic link"), "{error}");
        // The headers directory is named from the .data directory: not a way out either.
        let mut files = dist("demo", "1.0", true);
        files.push(file("..-1.0.data/headers/x.h", b"x", 0o644));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let error =
            install(&dir.path().join("headers"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Unsafe { .. }), "{error}");
    }

    #[test]
    fn wheel_versions_other_than_1_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        files[0].1 = b"Wheel-Version: 2.0\nRoot-Is-Purelib: true\n".to_vec();
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let error = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(error.to_string().contains("wheel format 2.0"), "{error}");
    }

    #[test]
    fn an_oversized_dist_info_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        let big = "#\n".repeat((SMALL_FILE_LIMIT / 2 + 1) as usize);
        files.push(file(
            "demo-1.0.dist-info/entry_points.txt",
            big.as_bytes(),
            0o644,
        ));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let error = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(error.to_string().contains("reads at most"), "{error}");
    }
}
