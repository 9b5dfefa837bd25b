//! The model image: base layers (byte for byte) + payload layers + the contract layer, a
//! config that inherits the base's, and an OCI manifest.

pub mod gzip;
pub mod layer;
pub mod splice;

use crate::image::{Sink, Source};
use crate::model::payload::Payload;
use crate::oci::{Descriptor, MEDIA_CONFIG, MEDIA_MANIFEST, Manifest};
use crate::store::{Layout, StoreError};
use layer::{DigestCache, Layer, LayerError, LayerOptions};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What the image says about the model (labels, annotations).
#[derive(Debug, Clone)]
pub struct ImageMeta {
    pub name: String,
    /// The catalogue version; `None` for `mlambda build`, which records no version.
    pub version: Option<String>,
    pub model_type: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// Unix seconds for every timestamp in the image: `SOURCE_DATE_EPOCH`, or 0.
    pub created: u64,
    /// How the layers of small files and the contract are compressed (gzip, or zstd on request).
    pub compression: layer::Compression,
    /// Labels of the config beside the base's (over them when both have one).
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct BuiltImage {
    pub manifest: Descriptor,
    pub config_digest: String,
    /// Config, manifest and every layer, in bytes.
    pub size: u64,
    pub layers: Vec<Descriptor>,
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Layer(#[from] LayerError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("base image {reference}: {source}")]
    Base {
        reference: String,
        source: crate::image::ImageError,
    },
}

/// The image a model's layers go on top of.
#[derive(Clone)]
pub struct BaseImage {
    /// How the user named it: `scratch`, `oci:/path:tag`, `runtime python-3.11`.
    pub reference: String,
    pub manifest_digest: Option<String>,
    pub config: Value,
    /// In OCI media types; the bytes are the base's own.
    pub layers: Vec<Descriptor>,
    /// Where the layers are read from; `None` for scratch.
    pub source: Option<Arc<dyn Source>>,
}

impl BaseImage {
    /// No base at all: the model's layers alone, for linux/amd64.
    pub fn scratch() -> BaseImage {
        BaseImage {
            reference: "scratch".into(),
            manifest_digest: None,
            config: json!({"architecture": "amd64", "os": "linux", "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}),
            layers: Vec::new(),
            source: None,
        }
    }
}

/// What the model brings to its image.
pub struct ModelParts<'a> {
    pub payload: &'a Payload,
    /// `contract.protobin`'s bytes.
    pub contract: &'a [u8],
    /// Layers already in the layout that go between the base and the payload (the Python
    /// packages), and the lock that says what they hold.
    pub packages: &'a [Layer],
    pub lock: Option<&'a str>,
}

/// Writes every blob of the model image into `layout` and returns its manifest descriptor
/// (not yet tagged). `log` hears one line per step. With a `cache`, big files unchanged since
/// an earlier build into the same store are neither read nor written again.
pub fn build_image(
    parts: &ModelParts,
    base: &BaseImage,
    meta: &ImageMeta,
    layout: &Layout,
    cache: Option<&dyn DigestCache>,
    log: &mut dyn FnMut(String),
) -> Result<BuiltImage, BuildError> {
    let options = LayerOptions {
        mtime: meta.created,
        compression: meta.compression,
        ..LayerOptions::default()
    };
    if let Some(source) = &base.source {
        for descriptor in &base.layers {
            Sink::put_blob(layout, descriptor, source.as_ref()).map_err(|source| {
                BuildError::Base {
                    reference: base.reference.clone(),
                    source,
                }
            })?;
        }
        log(format!(
            "base {}: {} layers reused",
            base.reference,
            base.layers.len()
        ));
    }
    let mut layers = layer::write_payload_layers(parts.payload, layout, &options, cache)?;
    layers.push(layer::write_contract_layer(
        parts.contract,
        parts.lock,
        layout,
        &options,
    )?);
    for layer in &layers {
        log(format!(
            "layer {} ({} bytes): {}",
            layer.descriptor.digest, layer.descriptor.size, layer.comment
        ));
    }

    layers.splice(0..0, parts.packages.iter().cloned());
    let config = model_config(&base.config, &layers, meta);
    let mut all_layers = base.layers.clone();
    all_layers.extend(layers.iter().map(|l| l.descriptor.clone()));
    let built = write_image(layout, &config, all_layers, annotations(meta, base))?;
    log(format!(
        "manifest {}, config {}",
        built.manifest.digest, built.config_digest
    ));
    Ok(built)
}

/// Stores `config` and the manifest that lists `layers` (already in `layout`).
pub fn write_image(
    layout: &Layout,
    config: &Value,
    layers: Vec<Descriptor>,
    annotations: BTreeMap<String, String>,
) -> Result<BuiltImage, BuildError> {
    let config_bytes = serde_json::to_vec(config).expect("a JSON value always serialises");
    let (config_digest, config_size) = layout.put_blob(&config_bytes)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(MEDIA_MANIFEST.into()),
        artifact_type: None,
        config: Descriptor::new(MEDIA_CONFIG, config_digest.clone(), config_size),
        layers,
        subject: None,
        annotations,
    };
    let manifest_bytes = serde_json::to_vec(&manifest).expect("a manifest always serialises");
    let (manifest_digest, manifest_size) = layout.put_blob(&manifest_bytes)?;
    let size = config_size + manifest_size + manifest.layers.iter().map(|l| l.size).sum::<u64>();
    Ok(BuiltImage {
        manifest: Descriptor::new(MEDIA_MANIFEST, manifest_digest, manifest_size),
        config_digest,
        size,
        layers: manifest.layers,
    })
}

/// The base's config with the model's layers, history and labels added; everything else
/// (env, entrypoint, cmd, working dir, platform) is inherited as it is.
pub fn model_config(base: &Value, layers: &[Layer], meta: &ImageMeta) -> Value {
    let mut config = base.as_object().cloned().unwrap_or_default();
    let created = crate::oci::rfc3339(meta.created);
    config.insert("created".into(), json!(created));
    config.entry("architecture").or_insert(json!("amd64"));
    config.entry("os").or_insert(json!("linux"));

    let mut rootfs = config
        .get("rootfs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    rootfs.insert("type".into(), json!("layers"));
    let mut diff_ids = rootfs
        .get("diff_ids")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    diff_ids.extend(layers.iter().map(|l| json!(l.diff_id)));
    rootfs.insert("diff_ids".into(), Value::Array(diff_ids));
    config.insert("rootfs".into(), Value::Object(rootfs));

    let mut history = config
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    history.extend(
        layers
            .iter()
            .map(|l| json!({"created": created, "created_by": format!("mlambda: {}", l.comment)})),
    );
    config.insert("history".into(), Value::Array(history));

    let mut runtime = config
        .get("config")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut labels: Map<String, Value> = runtime
        .get("Labels")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (key, value) in &meta.labels {
        labels.insert(key.clone(), json!(value));
    }
    labels.insert("MODEL_NAME".into(), json!(meta.name));
    labels.insert("MODEL_TYPE".into(), json!(meta.model_type));
    if let Some(version) = &meta.version {
        labels.insert("MODEL_VERSION".into(), json!(version));
    }
    runtime.insert("Labels".into(), Value::Object(labels));
    // The same for the program in the image: a runtime names the model and its version by them.
    let mut env: Vec<Value> = runtime
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    env.retain(|e| {
        e.as_str()
            .is_none_or(|e| !e.starts_with("MODEL_NAME=") && !e.starts_with("MODEL_VERSION="))
    });
    env.push(json!(format!("MODEL_NAME={}", meta.name)));
    if let Some(version) = &meta.version {
        env.push(json!(format!("MODEL_VERSION={version}")));
    }
    runtime.insert("Env".into(), Value::Array(env));
    config.insert("config".into(), Value::Object(runtime));
    Value::Object(config)
}

fn annotations(meta: &ImageMeta, base: &BaseImage) -> BTreeMap<String, String> {
    // The user's metadata first, so the standard keys below always say what mlambda built.
    let mut out = meta.metadata.clone();
    out.insert("org.opencontainers.image.title".into(), meta.name.clone());
    out.insert(
        "org.opencontainers.image.created".into(),
        crate::oci::rfc3339(meta.created),
    );
    if let Some(version) = &meta.version {
        out.insert("org.opencontainers.image.version".into(), version.clone());
    }
    if let Some(description) = &meta.description {
        out.insert(
            "org.opencontainers.image.description".into(),
            description.clone(),
        );
    }
    if let Some(digest) = &base.manifest_digest {
        out.insert(
            "org.opencontainers.image.base.digest".into(),
            digest.clone(),
        );
        out.insert(
            "org.opencontainers.image.base.name".into(),
            base.reference.clone(),
        );
    }
    out
}
