//! Which files of the model folder go into the image, and where they land under `/model/files`.
//!
//! Everything is resolved and checked here, before any layer is written, so that a bad entry
//! fails the command before a version number is taken.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// Files of the folder that describe the model rather than belong to it.
pub const CONTRACT_FILES: &[&str] = &[
    "serving.yaml",
    "serving.yml",
    "contract.prototxt",
    "contract.protobin",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { size: u64, executable: bool },
    Symlink { target: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadEntry {
    /// Path inside `/model/files`, '/'-separated, no leading or trailing slash.
    pub rel: String,
    pub source: PathBuf,
    pub kind: EntryKind,
}

/// All entries, parents before children, sorted by path; every parent directory is present.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    pub entries: Vec<PayloadEntry>,
    pub warnings: Vec<String>,
}

/// A payload entry as written in serving.yaml, with where it was written (for messages).
#[derive(Debug, Clone)]
pub struct RequestedEntry {
    pub path: String,
    /// "serving.yaml:7:5" — empty when the entry does not come from a file.
    pub location: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("{location}payload entry '{entry}' {problem}")]
    Entry {
        location: String,
        entry: String,
        problem: String,
    },
    #[error("{path}: {problem}")]
    File { path: PathBuf, problem: String },
}

impl Payload {
    pub fn total_file_bytes(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::File { size, .. } => size,
                _ => 0,
            })
            .sum()
    }
}

/// Resolves the payload of `dir`: the listed entries, or by default every file except the
/// description files (serving.yaml, contract files) and hidden files.
pub fn resolve_payload(
    dir: &Path,
    requested: Option<&[RequestedEntry]>,
) -> Result<Payload, PayloadError> {
    let root = fs::canonicalize(dir).map_err(|e| PayloadError::File {
        path: dir.to_path_buf(),
        problem: format!("cannot open the model folder: {e}"),
    })?;
    let mut found = BTreeMap::new();
    let mut warnings = Vec::new();
    match requested {
        None => {
            for item in read_dir_sorted(&root)? {
                let name = item.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') || CONTRACT_FILES.contains(&name.as_str()) {
                    continue;
                }
                add_tree(&root, &item.path(), &mut found)?;
            }
        }
        Some(entries) => {
            for entry in entries {
                let path = check_entry_path(entry)?;
                let full = root.join(&path);
                let meta = fs::symlink_metadata(&full).map_err(|_| PayloadError::Entry {
                    location: entry.location.clone(),
                    entry: entry.path.clone(),
                    problem: format!("does not exist in {}", dir.display()),
                })?;
                check_folders_inside(&root, &path, entry)?;
                if entry.path.ends_with('/') && !meta.is_dir() && !meta.file_type().is_symlink() {
                    warnings.push(format!(
                        "{}payload entry '{}' ends with '/' but is a file; it is included as a file",
                        entry.location, entry.path
                    ));
                }
                add_tree(&root, &full, &mut found)?;
            }
        }
    }
    add_parents(&mut found);
    Ok(Payload {
        entries: found.into_values().collect(),
        warnings,
    })
}

fn check_entry_path(entry: &RequestedEntry) -> Result<PathBuf, PayloadError> {
    let fail = |problem: &str| PayloadError::Entry {
        location: entry.location.clone(),
        entry: entry.path.clone(),
        problem: problem.to_string(),
    };
    let trimmed = entry.path.trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Err(fail(
            "is empty; list files or folders inside the model folder",
        ));
    }
    let path = Path::new(trimmed);
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                return Err(fail(
                    "leaves the model folder ('..'); payload paths are relative to the folder",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(fail(
                    "is an absolute path; payload paths are relative to the model folder",
                ));
            }
        }
    }
    Ok(clean)
}

/// The real place of `path`, every symlink resolved, when it is outside `root`: the one rule
/// for what may reach the image through a symlink. A path that does not resolve (a dangling
/// link) has no real place, and is not outside.
fn real_place_outside(root: &Path, path: &Path) -> Option<PathBuf> {
    fs::canonicalize(path)
        .ok()
        .filter(|real| !real.starts_with(root))
}

