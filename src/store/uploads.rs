//! Blob upload sessions: `ROOT/_uploads/<id>/{data,state.json}`.
//!
//! The id is 128 random bits in hex, so a session cannot be guessed; `data` grows chunk by
//! chunk and is verified against the client's digest, fsynced and linked into the pool when
//! the upload completes. A session nobody finishes expires.

use super::layout::{Layout, StoreError, io_err, write_atomically};
use crate::oci::digest::{Algorithm, digest_reader, parse_digest};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// How long an abandoned upload is kept.
pub const UPLOAD_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadState {
    pub repository: String,
    /// Unix seconds.
    pub created: u64,
}

#[derive(Debug, Clone)]
pub struct Uploads {
    dir: PathBuf,
}

/// Why an upload could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    #[error("the content's digest is {actual}, not {expected}")]
    Mismatch { expected: String, actual: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Uploads {
    pub(crate) fn new(root: &Path) -> Uploads {
        Uploads {
            dir: root.join("_uploads"),
        }
    }

    /// A new empty session for `repository`; its id.
    pub fn create(&self, repository: &str) -> Result<String, StoreError> {
        let mut raw = [0u8; 16];
        getrandom::fill(&mut raw).map_err(|e| StoreError::Io {
            path: self.dir.clone(),
            action: "cannot get random bytes for an upload id",
            source: io::Error::other(e.to_string()),
        })?;
        let id = hex::encode(raw);
        let dir = self.dir.join(&id);
        fs::create_dir_all(&dir).map_err(io_err(&dir, "cannot create the upload"))?;
        let data = dir.join("data");
        fs::File::create(&data).map_err(io_err(&data, "cannot create the upload"))?;
        let state = UploadState {
            repository: repository.to_string(),
            created: unix_now(),
        };
        let bytes = serde_json::to_vec(&state).map_err(|e| StoreError::Invalid {
            path: dir.clone(),
            problem: e.to_string(),
        })?;
        // Its temporary file in the session's own folder, out of gc's way.
        write_atomically(&dir, &dir.join("state.json"), &bytes)?;
        Ok(id)
    }

    /// The file a session's bytes go to, when `id` is a well-formed id of a live session.
    pub fn data_path(&self, id: &str) -> Option<PathBuf> {
        let well_formed =
            id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let path = self.dir.join(id).join("data");
        (well_formed && path.is_file()).then_some(path)
    }

    /// A live session's state, or `None` (unknown, malformed or already finished).
    pub fn state(&self, id: &str) -> Result<Option<UploadState>, StoreError> {
        let Some(data) = self.data_path(id) else {
            return Ok(None);
        };
        let path = data.with_file_name("state.json");
        match fs::read(&path) {
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).ok()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                path,
                action: "cannot read",
                source: e,
            }),
        }
    }

    /// Bytes received so far.
    pub fn size(&self, id: &str) -> Result<u64, StoreError> {
        let path = self.data_path(id).ok_or_else(|| StoreError::Invalid {
            path: self.dir.join(id),
            problem: "no such upload".into(),
        })?;
        Ok(fs::metadata(&path)
            .map_err(io_err(&path, "cannot read"))?
            .len())
    }

    /// Cancels a session; whether it existed.
    pub fn remove(&self, id: &str) -> Result<bool, StoreError> {
        if self.data_path(id).is_none() {
            return Ok(false);
        }
        let dir = self.dir.join(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::Io {
                path: dir,
                action: "cannot remove the upload",
                source: e,
            }),
        }
    }

    /// Completes a session: checks the data against `digest` (trusting `known`, a digest
    /// computed while the bytes arrived, when it covers all of them), fsyncs it, links it into
    /// the pool and the layout `layout` opens (created only now, for a blob that is good),
    /// and removes the session. Returns the size. On a mismatch the session is removed too:
    /// its content can never become that blob.
    pub fn finish(
        &self,
        id: &str,
        layout: impl FnOnce() -> Result<Layout, StoreError>,
        digest: &str,
        known: Option<(String, u64)>,
    ) -> Result<u64, FinishError> {
        let data = self.data_path(id).ok_or_else(|| StoreError::Invalid {
            path: self.dir.join(id),
            problem: "no such upload".into(),
        })?;
        let (algorithm, _) = parse_digest(digest).map_err(|problem| StoreError::Invalid {
            path: data.clone(),
            problem,
        })?;
        let file = fs::File::open(&data).map_err(io_err(&data, "cannot open"))?;
        let size = file.metadata().map_err(io_err(&data, "cannot read"))?.len();
        let actual = match known {
            Some((known, hashed)) if hashed == size && algorithm == Algorithm::Sha256 => known,
            _ => {
                digest_reader(algorithm, &file)
                    .map_err(io_err(&data, "cannot read"))?
                    .0
            }
        };
        if actual != digest {
            self.remove(id)?;
            return Err(FinishError::Mismatch {
                expected: digest.to_string(),
                actual,
            });
        }
        file.sync_all().map_err(io_err(&data, "cannot fsync"))?;
        layout()?.adopt_file(&data, digest)?;
        self.remove(id)?;
        Ok(size)
    }

    /// Removes the sessions last touched more than `max_age` ago; their count and bytes.
    pub fn expire(&self, max_age: Duration, dry_run: bool) -> Result<(usize, u64), StoreError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => {
                return Err(StoreError::Io {
                    path: self.dir.clone(),
                    action: "cannot list",
                    source: e,
                });
            }
        };
        let (mut count, mut bytes) = (0, 0);
        for entry in entries.flatten() {
            let dir = entry.path();
            let data = dir.join("data");
            let touched = fs::metadata(&data)
                .or_else(|_| fs::metadata(&dir))
                .and_then(|m| m.modified())
                .ok();
            let old = touched
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > max_age);
            if !old {
                continue;
            }
            let size = fs::metadata(&data).map(|m| m.len()).unwrap_or(0);
            if !dry_run {
                match fs::remove_dir_all(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StoreError::Io {
                            path: dir,
                            action: "cannot remove the expired upload",
                            source: e,
                        });
                    }
                }
            }
            count += 1;
            bytes += size;
        }
        Ok((count, bytes))
    }
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
