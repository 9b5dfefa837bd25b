//! Manifests, tags and referrers of one repository, as the distribution API sees them.
//!
//! Everything stays a plain OCI image layout: a tagged manifest is an `index.json` entry with
//! the `org.opencontainers.image.ref.name` annotation; a manifest pushed by digest only (a
//! referrer, the child of an index) is an entry without it (as zot keeps them), so layout
//! readers and the garbage collector see it too.

use super::layout::{Layout, StoreError};
use crate::oci::digest::{digest_of, parse_digest};
use crate::oci::{ANNOTATION_REF_NAME, Descriptor, Index, Reference};
use crate::oci::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, MEDIA_INDEX, MEDIA_MANIFEST};
use std::collections::{BTreeMap, BTreeSet};

/// The largest manifest the store reads or accepts.
pub const MANIFEST_LIMIT: u64 = 4 << 20;

/// Marks a tag of `index.json` that never moves to another manifest (a version's tag).
pub const ANNOTATION_IMMUTABLE: &str = "io.mlambda.tag.immutable";

/// Whether a tag, once set, may move to another manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    Mutable,
    Immutable,
}

fn is_immutable(entry: &Descriptor) -> bool {
    entry.ref_name().is_some()
        && entry
            .annotations
            .get(ANNOTATION_IMMUTABLE)
            .is_some_and(|v| v == "true")
}

/// What a blob DELETE did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobRemoval {
    Removed,
    Absent,
    /// The digest is a manifest that `index.json` lists or an index names: only the
    /// manifest API deletes it.
    IsManifest,
}

/// Image manifest or index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    #[default]
    Image,
    Index,
}

/// The parts of a pushed manifest (image manifest or index) that the registry checks.
#[derive(Debug, Clone, Default)]
pub struct ManifestFacts {
    pub kind: Kind,
    /// `mediaType` inside the document, if any.
    pub media_type: Option<String>,
    /// Blobs it needs in the repository: config and layers.
    pub blobs: Vec<String>,
    /// Non-distributable ("foreign") layers: kept when present, but not needed in the
    /// repository, since the image spec lets them live only at their `urls`.
    pub foreign: Vec<String>,
    /// Manifests it needs in the repository: an index's children.
    pub manifests: Vec<String>,
    pub subject: Option<String>,
    /// `artifactType`, else the config's media type (as the referrers API reports).
    pub artifact_type: Option<String>,
    pub annotations: BTreeMap<String, String>,
}

impl ManifestFacts {
    /// What a repository that holds nothing yet lacks first: the first blob or child
    /// manifest named.
    pub fn first_part(&self) -> Option<StoreError> {
        let blob = self.blobs.first().map(|d| ("blob", d));
        let child = self.manifests.first().map(|d| ("manifest", d));
        blob.or(child).map(|(what, digest)| StoreError::Unresolved {
            what,
            digest: digest.clone(),
        })
    }
}

