//! `mlambda base import`: a runtime image brought into the local store from a registry, an OCI
//! layout, an OCI archive or a `docker save` archive (legacy or OCI form), its bytes kept as
//! they are. Where it came from (and, for a registry, the digest the reference resolved to) is
//! kept next to it in `base/<NAME>.source.json`.

use super::{RUNTIME_TAG, runtime_repository};
use crate::oci::digest::HashingReader;
use crate::oci::{self, Descriptor, Index, MEDIA_CONFIG, MEDIA_MANIFEST, Manifest};
use crate::oci::{Location, RegistryReference, WantedPlatform};
use crate::remote::{ConnectOptions, Quiet, Registry, RemoteError, Target};
use crate::store::{Layout, Store, StoreError};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

const MAX_JSON: u64 = 4 * 1024 * 1024;

/// How an import goes: the platform an index is resolved to, how to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `os/architecture[/variant]`; `linux/<this machine's architecture>` by default.
    pub platform: Option<String>,
    pub connect: ConnectOptions,
}

/// Where an imported runtime came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Origin {
    /// The source as given (paths made absolute).
    pub source: String,
    /// For a registry: `host[:port]/repository@<digest the reference resolved to>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<String>,
    /// The manifest now tagged in `base/<NAME>`.
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<String>,
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct Imported {
    pub manifest: Descriptor,
    pub origin: Origin,
}

fn origin_path(store: &Store, name: &str) -> PathBuf {
    store
        .root()
        .join(format!("{}.source.json", runtime_repository(name)))
}

