//! Uploads to a remote registry: build into the local store exactly as for a local upload (so
//! the version exists here and can be pushed again), the new layers sent to the registry while
//! they are written; then push that image from the local layout to
//! `<registry>/<prefix>/<name>:<version>` (what the registry has is skipped), and record the
//! reference and the digest the registry confirmed.

use super::{BuildRequest, BuildSettings, Event, PipelineError, Uploaded, upload_then};
use crate::catalog::{Catalog, Status};
use crate::image::Source;
use crate::image::walk::parse_manifest;
use crate::remote::{
    ConnectOptions, PushRequest, Pushed, Registry, RegistryMirror, RemoteError, Target, Watcher,
    push_image,
};
use crate::store::{Layout, Store};
use std::sync::Arc;

/// A registry to push to, and how.
#[derive(Debug, Clone)]
pub struct Remote {
    pub target: Target,
    pub options: ConnectOptions,
}

/// `mlambda upload --registry http(s)://…`: the build and the push in one pass.
pub fn upload_to_registry(
    catalog: &mut dyn Catalog,
    store: &Store,
    request: &BuildRequest,
    remote: &Remote,
    log: &mut dyn FnMut(Event),
    watcher: &Watcher,
) -> Result<Uploaded, (Option<u32>, PipelineError)> {
    let name = request.spec.name.clone();
    let pass = OnePass::connect(remote, &name, request.settings).map_err(|e| (None, e))?;
    let request = BuildRequest {
        settings: &pass.settings,
        ..*request
    };
    upload_then(
        catalog,
        store,
        &request,
        log,
        &mut pass.after_build(store, &name, watcher),
    )
}

/// A version pushed in the same pass as its build (`upload --registry`, the manager with
/// `--registry`): its new layers go to the registry while they are written (see
/// `remote::mirror`), and the push after the build sends the rest — the base's layers (HEADed
/// or mounted), the config, anything the mirror gave up — then the tag. A build that fails
/// leaves no tag there, and no blob it did not finish.
pub struct OnePass {
    registry: Arc<Registry>,
    mirror: Arc<RegistryMirror>,
    remote: Remote,
    /// The build's settings, with the mirror.
    pub settings: BuildSettings,
}

impl OnePass {
    pub fn connect(
        remote: &Remote,
        name: &str,
        settings: &BuildSettings,
    ) -> Result<OnePass, PipelineError> {
        let registry = Arc::new(Registry::connect(&remote.target, &remote.options)?);
        let mirror = Arc::new(RegistryMirror::new(
            registry.clone(),
            &remote.target.repository(name),
        ));
        let settings = BuildSettings {
            mirror: Some(mirror.clone()),
            ..settings.clone()
        };
        Ok(OnePass {
            registry,
            mirror,
            remote: remote.clone(),
            settings,
        })
    }

    /// The step after the build: the push of the version's image.
    pub fn after_build<'a>(
        &'a self,
        store: &'a Store,
        name: &'a str,
        watcher: &'a Watcher,
    ) -> impl FnMut(&dyn Catalog, u32, &Uploaded) -> Result<Option<Pushed>, PipelineError> + 'a
    {
        move |catalog, version, uploaded| {
            self.mirror.settle();
            let layout = store.repository(name)?;
            let target = PushTarget {
                registry: &self.registry,
                remote: &self.remote,
                mirrored: Some(&self.mirror),
            };
            push_layout(
                catalog,
                &layout,
                name,
                version,
                &uploaded.built.manifest.digest,
                &target,
                watcher,
            )
            .map(Some)
        }
    }
}

/// Where a push goes: the registry, how it was reached, and the mirror that sent blobs ahead.
struct PushTarget<'a> {
    registry: &'a Registry,
    remote: &'a Remote,
    mirrored: Option<&'a RegistryMirror>,
}

