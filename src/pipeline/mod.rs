//! The commands' work, top to bottom: model → contract → base → layers → manifest → store →
//! catalogue. Each step is a function of its own module; this file only puts them in order.

use crate::base::{self, BaseChoice, BaseError, BaseImage};
use crate::catalog::{BuildResult, Catalog, CatalogError, NewVersion};
use crate::contract;
use crate::image::Mirror;
use crate::model::spec::ModelSpec;
use crate::model_image::layer::{Compression, DigestCache};
use crate::model_image::layer::{LayerOptions, payload_layer_count};
use crate::model_image::{self, BuildError, BuiltImage, ImageMeta, ModelParts};
use crate::packages::provided::{LABEL_PACKAGES, Provided};
use crate::packages::{self, Prepared};
use crate::store::{Layout, Mutability, Store, StoreError};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

mod home;
pub mod push;

pub use home::{Home, default_home};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Base(#[from] BaseError),
    #[error(transparent)]
    Image(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
    #[error(transparent)]
    Packages(#[from] crate::packages::PackagesError),
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
    #[error("SOURCE_DATE_EPOCH='{0}' is not a number of seconds since 1970")]
    SourceDateEpoch(String),
}

/// `SOURCE_DATE_EPOCH`, or 0: every timestamp in the image, so builds are reproducible.
pub fn source_date_epoch() -> Result<u64, PipelineError> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .map_err(|_| PipelineError::SourceDateEpoch(text)),
        _ => Ok(0),
    }
}

/// The base image: `--base` when given, else the catalogue's runtime for the model-type.
/// The second value is a note for the user saying what was chosen, when there is one.
pub fn choose_base(
    store: &Store,
    choice: Option<&BaseChoice>,
    model_type: &str,
    settings: &BuildSettings,
    log: &mut dyn FnMut(Event),
) -> Result<(BaseImage, Option<String>), PipelineError> {
    match choice {
        Some(choice) => Ok((base::open(store, choice)?, None)),
        None => {
            let assembly = base::Assembly {
                debs: None,
                created: source_date_epoch()?,
                packages: &settings.packages,
                wheel_cache: &settings.wheel_cache,
            };
            let (base, note) = base::for_model_type(store, model_type, &assembly, &mut |line| {
                log(Event::Step(line))
            })?;
            Ok((base, Some(note)))
        }
    }
}

/// What to build: the model, the base asked for (`None`: the runtime for its model-type), how.
#[derive(Clone, Copy)]
pub struct BuildRequest<'a> {
    pub spec: &'a ModelSpec,
    pub base: Option<&'a BaseChoice>,
    pub settings: &'a BuildSettings,
}

/// How to build, beyond what the model folder says.
#[derive(Debug, Clone)]
pub struct BuildSettings {
    pub compression: Compression,
    /// Where Python packages come from (wheelhouse, offline, index).
    pub packages: packages::Settings,
    /// The wheel cache (and the package layers remembered), under the home.
    pub wheel_cache: PathBuf,
    /// Start the image's runtime after the build (`serve.py --check`): a model that does not
    /// load fails the version. Images are unpacked for it under this folder.
    pub check: Option<PathBuf>,
    /// Where the version's new layers are also sent while they are written (`upload
    /// --registry`: see [`push::upload_to_registry`]).
    pub mirror: Option<Arc<dyn Mirror>>,
}

impl BuildSettings {
    /// The defaults, with the home's wheel cache.
    pub fn new(home: &Home) -> BuildSettings {
        BuildSettings {
            compression: Compression::default(),
            packages: packages::Settings::default(),
            wheel_cache: home.wheel_cache(),
            check: None,
            mirror: None,
        }
    }
}

/// What a build tells its watcher: steps (for the log and a terminal), and notes the user must
/// see whatever the output is (a default taken, a base not found).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Step(String),
    Note(String),
}

impl Event {
    pub fn text(&self) -> &str {
        match self {
            Event::Step(text) | Event::Note(text) => text,
        }
    }
}