/// The recorded origin of runtime `name`, when it was imported.
pub fn read_origin(store: &Store, name: &str) -> Option<Origin> {
    let bytes = std::fs::read(origin_path(store, name)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn write_origin(store: &Store, name: &str, origin: &Origin) -> Result<(), ImportError> {
    let path = origin_path(store, name);
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(origin).expect("an origin always serialises");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ImportError::Io {
            path: path.display().to_string(),
            source,
        })
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{source_name}: {problem}")]
    Invalid {
        source_name: String,
        problem: String,
    },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
}

/// Imports `source` as runtime `name` (repository `base/<name>`, tagged `latest`); returns the
/// manifest now tagged and the origin recorded.
pub fn import_base(
    store: &Store,
    name: &str,
    source: &Location,
    options: &ImportOptions,
) -> Result<Imported, ImportError> {
    let wanted = match &options.platform {
        None => WantedPlatform::host(),
        Some(text) => WantedPlatform::parse(text).map_err(|problem| ImportError::Invalid {
            source_name: format!("--platform {text}"),
            problem,
        })?,
    };
    let target = store.repository(&runtime_repository(name))?;
    let mut pinned = None;
    let manifest = match source {
        Location::Registry(text) => {
            let reference =
                RegistryReference::parse(text).map_err(|problem| ImportError::Invalid {
                    source_name: text.clone(),
                    problem,
                })?;
            let (manifest, top) = import_from_registry(&reference, &wanted, options, &target)?;
            pinned = Some(format!(
                "{}/{}@{top}",
                reference.authority, reference.repository
            ));
            manifest
        }
        Location::Layout { dir, tag } => {
            let layout = Layout::open(dir)?;
            let blobs = LayoutBlobs(&layout);
            let chosen = choose_from_index(
                &blobs,
                &layout.read_index()?,
                tag.as_deref(),
                &dir.display().to_string(),
                &wanted,
            )?;
            copy_image(&blobs, &chosen, &target)?
        }
        Location::Archive { file, tag, .. } => {
            let archive = ArchiveBlobs::open(file)?;
            if archive.has("oci-layout") && archive.has("index.json") {
                let index: Index = archive.json("index.json")?;
                let chosen =
                    choose_from_index(&archive, &index, tag.as_deref(), &archive.name, &wanted)?;
                copy_image(&archive, &chosen, &target)?
            } else if archive.has("manifest.json") {
                import_docker_archive(&archive, tag.as_deref(), &target)?
            } else {
                return Err(archive.invalid("is neither an OCI archive (oci-layout, index.json) nor a docker-archive (manifest.json)"));
            }
        }
        Location::Scratch | Location::Store(_) => {
            return Err(ImportError::Invalid {
                source_name: source.describe(),
                problem: "is not an image to import: expected oci:DIR[:TAG], an archive FILE[:TAG] or a registry reference".into(),
            });
        }
    };
    target.set_tag(RUNTIME_TAG, manifest.clone())?;
    let origin = Origin {
        source: source.describe(),
        pinned,
        digest: manifest.digest.clone(),
        platform: manifest
            .platform
            .as_ref()
            .map(|p| format!("{}/{}", p.os, p.architecture)),
    };
    write_origin(store, name, &origin)?;
    Ok(Imported { manifest, origin })
}

/// The manifest for `reference`, an index resolved to `wanted`; its config and layers pulled
/// unless `target` has them, then the manifest stored byte for byte. Returns the manifest and
/// the digest the reference itself resolved to.
fn import_from_registry(
    reference: &RegistryReference,
    wanted: &WantedPlatform,
    options: &ImportOptions,
    target: &Layout,
) -> Result<(Descriptor, String), ImportError> {
    let registry = Registry::connect(
        &Target::for_reference(reference, &options.connect)?,
        &options.connect,
    )?;
    let repository = &reference.repository;
    let source_name = format!("{}/{repository}", reference.authority);
    let invalid = |problem: String| ImportError::Invalid {
        source_name: source_name.clone(),
        problem,
    };
    let mut fetched = registry.get_manifest(repository, reference.reference(), &Quiet)?;
    let top = fetched.digest.clone();
    let mut platform = None;
    for _ in 0..4 {
        if oci::is_index_media_type(&fetched.media_type) {
            let index: Index = serde_json::from_slice(&fetched.bytes)
                .map_err(|e| invalid(format!("index {}: {e}", fetched.digest)))?;
            let chosen = wanted.pick(&index).map_err(&invalid)?;
            platform = chosen.platform.clone();
            fetched = registry.get_manifest(repository, &chosen.digest, &Quiet)?;
            continue;
        }
        let manifest: Manifest = serde_json::from_slice(&fetched.bytes).map_err(|e| {
            invalid(format!(
                "manifest {} ({}) is not an image manifest: {e}",
                fetched.digest, fetched.media_type
            ))
        })?;
        for blob in [&manifest.config].into_iter().chain(&manifest.layers) {
            if target.has_blob(&blob.digest) {
                continue;
            }
            let size = registry.pull_blob(repository, &blob.digest, target, &Quiet)?;
            if size != blob.size {
                return Err(invalid(format!(
                    "blob {} has {size} bytes, the manifest says {}",
                    blob.digest, blob.size
                )));
            }
        }
        let (digest, size) = target.put_blob(&fetched.bytes)?;
        debug_assert_eq!(digest, fetched.digest);
        let mut descriptor = Descriptor::new(&fetched.media_type, digest, size);
        descriptor.platform = platform;
        return Ok((descriptor, top));
    }
    Err(invalid("image indexes nest too deeply".into()))
}

/// Where blobs are read from.
trait Blobs {
    fn name(&self) -> String;
    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + '_>, ImportError>;

    fn read_json<T: serde::de::DeserializeOwned>(&self, digest: &str) -> Result<T, ImportError> {
        let mut bytes = Vec::new();
        self.open_blob(digest)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| ImportError::Io {
                path: self.name(),
                source,
            })?;
        let actual = crate::oci::digest::sha256_of(&bytes);
        if actual != digest {
            return Err(ImportError::Invalid {
                source_name: self.name(),
                problem: format!("blob {digest} has digest {actual}"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ImportError::Invalid {
            source_name: self.name(),
            problem: format!("blob {digest} is not valid JSON: {e}"),
        })
    }
}

struct LayoutBlobs<'a>(&'a Layout);

impl Blobs for LayoutBlobs<'_> {
    fn name(&self) -> String {
        self.0.dir().display().to_string()
    }
    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + '_>, ImportError> {
        Ok(Box::new(self.0.open_blob(digest)?))
    }
}

/// A tar archive read in place: one pass over the headers, then each member read by seeking.
struct ArchiveBlobs {
    name: String,
    path: PathBuf,
    members: HashMap<String, (u64, u64)>,
}

