//! Installing wheels is unpacking them into an image layer: the install steps of the wheel spec
//! (the binary distribution format, version 1) done by mlambda, with no Python and none of the
//! package's code run.
//!
//! Each wheel is planned first from its zip directory and its small `.dist-info` files (WHEEL,
//! RECORD, entry_points.txt): where every file goes, its mode, and the new RECORD, whose hashes
//! are the wheel's own (a file that does not match them fails the whole install, so the layer is
//! never stored). Then every file of every wheel is streamed once, in path order, from its zip
//! entry into the tar, hashed and checked against RECORD on the way, and copied to a temporary
//! file when it is an ELF object so that its libraries can be read. Only small files (RECORD,
//! launchers, `#!python` scripts) are ever held in memory.

use super::elf;
use crate::model_image::layer::{Layer, LayerError, LayerOptions, LayerTar, header};
use crate::store::Layout;
use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use zip::ZipArchive;

/// Where an interpreter's install scheme puts things, as paths in the image without a leading '/'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheme {
    pub purelib: String,
    pub platlib: String,
    pub scripts: String,
    /// The base: as pip does, a distribution's headers go in a directory named after it.
    pub headers: String,
    pub data: String,
    /// Absolute, for shebangs: "/usr/bin/python3.11".
    pub interpreter: String,
}

impl Scheme {
    /// Debian's python3.X: what pip installs as root goes under /usr/local, in dist-packages.
    pub fn debian(python: &str) -> Scheme {
        let lib = format!("usr/local/lib/python{python}/dist-packages");
        Scheme {
            purelib: lib.clone(),
            platlib: lib,
            scripts: "usr/local/bin".into(),
            headers: format!("usr/local/include/python{python}"),
            data: "usr/local".into(),
            interpreter: format!("/usr/bin/python{python}"),
        }
    }

