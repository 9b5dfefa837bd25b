//! Images as single files: `oci-archive` (a tar of an OCI layout) and `docker-archive` (what
//! `docker save` writes and `docker load` / `podman load` read), read in place as a
//! [`Source`] and written as a [`Sink`].
//!
//! A docker-archive has no OCI manifest: its `manifest.json` names a config and layer files,
//! and the source writes the OCI manifest for them (layers keep their bytes; their media type
//! is told by their first bytes, since legacy archives hold plain tars and newer ones may
//! compress). A member named after its digest (`<hex>.tar`, `blobs/sha256/<hex>`) is taken
//! at its word and checked when copied; any other (`<id>/layer.tar`) is hashed once.

use super::{BlobOutcome, BlobReader, Fetched, ImageError, JSON_LIMIT, Sink, Source, walk};
use crate::oci::digest::{Algorithm, digest_reader, sha256_of};
use crate::oci::{
    ANNOTATION_REF_NAME, DOCKER_CONFIG, Descriptor, Index, MEDIA_CONFIG, MEDIA_LAYER_GZIP,
    MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD, MEDIA_MANIFEST, Manifest,
};
use serde_json::json;
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An OCI archive or a docker-archive, read in place: one pass over the tar's headers, then
/// each member read by seeking.
pub struct ArchiveSource {
    name: String,
    path: PathBuf,
    /// Member path → (offset of its data, size).
    members: HashMap<String, (u64, u64)>,
    docker: bool,
    /// For a docker-archive: the member each digest of its written manifests is read from.
    docker_blobs: Mutex<HashMap<String, String>>,
}

impl ArchiveSource {
    pub fn open(path: &Path) -> Result<ArchiveSource, ImageError> {
        let name = path.display().to_string();
        let file = File::open(path).map_err(ImageError::io(&name))?;
        let not_tar = |e: io::Error| ImageError::invalid(&name, format!("not a tar archive: {e}"));
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
            return Err(ImageError::invalid(
                &name,
                "not a tar archive, or an empty one",
            ));
        }
        let oci = members.contains_key("oci-layout") && members.contains_key("index.json");
        let docker = !oci && members.contains_key("manifest.json");
        if !oci && !docker {
            return Err(ImageError::invalid(
                &name,
                "is neither an OCI archive (oci-layout, index.json) nor a docker-archive (manifest.json)",
            ));
        }
        Ok(ArchiveSource {
            name,
            path: path.to_path_buf(),
            members,
            docker,
            docker_blobs: Mutex::new(HashMap::new()),
        })
    }

    fn member(&self, member: &str, offset: u64) -> Result<io::Take<File>, ImageError> {
        let &(start, size) = self
            .members
            .get(member)
            .ok_or_else(|| ImageError::invalid(&self.name, format!("has no member '{member}'")))?;
        let mut file = File::open(&self.path).map_err(ImageError::io(&self.name))?;
        file.seek(SeekFrom::Start(start + offset.min(size)))
            .map_err(ImageError::io(&self.name))?;
        Ok(file.take(size - offset.min(size)))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, member: &str) -> Result<T, ImageError> {
        let mut bytes = Vec::new();
        self.member(member, 0)?
            .take(JSON_LIMIT)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(&self.name))?;
        serde_json::from_slice(&bytes).map_err(|e| {
            ImageError::invalid(&self.name, format!("{member} is not valid JSON: {e}"))
        })
    }

    /// The member that holds `digest`.
    fn member_of(&self, digest: &str) -> Result<String, ImageError> {
        if let Some(member) = self
            .docker_blobs
            .lock()
            .ok()
            .and_then(|blobs| blobs.get(digest).cloned())
        {
            return Ok(member);
        }
        let (algorithm, hex) = digest.split_once(':').ok_or_else(|| {
            ImageError::invalid(&self.name, format!("'{digest}' is not a digest"))
        })?;
        Ok(format!("blobs/{algorithm}/{hex}"))
    }

    /// A docker-archive's image for `tag` (or its only one), as an OCI manifest.
    fn docker_manifest(&self, tag: Option<&str>) -> Result<Fetched, ImageError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = self.json("manifest.json")?;
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
                return Err(ImageError::invalid(
                    &self.name,
                    format!(
                        "no image tagged '{}' (tags: {})",
                        tag.unwrap_or_default(),
                        all_tags.join(", ")
                    ),
                ));
            }
            _ => {
                return Err(ImageError::invalid(
                    &self.name,
                    format!(
                        "several images; name one with FILE:TAG (tags: {})",
                        all_tags.join(", ")
                    ),
                ));
            }
        };
        let config = self.docker_blob(&entry.config, MEDIA_CONFIG)?;
        let mut layers = Vec::new();
        for member in &entry.layers {
            let media_type = self.sniff_layer_media_type(member)?;
            layers.push(self.docker_blob(member, media_type)?);
        }
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(MEDIA_MANIFEST.into()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: Default::default(),
        };
        let bytes = serde_json::to_vec(&manifest).expect("a manifest always serialises");
        let descriptor = Descriptor::new(MEDIA_MANIFEST, sha256_of(&bytes), bytes.len() as u64);
        Ok(Fetched { descriptor, bytes })
    }

    /// The descriptor of a docker-archive member, remembered for `blob`.
    fn docker_blob(&self, member: &str, media_type: &str) -> Result<Descriptor, ImageError> {
        let &(_, size) = self
            .members
            .get(member)
            .ok_or_else(|| ImageError::invalid(&self.name, format!("has no member '{member}'")))?;
        let file_name = member.rsplit('/').next().unwrap_or(member);
        let stem = file_name.split('.').next().unwrap_or(file_name);
        let named = stem.len() == 64 && stem.bytes().all(|b| b.is_ascii_hexdigit());
        let digest = if named {
            format!("sha256:{}", stem.to_ascii_lowercase())
        } else {
            digest_reader(Algorithm::Sha256, self.member(member, 0)?)
                .map_err(ImageError::io(&self.name))?
                .0
        };
        if let Ok(mut blobs) = self.docker_blobs.lock() {
            blobs.insert(digest.clone(), member.to_string());
        }
        Ok(Descriptor::new(media_type, digest, size))
    }

    fn sniff_layer_media_type(&self, member: &str) -> Result<&'static str, ImageError> {
        let mut magic = [0u8; 4];
        let n = self
            .member(member, 0)?
            .read(&mut magic)
            .map_err(ImageError::io(&self.name))?;
        Ok(match &magic[..n] {
            [0x1f, 0x8b, ..] => MEDIA_LAYER_GZIP,
            [0x28, 0xb5, 0x2f, 0xfd] => MEDIA_LAYER_ZSTD,
            _ => MEDIA_LAYER_TAR,
        })
    }
}

