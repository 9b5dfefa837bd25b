//! Uploads to a remote registry: build into the local store exactly as for a local upload (so
//! the version exists here and can be pushed again), then push that image from the local layout
//! to `<registry>/<prefix>/<name>:<version>`, and record the reference and the digest the
//! registry confirmed.

use super::{BuildRequest, Event, PipelineError, Uploaded, upload_then};
use crate::catalog::{Catalog, Status};
use crate::image::Source;
use crate::image::walk::parse_manifest;
use crate::remote::{
    ConnectOptions, PushRequest, Pushed, Registry, RemoteError, Target, Watcher, push_image,
};
use crate::store::{Layout, Store};

/// A registry to push to, and how.
#[derive(Debug, Clone)]
pub struct Remote {
    pub target: Target,
    pub options: ConnectOptions,
}

/// `mlambda upload --registry http(s)://…`.
pub fn upload_to_registry(
    catalog: &mut dyn Catalog,
    store: &Store,
    request: &BuildRequest,
    remote: &Remote,
    log: &mut dyn FnMut(Event),
    watcher: &Watcher,
) -> Result<Uploaded, (Option<u32>, PipelineError)> {
    let name = request.spec.name.clone();
    upload_then(
        catalog,
        store,
        request,
        log,
        &mut push_after_build(store, &name, remote, watcher),
    )
}

/// The step after a version's build that pushes it to `remote` (`upload --registry`, and the
/// manager with `--registry`).
pub fn push_after_build<'a>(
    store: &'a Store,
    name: &'a str,
    remote: &'a Remote,
    watcher: &'a Watcher,
) -> impl FnMut(&dyn Catalog, u32, &Uploaded) -> Result<Option<Pushed>, PipelineError> + 'a {
    move |catalog, version, uploaded| {
        let layout = store.repository(name)?;
        push_layout(
            catalog,
            &layout,
            name,
            version,
            &uploaded.built.manifest.digest,
            remote,
            watcher,
        )
        .map(Some)
    }
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
    let pushed = push_layout(catalog, &layout, name, version, &digest, remote, watcher)?;
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
    remote: &Remote,
    watcher: &Watcher,
) -> Result<Pushed, PipelineError> {
    let repository = remote.target.repository(name);
    let reference = remote.target.reference(&repository, &version.to_string());
    let _ = catalog.append_log(name, version, &format!("pushing to {reference}"));
    let registry = Registry::connect(&remote.target, &remote.options)?;
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
    let pushed = push_image(&registry, &request, remote.options.parallel, watcher)?;
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
    Ok(pushed)
}
