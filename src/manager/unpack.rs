//! Unpacks an uploaded model folder (a tar.gz) as its bytes arrive, refusing anything that
//! could reach outside the folder or fill the disk: the archive comes from the network.
//!
//! Entries are written by hand instead of `tar::Entry::unpack`, so that every rule is ours
//! and explicit: only relative paths of plain components; regular files, directories and
//! links; no write ever goes through a symbolic link; links must stay inside the folder, as
//! the file system resolves them, not only as their text reads.

use flate2::read::GzDecoder;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// What an archive may hold at most.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of all files once unpacked.
    pub unpacked_bytes: u64,
    pub entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(
        "the payload is not a gzip-compressed tar archive ({0}); send the model folder as .tar.gz"
    )]
    NotGzip(String),
    #[error("the payload is not a valid tar archive inside its gzip: {0}")]
    NotTar(String),
    #[error("archive entry '{entry}': {problem}")]
    Refused { entry: String, problem: String },
    #[error(
        "the archive unpacks to more than {limit} bytes (a size bomb, or a model larger than this server accepts: see `mlambda serve --max-unpacked`)"
    )]
    TooBig { limit: u64 },
    #[error("the archive has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("cannot write the uploaded folder: {0}")]
    Io(io::Error),
}

impl UnpackError {
    /// Whether the archive is at fault (the client's error) rather than the server.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, UnpackError::Io(_))
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Unpacked {
    pub files: u64,
    pub bytes: u64,
}

/// Unpacks the tar.gz read from `archive` into `dest` (an empty directory). On error, what was
/// written stays for the caller to remove with the rest of its temporary folder.
pub fn unpack_tar_gz(
    archive: impl Read,
    dest: &Path,
    limits: Limits,
) -> Result<Unpacked, UnpackError> {
    let mut gzip = GzDecoder::new(archive);
    // A first byte read up front tells "not gzip" apart from a damaged tar inside a gzip.
    let mut probe = [0u8; 1];
    let n = gzip
        .read(&mut probe)
        .map_err(|e| UnpackError::NotGzip(e.to_string()))?;
    unpack_tar(
        io::Cursor::new(probe[..n].to_vec()).chain(gzip),
        dest,
        limits,
    )
}

fn unpack_tar(tar_bytes: impl Read, dest: &Path, limits: Limits) -> Result<Unpacked, UnpackError> {
    let mut archive = tar::Archive::new(tar_bytes);
    let mut unpacked = Unpacked::default();
    let mut links = Vec::new();
    let mut count = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| UnpackError::NotTar(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(read_error)?;
        count += 1;
        if count > limits.entries {
            return Err(UnpackError::TooManyEntries {
                limit: limits.entries,
            });
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refused = |problem: &str| UnpackError::Refused {
            entry: raw.clone(),
            problem: problem.to_string(),
        };
        let Some(rel) = plain_relative(Path::new(&raw)) else {
            return Err(refused(
                "the path is absolute or has '..': entries must stay inside the model folder",
            ));
        };
        if rel.as_os_str().is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let target = dest.join(&rel);
        match kind {
            tar::EntryType::Directory => {
                make_dirs(dest, &rel).map_err(|p| refused(&p))?;
            }
            // GNU sparse entries (what `tar --sparse` and `tar::Builder` write for files
            // with holes) read back as their full bytes, zeros included.
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                prepare_parent(dest, &rel).map_err(|p| refused(&p))?;
                let mode = entry.header().mode().unwrap_or(0o644);
                let budget = limits.unpacked_bytes - unpacked.bytes;
                let written = write_file(&mut entry, &target, mode, budget)
                    .map_err(|e| created(&raw, e))?
                    .ok_or(UnpackError::TooBig {
                        limit: limits.unpacked_bytes,
                    })?;
                unpacked.bytes += written;
                unpacked.files += 1;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| refused("a symbolic link without a target"))?;
                let resolved = rel.parent().unwrap_or(Path::new("")).join(&link);
                if link.is_absolute() || plain_relative_resolving_dots(&resolved).is_none() {
                    return Err(refused(&format!(
                        "the symbolic link points outside the model folder ({})",
                        link.display()
                    )));
                }
                prepare_parent(dest, &rel).map_err(|p| refused(&p))?;
                std::os::unix::fs::symlink(&link, &target)
                    .map_err(|e| created(&raw, UnpackError::Io(e)))?;
                links.push((raw.clone(), target));
            }
            tar::EntryType::Link => {
                let link = entry
                    .link_name()
                    .map_err(read_error)?
                    .ok_or_else(|| refused("a hard link without a target"))?;
                let source = plain_relative(&link)
                    .filter(|p| !p.as_os_str().is_empty())
                    .ok_or_else(|| refused("the hard link points outside the model folder"))?;
                let source_path = dest.join(&source);
                check_no_symlink_on_path(dest, &source).map_err(|p| refused(&p))?;
                if !fs::symlink_metadata(&source_path).is_ok_and(|m| m.is_file()) {
                    return Err(refused(
                        "the hard link names no regular file unpacked before it",
                    ));
                }
                prepare_parent(dest, &rel).map_err(|p| refused(&p))?;
                fs::hard_link(&source_path, &target)
                    .map_err(|e| created(&raw, UnpackError::Io(e)))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                return Err(refused(
                    "device files and pipes are not model files; remove them from the folder",
                ));
            }
            // pax and GNU long-name headers are read by `tar` itself; the rest has no
            // business in a model folder.
            other => {
                return Err(refused(&format!(
                    "entries of type {other:?} are not accepted"
                )));
            }
        }
    }
    check_links_stay_inside(dest, &links)?;
    Ok(unpacked)
}

