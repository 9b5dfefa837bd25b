//! Where the image's lower layers come from: scratch, a local OCI layout, or the runtime the
//! catalogue in `base-images/` names for the model-type. Runtimes live in the store as
//! `base/<name>:latest`, known only here: others ask [`installed_runtime`] and
//! [`runtime_image`]. A runtime gets there built from Debian packages (`assemble`) or imported
//! from any image source (`import`).

mod assemble;
mod debian;
mod import;
mod runtimes;
mod sources;

pub use assemble::{AssembleError, Assembly, build_runtime};
pub use import::{ImportError, ImportOptions, Imported, Origin, import_base, read_origin};
pub use runtimes::{RUNTIME_FILES, Runtime, catalogue, glob_match, runtime, runtime_for};

use crate::image::{self, ImageError, Source, walk};
use crate::oci::{self, Descriptor, Location, WantedPlatform};
use crate::store::{Layout, Store, StoreError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The store repository a runtime's base image is kept in (model names never contain '/').
fn runtime_repository(runtime: &str) -> String {
    format!("base/{runtime}")
}
const RUNTIME_TAG: &str = "latest";

/// Where runtime `name` is kept in the store, as `oci:DIR:TAG` (there or not yet).
pub fn runtime_image(store: &Store, name: &str) -> String {
    format!(
        "oci:{}:{RUNTIME_TAG}",
        store.root().join(runtime_repository(name)).display()
    )
}

/// The manifest runtime `name` has in the store, when it is there.
pub fn installed_runtime(store: &Store, name: &str) -> Option<Descriptor> {
    store
        .existing_repository(&runtime_repository(name))?
        .resolve(Some(RUNTIME_TAG))
        .ok()
}

pub use crate::model_image::BaseImage;

#[derive(Debug, thiserror::Error)]
pub enum BaseError {
    #[error("--base {0}: expected 'scratch' or 'oci:DIR[:TAG]'")]
    Syntax(String),
    #[error("base image {reference}: {problem}")]
    Invalid { reference: String, problem: String },
    #[error("base image {reference}: {source}")]
    Store {
        reference: String,
        source: StoreError,
    },
    #[error("base image {reference}: {source}")]
    Image {
        reference: String,
        source: ImageError,
    },
}

/// What `--base` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BaseChoice {
    Scratch,
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    /// A runtime already in the local store, by name.
    Runtime(String),
}

/// `--base`: `scratch` or an OCI layout (`oci:DIR[:TAG]`, or a layout's folder).
pub fn parse_base(arg: &str) -> Result<BaseChoice, BaseError> {
    match Location::parse(arg) {
        Ok(Location::Scratch) => Ok(BaseChoice::Scratch),
        Ok(Location::Layout { dir, tag }) => Ok(BaseChoice::Layout { dir, tag }),
        _ => Err(BaseError::Syntax(arg.to_string())),
    }
}

pub fn open(store: &Store, choice: &BaseChoice) -> Result<BaseImage, BaseError> {
    match choice {
        BaseChoice::Scratch => Ok(BaseImage::scratch()),
        BaseChoice::Runtime(name) => match store.existing_repository(&runtime_repository(name)) {
            Some(layout) => from_source(
                Arc::new(layout),
                format!("runtime {name}"),
                Some(RUNTIME_TAG),
            ),
            None => Err(BaseError::Invalid {
                reference: format!("runtime {name}"),
                problem: "is not in the local store".into(),
            }),
        },
        BaseChoice::Layout { dir, tag } => {
            let reference = match tag {
                Some(tag) => format!("oci:{}:{tag}", dir.display()),
                None => format!("oci:{}", dir.display()),
            };
            let layout = Layout::open(dir).map_err(|source| BaseError::Store {
                reference: reference.clone(),
                source,
            })?;
            from_source(Arc::new(layout), reference, tag.as_deref())
        }
    }
}

/// A base image from any source; an index is resolved to this machine's platform. Every
/// layer must be there: the build reads them when it writes the image.
pub fn from_source(
    source: Arc<dyn Source>,
    reference: String,
    tag: Option<&str>,
) -> Result<BaseImage, BaseError> {
    let failed = |source| BaseError::Image {
        reference: reference.clone(),
        source,
    };
    let invalid = |problem: String| BaseError::Invalid {
        reference: reference.clone(),
        problem,
    };
    let resolved = image::resolve(source.as_ref(), tag, &WantedPlatform::host()).map_err(failed)?;
    let config = walk::read_config(source.as_ref(), &resolved.parsed).map_err(failed)?;
    let manifest = resolved.parsed;
    let diff_ids = config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if diff_ids != manifest.layers.len() {
        return Err(invalid(format!(
            "its config lists {diff_ids} layers (rootfs.diff_ids) but its manifest {}",
            manifest.layers.len()
        )));
    }
    let mut layers = Vec::new();
    for layer in &manifest.layers {
        if source.blob_size(&layer.digest).is_err() {
            return Err(invalid(format!(
                "layer {} is missing from {}",
                layer.digest,
                source.name()
            )));
        }
        let mut layer = layer.clone();
        layer.media_type = oci::oci_layer_media_type(&layer.media_type).to_string();
        layers.push(layer);
    }
    Ok(BaseImage {
        reference,
        manifest_digest: Some(resolved.manifest.descriptor.digest),
        config,
        layers,
        source: Some(source),
    })
}

