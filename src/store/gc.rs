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

/// Removes what repositories that were never completed left: an `oci-layout` with no
/// `index.json`, or a folder holding nothing but `blobs/<algorithm>/` and maybe an
/// `index.json` (a creation cut short). Their names.
fn remove_incomplete(root: &Path, dry_run: bool) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(prefix) = todo.pop() {
        let dir = root.join(&prefix);
        let marker = dir.join("oci-layout").is_file();
        let index = dir.join("index.json").is_file();
        if !prefix.is_empty() && ((marker && !index) || (!marker && only_layout_parts(&dir))) {
            if !dry_run {
                remove_repository(root, &prefix)?;
            }
            removed.push(prefix.clone());
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

/// Whether `dir` holds a `blobs` folder with only algorithm folders in it, and nothing else
/// but an `index.json`: the start of a layout, not a namespace that happens to have a
/// repository called `blobs` below it.
fn only_layout_parts(dir: &Path) -> bool {
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect()
    };
    let top = names(dir);
    top.iter().any(|n| n == "blobs")
        && top.iter().all(|n| n == "blobs" || n == "index.json")
        && names(&dir.join("blobs"))
            .iter()
            .all(|n| n == "sha256" || n == "sha512")
}

/// Removes a repository's own files (`oci-layout`, `index.json`, `blobs/<algorithm>/`), then
/// its folder and the folders above it as far as they are left empty; repositories nested
/// below it (`team/model`, even `team/blobs/model`) stay.
fn remove_repository(root: &Path, name: &str) -> Result<(), StoreError> {
    let dir = root.join(name);
    for file in ["oci-layout", "index.json"] {
        remove_file(&dir.join(file))?;
    }
    // Only the blob folders: a repository may be named `<name>/blobs/…` too.
    for (_, path) in blobs_of(&dir)? {
        remove_file(&path)?;
    }
    for algorithm in ["sha256", "sha512"] {
        let _ = fs::remove_dir(dir.join("blobs").join(algorithm));
    }
    let _ = fs::remove_dir(dir.join("blobs"));
    let mut folder = Some(dir.as_path());
    while let Some(current) = folder.filter(|p| *p != root && p.starts_with(root)) {
        // Fails (and stops) at the first folder that still holds something.
        if fs::remove_dir(current).is_err() {
            break;
        }
        folder = current.parent();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::MEDIA_MANIFEST;
    use crate::store::Mutability;
    use crate::store::manifests::{digest_like, manifest_facts};

    #[test]
    fn empty_and_incomplete_repositories_go_and_nested_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let store = Store::open(root).unwrap();
        // An image in a repository below an empty one, and one below a namespace folder
        // called `blobs`.
        store.repository("team").unwrap();
        let mut orphan = String::new();
        let mut config = String::new();
        for name in ["team/model", "ns/blobs/x"] {
            let layout = store.repository(name).unwrap();
            config = layout.put_blob(b"{}").unwrap().0;
            let manifest = format!(
                r#"{{"schemaVersion":2,"mediaType":"{MEDIA_MANIFEST}","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[]}}"#
            );
            let bytes = manifest.as_bytes();
            let facts = manifest_facts(bytes).unwrap();
            let tags = [("1", Mutability::Mutable)];
            layout
                .put_manifest(
                    bytes,
                    &digest_like(None, bytes),
                    MEDIA_MANIFEST,
                    &tags,
                    &facts,
                )
                .unwrap();
            if name == "team/model" {
                orphan = layout.put_blob(b"left by a killed build").unwrap().0;
            }
            // Gc waits for writers: this test's own layouts go first.
        }
        // An old layout with no index.json, and a creation cut short.
        fs::create_dir_all(root.join("old/blobs/sha256")).unwrap();
        fs::write(root.join("old/oci-layout"), "{}").unwrap();
        fs::create_dir_all(root.join("cut/blobs/sha256")).unwrap();
        let report = collect(
            &store,
            Duration::ZERO,
            Duration::from_secs(60),
            false,
            || {},
        )
        .unwrap();
        assert_eq!(store.repositories().unwrap(), ["ns/blobs/x", "team/model"]);
        let mut gone = report.repositories.clone();
        gone.sort();
        assert_eq!(gone, ["cut", "old", "team"]);
        assert_eq!(report.repository_links, 1);
        assert_eq!(report.removed.len(), 1);
        assert_eq!(report.removed[0].0, orphan);
        for name in ["team/model", "ns/blobs/x"] {
            let layout = store.existing_repository(name).unwrap();
            assert!(layout.has_blob(&config));
            assert!(!layout.has_blob(&orphan));
        }
    }
}
