//! Garbage collection. It first takes the store's writers lock exclusively (`writers.rs`),
//! so no build, push or request is writing meanwhile: whatever the grace period, the files
//! of work in progress are never touched, while what a killed writer left is fair game.
//! Then, in order:
//! - expired upload sessions, and temporary files older than the grace period;
//! - incomplete repositories (a folder with `blobs` and no `oci-layout`, or an `oci-layout`
//!   with no `index.json`, left by older versions);
//! - in each repository, the links to blobs that no manifest its `index.json` lists names
//!   (directly or through an index), linked longer ago than the grace period; a repository
//!   left with no manifest and no blob goes too;
//! - pool blobs that no repository links (link count 1) and no manifest of any repository
//!   names, older than the grace period.

use super::layout::{StoreError, blob_path_in, io_err};
use super::{Layout, MANIFEST_LIMIT, Store};
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
    /// Repository links to blobs no manifest of the repository names.
    pub repository_links: usize,
    /// Incomplete or empty repositories removed.
    pub repositories: Vec<String>,
}

impl GcReport {
    pub fn freed_bytes(&self) -> u64 {
        self.removed.iter().map(|(_, size)| size).sum::<u64>() + self.upload_bytes
    }
}

/// Collects the store's garbage; `dry_run` only reports. `waiting` is told once when gc has
/// to wait for writers at work.
pub fn collect(
    store: &Store,
    grace: Duration,
    upload_max_age: Duration,
    dry_run: bool,
    waiting: impl FnOnce(),
) -> Result<GcReport, StoreError> {
    let _alone = super::writers::exclusive(&store.writers_lock(), waiting)?;
    let mut report = GcReport::default();
    let (count, bytes) = store.uploads().expire(upload_max_age, dry_run)?;
    report.uploads_expired = count;
    report.upload_bytes = bytes;
    report.temporary_files = remove_old_files(&store.root().join("_tmp"), grace, dry_run)?;
    report.repositories = remove_incomplete(store.root(), dry_run)?;
    let mut referenced = BTreeSet::new();
    for name in store.repositories()? {
        let Some(layout) = store.existing_repository(&name) else {
            continue;
        };
        let named = reachable(&layout)?;
        let (removed, kept, young) = sweep_repository(&layout, &named, grace, dry_run)?;
        report.repository_links += removed;
        report.kept_young += young;
        if named.is_empty() && kept == 0 && !dry_run {
            remove_repository(store.root(), &name)?;
            report.repositories.push(name);
        }
        referenced.extend(named);
    }
    sweep_pool(store, &referenced, grace, dry_run, &mut report)?;
    Ok(report)
}