/// Refuses an entry that goes through a symlinked folder leading out of `root` (`d/shadow`
/// with `d -> /etc`): the entry's own name is checked where it is added, its folders here.
fn check_folders_inside(
    root: &Path,
    path: &Path,
    entry: &RequestedEntry,
) -> Result<(), PayloadError> {
    let mut folder = root.to_path_buf();
    for part in path.parent().into_iter().flat_map(Path::components) {
        folder.push(part);
        if let Some(real) = real_place_outside(root, &folder) {
            let through = folder.strip_prefix(root).unwrap_or(&folder);
            return Err(PayloadError::Entry {
                location: entry.location.clone(),
                entry: entry.path.clone(),
                problem: format!(
                    "goes through '{}', a symlink to '{}', which is outside the model folder; copy the files into the folder instead",
                    through.display(),
                    real.display()
                ),
            });
        }
    }
    Ok(())
}

/// Adds `path` (a file, a symlink, or a folder and everything below it) to `found`.
fn add_tree(
    root: &Path,
    path: &Path,
    found: &mut BTreeMap<String, PayloadEntry>,
) -> Result<(), PayloadError> {
    let rel = relative_name(root, path)?;
    let meta = fs::symlink_metadata(path).map_err(|e| io_problem(path, "cannot read", e))?;
    let file_type = meta.file_type();
    let kind = if file_type.is_symlink() {
        EntryKind::Symlink {
            target: inside_link_target(root, path)?,
        }
    } else if file_type.is_dir() {
        EntryKind::Dir
    } else if file_type.is_file() {
        // Opened once now: a file the build could not read fails the command before a
        // version is taken, instead of failing the version.
        fs::File::open(path).map_err(|e| PayloadError::File {
            path: path.to_path_buf(),
            problem: format!(
                "cannot be read ({e}); make it readable, or leave it out of the payload"
            ),
        })?;
        EntryKind::File {
            size: meta.len(),
            executable: meta.permissions().mode() & 0o111 != 0,
        }
    } else {
        return Err(PayloadError::File {
            path: path.to_path_buf(),
            problem: "is not a regular file, folder or symlink (device, socket or pipe); remove it from the payload"
                .into(),
        });
    };
    let is_dir = kind == EntryKind::Dir;
    found.insert(
        rel.clone(),
        PayloadEntry {
            rel,
            source: path.to_path_buf(),
            kind,
        },
    );
    if is_dir {
        for item in read_dir_sorted(path)? {
            if item.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            add_tree(root, &item.path(), found)?;
        }
    }
    Ok(())
}

/// A symlink stays a symlink in the image when what it points to is inside the model folder;
/// anything else would ship a link to a file the image does not have.
fn inside_link_target(root: &Path, link: &Path) -> Result<String, PayloadError> {
    let target = fs::read_link(link).map_err(|e| io_problem(link, "cannot read the symlink", e))?;
    let outside = || PayloadError::File {
        path: link.to_path_buf(),
        problem: format!(
            "is a symlink to '{}', which is outside the model folder; copy the file into the folder instead",
            target.display()
        ),
    };
    if target.is_absolute() {
        return Err(outside());
    }
    // Resolve lexically: the target may not exist yet on this machine, and the image only
    // needs the link to stay inside /model/files.
    let parent = link.parent().unwrap_or(root);
    let mut resolved = parent
        .strip_prefix(root)
        .map_err(|_| outside())?
        .to_path_buf();
    for component in target.components() {
        match component {
            Component::Normal(part) => resolved.push(part),
            Component::CurDir => {}
            Component::ParentDir => {
                if !resolved.pop() {
                    return Err(outside());
                }
            }
            _ => return Err(outside()),
        }
    }
    if real_place_outside(root, link).is_some() {
        return Err(outside());
    }
    target
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| PayloadError::File {
            path: link.to_path_buf(),
            problem: "has a target that is not valid UTF-8".into(),
        })
}

fn add_parents(found: &mut BTreeMap<String, PayloadEntry>) {
    let parents: Vec<(String, PathBuf)> = found
        .values()
        .flat_map(|entry| {
            let mut out = Vec::new();
            let mut rel = entry.rel.as_str();
            let mut source = entry.source.clone();
            while let Some((parent, _)) = rel.rsplit_once('/') {
                source.pop();
                out.push((parent.to_string(), source.clone()));
                rel = parent;
            }
            out
        })
        .collect();
    for (rel, source) in parents {
        found.entry(rel.clone()).or_insert(PayloadEntry {
            rel,
            source,
            kind: EntryKind::Dir,
        });
    }
}