impl ArchiveBlobs {
    fn open(path: &Path) -> Result<ArchiveBlobs, ImportError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(|source| ImportError::Io {
            path: name.clone(),
            source,
        })?;
        let not_tar = |e: io::Error| ImportError::Invalid {
            source_name: name.clone(),
            problem: format!("not a tar archive: {e}"),
        };
        let mut archive = tar::Archive::new(file);
        let mut members = HashMap::new();
        for entry in archive.entries_with_seek().map_err(not_tar)? {
            let entry = entry.map_err(not_tar)?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let member = entry
                .path()
                .map_err(not_tar)?
                .to_string_lossy()
                .trim_start_matches("./")
                .to_string();
            members.insert(member, (entry.raw_file_position(), entry.size()));
        }
        if members.is_empty() {
            return Err(ImportError::Invalid {
                source_name: name,
                problem: "not a tar archive, or an empty one".into(),
            });
        }
        Ok(ArchiveBlobs {
            name,
            path: path.to_path_buf(),
            members,
        })
    }

    fn has(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    fn invalid(&self, problem: &str) -> ImportError {
        ImportError::Invalid {
            source_name: self.name.clone(),
            problem: problem.to_string(),
        }
    }

    fn member(&self, member: &str) -> Result<impl Read + use<>, ImportError> {
        let &(offset, size) = self
            .members
            .get(member)
            .ok_or_else(|| self.invalid(&format!("has no member '{member}'")))?;
        let io_err = |source| ImportError::Io {
            path: self.name.clone(),
            source,
        };
        let mut file = File::open(&self.path).map_err(io_err)?;
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        Ok(file.take(size))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, member: &str) -> Result<T, ImportError> {
        let mut bytes = Vec::new();
        self.member(member)?
            .take(MAX_JSON)
            .read_to_end(&mut bytes)
            .map_err(|source| ImportError::Io {
                path: self.name.clone(),
                source,
            })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| self.invalid(&format!("{member} is not valid JSON: {e}")))
    }
}

impl Blobs for ArchiveBlobs {
    fn name(&self) -> String {
        self.name.clone()
    }
    fn open_blob(&self, digest: &str) -> Result<Box<dyn Read + '_>, ImportError> {
        let (algorithm, hex) = digest
            .split_once(':')
            .ok_or_else(|| self.invalid(&format!("'{digest}' is not a digest")))?;
        Ok(Box::new(self.member(&format!("blobs/{algorithm}/{hex}"))?))
    }
}

/// The manifest for `tag` (or the only image), an index resolved to this platform.
fn choose_from_index(
    blobs: &dyn BlobsDyn,
    index: &Index,
    tag: Option<&str>,
    source: &str,
    wanted: &WantedPlatform,
) -> Result<Descriptor, ImportError> {
    let invalid = |problem: String| ImportError::Invalid {
        source_name: source.to_string(),
        problem,
    };
    let tags: Vec<&str> = index
        .manifests
        .iter()
        .filter_map(Descriptor::ref_name)
        .collect();
    let candidates: Vec<&Descriptor> = match tag {
        Some(tag) => index
            .manifests
            .iter()
            .filter(|m| m.ref_name() == Some(tag))
            .collect(),
        None => index.manifests.iter().collect(),
    };
    let mut chosen = match candidates.as_slice() {
        [one] => (*one).clone(),
        [] => {
            return Err(invalid(format!(
                "no image tagged '{}' (tags: {})",
                tag.unwrap_or_default(),
                tags.join(", ")
            )));
        }
        _ => {
            return Err(invalid(format!(
                "several images; name one with :TAG (tags: {})",
                tags.join(", ")
            )));
        }
    };
    for _ in 0..4 {
        if !oci::is_index_media_type(&chosen.media_type) {
            return Ok(chosen);
        }
        let nested: Index = blobs.read_json_dyn(&chosen.digest)?;
        chosen = wanted.pick(&nested).map_err(&invalid)?;
    }
    Err(invalid("image indexes nest too deeply".into()))
}

/// Object-safe access for `choose_from_index`, which serves both sources.
trait BlobsDyn {
    fn read_json_dyn(&self, digest: &str) -> Result<Index, ImportError>;
}

impl<T: Blobs> BlobsDyn for T {
    fn read_json_dyn(&self, digest: &str) -> Result<Index, ImportError> {
        self.read_json(digest)
    }
}

/// Copies the manifest, its config and its layers, each verified against its digest.
fn copy_image(
    blobs: &impl Blobs,
    manifest: &Descriptor,
    target: &Layout,
) -> Result<Descriptor, ImportError> {
    let parsed: Manifest = blobs.read_json(&manifest.digest)?;
    for blob in parsed.layers.iter().chain([&parsed.config, manifest]) {
        copy_blob(blobs, &blob.digest, target)?;
    }
    let mut descriptor = Descriptor::new(
        parsed.media_type.as_deref().unwrap_or(&manifest.media_type),
        manifest.digest.clone(),
        manifest.size,
    );
    descriptor.platform = manifest.platform.clone();
    Ok(descriptor)
}