/// Every digest the manifests of `index.json` name, the manifests included, following
/// indexes down. Read leniently (any `digest` anywhere in a manifest counts), so that a
/// manifest of a kind this version does not know never loses a blob.
fn reachable(layout: &Layout) -> Result<BTreeSet<String>, StoreError> {
    let mut todo: Vec<String> = layout
        .read_index()?
        .manifests
        .into_iter()
        .map(|m| m.digest)
        .collect();
    let mut named = BTreeSet::new();
    while let Some(digest) = todo.pop() {
        if !named.insert(digest.clone()) {
            continue;
        }
        let Ok(bytes) = layout.read_blob(&digest, MANIFEST_LIMIT) else {
            continue;
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let mut found = Vec::new();
        digests_in(&value, &mut found);
        named.extend(found);
        let children = value.get("manifests").and_then(|m| m.as_array());
        for child in children.into_iter().flatten() {
            if let Some(digest) = child.get("digest").and_then(|d| d.as_str()) {
                todo.push(digest.to_string());
            }
        }
    }
    Ok(named)
}

fn digests_in(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(object) => {
            for (key, value) in object {
                match (key.as_str(), value.as_str()) {
                    ("digest", Some(digest)) => found.push(digest.to_string()),
                    _ => digests_in(value, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| digests_in(v, found)),
        _ => {}
    }
}

/// Removes the repository's links to blobs not in `named` and linked longer ago than
/// `grace`; how many went, how many blobs stay, and how many were kept for being young.
fn sweep_repository(
    layout: &Layout,
    named: &BTreeSet<String>,
    grace: Duration,
    dry_run: bool,
) -> Result<(usize, usize, usize), StoreError> {
    let (mut removed, mut kept, mut young) = (0, 0, 0);
    for (digest, path) in blobs_of(layout.dir())? {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if named.contains(&digest) {
            kept += 1;
            continue;
        }
        // A link's age is its inode's last change (a new link changes it): a blob mounted
        // or re-linked a moment ago is young whatever the age of its bytes.
        let changed = SystemTime::UNIX_EPOCH + Duration::from_secs(meta.ctime().max(0) as u64);
        let linked = meta.modified().map_or(changed, |m| m.max(changed));
        if age_of(linked) < grace {
            young += 1;
            kept += 1;
            continue;
        }
        if !dry_run {
            remove_file(&path)?;
        }
        removed += 1;
    }
    Ok((removed, kept, young))
}

/// The blobs under `dir/blobs/<algorithm>/`, as digests and paths.
fn blobs_of(dir: &Path) -> Result<Vec<(String, std::path::PathBuf)>, StoreError> {
    let mut found = Vec::new();
    for algorithm in ["sha256", "sha512"] {
        let folder = dir.join("blobs").join(algorithm);
        let entries = match fs::read_dir(&folder) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err(&folder, "cannot list")(e)),
        };
        for entry in entries.flatten() {
            let digest = format!("{algorithm}:{}", entry.file_name().to_string_lossy());
            if let Ok(path) = blob_path_in(dir, &digest) {
                found.push((digest, path));
            }
        }
    }
    Ok(found)
}

fn sweep_pool(
    store: &Store,
    referenced: &BTreeSet<String>,
    grace: Duration,
    dry_run: bool,
    report: &mut GcReport,
) -> Result<(), StoreError> {
    for (digest, path) in blobs_of(&store.root().join("_blobs"))? {
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
            remove_file(&path)?;
        }
        report.removed.push((digest, meta.len()));
    }
    Ok(())
}

fn remove_file(path: &Path) -> Result<(), StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(path, "cannot remove")(e)),
    }
}

/// Removes the folders of repositories that were never completed: `blobs` with no
/// `oci-layout`, or an `oci-layout` with no `index.json`. Their names.
fn remove_incomplete(root: &Path, dry_run: bool) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(prefix) = todo.pop() {
        let dir = root.join(&prefix);
        let marker = dir.join("oci-layout").is_file();
        let index = dir.join("index.json").is_file();
        let blobs = dir.join("blobs").is_dir();
        if !prefix.is_empty() && ((marker && !index) || (!marker && blobs)) {
            if !dry_run {
                remove_repository(root, &prefix)?;
            }
            removed.push(prefix);
            continue;
        }
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || name.starts_with('_') || (marker && name == "blobs") {
                continue;
            }
            todo.push(if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            });
        }
    }
    Ok(removed)
}

/// Removes a repository's folder, then the folders above it that it leaves empty.
fn remove_repository(root: &Path, name: &str) -> Result<(), StoreError> {
    let dir = root.join(name);
    match fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&dir, "cannot remove the repository")(e)),
    }
    let mut parent = dir.parent();
    while let Some(folder) = parent.filter(|p| *p != root && p.starts_with(root)) {
        // Fails (and stops) at the first folder that still holds something.
        if fs::remove_dir(folder).is_err() {
            break;
        }
        parent = folder.parent();
    }
    Ok(())
}

/// How long ago `time` was (zero for a time in the future).
fn age_of(time: SystemTime) -> Duration {
    SystemTime::now()
        .duration_since(time)
        .unwrap_or(Duration::ZERO)
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