impl Source for ArchiveSource {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn manifest(&self, reference: Option<&str>) -> Result<Fetched, ImageError> {
        let by_digest = reference.filter(|r| r.contains(':'));
        if self.docker && by_digest.is_none() {
            return self.docker_manifest(reference);
        }
        let descriptor = match by_digest {
            Some(digest) => {
                let index: Index = self.json("index.json").unwrap_or_default();
                index
                    .manifests
                    .into_iter()
                    .find(|m| m.digest == digest)
                    .unwrap_or_else(|| Descriptor::new(MEDIA_MANIFEST, digest.into(), 0))
            }
            None => {
                let index: Index = self.json("index.json")?;
                walk::pick_tagged(&index, reference)
                    .map_err(|problem| ImageError::invalid(&self.name, problem))?
            }
        };
        let mut bytes = Vec::new();
        self.blob(&descriptor.digest, 0)?
            .take(JSON_LIMIT)
            .read_to_end(&mut bytes)
            .map_err(ImageError::io(&self.name))?;
        let actual = sha256_of(&bytes);
        if actual != descriptor.digest {
            return Err(ImageError::invalid(
                &self.name,
                format!(
                    "blob {} has digest {actual}: the archive is corrupt",
                    descriptor.digest
                ),
            ));
        }
        Ok(Fetched::listed(descriptor, bytes))
    }

    fn blob(&self, digest: &str, offset: u64) -> Result<BlobReader, ImageError> {
        Ok(Box::new(self.member(&self.member_of(digest)?, offset)?))
    }

    fn blob_size(&self, digest: &str) -> Result<u64, ImageError> {
        let member = self.member_of(digest)?;
        self.members
            .get(&member)
            .map(|&(_, size)| size)
            .ok_or_else(|| ImageError::invalid(&self.name, format!("has no blob {digest}")))
    }
}

/// Which single-file form to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI layout.
    Oci,
    /// `docker save`'s form, tagged `name:tag`.
    Docker,
}

/// Writes one image as an archive at `target`: the blobs as they come, then the manifest,
/// the index (or `manifest.json`), and the file renamed into place, so that a failed write
/// never leaves a truncated archive under the name asked for.
pub struct ArchiveSink {
    target: PathBuf,
    format: ArchiveFormat,
    /// The repository name of a docker-archive's `RepoTags`.
    repository: String,
    tar: Mutex<Option<Tar>>,
    written: Mutex<BTreeSet<String>>,
}

type Tar = tar::Builder<BufWriter<tempfile::NamedTempFile>>;

