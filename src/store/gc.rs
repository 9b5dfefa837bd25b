//! Garbage collection of the pool: a pooled blob is removed only when no repository links it
//! (link count 1), no manifest of any repository refers to it, and it is older than a grace
//! period, so a push in progress (whose blobs are fresh) never loses one. Expired upload
//! sessions and stale temporary files go too.

use super::Store;
use super::layout::{StoreError, blob_path_in, io_err};
use super::manifests::manifest_facts;
use crate::image::Source;
use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Pool blobs removed (or that would be, in a dry run): digest and size.
    pub removed: Vec<(String, u64)>,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub kept_young: usize,
    pub uploads_expired: usize,
    pub upload_bytes: u64,
    pub temporary_files: usize,
}

impl GcReport {
    pub fn freed_bytes(&self) -> u64 {
        self.removed.iter().map(|(_, size)| size).sum::<u64>() + self.upload_bytes
    }
}

/// Collects the store's garbage; `dry_run` only reports.
pub fn collect(
    store: &Store,
    grace: Duration,
    upload_max_age: Duration,
    dry_run: bool,
) -> Result<GcReport, StoreError> {
    let mut report = GcReport::default();
    let (count, bytes) = store.uploads().expire(upload_max_age, dry_run)?;
    report.uploads_expired = count;
    report.upload_bytes = bytes;
    report.temporary_files = remove_old_files(&store.root().join("_tmp"), grace, dry_run)?;
    let referenced = referenced_blobs(store)?;
    let pool = store.root().join("_blobs");
    for algorithm in ["sha256", "sha512"] {
        let dir = pool.join("blobs").join(algorithm);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(StoreError::Io {
                    path: dir,
                    action: "cannot list",
                    source: e,
                });
            }
        };
        for entry in entries.flatten() {
            let digest = format!("{algorithm}:{}", entry.file_name().to_string_lossy());
            let Ok(path) = blob_path_in(&pool, &digest) else {
                continue;
            };
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if !meta.is_file() || meta.nlink() > 1 || referenced.contains(&digest) {
                continue;
            }
            if !older_than(&meta, grace) {
                report.kept_young += 1;
                continue;
            }
            if !dry_run {
                match fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(StoreError::Io {
                            path,
                            action: "cannot remove",
                            source: e,
                        });
                    }
                }
            }
            report.removed.push((digest, meta.len()));
        }
    }
    Ok(report)
}

/// Every digest that a manifest of any repository names (the manifests themselves, their
/// config, layers, children and subjects), following indexes down.
fn referenced_blobs(store: &Store) -> Result<BTreeSet<String>, StoreError> {
    let mut referenced = BTreeSet::new();
    for name in store.repositories()? {
        let Some(layout) = store.existing_repository(&name) else {
            continue;
        };
        let mut todo: Vec<String> = layout
            .read_index()?
            .manifests
            .into_iter()
            .map(|m| m.digest)
            .collect();
        while let Some(digest) = todo.pop() {
            if !referenced.insert(digest.clone()) {
                continue;
            }
            let Ok(manifest) = Source::manifest(&layout, Some(&digest)) else {
                continue;
            };
            let Ok(facts) = manifest_facts(&manifest.bytes) else {
                continue;
            };
            referenced.extend(facts.blobs);
            referenced.extend(facts.foreign);
            referenced.extend(facts.subject);
            todo.extend(facts.manifests);
        }
    }
    Ok(referenced)
}

fn older_than(meta: &fs::Metadata, age: Duration) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .is_some_and(|elapsed| elapsed >= age)
}

fn remove_old_files(dir: &Path, age: Duration, dry_run: bool) -> Result<usize, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(dir, "cannot list")(e)),
    };
    let mut count = 0;
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && older_than(&meta, age) {
            if !dry_run {
                let _ = fs::remove_file(entry.path());
            }
            count += 1;
        }
    }
    Ok(count)
}