/// The base for `model_type` when no `--base` is given, with a note saying what was chosen.
/// A runtime built from Debian packages that is not in the store yet is assembled first
/// (`log` hears how); when that cannot be done, the note says why and the base is scratch.
pub fn for_model_type(
    store: &Store,
    model_type: &str,
    assembly: &Assembly,
    log: &mut dyn FnMut(String),
) -> Result<(BaseImage, String), BaseError> {
    let Some(runtime) = runtime_for(model_type) else {
        return Ok((
            BaseImage::scratch(),
            format!(
                "no runtime in base-images/ serves model-type '{model_type}'; building on scratch (choose one with --base)"
            ),
        ));
    };
    let in_store = |store: &Store| {
        installed_runtime(store, &runtime.name)?;
        store.existing_repository(&runtime_repository(&runtime.name))
    };
    // A runtime assembled by another mlambda (its packages, server or settings changed since)
    // is assembled again; an imported one is the user's and is kept as it is.
    let stale = |store: &Store| {
        !runtime.debian.is_empty()
            && installed_runtime(store, &runtime.name).is_some_and(|manifest| {
                match built_from(store, &runtime.name, &manifest) {
                    Some(Assembled(definition)) => {
                        definition.as_deref() != Some(runtime.definition_digest().as_str())
                    }
                    None => false,
                }
            })
    };
    let mut note = format!(
        "model-type '{model_type}' runs on runtime '{}'",
        runtime.name
    );
    // Builds in one process (a server's queue) would otherwise assemble the same runtime at once.
    static ASSEMBLING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _assembling = ASSEMBLING.lock().unwrap_or_else(|e| e.into_inner());
    let outdated = stale(store);
    if outdated {
        log(format!(
            "runtime '{}' in the store was assembled from another definition (an older mlambda): assembling it again",
            runtime.name
        ));
    }
    if in_store(store).is_none() || outdated {
        if runtime.debian.is_empty() {
            return Ok((
                BaseImage::scratch(),
                format!(
                    "model-type '{model_type}' is served by runtime '{}' ({}), which is not in the local store; building on scratch (bring it with `mlambda base import {} SOURCE`, or choose one with --base)",
                    runtime.name, runtime.description, runtime.name
                ),
            ));
        }
        log(format!(
            "runtime '{}' is not in the local store yet: building it from Debian packages",
            runtime.name
        ));
        if let Err(error) = build_runtime(store, &runtime, assembly, log) {
            return Ok((
                BaseImage::scratch(),
                format!(
                    "model-type '{model_type}' is served by runtime '{}', which could not be built ({error}); building on scratch (run `mlambda base build {}` or choose one with --base)",
                    runtime.name, runtime.name
                ),
            ));
        }
        note = format!(
            "model-type '{model_type}' runs on runtime '{}', built now from Debian packages",
            runtime.name
        );
    }
    match in_store(store) {
        Some(layout) => {
            let base = from_source(
                Arc::new(layout),
                format!("runtime {}", runtime.name),
                Some(RUNTIME_TAG),
            )?;
            Ok((base, note))
        }
        None => Ok((
            BaseImage::scratch(),
            format!(
                "runtime '{}' vanished from the store; building on scratch",
                runtime.name
            ),
        )),
    }
}

/// A runtime mlambda assembled, with the definition digest it was assembled from (`None`:
/// an mlambda from before definitions were recorded).
struct Assembled(Option<String>);

/// How a runtime in the store came to be: assembled by mlambda (its manifest names its Debian
/// packages), or `None` for one imported, which is the user's and never replaced.
fn built_from(store: &Store, name: &str, manifest: &Descriptor) -> Option<Assembled> {
    let layout = store.existing_repository(&runtime_repository(name))?;
    let bytes = layout
        .read_blob(&manifest.digest, crate::image::JSON_LIMIT)
        .ok()?;
    let manifest: crate::oci::Manifest = serde_json::from_slice(&bytes).ok()?;
    let annotations = &manifest.annotations;
    annotations
        .contains_key(assemble::DEBIAN_PACKAGES_ANNOTATION)
        .then(|| Assembled(annotations.get(assemble::DEFINITION_ANNOTATION).cloned()))
}

/// Runtime names become a repository path component.
pub fn check_runtime_name(name: &str) -> Result<(), BaseError> {
    crate::oci::check_repository(name)
        .ok()
        .filter(|()| !name.contains('/'))
        .ok_or_else(|| BaseError::Invalid {
            reference: name.to_string(),
            problem: "a runtime name is lowercase letters and digits separated by '.', '_' or '-'"
                .into(),
        })
}

pub fn is_layout_dir(dir: &Path) -> bool {
    dir.join("oci-layout").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_arguments() {
        assert_eq!(parse_base("scratch").unwrap(), BaseChoice::Scratch);
        assert_eq!(
            parse_base("oci:/a/b:v1").unwrap(),
            BaseChoice::Layout {
                dir: "/a/b".into(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            parse_base("oci:./x").unwrap(),
            BaseChoice::Layout {
                dir: "./x".into(),
                tag: None
            }
        );
        assert!(parse_base("docker://x").is_err());
    }

    #[test]
    fn catalogue_lookup() {
        assert_eq!(runtime_for("python:3.6").unwrap().name, "python-3.11");
        assert_eq!(runtime_for("tensorflow:1.8.0").unwrap().name, "tensorflow");
        assert_eq!(runtime_for("keras:3.15.1").unwrap().name, "tensorflow");
        assert_eq!(runtime_for("onnx:9").unwrap().name, "onnx");
        let pytorch = runtime_for("pytorch:2.5.1").unwrap();
        assert!(pytorch.debian.is_empty() && pytorch.description.contains("CUDA"));
        assert!(runtime_for("cobol:85").is_none());
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b", "ab c"));
    }
}