fn relative_name(root: &Path, path: &Path) -> Result<String, PayloadError> {
    let rel = path.strip_prefix(root).map_err(|_| PayloadError::File {
        path: path.to_path_buf(),
        problem: "is outside the model folder".into(),
    })?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    parts
        .map(|p| p.join("/"))
        .ok_or_else(|| PayloadError::File {
            path: path.to_path_buf(),
            problem: "has a name that is not valid UTF-8; rename it".into(),
        })
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<fs::DirEntry>, PayloadError> {
    let mut items = fs::read_dir(dir)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| io_problem(dir, "cannot list", e))?;
    items.sort_by_key(|e| e.file_name());
    Ok(items)
}

fn io_problem(path: &Path, what: &str, error: std::io::Error) -> PayloadError {
    PayloadError::File {
        path: path.to_path_buf(),
        problem: format!("{what}: {error}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(payload: &Payload) -> Vec<&str> {
        payload.entries.iter().map(|e| e.rel.as_str()).collect()
    }

    fn folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("src/pkg")).unwrap();
        fs::write(dir.path().join("src/pkg/a.py"), "a").unwrap();
        fs::write(dir.path().join("src/func_main.py"), "f").unwrap();
        fs::write(dir.path().join("requirements.txt"), "r").unwrap();
        fs::write(dir.path().join("serving.yaml"), "kind: Model").unwrap();
        fs::write(dir.path().join(".hidden"), "h").unwrap();
        dir
    }

    fn entry(path: &str) -> RequestedEntry {
        RequestedEntry {
            path: path.into(),
            location: "serving.yaml:3:5: ".into(),
        }
    }

    #[test]
    fn default_payload_skips_description_and_hidden_files() {
        let dir = folder();
        let payload = resolve_payload(dir.path(), None).unwrap();
        assert_eq!(
            names(&payload),
            [
                "requirements.txt",
                "src",
                "src/func_main.py",
                "src/pkg",
                "src/pkg/a.py"
            ]
        );
    }

    #[test]
    fn listed_entries_bring_their_parents() {
        let dir = folder();
        let payload = resolve_payload(dir.path(), Some(&[entry("src/pkg/a.py")])).unwrap();
        assert_eq!(names(&payload), ["src", "src/pkg", "src/pkg/a.py"]);
    }

    #[test]
    fn escaping_entries_are_refused_with_their_location() {
        let dir = folder();
        for bad in ["../x", "/etc/passwd", "src/../../x"] {
            let err = resolve_payload(dir.path(), Some(&[entry(bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("serving.yaml:3:5: payload entry"), "{err}");
        }
        let err = resolve_payload(dir.path(), Some(&[entry("nltk_data")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn symlinks_inside_are_kept_and_outside_refused() {
        let dir = folder();
        std::os::unix::fs::symlink("func_main.py", dir.path().join("src/link.py")).unwrap();
        let payload = resolve_payload(dir.path(), None).unwrap();
        let link = payload
            .entries
            .iter()
            .find(|e| e.rel == "src/link.py")
            .unwrap();
        assert_eq!(
            link.kind,
            EntryKind::Symlink {
                target: "func_main.py".into()
            }
        );

        std::os::unix::fs::symlink("/etc/hostname", dir.path().join("src/out")).unwrap();
        let err = resolve_payload(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("outside the model folder"), "{err}");
        fs::remove_file(dir.path().join("src/out")).unwrap();
        std::os::unix::fs::symlink("../../..", dir.path().join("src/up")).unwrap();
        assert!(resolve_payload(dir.path(), None).is_err());
    }

    #[test]
    fn entries_through_a_symlinked_folder_outside_are_refused() {
        let dir = folder();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir_all(outside.path().join("sub")).unwrap();
        fs::write(outside.path().join("secret"), "s").unwrap();
        fs::write(outside.path().join("sub/secret"), "s").unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("d")).unwrap();
        std::os::unix::fs::symlink("../d", dir.path().join("src/again")).unwrap();
        for bad in ["d/secret", "d/sub", "d/sub/secret", "src/again/secret"] {
            let err = resolve_payload(dir.path(), Some(&[entry(bad)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("serving.yaml:3:5: payload entry '{bad}'"))
                    && err.contains("a symlink to")
                    && err.contains("outside the model folder"),
                "{bad}: {err}"
            );
        }
        // A symlinked folder that stays inside brings only the folder's own files.
        std::os::unix::fs::symlink("src/pkg", dir.path().join("pkg")).unwrap();
        let payload = resolve_payload(dir.path(), Some(&[entry("pkg/a.py")])).unwrap();
        assert_eq!(names(&payload), ["pkg", "pkg/a.py"]);
    }
}