    /// The python.org layout of the Docker official images: a Python built with prefix /usr/local.
    pub fn prefix_local(python: &str) -> Scheme {
        let lib = format!("usr/local/lib/python{python}/site-packages");
        Scheme {
            purelib: lib.clone(),
            platlib: lib,
            scripts: "usr/local/bin".into(),
            headers: format!("usr/local/include/python{python}"),
            data: "usr/local".into(),
            interpreter: format!("/usr/local/bin/python{python}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WheelFile {
    /// A .whl already verified by its sha256 by the caller.
    pub path: PathBuf,
    /// e.g. numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
    pub filename: String,
}

#[derive(Debug)]
pub struct Installed {
    pub layer: Layer,
    /// Soname → the first installed path (in path order) that needs it. Libraries the same
    /// layer provides are included: the caller checks against every layer and the base.
    pub needs: BTreeMap<String, String>,
    /// Basenames of installed files that look like shared libraries, and ELF sonames.
    pub provides: BTreeSet<String>,
    pub files: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("wheel {wheel}: {problem}")]
    Invalid { wheel: String, problem: String },
    #[error(
        "wheel {wheel}: {path} {problem}: the wheel is corrupt or was tampered with; nothing was installed: download it again from its index"
    )]
    Corrupt {
        wheel: String,
        path: String,
        problem: String,
    },
    #[error(
        "wheel {wheel}: refusing entry {path:?}: {problem}; a wheel may only hold regular files inside its own directories, so nothing was installed"
    )]
    Unsafe {
        wheel: String,
        path: String,
        problem: String,
    },
    #[error(
        "{path} is installed by both {first} and {second}: they cannot go into one image; drop one of them from the requirements"
    )]
    Clash {
        path: String,
        first: String,
        second: String,
    },
    #[error("the install scheme {problem}")]
    Scheme { problem: String },
    #[error("wheel {wheel}: {what}: {source}")]
    Io {
        wheel: String,
        what: String,
        source: io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// The most of a wheel's file mlambda reads into memory (RECORD, WHEEL, entry_points.txt,
/// `#!python` scripts): real ones are far smaller.
const SMALL_FILE_LIMIT: u64 = 16 << 20;

const INSTALLER: &[u8] = b"mlambda\n";

const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

/// Installs `wheels` into one new layer of `layout`: every file of every wheel, their parent
/// directories, the launchers of their entry points, INSTALLER and a rewritten RECORD, in path
/// order, so that the same wheels, scheme and options give the same layer on any machine.
pub fn install_wheels(
    wheels: &[WheelFile],
    scheme: &Scheme,
    layout: &Layout,
    options: &LayerOptions,
    comment: String,
) -> Result<Installed, InstallError> {
    check_scheme(scheme)?;
    let mut opened = wheels
        .iter()
        .map(open_wheel)
        .collect::<Result<Vec<_>, _>>()?;
    let mut files: BTreeMap<String, Planned> = BTreeMap::new();
    for (number, wheel) in opened.iter_mut().enumerate() {
        for (path, planned) in plan_wheel(number, wheel, scheme)? {
            if let Some(earlier) = files.get(&path) {
                return Err(clash(path, &wheels[earlier.wheel], &wheels[number]));
            }
            files.insert(path, planned);
        }
    }
    let dirs = parent_dirs(&files, wheels)?;

    let mut tar = LayerTar::start(layout, options.compression)?;
    let mut found = Found::default();
    let dir_failed = |source| LayerError::Write {
        layer: comment.clone(),
        source,
    };
    // Both sets are sorted; merged, a directory comes before everything under it.
    let mut dirs = dirs.into_iter().peekable();
    for (path, planned) in &files {
        while let Some(dir) = dirs.next_if(|dir| dir.as_str() < path.as_str()) {
            tar.append_dir(&dir, options).map_err(dir_failed)?;
        }
        let wheel = &mut opened[planned.wheel];
        write_file(&mut tar, wheel, path, planned, options, &mut found)?;
    }
    for dir in dirs {
        tar.append_dir(&dir, options).map_err(dir_failed)?;
    }
    let layer = tar.finish(layout, comment)?;
    Ok(Installed {
        layer,
        needs: found.needs,
        provides: found.provides,
        files: files.len() as u64,
    })
}

fn check_scheme(scheme: &Scheme) -> Result<(), InstallError> {
    let dirs = [
        ("purelib", &scheme.purelib),
        ("platlib", &scheme.platlib),
        ("scripts", &scheme.scripts),
        ("headers", &scheme.headers),
        ("data", &scheme.data),
    ];
    for (key, dir) in dirs {
        if let Some(problem) = unsafe_path(dir).filter(|_| !dir.is_empty()) {
            return Err(InstallError::Scheme {
                problem: format!(
                    "has {key} {dir:?}, and {problem}: it must be a relative path in the image"
                ),
            });
        }
    }
    let interpreter = &scheme.interpreter;
    if !interpreter.starts_with('/') || interpreter.contains(char::is_whitespace) {
        return Err(InstallError::Scheme {
            problem: format!(
                "has interpreter {interpreter:?}: it must be an absolute path without spaces, for the scripts' #! lines"
            ),
        });
    }
    Ok(())
}

fn clash(path: String, first: &WheelFile, second: &WheelFile) -> InstallError {
    if first.filename == second.filename {
        return InstallError::Invalid {
            wheel: first.filename.clone(),
            problem: format!("installs {path} twice (from two entries of the wheel)"),
        };
    }
    InstallError::Clash {
        path,
        first: first.filename.clone(),
        second: second.filename.clone(),
    }
}

/// Every ancestor directory of every file, each once; none may also be a file.
fn parent_dirs(
    files: &BTreeMap<String, Planned>,
    wheels: &[WheelFile],
) -> Result<BTreeSet<String>, InstallError> {
    let mut dirs = BTreeSet::new();
    for path in files.keys() {
        let mut rest = path.as_str();
        while let Some((parent, _)) = rest.rsplit_once('/') {
            if !dirs.insert(parent.to_string()) {
                break;
            }
            rest = parent;
        }
    }
    for dir in &dirs {
        if let Some(file) = files.get(dir) {
            let inside = files
                .range(format!("{dir}/")..)
                .next()
                .map_or(file, |(_, planned)| planned);
            return Err(clash(
                dir.clone(),
                &wheels[file.wheel],
                &wheels[inside.wheel],
            ));
        }
    }
    Ok(dirs)
}

// ---------------------------------------------------------------------------------------------
// Reading a wheel: its zip directory and its .dist-info.

/// One entry of a wheel's zip directory.
#[derive(Debug, Clone)]
struct Entry {
    index: usize,
    name: String,
    size: u64,
    /// The unix mode in the entry's external attributes (0 when the zip has none).
    mode: u32,
}

/// A wheel opened and read: its archive and what its .dist-info says.
struct Wheel {
    filename: String,
    archive: ZipArchive<File>,
    /// The files (directories are left out: as pip, only files are installed).
    entries: Vec<Entry>,
    dist_info: String,
    record: BTreeMap<String, Recorded>,
    root_is_purelib: bool,
    entry_points: Vec<EntryPoint>,
    /// Small files already read and checked (WHEEL, entry_points.txt): not read again.
    read: BTreeMap<String, Vec<u8>>,
}

impl Wheel {
    fn invalid(&self, problem: String) -> InstallError {
        InstallError::Invalid {
            wheel: self.filename.clone(),
            problem,
        }
    }

    fn corrupt(&self, path: &str, problem: String) -> InstallError {
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
    fn recorded(&self, entry: &Entry) -> Result<Hash, InstallError> {
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
    fn read_small(&mut self, entry: &Entry, hash: Option<&Hash>) -> Result<Vec<u8>, InstallError> {
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

fn mismatch(kind: HashKind) -> String {
    format!("does not match its {} in RECORD", kind.name())
}

fn open_wheel(file: &WheelFile) -> Result<Wheel, InstallError> {
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
fn unsafe_path(name: &str) -> Option<&'static str> {
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

// ---------------------------------------------------------------------------------------------
// RECORD: CSV rows of path, hash, size.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HashKind {
    Sha256,
    Sha384,
    Sha512,
}

impl HashKind {
    fn name(self) -> &'static str {
        match self {
            HashKind::Sha256 => "sha256",
            HashKind::Sha384 => "sha384",
            HashKind::Sha512 => "sha512",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Hash {
    kind: HashKind,
    digest: Vec<u8>,
}

impl Hash {
    fn of(kind: HashKind, bytes: &[u8]) -> Hash {
        let mut hasher = Hasher::new(kind);
        hasher.update(bytes);
        hasher.finish()
    }

    /// As RECORD spells it: `sha256=<urlsafe base64, no padding>`.
    fn to_record(&self) -> String {
        format!(
            "{}={}",
            self.kind.name(),
            URL_SAFE_NO_PAD.encode(&self.digest)
        )
    }

    fn parse(text: &str) -> Result<Hash, String> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not a hash (algorithm=value)"))?;
        let (kind, len) = match name {
            "sha256" => (HashKind::Sha256, 32),
            "sha384" => (HashKind::Sha384, 48),
            "sha512" => (HashKind::Sha512, 64),
            // The spec forbids md5 and sha1; anything else is unknown to pip too.
            other => {
                return Err(format!(
                    "hash algorithm {other:?} is not sha256, sha384 or sha512"
                ));
            }
        };
        let digest = URL_SAFE_NO_PAD_INDIFFERENT
            .decode(value)
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| format!("{text:?} is not a {name} in urlsafe base64"))?;
        Ok(Hash { kind, digest })
    }
}

enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    fn new(kind: HashKind) -> Hasher {
        match kind {
            HashKind::Sha256 => Hasher::Sha256(Sha256::new()),
            HashKind::Sha384 => Hasher::Sha384(Sha384::new()),
            HashKind::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    fn finish(self) -> Hash {
        let (kind, digest) = match self {
            Hasher::Sha256(h) => (HashKind::Sha256, h.finalize().to_vec()),
            Hasher::Sha384(h) => (HashKind::Sha384, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashKind::Sha512, h.finalize().to_vec()),
        };
        Hash { kind, digest }
    }
}

/// A row of RECORD; the hash and size are empty for RECORD itself and its signatures.
#[derive(Debug, Clone)]
struct Recorded {
    hash: Option<Hash>,
    size: Option<u64>,
}

fn parse_record(text: &str) -> Result<BTreeMap<String, Recorded>, String> {
    let mut record = BTreeMap::new();
    for (line, row) in csv_rows(text)? {
        let at = |problem: String| format!("line {line}: {problem}");
        let [path, hash, size] = row.as_slice() else {
            return Err(at(format!(
                "has {} fields, not 3 (path,hash,size)",
                row.len()
            )));
        };
        let hash = match hash.as_str() {
            "" => None,
            text => Some(Hash::parse(text).map_err(at)?),
        };
        let size = match size.as_str() {
            "" => None,
            text => Some(
                text.parse::<u64>()
                    .map_err(|_| at(format!("size {text:?} is not a number")))?,
            ),
        };
        record.insert(path.clone(), Recorded { hash, size });
    }
    Ok(record)
}

/// The rows of a CSV text as Python's csv module writes them (RECORD's format): a field in
/// double quotes may hold commas, newlines and doubled quotes. Each row with its first line.
fn csv_rows(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut was_quoted) = (false, false);
    let (mut line, mut row_line) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !row.is_empty() || !field.is_empty() || was_quoted {
                    row.push(std::mem::take(&mut field));
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                was_quoted = false;
                line += 1;
                row_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {row_line}: a quoted field is never closed"));
    }
    if !row.is_empty() || !field.is_empty() || was_quoted {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: the launchers pip writes for [console_scripts] and [gui_scripts].

#[derive(Debug, Clone, PartialEq, Eq)]
struct EntryPoint {
    name: String,
    module: String,
    /// `attr` or `attr.sub`: what is called.
    function: String,
}

fn parse_entry_points(text: &str) -> Result<Vec<EntryPoint>, String> {
    let mut points = Vec::new();
    let mut section = String::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.trim().to_string();
            continue;
        }
        if section != "console_scripts" && section != "gui_scripts" {
            continue;
        }
        let point = parse_entry_point(line)
            .map_err(|problem| format!("line {}: {line:?}: {problem}", number + 1))?;
        points.push(point);
    }
    Ok(points)
}

/// `name = module:attr.sub [extras]`. The module and the function are written into Python
/// source, so they must be dotted identifiers and nothing else; the name becomes a file name.
fn parse_entry_point(line: &str) -> Result<EntryPoint, String> {
    let (name, value) = line
        .split_once('=')
        .ok_or("is not name = module:function")?;
    let name = name.trim();
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains(['/', '\\', '\0'])
        || name.contains(char::is_whitespace)
    {
        return Err(format!("{name:?} is not a script name"));
    }
    let value = match value.split_once('[') {
        Some((value, extras)) if extras.trim_end().ends_with(']') => value,
        Some(_) => return Err("its [extras] are not closed".into()),
        None => value,
    };
    let (module, function) = value
        .trim()
        .split_once(':')
        .ok_or("has no ':function' after the module")?;
    let (module, function) = (module.trim(), function.trim());
    if !dotted_identifiers(module) || !dotted_identifiers(function) {
        return Err(format!(
            "{module:?}:{function:?} is not a module:function of dotted Python identifiers"
        ));
    }
    Ok(EntryPoint {
        name: name.to_string(),
        module: module.to_string(),
        function: function.to_string(),
    })
}

fn dotted_identifiers(text: &str) -> bool {
    text.split('.').all(|part| {
        let mut chars = part.chars();
        chars.next().is_some_and(|c| c == '_' || c.is_alphabetic())
            && chars.all(|c| c == '_' || c.is_alphanumeric())
    })
}

/// pip's launcher (distlib's script template), byte for byte, so that it behaves as pip's.
fn launcher(point: &EntryPoint, interpreter: &str) -> String {
    let import_name = point.function.split('.').next().unwrap_or_default();
    format!(
        "#!{interpreter}\n\
         # -*- coding: utf-8 -*-\n\
         import re\n\
         import sys\n\
         from {module} import {import_name}\n\
         if __name__ == '__main__':\n    \
         sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    \
         sys.exit({function}())\n",
        module = point.module,
        function = point.function,
    )
}

/// setuptools also puts launchers of its entry points in scripts/ (`EP`, `EP.exe`,
/// `EP-script.py`, `EP.pya`); pip drops them for its own, and so does this.
fn is_entry_point_wrapper(path: &str, points: &[EntryPoint]) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    let lower = name.to_lowercase();
    let stem = [".exe", "-script.py", ".pya"]
        .iter()
        .find(|suffix| lower.ends_with(*suffix))
        .map_or(name, |suffix| &name[..name.len() - suffix.len()]);
    points.iter().any(|p| p.name == stem)
}

/// A script whose first line starts with `#!python` (`#!pythonw`, `#!python -u`): the wheel
/// spec's marker for "the interpreter it is installed for". The interpreter word is replaced,
/// the arguments after it kept, and the line ended with `\n` (a `\r` would become part of the
/// interpreter's name on Linux).
fn rewrite_shebang(script: &[u8], interpreter: &str) -> Vec<u8> {
    let line_end = script
        .iter()
        .position(|&b| b == b'\n')
        .map_or(script.len(), |at| at + 1);
    let line = &script[..line_end];
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let word_end = line
        .iter()
        .position(|b| b.is_ascii_whitespace())
        .unwrap_or(line.len());
    let mut out = Vec::with_capacity(script.len() + interpreter.len());
    out.extend_from_slice(b"#!");
    out.extend_from_slice(interpreter.as_bytes());
    out.extend_from_slice(&line[word_end..]);
    out.push(b'\n');
    out.extend_from_slice(&script[line_end..]);
    out
}

// ---------------------------------------------------------------------------------------------
// Planning: where every file of a wheel goes, and its new RECORD.

/// A file of the layer, before it is written.
#[derive(Debug)]
struct Planned {
    /// Its wheel's index in the call's list.
    wheel: usize,
    mode: u32,
    content: Content,
}

#[derive(Debug)]
enum Content {
    /// Streamed from the zip entry, checked against RECORD's hash on the way.
    Zip { entry: Entry, hash: Hash },
    /// Made here (launchers, INSTALLER, RECORD, rewritten scripts) or already read.
    Bytes(Vec<u8>),
}

fn join(dir: &str, rest: &str) -> String {
    let dir = dir.trim_end_matches('/');
    if dir.is_empty() {
        rest.to_string()
    } else {
        format!("{dir}/{rest}")
    }
}

/// `to` as seen from the directory `from` (both relative to the image's root), as RECORD
/// lists the files of a distribution: `../../../bin/f2py` from site-packages.
fn relative(from: &str, to: &str) -> String {
    let from: Vec<&str> = from.split('/').filter(|c| !c.is_empty()).collect();
    let to: Vec<&str> = to.split('/').collect();
    let common = from
        .iter()
        .zip(&to[..to.len() - 1])
        .take_while(|(a, b)| a == b)
        .count();
    let mut parts = vec![".."; from.len() - common];
    parts.extend(&to[common..]);
    parts.join("/")
}

/// Where a wheel's file goes: the root directory, or a scheme directory for what is under
/// `{name}-{version}.data/`. True when it is a script.
fn destination(
    wheel: &Wheel,
    name: &str,
    root: &str,
    scheme: &Scheme,
) -> Result<(String, bool), InstallError> {
    let Some((top, rest)) = name
        .split_once('/')
        .filter(|(top, _)| top.ends_with(".data"))
    else {
        return Ok((join(root, name), false));
    };
    let Some((key, inside)) = rest.split_once('/') else {
        return Err(wheel.invalid(format!(
            "{name} is directly in {top}/; what a .data directory holds goes in its purelib/, platlib/, scripts/, headers/ or data/"
        )));
    };
    let dir = match key {
        "purelib" => scheme.purelib.clone(),
        "platlib" => scheme.platlib.clone(),
        "scripts" => scheme.scripts.clone(),
        "data" => scheme.data.clone(),
        "headers" => {
            let stem = top.strip_suffix(".data").unwrap_or(top);
            let project = stem.rsplit_once('-').map_or(stem, |(project, _)| project);
            if project.is_empty() || project == "." || project == ".." {
                return Err(InstallError::Unsafe {
                    wheel: wheel.filename.clone(),
                    path: name.to_string(),
                    problem: format!("its headers would go in a directory named {project:?}"),
                });
            }
            join(&scheme.headers, project)
        }
        other => {
            return Err(wheel.invalid(format!(
                "{name}: {top}/{other}/ is not a scheme directory (purelib, platlib, scripts, headers or data)"
            )));
        }
    };
    Ok((join(&dir, inside), key == "scripts"))
}

/// The files a wheel installs, with their paths in the image; its RECORD among them.
fn plan_wheel(
    number: usize,
    wheel: &mut Wheel,
    scheme: &Scheme,
) -> Result<Vec<(String, Planned)>, InstallError> {
    let root = if wheel.root_is_purelib {
        scheme.purelib.clone()
    } else {
        scheme.platlib.clone()
    };
    let dist_info = wheel.dist_info.clone();
    // Written here, whatever the wheel holds: the signatures sign a RECORD no longer installed.
    let made_here =
        ["RECORD", "RECORD.jws", "RECORD.p7s", "INSTALLER"].map(|f| format!("{dist_info}/{f}"));
    let mut files = Vec::new();
    let mut record = Vec::new();
    for entry in wheel.entries.clone() {
        if made_here.contains(&entry.name) {
            continue;
        }
        let hash = wheel.recorded(&entry)?;
        let (path, is_script) = destination(wheel, &entry.name, &root, scheme)?;
        if is_script && is_entry_point_wrapper(&path, &wheel.entry_points) {
            continue;
        }
        // As pip: executable when the zip says a regular file with an x bit; scripts always.
        let executable = entry.mode & S_IFMT == S_IFREG && entry.mode & 0o111 != 0;
        let mode = if executable || is_script {
            0o755
        } else {
            0o644
        };
        let content = if let Some(bytes) = wheel.read.remove(&entry.name) {
            Content::Bytes(bytes)
        } else if is_script && starts_with_python_shebang(wheel, &entry)? {
            let script = wheel.read_small(&entry, Some(&hash))?;
            Content::Bytes(rewrite_shebang(&script, &scheme.interpreter))
        } else {
            Content::Zip { entry, hash }
        };
        record.push(record_row(&root, &path, &content));
        files.push((
            path,
            Planned {
                wheel: number,
                mode,
                content,
            },
        ));
    }
    let mut made = Vec::new();
    for point in &wheel.entry_points {
        let bytes = launcher(point, &scheme.interpreter).into_bytes();
        made.push((join(&scheme.scripts, &point.name), 0o755, bytes));
    }
    made.push((
        join(&root, &format!("{dist_info}/INSTALLER")),
        0o644,
        INSTALLER.to_vec(),
    ));
    for (path, mode, bytes) in made {
        let content = Content::Bytes(bytes);
        record.push(record_row(&root, &path, &content));
        files.push((
            path,
            Planned {
                wheel: number,
                mode,
                content,
            },
        ));
    }
    let record_path = join(&root, &format!("{dist_info}/RECORD"));
    record.push((relative(&root, &record_path), ",".into()));
    record.sort();
    let text: String = record
        .iter()
        .map(|(path, rest)| format!("{},{rest}\n", csv_field(path)))
        .collect();
    files.push((
        record_path,
        Planned {
            wheel: number,
            mode: 0o644,
            content: Content::Bytes(text.into_bytes()),
        },
    ));
    Ok(files)
}

/// A row of the new RECORD: the path from the root, then the hash and size. A streamed file
/// keeps the wheel's own hash: it is checked against it as it is written, and the install
/// fails if it does not match.
fn record_row(root: &str, path: &str, content: &Content) -> (String, String) {
    let (hash, size) = match content {
        Content::Zip { entry, hash } => (hash.to_record(), entry.size),
        Content::Bytes(bytes) => (
            Hash::of(HashKind::Sha256, bytes).to_record(),
            bytes.len() as u64,
        ),
    };
    (relative(root, path), format!("{hash},{size}"))
}

/// Whether a script starts with `#!python`: its first bytes only are read.
fn starts_with_python_shebang(wheel: &mut Wheel, entry: &Entry) -> Result<bool, InstallError> {
    let mut head = Vec::new();
    let read = wheel
        .archive
        .by_index(entry.index)
        .map_err(io::Error::from)
        .and_then(|file| file.take(8).read_to_end(&mut head));
    if let Err(e) = read {
        return Err(wheel.corrupt(&entry.name, format!("cannot be read: {e}")));
    }
    Ok(head == b"#!python")
}

// ---------------------------------------------------------------------------------------------
// Writing: each file streamed once into the tar.

#[derive(Default)]
struct Found {
    needs: BTreeMap<String, String>,
    provides: BTreeSet<String>,
}

/// A shared library by its name: `libz.so`, `libz.so.1.3`, `_core.cpython-311-x86_64-linux-gnu.so`.
fn looks_like_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.ends_with(".so") || name.contains(".so.")
}

fn write_file(
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
            for library in info.needed {
                found
                    .needs
                    .entry(library)
                    .or_insert_with(|| path.to_string());
            }
            found.provides.extend(info.soname);
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

/// A zip entry's bytes as they stream: exactly `left` of them (the size the tar header
/// promised), hashed; why reading failed is kept to tell a bad wheel from a failing disk.
struct Checked<R> {
    inner: R,
    hasher: Option<Hasher>,
    left: u64,
    failure: Option<String>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = match self.inner.read(&mut buf[..max]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failure = Some(format!("cannot be read: {e}"));
                return Err(e);
            }
        };
        if n == 0 {
            let problem = format!(
                "ends {} bytes before the size its zip header says",
                self.left
            );
            self.failure = Some(problem.clone());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, problem));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.left -= n as u64;
        Ok(n)
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
    use super::*;
    use std::path::Path;
    use zip::write::SimpleFileOptions;

    /// A wheel's files: (name, bytes, unix permissions).
    type Files = Vec<(String, Vec<u8>, u32)>;

    fn dist(name: &str, version: &str, purelib: bool) -> Files {
        let info = format!("{name}-{version}.dist-info");
        vec![
            (
                format!("{info}/WHEEL"),
                format!("Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: {purelib}\nTag: py3-none-any\n").into_bytes(),
                0o644,
            ),
            (
                format!("{info}/METADATA"),
                format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n").into_bytes(),
                0o644,
            ),
        ]
    }

    fn file(name: &str, bytes: &[u8], mode: u32) -> (String, Vec<u8>, u32) {
        (name.to_string(), bytes.to_vec(), mode)
    }

    fn record_of(files: &Files, dist_info: &str) -> String {
        let mut lines: Vec<String> = files
            .iter()
            .map(|(name, bytes, _)| {
                let hash = Hash::of(HashKind::Sha256, bytes).to_record();
                format!("{},{hash},{}", csv_field(name), bytes.len())
            })
            .collect();
        lines.push(format!("{dist_info}/RECORD,,"));
        lines.join("\r\n") + "\r\n"
    }

    fn zip_options(mode: u32) -> SimpleFileOptions {
        SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .external_attributes((S_IFREG | mode) << 16)
    }

    /// Writes a wheel: `files`, a RECORD (`record`, or one listing `files` correctly), then
    /// whatever `extra` adds.
    fn write_wheel(
        dir: &Path,
        filename: &str,
        files: &Files,
        record: Option<String>,
        extra: impl FnOnce(&mut zip::ZipWriter<File>),
    ) -> WheelFile {
        let path = dir.join(filename);
        let mut zip = zip::ZipWriter::new(File::create(&path).unwrap());
        for (name, bytes, mode) in files {
            zip.start_file(name, zip_options(*mode)).unwrap();
            zip.write_all(bytes).unwrap();
        }
        let info = files
            .iter()
            .find_map(|(n, _, _)| {
                n.split_once(".dist-info/")
                    .map(|(d, _)| format!("{d}.dist-info"))
            })
            .unwrap();
        let record = record.unwrap_or_else(|| record_of(files, &info));
        zip.start_file(format!("{info}/RECORD"), zip_options(0o644))
            .unwrap();
        zip.write_all(record.as_bytes()).unwrap();
        extra(&mut zip);
        zip.finish().unwrap();
        WheelFile {
            path,
            filename: filename.to_string(),
        }
    }

    fn wheel(dir: &Path, filename: &str, files: &Files) -> WheelFile {
        write_wheel(dir, filename, files, None, |_| {})
    }

    fn options() -> LayerOptions {
        LayerOptions {
            mtime: 1_700_000_000,
            ..LayerOptions::default()
        }
    }

    fn install(
        dir: &Path,
        wheels: &[WheelFile],
        scheme: &Scheme,
    ) -> Result<(Installed, Layout), InstallError> {
        let layout = Layout::create(&dir.join("layout")).unwrap();
        let installed = install_wheels(wheels, scheme, &layout, &options(), "test".into())?;
        Ok((installed, layout))
    }

    /// An entry of a layer as read back: (path without a trailing '/', kind, mode, bytes).
    type LayerEntry = (String, tar::EntryType, u32, Vec<u8>);

    fn entries(layout: &Layout, layer: &Layer) -> Vec<LayerEntry> {
        let blob = layout.open_blob(&layer.descriptor.digest).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(blob));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header();
            let path = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let (kind, mode) = (header.entry_type(), header.mode().unwrap());
            assert_eq!(header.uid().unwrap(), 0);
            assert_eq!(header.gid().unwrap(), 0);
            assert_eq!(header.mtime().unwrap(), 1_700_000_000);
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            out.push((path.trim_end_matches('/').to_string(), kind, mode, bytes));
        }
        out
    }

    fn files_of(entries: &[LayerEntry]) -> BTreeMap<String, (u32, Vec<u8>)> {
        entries
            .iter()
            .filter(|e| e.1 == tar::EntryType::Regular)
            .map(|(p, _, m, b)| (p.clone(), (*m, b.clone())))
            .collect()
    }

    const SITE: &str = "usr/local/lib/python3.11/dist-packages";

    fn split_scheme() -> Scheme {
        Scheme {
            purelib: "pure/site".into(),
            platlib: "plat/site".into(),
            ..Scheme::debian("3.11")
        }
    }

    #[test]
    fn root_is_purelib_decides_where_the_root_goes() {
        let dir = tempfile::tempdir().unwrap();
        for (purelib, root) in [(true, "pure/site"), (false, "plat/site")] {
            let mut files = dist("demo", "1.0", purelib);
            files.push(file("demo/__init__.py", b"x = 1\n", 0o644));
            let name = format!("demo-1.0-py3-none-any-{purelib}.whl");
            let w = wheel(dir.path(), &name, &files);
            let out = dir.path().join(format!("out-{purelib}"));
            let (installed, layout) = install(&out, &[w], &split_scheme()).unwrap();
            let got = files_of(&entries(&layout, &installed.layer));
            assert_eq!(got[&format!("{root}/demo/__init__.py")].1, b"x = 1\n");
            assert!(got.contains_key(&format!("{root}/demo-1.0.dist-info/METADATA")));
            assert!(got.contains_key(&format!("{root}/demo-1.0.dist-info/RECORD")));
            assert!(got.keys().all(|p| p.starts_with(root)), "{:?}", got.keys());
            assert_eq!(installed.files, got.len() as u64);
        }
    }

    #[test]
    fn data_directories_go_to_their_scheme_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", false);
        let data = "demo-1.0.data";
        for (key, name) in [
            ("purelib", "puremod.py"),
            ("platlib", "platmod.py"),
            ("scripts", "tool"),
            ("headers", "demo.h"),
            ("data", "share/demo/table.txt"),
        ] {
            files.push(file(&format!("{data}/{key}/{name}"), key.as_bytes(), 0o644));
        }
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &split_scheme()).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let expect = [
            ("pure/site/puremod.py", "purelib"),
            ("plat/site/platmod.py", "platlib"),
            ("usr/local/bin/tool", "scripts"),
            ("usr/local/include/python3.11/demo/demo.h", "headers"),
            ("usr/local/share/demo/table.txt", "data"),
        ];
        for (path, bytes) in expect {
            assert_eq!(got[path].1, bytes.as_bytes(), "{path}");
        }
        assert_eq!(got["usr/local/bin/tool"].0, 0o755);
        let record =
            String::from_utf8(got["plat/site/demo-1.0.dist-info/RECORD"].1.clone()).unwrap();
        for line in [
            "../../usr/local/bin/tool,sha256=",
            "../../pure/site/puremod.py,sha256=",
            "platmod.py,sha256=",
        ] {
            assert!(
                record.lines().any(|l| l.starts_with(line)),
                "{line} in {record}"
            );
        }

        let mut files = dist("demo", "1.0", false);
        files.push(file(&format!("{data}/purelibs/x.py"), b"", 0o644));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let error = install(&dir.path().join("bad"), &[w], &split_scheme()).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("purelibs/ is not a scheme directory"),
            "{error}"
        );
    }

    #[test]
    fn python_shebangs_are_rewritten_and_scripts_made_executable() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        let scripts = "demo-1.0.data/scripts";
        files.push(file(
            &format!("{scripts}/plain"),
            b"#!python\nprint(1)\n",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/args"),
            b"#!python -u -O\r\nprint(2)\n",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/gui"),
            b"#!pythonw\nprint(3)",
            0o644,
        ));
        files.push(file(
            &format!("{scripts}/shell"),
            b"#!/bin/sh\necho 4\n",
            0o644,
        ));
        files.push(file(&format!("{scripts}/bare"), b"#!python", 0o644));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let text = |name: &str| {
            let (mode, bytes) = &got[&format!("usr/local/bin/{name}")];
            assert_eq!(*mode, 0o755, "{name}");
            String::from_utf8(bytes.clone()).unwrap()
        };
        assert_eq!(text("plain"), "#!/usr/bin/python3.11\nprint(1)\n");
        assert_eq!(text("args"), "#!/usr/bin/python3.11 -u -O\nprint(2)\n");
        assert_eq!(text("gui"), "#!/usr/bin/python3.11\nprint(3)");
        assert_eq!(text("shell"), "#!/bin/sh\necho 4\n");
        assert_eq!(text("bare"), "#!/usr/bin/python3.11\n");
        check_record(&got, &format!("{SITE}/demo-1.0.dist-info/RECORD"), SITE);
    }

    const ENTRY_POINTS: &str = "[console_scripts]\n\
        demo-cli = demo.cli:main\n\
        # a comment\n\
        demo-sub = demo.tools:App.run [extra1, extra2]\n\
        \n\
        [gui_scripts]\n\
        demo-gui=demo.gui:start\n\
        \n\
        [demo.plugins]\n\
        not-a-script = anything goes: here\n";

    #[test]
    fn console_and_gui_entry_points_get_pips_launchers() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        files.push(file(
            "demo-1.0.dist-info/entry_points.txt",
            ENTRY_POINTS.as_bytes(),
            0o644,
        ));
        // setuptools' own launcher for the same entry point: pip drops it, and so do we.
        files.push(file(
            "demo-1.0.data/scripts/demo-cli",
            b"#!python\nold\n",
            0o755,
        ));
        let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
        let (installed, layout) = install(dir.path(), &[w], &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let launcher = |name: &str| {
            let (mode, bytes) = &got[&format!("usr/local/bin/{name}")];
            assert_eq!(*mode, 0o755);
            String::from_utf8(bytes.clone()).unwrap()
        };
        let template = |import: &str, name: &str, call: &str| {
            format!(
                "#!/usr/bin/python3.11\n# -*- coding: utf-8 -*-\nimport re\nimport sys\nfrom {import} import {name}\nif __name__ == '__main__':\n    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])\n    sys.exit({call}())\n"
            )
        };
        assert_eq!(launcher("demo-cli"), template("demo.cli", "main", "main"));
        assert_eq!(
            launcher("demo-sub"),
            template("demo.tools", "App", "App.run")
        );
        assert_eq!(launcher("demo-gui"), template("demo.gui", "start", "start"));
        assert!(!got.contains_key("usr/local/bin/not-a-script"));
        check_record(&got, &format!("{SITE}/demo-1.0.dist-info/RECORD"), SITE);
    }

    #[test]
    fn a_malformed_entry_point_names_the_wheel_and_line() {
        let dir = tempfile::tempdir().unwrap();
        for (bad, line) in [
            ("[console_scripts]\nok = a:b\nbroken = no_function\n", 3),
            ("[gui_scripts]\nevil = os:system('rm -rf /')\n", 2),
            ("[console_scripts]\n../../etc/cron = a:b\n", 2),
        ] {
            let mut files = dist("demo", "1.0", true);
            files.push(file(
                "demo-1.0.dist-info/entry_points.txt",
                bad.as_bytes(),
                0o644,
            ));
            let w = wheel(dir.path(), "demo-1.0-py3-none-any.whl", &files);
            let error = install(
                &dir.path().join(line.to_string()),
                &[w],
                &Scheme::debian("3.11"),
            )
            .unwrap_err()
            .to_string();
            assert!(error.contains("demo-1.0-py3-none-any.whl"), "{error}");
            assert!(error.contains(&format!("line {line}")), "{error}");
        }
    }

    /// Every line of RECORD names a file of the layer with that hash and size, and every file
    /// of the distribution is listed.
    fn check_record(got: &BTreeMap<String, (u32, Vec<u8>)>, record_path: &str, root: &str) {
        let text = String::from_utf8(got[record_path].1.clone()).unwrap();
        let rows = csv_rows(&text).unwrap();
        let mut listed = BTreeSet::new();
        let mut previous = String::new();
        for (_, row) in rows {
            let line = row[0].clone();
            assert!(
                previous < line,
                "RECORD is not sorted by path: {previous} then {line}"
            );
            previous = line;
            let [rel, hash, size] = row.as_slice() else {
                panic!("{row:?}")
            };
            let mut path: Vec<&str> = root.split('/').collect();
            for part in rel.split('/') {
                if part == ".." {
                    path.pop();
                } else {
                    path.push(part);
                }
            }
            let path = path.join("/");
            let (_, bytes) = got
                .get(&path)
                .unwrap_or_else(|| panic!("{path} is not in the layer"));
            if path == record_path {
                assert_eq!((hash.as_str(), size.as_str()), ("", ""));
            } else {
                assert_eq!(
                    *hash,
                    Hash::of(HashKind::Sha256, bytes).to_record(),
                    "{path}"
                );
                assert_eq!(*size, bytes.len().to_string(), "{path}");
            }
            listed.insert(path);
        }
        assert_eq!(
            got.get(&record_path.replace("RECORD", "INSTALLER"))
                .map(|f| &f.1[..]),
            Some(&b"mlambda\n"[..])
        );
        let all: BTreeSet<String> = got.keys().cloned().collect();
        assert_eq!(listed, all, "RECORD lists every file of the layer");
    }

    #[test]
    fn record_is_rewritten_with_the_installed_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo_pkg", "2.0", false);
        files.push(file("demo_pkg/__init__.py", b"", 0o644));
        files.push(file("demo_pkg/odd, name.txt", b"comma", 0o644));
        files.push(file(
            "demo_pkg-2.0.dist-info/entry_points.txt",
            b"[console_scripts]\ndemo = demo_pkg:main\n",
            0o644,
        ));
        files.push(file(
            "demo_pkg-2.0.data/scripts/run",
            b"#!python\nimport demo_pkg\n",
            0o644,
        ));
        files.push(file("demo_pkg-2.0.data/headers/demo.h", b"int x;\n", 0o644));
        files.push(file("demo_pkg-2.0.dist-info/INSTALLER", b"pip\n", 0o644));
        let w = wheel(
            dir.path(),
            "demo_pkg-2.0-cp311-cp311-linux_x86_64.whl",
            &files,
        );
        let (installed, layout) = install(dir.path(), &[w], &Scheme::prefix_local("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        let site = "usr/local/lib/python3.11/site-packages";
        check_record(&got, &format!("{site}/demo_pkg-2.0.dist-info/RECORD"), site);
        let record = String::from_utf8(
            got[&format!("{site}/demo_pkg-2.0.dist-info/RECORD")]
                .1
                .clone(),
        )
        .unwrap();
        for line in [
            "\"demo_pkg/odd, name.txt\",sha256=",
            "../../../bin/demo,sha256=",
            "../../../bin/run,sha256=",
            "../../../include/python3.11/demo_pkg/demo.h,sha256=",
            "demo_pkg-2.0.dist-info/INSTALLER,sha256=",
            "demo_pkg-2.0.dist-info/RECORD,,",
        ] {
            assert!(
                record.lines().any(|l| l.starts_with(line)),
                "{line} in {record}"
            );
        }
        assert!(!record.contains('\r') && record.ends_with('\n'));
    }

    #[test]
    fn a_file_that_does_not_match_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        files.push(file("demo/__init__.py", b"honest = True\n", 0o644));
        let record = record_of(&files, "demo-1.0.dist-info");
        files[2].1 = b"honest = False\n".to_vec();
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            Some(record.clone()),
            |_| {},
        );
        let error = install(&dir.path().join("a"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Corrupt { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("demo-1.0-py3-none-any.whl") && message.contains("demo/__init__.py"),
            "{message}"
        );
        assert!(message.contains("tampered"), "{message}");

        // Same size, other bytes: caught by the hash as the file streams.
        files[2].1 = b"honest = Nope\n".to_vec();
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            Some(record),
            |_| {},
        );
        let error = install(&dir.path().join("b"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("does not match its sha256 in RECORD"),
            "{error}"
        );
        assert!(
            !dir.path()
                .join("b/layout/blobs/sha256")
                .read_dir()
                .unwrap()
                .any(|_| true),
            "no layer is stored"
        );

        // A file RECORD does not list.
        let files = dist("demo", "1.0", true);
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            None,
            |zip| {
                zip.start_file("demo/extra.py", zip_options(0o644)).unwrap();
                zip.write_all(b"sneaked in\n").unwrap();
            },
        );
        let error = install(&dir.path().join("c"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("demo/extra.py is not listed in RECORD"),
            "{error}"
        );
    }

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

    fn two_wheels(dir: &Path) -> Vec<WheelFile> {
        let mut a = dist("alpha", "1.0", true);
        a.push(file("alpha/__init__.py", b"a = 1\n", 0o644));
        a.push(file("alpha/bin/run.sh", b"#!/bin/sh\n", 0o755));
        a.push(file("alpha/deep/er/mod.py", b"", 0o644));
        let mut b = dist("beta", "2.0", false);
        b.push(file("beta/__init__.py", b"b = 2\n", 0o644));
        b.push(file(
            "beta-2.0.dist-info/entry_points.txt",
            b"[console_scripts]\nbeta = beta:main\n",
            0o644,
        ));
        vec![
            wheel(dir, "alpha-1.0-py3-none-any.whl", &a),
            wheel(dir, "beta-2.0-py3-none-any.whl", &b),
        ]
    }

    #[test]
    fn the_same_wheels_give_the_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (first, _) = install(&dir.path().join("a"), &wheels, &Scheme::debian("3.11")).unwrap();
        let reversed: Vec<WheelFile> = wheels.iter().rev().cloned().collect();
        let (second, _) =
            install(&dir.path().join("b"), &reversed, &Scheme::debian("3.11")).unwrap();
        assert_eq!(
            first.layer.descriptor.digest,
            second.layer.descriptor.digest
        );
        assert_eq!(first.layer.diff_id, second.layer.diff_id);
        let (third, _) = install(
            &dir.path().join("c"),
            &wheels,
            &Scheme::prefix_local("3.11"),
        )
        .unwrap();
        assert_ne!(first.layer.descriptor.digest, third.layer.descriptor.digest);
    }

    #[test]
    fn directories_come_once_before_their_files_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (installed, layout) = install(dir.path(), &wheels, &Scheme::debian("3.11")).unwrap();
        let entries = entries(&layout, &installed.layer);
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(paths, sorted, "sorted, each once");
        let dirs: BTreeSet<&str> = entries
            .iter()
            .filter(|e| e.1 == tar::EntryType::Directory)
            .map(|e| {
                assert_eq!(e.2, 0o755, "{}", e.0);
                e.0.as_str()
            })
            .collect();
        for path in &paths {
            let mut rest = *path;
            while let Some((parent, _)) = rest.rsplit_once('/') {
                assert!(dirs.contains(parent), "{parent} (of {path}) has no entry");
                rest = parent;
            }
        }
        for expected in [
            "usr",
            "usr/local",
            "usr/local/bin",
            SITE,
            &format!("{SITE}/alpha/deep/er"),
        ] {
            assert!(dirs.contains(expected), "{expected}");
        }
        assert_eq!(installed.files, 14, "{paths:?}");
    }

    #[test]
    fn the_exec_bit_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let wheels = two_wheels(dir.path());
        let (installed, layout) = install(dir.path(), &wheels, &Scheme::debian("3.11")).unwrap();
        let got = files_of(&entries(&layout, &installed.layer));
        assert_eq!(got[&format!("{SITE}/alpha/bin/run.sh")].0, 0o755);
        assert_eq!(got[&format!("{SITE}/alpha/__init__.py")].0, 0o644);
        assert_eq!(got["usr/local/bin/beta"].0, 0o755);
    }

    #[test]
    fn two_wheels_installing_one_path_is_an_error_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = dist("alpha", "1.0", true);
        a.push(file("shared/util.py", b"a\n", 0o644));
        let mut b = dist("beta", "1.0", true);
        b.push(file("shared/util.py", b"b\n", 0o644));
        let wheels = [
            wheel(dir.path(), "alpha-1.0-py3-none-any.whl", &a),
            wheel(dir.path(), "beta-1.0-py3-none-any.whl", &b),
        ];
        let error = install(dir.path(), &wheels, &Scheme::debian("3.11"))
            .unwrap_err()
            .to_string();
        for part in [
            "alpha-1.0-py3-none-any.whl",
            "beta-1.0-py3-none-any.whl",
            "shared/util.py",
        ] {
            assert!(error.contains(part), "{error}");
        }
        // A file of one is a directory of the other.
        let mut c = dist("gamma", "1.0", true);
        c.push(file("shared", b"c\n", 0o644));
        let wheels = [
            wheels[0].clone(),
            wheel(dir.path(), "gamma-1.0-py3-none-any.whl", &c),
        ];
        let error = install(&dir.path().join("x"), &wheels, &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Clash { .. }), "{error}");
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
        assert_eq!(
            installed.needs.get("libc.so.6").map(String::as_str),
            Some(&*format!("{SITE}/demo.libs/libz-1234abcd.so.1"))
        );
        let provides: Vec<&str> = installed.provides.iter().map(String::as_str).collect();
        assert_eq!(provides, ["fake.so", "libz-1234abcd.so.1", "libz.so.1"]);
    }

    #[test]
    fn record_csv_reads_quotes_and_crlf() {
        let rows = csv_rows("a,b,c\r\n\"x, \"\"y\"\"\",,\n\n\"multi\nline\",1,2").unwrap();
        let rows: Vec<Vec<&str>> = rows
            .iter()
            .map(|(_, r)| r.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["a", "b", "c"],
                vec!["x, \"y\"", "", ""],
                vec!["multi\nline", "1", "2"]
            ]
        );
        assert!(csv_rows("\"open,1,2\n").is_err());
        assert_eq!(
            relative(
                "usr/local/lib/python3.11/dist-packages",
                "usr/local/bin/f2py"
            ),
            "../../../bin/f2py"
        );
        assert_eq!(relative("a/b", "a/b/c/d.py"), "c/d.py");
        assert_eq!(relative("", "x/y"), "x/y");
    }
}