/// The model's Python packages, locked and fetched for `base`'s interpreter (`None` when it
/// asks for none). `earlier`: the locks of earlier versions, newest first. On scratch, asked
/// for by name, there is nothing to install them for: a note says so.
pub fn prepare_packages(
    spec: &ModelSpec,
    base: &BaseImage,
    settings: &BuildSettings,
    earlier: &[String],
    log: &mut dyn FnMut(Event),
) -> Result<Option<Prepared>, PipelineError> {
    if base.source.is_none()
        && let Some(file) = packages::requested(&spec.dir)
    {
        log(Event::Note(format!(
            "{} is not installed: the base is scratch, which has no Python (leave --base out for the model-type's runtime)",
            file.display()
        )));
        return Ok(None);
    }
    Ok(packages::prepare(
        &spec.dir,
        base,
        &settings.packages,
        &settings.wheel_cache,
        earlier,
        &mut |line| log(Event::Step(line)),
    )?)
}

/// Builds the model image (its `packages`, when it has some) into `layout` and tags it;
/// `cache` (the catalogue, for the local store) remembers the layers of big files.
#[allow(clippy::too_many_arguments)]
pub fn build_to_layout(
    spec: &ModelSpec,
    base: &BaseImage,
    packages: Option<&Prepared>,
    version: Option<u32>,
    layout: &Layout,
    tag: &str,
    settings: &BuildSettings,
    cache: Option<&dyn DigestCache>,
    log: &mut dyn FnMut(Event),
) -> Result<BuiltImage, PipelineError> {
    let mut meta = ImageMeta {
        name: spec.name.clone(),
        version: version.map(|v| v.to_string()),
        model_type: spec.model_type.clone(),
        description: spec.description.clone(),
        metadata: spec.metadata.clone(),
        created: source_date_epoch()?,
        compression: settings.compression,
        labels: BTreeMap::new(),
    };
    let options = LayerOptions {
        mtime: meta.created,
        compression: settings.compression,
        ..LayerOptions::default()
    };
    let package_layers = match packages {
        None => Vec::new(),
        Some(prepared) => {
            let others = base.layers.len() + payload_layer_count(&spec.payload, &options) + 1;
            let room = packages::MAX_LAYERS.saturating_sub(others);
            let own = Provided::of_wheels(prepared.wheels.iter().map(|(wheel, _)| wheel));
            // The annotation: the model's own packages; the label: what the whole image has,
            // so that a model built on this image does not install them again.
            meta.metadata.insert(LABEL_PACKAGES.into(), own.label());
            let all = Provided::of_base(&base.config).and(own);
            meta.labels.insert(LABEL_PACKAGES.into(), all.label());
            packages::install(
                prepared,
                base,
                layout,
                &options,
                room,
                &settings.wheel_cache,
                &mut |line| log(Event::Step(line)),
            )?
        }
    };
    let contract_bytes = contract::to_protobin(&spec.contract);
    let parts = ModelParts {
        payload: &spec.payload,
        contract: &contract_bytes,
        packages: &package_layers,
        lock: packages.map(|p| p.lock_text.as_str()),
    };
    let built = model_image::build_image(&parts, base, &meta, layout, cache, &mut |line| {
        log(Event::Step(line))
    })?;
    // A version's tag never moves (issue #15): the store refuses to point it elsewhere.
    let mutability = if version.is_some() {
        Mutability::Immutable
    } else {
        Mutability::Mutable
    };
    layout.set_tag_as(tag, built.manifest.clone(), mutability)?;
    Ok(built)
}

/// The outcome of an upload, recorded in the catalogue.
#[derive(Debug, Clone)]
pub struct Uploaded {
    pub version: u32,
    pub image: String,
    pub built: BuiltImage,
    pub base: String,
    pub base_digest: Option<String>,
    /// Where the image was pushed after the local build, when it was.
    pub pushed: Option<crate::remote::Pushed>,
}

/// Runs after the local build and before the version is `Finished`: a push to a registry.
pub type AfterBuild<'a> = dyn FnMut(&dyn Catalog, u32, &Uploaded) -> Result<Option<crate::remote::Pushed>, PipelineError>
    + 'a;

/// `mlambda upload` into a file-backed store: takes a version, builds, tags, records. A
/// failure after the version is taken is recorded `Failed` with its error.
pub fn upload_to_store(
    catalog: &mut dyn Catalog,
    store: &Store,
    request: &BuildRequest,
    log: &mut dyn FnMut(Event),
) -> Result<Uploaded, (Option<u32>, PipelineError)> {
    upload_then(catalog, store, request, log, &mut |_, _, _| Ok(None))
}

