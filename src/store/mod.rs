//! The local file-backed store: one OCI image layout per repository, so skopeo, umoci and any
//! OCI tool read it with no server, and one copy of each blob shared by hard links.
//!
//! ```text
//! ROOT/_blobs/blobs/sha256/…   the pool: every blob once
//! ROOT/_tmp/                   temporary files (same filesystem, so renames are atomic)
//! ROOT/_locks/                 index.json locks, one per repository (named by a hash of its
//!                              name, which may be longer than a file name), and the writers
//!                              lock that keeps gc away from work in progress (`writers.rs`)
//! ROOT/_uploads/<id>/          blob upload sessions of the registry server
//! ROOT/<repository>/           a standard OCI image layout whose blobs link into the pool
//! ```
//! Names starting with '_' can never be repositories (the distribution spec forbids them).
//!
//! A repository's layout is an image source and sink (`image.rs`), so base imports, pushes,
//! pulls and archives read and write it as they do any other place.

pub mod gc;
mod image;
mod layout;
pub mod manifests;
pub mod uploads;
pub mod writeback;
mod writers;

pub use crate::oci::{Reference, check_repository, is_tag};
pub use layout::{BlobWriter, Layout, StoreError};
use layout::{Housekeeping, io_err};
pub use manifests::{BlobRemoval, MANIFEST_LIMIT, Mutability};
use std::path::{Path, PathBuf};
pub use uploads::Uploads;

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        for sub in ["_blobs/blobs/sha256", "_tmp", "_locks", "_uploads"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir, "cannot create the store"))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The layout of `repository` (a checked name such as `team/model`), created when missing.
    pub fn repository(&self, repository: &str) -> Result<Layout, StoreError> {
        check_repository(repository).map_err(|problem| StoreError::Invalid {
            path: self.root.clone(),
            problem,
        })?;
        Layout::create_with(&self.root.join(repository), self.housekeeping(repository))
    }

    /// An existing repository, or `None`.
    pub fn existing_repository(&self, repository: &str) -> Option<Layout> {
        check_repository(repository).ok()?;
        let dir = self.root.join(repository);
        is_repository(&dir).then(|| Layout::open_with(&dir, self.housekeeping(repository)))
    }

    /// Whether some repository of the store holds the blob (for a mount that names no
    /// source).
    pub fn pool_holds(&self, digest: &str) -> bool {
        layout::held_in_pool(&self.pool_dir(), digest)
    }

    /// The blob upload sessions.
    pub fn uploads(&self) -> Uploads {
        Uploads::new(&self.root)
    }

    /// Every repository (a folder holding an `oci-layout` file), sorted.
    pub fn repositories(&self) -> Result<Vec<String>, StoreError> {
        let mut found = Vec::new();
        let mut todo = vec![String::new()];
        while let Some(prefix) = todo.pop() {
            let dir = self.root.join(&prefix);
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&dir, "cannot list")(e)),
            };
            let is_layout = !prefix.is_empty() && is_repository(&dir);
            for entry in entries.flatten() {
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if !entry.file_type().is_ok_and(|t| t.is_dir()) || (is_layout && name == "blobs") {
                    continue;
                }
                let path = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                if check_repository(&path).is_ok() {
                    todo.push(path);
                }
            }
            if is_layout {
                found.push(prefix);
            }
        }
        found.sort();
        Ok(found)
    }

    fn pool_dir(&self) -> PathBuf {
        self.root.join("_blobs")
    }

    /// The lock the garbage collector takes exclusively and every writer shares.
    pub(crate) fn writers_lock(&self) -> PathBuf {
        self.root.join("_locks/writers.lock")
    }

    fn housekeeping(&self, repository: &str) -> Housekeeping {
        let hashed = crate::oci::digest::sha256_of(repository.as_bytes());
        let hex = hashed.trim_start_matches("sha256:");
        Housekeeping {
            tmp: self.root.join("_tmp"),
            lock: self.root.join("_locks").join(format!("{hex}.lock")),
            pool: Some(self.pool_dir()),
            writers: Some(self.writers_lock()),
        }
    }
}

/// A repository is a layout with both its marker and its index: the marker is written last
/// when one is created, and a folder with the marker alone is an incomplete leftover of an
/// older version, which gc removes.
fn is_repository(dir: &Path) -> bool {
    dir.join("oci-layout").is_file() && dir.join("index.json").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn blobs_are_stored_once_and_linked_into_each_repository() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let one = store.repository("one").unwrap();
        let two = store.repository("team/two").unwrap();
        let mut w = one.blob_writer().unwrap();
        w.write_all(b"weights").unwrap();
        let (digest, size) = one.commit_blob(w).unwrap();
        assert_eq!(size, 7);
        let (again, _) = two.put_blob(b"weights").unwrap();
        assert_eq!(again, digest);
        let inode = |l: &Layout| {
            std::fs::metadata(l.blob_path(&digest).unwrap())
                .unwrap()
                .ino()
        };
        assert_eq!(inode(&one), inode(&two));
        assert_eq!(
            std::fs::read_dir(dir.path().join("_tmp")).unwrap().count(),
            0
        );
    }
}