impl ArchiveSink {
    pub fn create(
        target: &Path,
        format: ArchiveFormat,
        repository: &str,
    ) -> Result<ArchiveSink, ImageError> {
        let place = target.display().to_string();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".mlambda-archive-")
            .tempfile_in(parent)
            .map_err(ImageError::io(&place))?;
        let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, file));
        if format == ArchiveFormat::Oci {
            append_bytes(
                &mut tar,
                "oci-layout",
                b"{\"imageLayoutVersion\":\"1.0.0\"}",
            )
            .and_then(|()| append_dir(&mut tar, "blobs/"))
            .and_then(|()| append_dir(&mut tar, "blobs/sha256/"))
            .map_err(ImageError::io(&place))?;
        }
        Ok(ArchiveSink {
            target: target.to_path_buf(),
            format,
            repository: repository.to_string(),
            tar: Mutex::new(Some(tar)),
            written: Mutex::new(BTreeSet::new()),
        })
    }

    /// The member a blob is written as.
    fn member_name(&self, blob: &Descriptor) -> String {
        let hex = blob
            .digest
            .split_once(':')
            .map_or(&*blob.digest, |(_, h)| h);
        match self.format {
            ArchiveFormat::Oci => format!("blobs/sha256/{hex}"),
            ArchiveFormat::Docker if is_config(&blob.media_type) => format!("{hex}.json"),
            ArchiveFormat::Docker if blob.media_type == MEDIA_LAYER_TAR => format!("{hex}.tar"),
            ArchiveFormat::Docker => format!("{hex}.tar.gz"),
        }
    }

    fn write(&self, member: &str, data: impl Read, size: u64) -> Result<(), ImageError> {
        let place = self.target.display().to_string();
        let mut tar = self.tar.lock().unwrap_or_else(|e| e.into_inner());
        let tar = tar
            .as_mut()
            .ok_or_else(|| ImageError::invalid(&place, "the archive is already finished"))?;
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        tar.append_data(&mut h, member, data)
            .map_err(ImageError::io(&place))
    }
}

fn is_config(media_type: &str) -> bool {
    media_type == MEDIA_CONFIG || media_type == DOCKER_CONFIG
}

impl Sink for ArchiveSink {
    fn name(&self) -> String {
        self.target.display().to_string()
    }

    fn put_blob(&self, blob: &Descriptor, source: &dyn Source) -> Result<BlobOutcome, ImageError> {
        let member = self.member_name(blob);
        if !self
            .written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(member.clone())
        {
            return Ok(BlobOutcome::Existed);
        }
        let data = walk::verified(source.blob(&blob.digest, 0)?, &blob.digest, blob.size)?;
        self.write(&member, data, blob.size)?;
        Ok(BlobOutcome::Uploaded)
    }

    fn put_manifest(&self, manifest: &Fetched, tag: Option<&str>) -> Result<String, ImageError> {
        let place = self.target.display().to_string();
        let tag = tag.unwrap_or("latest");
        match self.format {
            ArchiveFormat::Oci => {
                let mut tagged = manifest.descriptor.clone();
                tagged
                    .annotations
                    .insert(ANNOTATION_REF_NAME.into(), tag.into());
                let index = Index {
                    manifests: vec![tagged],
                    ..Default::default()
                };
                self.write(
                    &self.member_name(&manifest.descriptor),
                    manifest.bytes.as_slice(),
                    manifest.bytes.len() as u64,
                )?;
                let index = serde_json::to_vec(&index).expect("an index always serialises");
                self.write("index.json", index.as_slice(), index.len() as u64)?;
            }
            ArchiveFormat::Docker => {
                let parsed: Manifest = serde_json::from_slice(&manifest.bytes)
                    .map_err(|e| ImageError::invalid(&place, format!("invalid manifest: {e}")))?;
                let layers: Vec<String> =
                    parsed.layers.iter().map(|l| self.member_name(l)).collect();
                let listed = json!([{
                    "Config": self.member_name(&parsed.config),
                    "RepoTags": [format!("{}:{tag}", self.repository)],
                    "Layers": layers,
                }]);
                let listed = serde_json::to_vec(&listed).expect("JSON always serialises");
                self.write("manifest.json", listed.as_slice(), listed.len() as u64)?;
            }
        }
        let tar = self
            .tar
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| ImageError::invalid(&place, "the archive is already finished"))?;
        let file = tar
            .into_inner()
            .map_err(ImageError::io(&place))?
            .into_inner()
            .map_err(|e| ImageError::io(&place)(e.into_error()))?;
        file.as_file().sync_all().map_err(ImageError::io(&place))?;
        file.persist(&self.target)
            .map_err(|e| ImageError::io(&place)(e.error))?;
        Ok(manifest.descriptor.digest.clone())
    }
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

fn append_bytes(tar: &mut Tar, name: &str, bytes: &[u8]) -> io::Result<()> {
    let mut h = header(tar::EntryType::Regular, 0o644, bytes.len() as u64);
    tar.append_data(&mut h, name, bytes)
}

fn append_dir(tar: &mut Tar, name: &str) -> io::Result<()> {
    let mut h = header(tar::EntryType::Directory, 0o755, 0);
    tar.append_data(&mut h, name, io::empty())
}