/// `upload_to_store`, then `after_build` (a push); its failure fails the version.
pub fn upload_then(
    catalog: &mut dyn Catalog,
    store: &Store,
    request: &BuildRequest,
    log: &mut dyn FnMut(Event),
    after_build: &mut AfterBuild,
) -> Result<Uploaded, (Option<u32>, PipelineError)> {
    let version = new_version(catalog, request.spec).map_err(|e| (None, e.into()))?;
    build_version(catalog, store, request, version, log, after_build)
        .map_err(|e| (Some(version), e))
}

/// Takes the model's next version number and records it `Pending`.
pub fn new_version(catalog: &mut dyn Catalog, spec: &ModelSpec) -> Result<u32, CatalogError> {
    catalog.start_version(&NewVersion {
        model: spec.name.clone(),
        model_type: spec.model_type.clone(),
        contract: contract::to_protobin(&spec.contract),
        contract_text: contract::to_json(&spec.contract).to_string(),
        contract_source: spec.contract_source.clone(),
    })
}

/// Builds a version taken by [`new_version`] (`Running`, then `Finished`), every step in its
/// log; any failure is recorded `Failed` with its error.
pub fn build_version(
    catalog: &dyn Catalog,
    store: &Store,
    request: &BuildRequest,
    version: u32,
    log: &mut dyn FnMut(Event),
    after_build: &mut AfterBuild,
) -> Result<Uploaded, PipelineError> {
    let BuildRequest {
        spec,
        base: base_choice,
        settings,
    } = *request;
    let mut build_log = |event: Event| {
        let _ = catalog.append_log(&spec.name, version, event.text());
        log(event);
    };
    let result = (|| {
        catalog.set_running(&spec.name, version)?;
        let (base, note) = choose_base(
            store,
            base_choice,
            &spec.model_type,
            settings,
            &mut build_log,
        )?;
        if let Some(note) = note {
            build_log(Event::Note(note));
        }
        if let (Some(mirror), Some(source)) = (&settings.mirror, &base.source) {
            // The base's layers go to the registry (or are mounted there) while the model's
            // own are built.
            let digests: Vec<String> = base.layers.iter().map(|l| l.digest.clone()).collect();
            let mount_from = catalog.blob_locations(&mirror.registry(), &digests)?;
            mirror.existing(&base.layers, source.clone(), &mount_from);
        }
        let earlier = catalog.package_locks(&spec.name)?;
        let packages = prepare_packages(spec, &base, settings, &earlier, &mut build_log)?;
        let mut layout = store.repository(&spec.name)?;
        if let Some(mirror) = &settings.mirror {
            layout = layout.mirrored(mirror.clone());
        }
        let built = build_to_layout(
            spec,
            &base,
            packages.as_ref(),
            Some(version),
            &layout,
            &version.to_string(),
            settings,
            Some(catalog as &dyn DigestCache),
            &mut build_log,
        )?;
        if let Some(cache) = &settings.check {
            let found = crate::run::check(&layout, &version.to_string(), cache)?;
            build_log(Event::Step(format!(
                "check: the model loads in its image: {found}"
            )));
        }
        let image = format!("oci:{}:{version}", layout.dir().display());
        let mut uploaded = Uploaded {
            version,
            image,
            built,
            base: base.reference.clone(),
            base_digest: base.manifest_digest.clone(),
            pushed: None,
        };
        let record = BuildResult {
            base_image: uploaded.base.clone(),
            base_digest: uploaded.base_digest.clone(),
            image: uploaded.image.clone(),
            manifest_digest: uploaded.built.manifest.digest.clone(),
            config_digest: uploaded.built.config_digest.clone(),
            size: uploaded.built.size,
            packages: packages.map(|p| p.lock_text),
        };
        catalog.record_build(&spec.name, version, &record)?;
        match after_build(catalog, version, &uploaded)? {
            None => catalog.finish(&spec.name, version, &record)?,
            Some(pushed) => {
                catalog.record_push(&spec.name, version, &pushed.reference, &pushed.digest)?;
                uploaded.pushed = Some(pushed);
            }
        }
        Ok::<_, PipelineError>(uploaded)
    })();
    match &result {
        // Another process closed it (its lease ran out): that record stays as it is.
        Err(PipelineError::Catalog(CatalogError::Closed { .. })) => {}
        Err(error) => {
            let _ = catalog.fail(&spec.name, version, &error.to_string());
        }
        Ok(_) => {}
    }
    result
}