/// Reads what matters of a manifest or index; the reason when it is not one.
pub fn manifest_facts(bytes: &[u8]) -> Result<ManifestFacts, String> {
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    let object = value.as_object().ok_or("not a JSON object")?;
    let text = |v: Option<&serde_json::Value>| v.and_then(|v| v.as_str()).map(str::to_string);
    let digest_of_descriptor = |d: &serde_json::Value, what: &str| -> Result<String, String> {
        let digest = d
            .get("digest")
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("{what} has no digest"))?;
        parse_digest(digest).map_err(|e| format!("{what}: {e}"))?;
        if d.get("mediaType").is_some_and(|m| !m.is_string()) {
            return Err(format!("{what}: mediaType is not a string"));
        }
        if d.get("size").is_some_and(|s| !s.is_u64()) {
            return Err(format!("{what}: size is not a non-negative integer"));
        }
        string_map(d.get("annotations"), &format!("{what}: annotations"))?;
        Ok(digest.to_string())
    };
    let mut facts = ManifestFacts {
        media_type: text(object.get("mediaType")),
        ..ManifestFacts::default()
    };
    if object.get("schemaVersion").and_then(|v| v.as_u64()) != Some(2) {
        return Err("schemaVersion must be 2".into());
    }
    if object.get("manifests").is_some()
        && (object.get("config").is_some() || object.get("layers").is_some())
    {
        return Err("an image manifest (config, layers) and an index (manifests) at once".into());
    }
    if let Some(config) = object.get("config") {
        facts.blobs.push(digest_of_descriptor(config, "config")?);
        facts.artifact_type = text(config.get("mediaType"));
        let layers = match object.get("layers") {
            Some(serde_json::Value::Array(layers)) => layers.as_slice(),
            None | Some(serde_json::Value::Null) => &[],
            Some(_) => return Err("layers is not a list".into()),
        };
        for (i, layer) in layers.iter().enumerate() {
            let digest = digest_of_descriptor(layer, &format!("layers[{i}]"))?;
            if is_non_distributable(text(layer.get("mediaType")).as_deref()) {
                facts.foreign.push(digest);
            } else {
                facts.blobs.push(digest);
            }
        }
    } else if let Some(children) = object.get("manifests") {
        facts.kind = Kind::Index;
        let children = children.as_array().ok_or("manifests is not a list")?;
        for (i, child) in children.iter().enumerate() {
            facts
                .manifests
                .push(digest_of_descriptor(child, &format!("manifests[{i}]"))?);
        }
    } else {
        return Err("neither an image manifest (config, layers) nor an index (manifests)".into());
    }
    if let Some(subject) = object.get("subject") {
        facts.subject = Some(digest_of_descriptor(subject, "subject")?);
    }
    if let Some(artifact_type) = text(object.get("artifactType")) {
        facts.artifact_type = Some(artifact_type);
    }
    facts.annotations = string_map(object.get("annotations"), "annotations")?;
    Ok(facts)
}

/// Annotations: absent, or an object whose values are all strings.
fn string_map(
    value: Option<&serde_json::Value>,
    what: &str,
) -> Result<BTreeMap<String, String>, String> {
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let object = value
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))?;
    object
        .iter()
        .map(|(key, value)| match value.as_str() {
            Some(text) => Ok((key.clone(), text.to_string())),
            None => Err(format!("{what}: the value of {key} is not a string")),
        })
        .collect()
}

/// That a manifest may be stored as `media_type`: one of the manifest media types skopeo,
/// umoci and distribution know, of the document's kind.
pub fn check_media_type(facts: &ManifestFacts, media_type: &str) -> Result<(), String> {
    let expected = match media_type {
        MEDIA_MANIFEST | DOCKER_MANIFEST => Kind::Image,
        MEDIA_INDEX | DOCKER_MANIFEST_LIST => Kind::Index,
        other => {
            return Err(format!(
                "{other} is not a manifest media type (an OCI image manifest or index, or a Docker schema 2 manifest or list)"
            ));
        }
    };
    if facts.kind != expected {
        let what = match facts.kind {
            Kind::Image => "an image manifest (config, layers)",
            Kind::Index => "an index (manifests)",
        };
        return Err(format!("the document is {what}, not a {media_type}"));
    }
    Ok(())
}

/// The media types of layers that registries may not hold: OCI non-distributable layers
/// (deprecated by image-spec 1.1, still valid) and Docker foreign layers.
fn is_non_distributable(media_type: Option<&str>) -> bool {
    media_type.is_some_and(|m| {
        m.starts_with("application/vnd.oci.image.layer.nondistributable.")
            || m.starts_with("application/vnd.docker.image.rootfs.foreign.")
    })
}

impl Layout {
    /// Stores a manifest's exact bytes under `digest` and records it in `index.json`: under
    /// each of `tags` (moving them), or untagged when there are none. The caller has checked
    /// the digest and the document; the blobs and manifests it names are checked here, under
    /// the same lock as a delete takes, so a manifest is never recorded with a part that a
    /// concurrent delete removed. Nothing is written when a tag may not move.
    pub fn put_manifest(
        &self,
        bytes: &[u8],
        digest: &str,
        media_type: &str,
        tags: &[(&str, Mutability)],
        facts: &ManifestFacts,
    ) -> Result<Descriptor, StoreError> {
        let descriptor = Descriptor::new(media_type, digest.to_string(), bytes.len() as u64);
        // Writers lock first: gc must not remove a part between its check and the write.
        self.writing()?;
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        self.check_parts(facts)?;
        if tags.is_empty() {
            if !index.manifests.iter().any(|m| m.digest == digest) {
                index.manifests.push(descriptor.clone());
            }
        } else {
            index
                .manifests
                .retain(|m| !(m.digest == digest && m.ref_name().is_none()));
            for (tag, mutability) in tags {
                self.place_tag(&mut index, tag, descriptor.clone(), *mutability)?;
            }
        }
        self.put_bytes(digest, bytes)?;
        self.write_index(&index)?;
        Ok(descriptor)
    }