fn copy_blob(blobs: &impl Blobs, digest: &str, target: &Layout) -> Result<(), ImportError> {
    if target.has_blob(digest) {
        return Ok(());
    }
    let mut reader = HashingReader::new(blobs.open_blob(digest)?);
    let mut writer = target.blob_writer()?;
    io::copy(&mut reader, &mut writer).map_err(|source| ImportError::Io {
        path: blobs.name(),
        source,
    })?;
    let (actual, _) = reader.finish();
    if actual != digest {
        return Err(ImportError::Invalid {
            source_name: blobs.name(),
            problem: format!("blob {digest} has digest {actual}: the archive is corrupt"),
        });
    }
    target.commit_blob(writer)?;
    Ok(())
}

/// A legacy `docker save` archive: manifest.json names the config and the layer files; the
/// layers keep their bytes, and an OCI manifest is written for them.
fn import_docker_archive(
    archive: &ArchiveBlobs,
    tag: Option<&str>,
    target: &Layout,
) -> Result<Descriptor, ImportError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Entry {
        config: String,
        #[serde(default)]
        repo_tags: Option<Vec<String>>,
        layers: Vec<String>,
    }
    let entries: Vec<Entry> = archive.json("manifest.json")?;
    let all_tags: Vec<String> = entries
        .iter()
        .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
        .collect();
    let chosen: Vec<&Entry> = match tag {
        Some(tag) => entries
            .iter()
            .filter(|e| {
                e.repo_tags
                    .iter()
                    .flatten()
                    .any(|t| t == tag || t.rsplit_once(':').is_some_and(|(_, t)| t == tag))
            })
            .collect(),
        None => entries.iter().collect(),
    };
    let entry = match chosen.as_slice() {
        [one] => *one,
        [] => {
            return Err(archive.invalid(&format!(
                "no image tagged '{}' (tags: {})",
                tag.unwrap_or_default(),
                all_tags.join(", ")
            )));
        }
        _ => {
            return Err(archive.invalid(&format!(
                "several images; name one with FILE:TAG (tags: {})",
                all_tags.join(", ")
            )));
        }
    };
    let config = store_member(archive, &entry.config, target)?;
    let mut layers = Vec::new();
    for member in &entry.layers {
        let stored = store_member(archive, member, target)?;
        let media_type = sniff_layer_media_type(target, &stored.digest)?;
        layers.push(Descriptor::new(media_type, stored.digest, stored.size));
    }
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_CONFIG, config.digest, config.size),
        layers,
        subject: None,
        annotations: Default::default(),
    };
    let bytes = serde_json::to_vec(&manifest).expect("a manifest always serialises");
    let (digest, size) = target.put_blob(&bytes)?;
    Ok(Descriptor::new(MEDIA_MANIFEST, digest, size))
}

struct Stored {
    digest: String,
    size: u64,
}

fn store_member(
    archive: &ArchiveBlobs,
    member: &str,
    target: &Layout,
) -> Result<Stored, ImportError> {
    let mut writer = target.blob_writer()?;
    io::copy(&mut archive.member(member)?, &mut writer).map_err(|source| ImportError::Io {
        path: archive.name.clone(),
        source,
    })?;
    let (digest, size) = target.commit_blob(writer)?;
    Ok(Stored { digest, size })
}

/// Layers of a docker-archive are plain tars in the legacy form and may be compressed in newer
/// ones; the first bytes tell.
fn sniff_layer_media_type(layout: &Layout, digest: &str) -> Result<&'static str, ImportError> {
    let mut magic = [0u8; 4];
    let mut file = layout.open_blob(digest)?;
    let n = file.read(&mut magic).map_err(|source| ImportError::Io {
        path: digest.into(),
        source,
    })?;
    Ok(match &magic[..n] {
        [0x1f, 0x8b, ..] => oci::MEDIA_LAYER_GZIP,
        [0x28, 0xb5, 0x2f, 0xfd] => oci::MEDIA_LAYER_ZSTD,
        _ => oci::MEDIA_LAYER_TAR,
    })
}
