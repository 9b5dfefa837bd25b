//! `mlambda base import`: a runtime image brought into the local store from a registry, an OCI
//! layout, an OCI archive or a `docker save` archive (legacy or OCI form), its bytes kept as
//! they are: whichever the source, it is resolved to the platform and copied by the same walk
//! (`crate::image`). Where it came from (and, for a registry, the digest the reference resolved
//! to) is kept next to it in `base/<NAME>.source.json`.

use super::{RUNTIME_TAG, runtime_repository};
use crate::image::archive::ArchiveSource;
use crate::image::{self, ImageError, Source};
use crate::oci::{Descriptor, Location, RegistryReference, WantedPlatform};
use crate::remote::{ConnectOptions, Registry, RemoteError, RemoteImage, Target, quiet};
use crate::store::{Layout, Store, StoreError};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

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
    #[error(transparent)]
    Image(#[from] ImageError),
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
    let opened = open_source(source, &options.connect)?;
    let resolved = image::resolve(opened.image.as_ref(), opened.reference.as_deref(), &wanted)?;
    let target = store.repository(&runtime_repository(name))?;
    // From a registry, `--parallel` blobs are pulled at once; a file is read one blob at a time.
    let blobs = match opened.registry_repository {
        Some(_) => options.connect.parallel,
        None => 1,
    };
    image::copy(
        opened.image.as_ref(),
        &resolved.manifest,
        &image::Concurrent {
            sink: &target,
            blobs,
        },
        Some(RUNTIME_TAG),
    )?;
    let manifest = resolved.manifest.descriptor;
    let origin = Origin {
        source: source.describe(),
        pinned: opened
            .registry_repository
            .map(|repository| format!("{repository}@{}", resolved.top.digest)),
        digest: manifest.digest.clone(),
        platform: manifest
            .platform
            .as_ref()
            .map(|p| format!("{}/{}", p.os, p.architecture)),
    };
    write_origin(store, name, &origin)?;
    Ok(Imported { manifest, origin })
}

/// A source to import from, what to ask it for, and for a registry `host/repository`.
struct Opened {
    image: Box<dyn Source>,
    reference: Option<String>,
    registry_repository: Option<String>,
}

fn open_source(source: &Location, connect: &ConnectOptions) -> Result<Opened, ImportError> {
    Ok(match source {
        Location::Registry(text) => {
            let reference =
                RegistryReference::parse(text).map_err(|problem| ImportError::Invalid {
                    source_name: text.clone(),
                    problem,
                })?;
            let registry =
                Registry::connect(&Target::for_reference(&reference, connect)?, connect)?;
            Opened {
                image: Box::new(RemoteImage::new(
                    Arc::new(registry),
                    &reference.repository,
                    quiet(),
                )),
                reference: Some(reference.reference().to_string()),
                registry_repository: Some(format!(
                    "{}/{}",
                    reference.authority, reference.repository
                )),
            }
        }
        Location::Layout { dir, tag } => Opened {
            image: Box::new(Layout::open(dir)?),
            reference: tag.clone(),
            registry_repository: None,
        },
        Location::Archive { file, tag, .. } => Opened {
            image: Box::new(ArchiveSource::open(file)?),
            reference: tag.clone(),
            registry_repository: None,
        },
        Location::Scratch | Location::Store(_) => {
            return Err(ImportError::Invalid {
                source_name: source.describe(),
                problem: "is not an image to import: expected oci:DIR[:TAG], an archive FILE[:TAG] or a registry reference".into(),
            });
        }
    })
}