/// `mlambda push NAME:VERSION`: a version built earlier (here, or on an air-gapped host whose
/// store was carried over) pushed from the local store.
pub fn push_version(
    catalog: &dyn Catalog,
    store: &Store,
    name: &str,
    version: u32,
    remote: &Remote,
    watcher: &Watcher,
) -> Result<Pushed, PipelineError> {
    let not_pushable = |why: String| PipelineError::Remote(RemoteError::Config(why));
    let record = catalog.version(name, version)?.ok_or_else(|| {
        not_pushable(format!(
            "no version {name}:{version} in the catalogue (`mlambda versions {name}` lists them)"
        ))
    })?;
    if matches!(record.status, Status::Pending | Status::Running) {
        return Err(not_pushable(format!(
            "{name}:{version} is still being built ({:?})",
            record.status
        )));
    }
    let digest = record.digest.clone().ok_or_else(|| {
        not_pushable(format!(
            "{name}:{version} has no image: its build failed ({})",
            record.error.as_deref().unwrap_or("no error recorded")
        ))
    })?;
    let layout = store.existing_repository(name).ok_or_else(|| {
        not_pushable(format!(
            "{name}:{version}: the local store {} has no repository '{name}'",
            store.root().display()
        ))
    })?;
    let tagged = layout.resolve(Some(&version.to_string()))?;
    if tagged.digest != digest {
        return Err(not_pushable(format!(
            "{name}:{version}: the local store holds {} under that tag, the catalogue {digest}",
            tagged.digest
        )));
    }
    let registry = Registry::connect(&remote.target, &remote.options)?;
    let target = PushTarget {
        registry: &registry,
        remote,
        mirrored: None,
    };
    let pushed = push_layout(catalog, &layout, name, version, &digest, &target, watcher)?;
    catalog.record_push(name, version, &pushed.reference, &pushed.digest)?;
    Ok(pushed)
}

/// Pushes one tagged image of a local layout, with mount sources from the catalogue, and
/// remembers where its blobs now are.
fn push_layout(
    catalog: &dyn Catalog,
    layout: &Layout,
    name: &str,
    version: u32,
    manifest_digest: &str,
    target: &PushTarget,
    watcher: &Watcher,
) -> Result<Pushed, PipelineError> {
    let PushTarget {
        registry,
        remote,
        mirrored,
    } = *target;
    let repository = remote.target.repository(name);
    let reference = remote.target.reference(&repository, &version.to_string());
    let _ = catalog.append_log(name, version, &format!("pushing to {reference}"));
    let manifest = Source::manifest(layout, Some(manifest_digest)).map_err(RemoteError::from)?;
    let parsed = parse_manifest(layout, &manifest).map_err(RemoteError::from)?;
    let blob_digests: Vec<String> = std::iter::once(parsed.config.digest)
        .chain(parsed.layers.into_iter().map(|l| l.digest))
        .collect();
    let known = catalog.blob_locations(&remote.target.authority, &blob_digests)?;
    let request = PushRequest {
        source: layout,
        manifest: &manifest,
        repository: &repository,
        tag: &version.to_string(),
        known_locations: &known,
        keep_tag: true,
    };
    let mut pushed = push_image(registry, &request, remote.options.parallel, watcher)?;
    let report = mirrored.map(RegistryMirror::report).unwrap_or_default();
    // The push found those there because this build sent them: they were uploaded (or
    // mounted) by it.
    for (digest, outcome) in &mut pushed.blobs {
        if report.sent.contains(digest) {
            *outcome = crate::remote::BlobOutcome::Uploaded;
        } else if let Some((_, early)) = report.early.iter().find(|(d, _)| d == digest) {
            *outcome = *early;
        }
    }
    let digests: Vec<String> = pushed.blobs.iter().map(|(d, _)| d.clone()).collect();
    catalog.add_blob_locations(&remote.target.authority, &repository, &digests)?;
    let count = |kind| pushed.blobs.iter().filter(|(_, o)| *o == kind).count();
    use crate::remote::BlobOutcome::{Existed, Mounted, Uploaded};
    let _ = catalog.append_log(
        name,
        version,
        &format!(
            "pushed {} as {} ({} blobs uploaded, {} mounted, {} already there)",
            pushed.reference,
            pushed.digest,
            count(Uploaded),
            count(Mounted),
            count(Existed)
        ),
    );
    if mirrored.is_some() {
        let mut line = match report.sent.len() {
            1 => "1 layer was sent while it was written".to_string(),
            n => format!("{n} layers were sent while they were written"),
        };
        for why in &report.given_up {
            line.push_str(&format!("; one was sent after the build instead ({why})"));
        }
        let _ = catalog.append_log(name, version, &line);
    }
    Ok(pushed)
}