    /// Every blob and child manifest a manifest names is here.
    fn check_parts(&self, facts: &ManifestFacts) -> Result<(), StoreError> {
        let unresolved = |what, digest: &String| StoreError::Unresolved {
            what,
            digest: digest.clone(),
        };
        if let Some(blob) = facts.blobs.iter().find(|b| !self.has_blob(b)) {
            return Err(unresolved("blob", blob));
        }
        for child in &facts.manifests {
            let known = match Reference::parse(child) {
                Ok(reference) => self.manifest(reference)?.is_some(),
                Err(_) => false,
            };
            if !known {
                return Err(unresolved("manifest", child));
            }
        }
        Ok(())
    }

    /// Sets `tag` in `index` to `descriptor`. The one place of the rule: an immutable tag
    /// never moves to another manifest; set again to its own, it stays immutable.
    pub(super) fn place_tag(
        &self,
        index: &mut Index,
        tag: &str,
        mut descriptor: Descriptor,
        mutability: Mutability,
    ) -> Result<(), StoreError> {
        let mut immutable = mutability == Mutability::Immutable;
        if let Some(existing) = index.manifests.iter().find(|m| m.ref_name() == Some(tag))
            && is_immutable(existing)
        {
            if existing.digest != descriptor.digest {
                return Err(StoreError::Immutable {
                    tag: tag.to_string(),
                    digest: existing.digest.clone(),
                    layout: self.dir().to_path_buf(),
                });
            }
            immutable = true;
        }
        index.manifests.retain(|m| m.ref_name() != Some(tag));
        descriptor
            .annotations
            .insert(ANNOTATION_REF_NAME.into(), tag.to_string());
        if immutable {
            descriptor
                .annotations
                .insert(ANNOTATION_IMMUTABLE.into(), "true".into());
        } else {
            descriptor.annotations.remove(ANNOTATION_IMMUTABLE);
        }
        index.manifests.push(descriptor);
        Ok(())
    }

