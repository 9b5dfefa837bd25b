//! Images as single files: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` / `podman load` read).

use crate::oci::{ANNOTATION_REF_NAME, Descriptor, MEDIA_LAYER_TAR, Manifest};
use crate::store::{Layout, StoreError};
use serde_json::json;
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;

const MAX_MANIFEST: u64 = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("invalid manifest {digest}: {problem}")]
    Manifest { digest: String, problem: String },
}

/// Writes `manifest` (tagged `tag`) and its blobs from `layout` as an OCI archive.
pub fn write_oci_archive(
    layout: &Layout,
    manifest: &Descriptor,
    tag: &str,
    target: &Path,
) -> Result<(), ArchiveError> {
    let parsed = read_manifest(layout, manifest)?;
    let mut tagged = manifest.clone();
    tagged
        .annotations
        .insert(ANNOTATION_REF_NAME.into(), tag.into());
    let index = crate::oci::Index {
        manifests: vec![tagged],
        ..Default::default()
    };
    write_tar(target, |tar| {
        append_bytes(tar, "oci-layout", b"{\"imageLayoutVersion\":\"1.0.0\"}")?;
        append_bytes(
            tar,
            "index.json",
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        append_dir(tar, "blobs/")?;
        append_dir(tar, "blobs/sha256/")?;
        let mut blobs: Vec<&Descriptor> = parsed.layers.iter().collect();
        blobs.push(&parsed.config);
        blobs.push(manifest);
        blobs.sort_by(|a, b| a.digest.cmp(&b.digest));
        blobs.dedup_by(|a, b| a.digest == b.digest);
        for blob in blobs {
            let name = format!("blobs/sha256/{}", hex_of(&blob.digest));
            append_blob(tar, layout, &blob.digest, &name)?;
        }
        Ok(())
    })
}

/// Writes `manifest` from `layout` as a docker-archive tagged `repo_tag` (`name:tag`).
pub fn write_docker_archive(
    layout: &Layout,
    manifest: &Descriptor,
    repo_tag: &str,
    target: &Path,
) -> Result<(), ArchiveError> {
    let parsed = read_manifest(layout, manifest)?;
    let config_name = format!("{}.json", hex_of(&parsed.config.digest));
    let layer_names: Vec<String> = parsed
        .layers
        .iter()
        .map(|l| {
            let suffix = if l.media_type == MEDIA_LAYER_TAR {
                "tar"
            } else {
                "tar.gz"
            };
            format!("{}.{suffix}", hex_of(&l.digest))
        })
        .collect();
    let docker_manifest =
        json!([{ "Config": config_name, "RepoTags": [repo_tag], "Layers": layer_names }]);
    write_tar(target, |tar| {
        append_blob(tar, layout, &parsed.config.digest, &config_name)?;
        let mut written = std::collections::BTreeSet::new();
        for (layer, name) in parsed.layers.iter().zip(&layer_names) {
            if written.insert(name.clone()) {
                append_blob(tar, layout, &layer.digest, name)?;
            }
        }
        append_bytes(
            tar,
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).unwrap_or_default(),
        )
    })
}

fn read_manifest(layout: &Layout, manifest: &Descriptor) -> Result<Manifest, ArchiveError> {
    let bytes = layout.read_blob(&manifest.digest, MAX_MANIFEST)?;
    serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Manifest {
        digest: manifest.digest.clone(),
        problem: e.to_string(),
    })
}

fn hex_of(digest: &str) -> &str {
    digest.split_once(':').map_or(digest, |(_, hex)| hex)
}

type Tar = tar::Builder<BufWriter<tempfile::NamedTempFile>>;

/// Writes the archive next to `target` and renames it into place: a failed build never leaves
/// a truncated archive behind under the name the user asked for.
fn write_tar(
    target: &Path,
    fill: impl FnOnce(&mut Tar) -> Result<(), ArchiveError>,
) -> Result<(), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: target.display().to_string(),
        source,
    };
    let parent = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let file = tempfile::Builder::new()
        .prefix(".mlambda-archive-")
        .tempfile_in(parent)
        .map_err(io_err)?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
    fill(&mut tar)?;
    let file = tar
        .into_inner()
        .map_err(io_err)?
        .into_inner()
        .map_err(|e| io_err(e.into_error()))?;
    file.as_file().sync_all().map_err(io_err)?;
    file.persist(target).map_err(|e| io_err(e.error))?;
    Ok(())
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    header
}

fn append_dir(tar: &mut Tar, name: &str) -> Result<(), ArchiveError> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
        .map_err(|source| ArchiveError::Io {
            path: name.into(),
            source,
        })
}

fn append_bytes(tar: &mut Tar, name: &str, bytes: &[u8]) -> Result<(), ArchiveError> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
        .map_err(|source| ArchiveError::Io {
            path: name.into(),
            source,
        })
}

fn append_blob(
    tar: &mut Tar,
    layout: &Layout,
    digest: &str,
    name: &str,
) -> Result<(), ArchiveError> {
    let file: File = layout.open_blob(digest)?;
    let size = file
        .metadata()
        .map_err(|source| ArchiveError::Io {
            path: name.into(),
            source,
        })?
        .len();
    let mut h = header(tar::EntryType::Regular, 0o644, size);
    tar.append_data(&mut h, name, file)
        .map_err(|source| ArchiveError::Io {
            path: name.into(),
            source,
        })
}