/// What the file system says of a name it cannot hold, in the client's terms.
const NAME_TOO_LONG: &str = "a name in this path is too long for the file system (at most 255 bytes per file or folder name); rename it";

/// An error creating entry `raw`: a name the file system cannot hold is the archive's fault,
/// anything else the server's.
fn created(raw: &str, error: UnpackError) -> UnpackError {
    match error {
        UnpackError::Io(e) if e.kind() == io::ErrorKind::InvalidFilename => UnpackError::Refused {
            entry: raw.to_string(),
            problem: NAME_TOO_LONG.into(),
        },
        other => other,
    }
}

fn read_error(error: io::Error) -> UnpackError {
    let text = error.to_string();
    if text.contains("gzip") || text.contains("deflate") || text.contains("corrupt") {
        UnpackError::NotGzip(text)
    } else {
        UnpackError::NotTar(text)
    }
}

/// The path without `.` components when it has only plain ones; `None` when absolute or with `..`.
fn plain_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The path with `..` applied to what precedes it; `None` when it climbs above its start.
fn plain_relative_resolving_dots(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Creates `rel`'s directories one by one, refusing to go through a symbolic link or a file.
fn make_dirs(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut current = dest.to_path_buf();
    for component in rel.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err("a directory of this path is a symbolic link: entries are never written through links".into());
            }
            Ok(_) => return Err("a directory of this path is a file".into()),
            Err(_) => fs::create_dir(&current).map_err(|e| match e.kind() {
                io::ErrorKind::InvalidFilename => NAME_TOO_LONG.to_string(),
                _ => e.to_string(),
            })?,
        }
    }
    Ok(())
}

fn prepare_parent(dest: &Path, rel: &Path) -> Result<(), String> {
    if let Some(parent) = rel.parent() {
        make_dirs(dest, parent)?;
    }
    // A later entry of the same name replaces an earlier one; removing it first means a link
    // left there is never followed.
    let target = dest.join(rel);
    match fs::symlink_metadata(&target) {
        Ok(meta) if meta.is_dir() => {
            Err("a directory of that name is already in the archive".into())
        }
        Ok(_) => fs::remove_file(&target).map_err(|e| e.to_string()),
        Err(_) => Ok(()),
    }
}

fn check_no_symlink_on_path(dest: &Path, rel: &Path) -> Result<(), String> {
    let mut current = dest.to_path_buf();
    for component in rel.components() {
        current.push(component);
        if fs::symlink_metadata(&current).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err("the hard link goes through a symbolic link".into());
        }
    }
    Ok(())
}

/// Copies one entry's bytes into a new file; `None` when there are more than `budget`.
fn write_file(
    entry: &mut impl Read,
    target: &Path,
    mode: u32,
    budget: u64,
) -> Result<Option<u64>, UnpackError> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(UnpackError::Io)?;
    let mut limited = entry.take(budget + 1);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut written = 0u64;
    loop {
        let n = limited.read(&mut buffer).map_err(read_error)?;
        if n == 0 {
            break;
        }
        written += n as u64;
        if written > budget {
            return Ok(None);
        }
        // Runs of zeros (the holes of a sparse weights file) stay holes on disk.
        if buffer[..n].iter().all(|&b| b == 0) {
            file.seek(io::SeekFrom::Current(n as i64))
                .map_err(UnpackError::Io)?;
        } else {
            file.write_all(&buffer[..n]).map_err(UnpackError::Io)?;
        }
    }
    file.set_len(written).map_err(UnpackError::Io)?;
    // Only the permission bits that matter to a model: executable or not, never setuid.
    let mode = if mode & 0o111 != 0 { 0o755 } else { 0o644 };
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(UnpackError::Io)?;
    Ok(Some(written))
}

/// A chain of links can escape where each link alone does not (`a -> ..` inside a folder,
/// then `b -> dir/a/..`): resolve each one as the file system does, once all exist.
fn check_links_stay_inside(dest: &Path, links: &[(String, PathBuf)]) -> Result<(), UnpackError> {
    let root = fs::canonicalize(dest).map_err(UnpackError::Io)?;
    for (entry, link) in links {
        match fs::canonicalize(link) {
            Ok(resolved) if resolved.starts_with(&root) => {}
            Ok(_) => {
                return Err(UnpackError::Refused {
                    entry: entry.clone(),
                    problem: "the symbolic link resolves outside the model folder".into(),
                });
            }
            // A dangling link reads nothing; the payload resolution reports it if it matters.
            Err(_) => {}
        }
    }
    Ok(())
}