    /// The descriptor of a manifest and its exact bytes, or `None` when it is not here. By
    /// digest, a manifest blob that `index.json` does not list (e.g. an index's child written
    /// by an older tool) is found too, with the media type it declares.
    pub fn manifest(
        &self,
        reference: Reference<'_>,
    ) -> Result<Option<(Descriptor, Vec<u8>)>, StoreError> {
        let index = self.read_index()?;
        let entry = index.manifests.iter().find(|m| match reference {
            Reference::Tag(tag) => m.ref_name() == Some(tag),
            Reference::Digest(digest) => m.digest == digest,
        });
        let digest = match (entry, reference) {
            (Some(entry), _) => entry.digest.clone(),
            (None, Reference::Digest(digest)) if self.has_blob(digest) => digest.to_string(),
            (None, _) => return Ok(None),
        };
        let bytes = match self.read_blob(&digest, MANIFEST_LIMIT) {
            Ok(bytes) => bytes,
            Err(StoreError::MissingBlob { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let media_type = match entry {
            Some(entry) => entry.media_type.clone(),
            None => match manifest_facts(&bytes) {
                Ok(facts) => facts
                    .media_type
                    .unwrap_or_else(|| crate::oci::MEDIA_MANIFEST.into()),
                Err(_) => return Ok(None),
            },
        };
        let descriptor = Descriptor::new(&media_type, digest, bytes.len() as u64);
        Ok(Some((descriptor, bytes)))
    }

    /// Deletes a manifest: by digest, every entry of it and this repository's link to its
    /// blob; by tag, only the tag (the manifest stays, untagged, reachable by digest). An
    /// immutable tag, or a manifest one names, only with `allow_immutable` (an admin's
    /// choice). Whether there was anything to delete.
    pub fn delete_manifest(
        &self,
        reference: Reference<'_>,
        allow_immutable: bool,
    ) -> Result<bool, StoreError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let before = index.manifests.len();
        let named = |m: &Descriptor| match reference {
            Reference::Digest(digest) => m.digest == digest,
            Reference::Tag(tag) => m.ref_name() == Some(tag),
        };
        if let Some(kept) = index.manifests.iter().find(|m| named(m) && is_immutable(m))
            && !allow_immutable
        {
            return Err(StoreError::Immutable {
                tag: kept.ref_name().unwrap_or_default().to_string(),
                digest: kept.digest.clone(),
                layout: self.dir().to_path_buf(),
            });
        }
        match reference {
            Reference::Digest(digest) => {
                index.manifests.retain(|m| m.digest != digest);
                let listed = index.manifests.len() != before;
                let is_manifest = listed || self.manifest(reference)?.is_some();
                if !is_manifest {
                    return Ok(false);
                }
                if listed {
                    self.write_index(&index)?;
                }
                self.remove_blob(digest)?;
                Ok(true)
            }
            Reference::Tag(tag) => {
                let Some(position) = index
                    .manifests
                    .iter()
                    .position(|m| m.ref_name() == Some(tag))
                else {
                    return Ok(false);
                };
                let mut removed = index.manifests.remove(position);
                if !index.manifests.iter().any(|m| m.digest == removed.digest) {
                    removed.annotations.remove(ANNOTATION_REF_NAME);
                    removed.annotations.remove(ANNOTATION_IMMUTABLE);
                    index.manifests.push(removed);
                }
                self.write_index(&index)?;
                Ok(true)
            }
        }
    }

    /// Removes this repository's link to a blob, unless it is a manifest that `index.json`
    /// lists or an index it lists names (decided under the index lock, so no manifest PUT
    /// slips in between).
    pub fn delete_blob(&self, digest: &str) -> Result<BlobRemoval, StoreError> {
        let _lock = self.lock()?;
        if self.listed_manifests()?.contains(digest) {
            return Ok(BlobRemoval::IsManifest);
        }
        Ok(if self.remove_blob(digest)? {
            BlobRemoval::Removed
        } else {
            BlobRemoval::Absent
        })
    }

    /// The digests of every manifest `index.json` lists, and of their children, down.
    fn listed_manifests(&self) -> Result<BTreeSet<String>, StoreError> {
        let mut todo: Vec<String> = self
            .read_index()?
            .manifests
            .into_iter()
            .map(|m| m.digest)
            .collect();
        let mut found = BTreeSet::new();
        while let Some(digest) = todo.pop() {
            if !found.insert(digest.clone()) {
                continue;
            }
            let bytes = match self.read_blob(&digest, MANIFEST_LIMIT) {
                Ok(bytes) => bytes,
                Err(StoreError::MissingBlob { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Ok(facts) = manifest_facts(&bytes) {
                todo.extend(facts.manifests);
            }
        }
        Ok(found)
    }

    /// The tags, sorted.
    pub fn tags(&self) -> Result<Vec<String>, StoreError> {
        let index = self.read_index()?;
        let tags: BTreeSet<String> = index
            .manifests
            .iter()
            .filter_map(|m| m.ref_name().map(str::to_string))
            .collect();
        Ok(tags.into_iter().collect())
    }

    /// The manifests whose `subject` is `digest`, as referrers-API descriptors, optionally only
    /// those of one artifact type.
    pub fn referrers(
        &self,
        digest: &str,
        artifact_type: Option<&str>,
    ) -> Result<Vec<Descriptor>, StoreError> {
        let index = self.read_index()?;
        let mut seen = BTreeSet::new();
        let mut found = Vec::new();
        for entry in &index.manifests {
            if !seen.insert(entry.digest.clone()) {
                continue;
            }
            let bytes = match self.read_blob(&entry.digest, MANIFEST_LIMIT) {
                Ok(bytes) => bytes,
                Err(StoreError::MissingBlob { .. }) => continue,
                Err(e) => return Err(e),
            };
            let Ok(facts) = manifest_facts(&bytes) else {
                continue;
            };
            if facts.subject.as_deref() != Some(digest) {
                continue;
            }
            if artifact_type.is_some() && facts.artifact_type.as_deref() != artifact_type {
                continue;
            }
            let mut descriptor =
                Descriptor::new(&entry.media_type, entry.digest.clone(), entry.size);
            descriptor.artifact_type = facts.artifact_type;
            descriptor.annotations = facts.annotations;
            found.push(descriptor);
        }
        Ok(found)
    }
}

/// The digest of `bytes` in the algorithm of `like` (a digest the client named), or sha256.
pub fn digest_like(like: Option<&str>, bytes: &[u8]) -> String {
    let algorithm = like
        .and_then(|d| parse_digest(d).ok())
        .map_or(crate::oci::digest::Algorithm::Sha256, |(a, _)| a);
    digest_of(algorithm, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn image(config: &str, subject: Option<&str>) -> Vec<u8> {
        let subject = subject
            .map(|s| format!(r#","subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{s}","size":1}}"#))
            .unwrap_or_default();
        format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/x.test","config":{{"mediaType":"application/vnd.oci.empty.v1+json","digest":"{config}","size":2}},"layers":[]{subject}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn tags_untagged_entries_deletes_and_referrers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = store.repository("team/x").unwrap();
        let (config, _) = repo.put_blob(b"{}").unwrap();
        let first = image(&config, None);
        let first_digest = digest_like(None, &first);
        let media = crate::oci::MEDIA_MANIFEST;
        let facts = manifest_facts(&first).unwrap();
        let tags = [("a", Mutability::Mutable), ("b", Mutability::Mutable)];
        repo.put_manifest(&first, &first_digest, media, &tags, &facts)
            .unwrap();
        let referrer = image(&config, Some(&first_digest));
        let referrer_digest = digest_like(None, &referrer);
        let facts = manifest_facts(&referrer).unwrap();
        repo.put_manifest(&referrer, &referrer_digest, media, &[], &facts)
            .unwrap();
        assert_eq!(repo.tags().unwrap(), ["a", "b"]);
        assert_eq!(repo.read_index().unwrap().manifests.len(), 3);
        let found = repo.referrers(&first_digest, None).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].artifact_type.as_deref(),
            Some("application/x.test")
        );
        assert!(
            repo.referrers(&first_digest, Some("other"))
                .unwrap()
                .is_empty()
        );
        assert!(repo.delete_manifest(Reference::Tag("a"), false).unwrap());
        assert!(repo.manifest(Reference::Tag("a")).unwrap().is_none());
        assert!(repo.delete_manifest(Reference::Tag("b"), false).unwrap());
        let (still, bytes) = repo
            .manifest(Reference::Digest(&first_digest))
            .unwrap()
            .unwrap();
        assert_eq!((still.media_type.as_str(), bytes), (media, first));
        assert!(
            repo.delete_manifest(Reference::Digest(&first_digest), false)
                .unwrap()
        );
        assert!(!repo.has_blob(&first_digest));
        assert!(
            !repo
                .delete_manifest(Reference::Digest(&first_digest), false)
                .unwrap()
        );
    }

    #[test]
    fn immutable_tags_never_move_and_manifests_are_no_blobs_to_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let repo = store.repository("v").unwrap();
        let (config, _) = repo.put_blob(b"{}").unwrap();
        let media = crate::oci::MEDIA_MANIFEST;
        let put = |bytes: &[u8], tag: &str, mutability| {
            let digest = digest_like(None, bytes);
            let facts = manifest_facts(bytes).unwrap();
            repo.put_manifest(bytes, &digest, media, &[(tag, mutability)], &facts)
                .map(|d| d.digest)
        };
        let first = image(&config, None);
        let second = image(&config, Some(&digest_like(None, &first)));
        let first_digest = put(&first, "1", Mutability::Immutable).unwrap();
        // The same manifest again, even as mutable: fine, and still immutable.
        put(&first, "1", Mutability::Mutable).unwrap();
        let moved = put(&second, "1", Mutability::Mutable).unwrap_err();
        assert!(
            matches!(&moved, StoreError::Immutable { digest, .. } if *digest == first_digest),
            "{moved}"
        );
        let descriptor = Descriptor::new(media, digest_like(None, &second), 1);
        assert!(repo.set_tag("1", descriptor).is_err());
        assert!(repo.delete_manifest(Reference::Tag("1"), false).is_err());
        assert!(
            repo.delete_manifest(Reference::Digest(&first_digest), false)
                .is_err()
        );
        assert_eq!(
            repo.delete_blob(&first_digest).unwrap(),
            BlobRemoval::IsManifest
        );
        assert_eq!(repo.delete_blob(&config).unwrap(), BlobRemoval::Removed);
        assert!(repo.delete_manifest(Reference::Tag("1"), true).unwrap());
        // Untagged, the manifest is no longer held by the rule.
        let entry = &repo.read_index().unwrap().manifests[0];
        assert!(entry.annotations.is_empty(), "{entry:?}");
    }
}
