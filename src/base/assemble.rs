//! `mlambda base build`: a runtime image assembled from Debian packages, with no container
//! and no package script run, kept in the local store as `base/<runtime>:latest`.

use super::debian::{DebError, deb_layer};
use super::runtimes::{Runtime, runtime_file};
use super::{RUNTIME_TAG, runtime_repository};
use crate::model_image::layer::{Compression, Layer, LayerOptions, LayerTar, header};
use crate::model_image::{BuildError, BuiltImage, write_image};
use crate::oci;
use crate::packages::provided::{LABEL_PACKAGES, Provided};
use crate::packages::target::{LABEL_GLIBC, LABEL_PYTHON, LABEL_SCHEME};
use crate::store::{Store, StoreError};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum AssembleError {
    #[error(
        "runtime '{0}' has no Debian packages to build from; bring it with `mlambda base import {0} SOURCE`"
    )]
    ImportOnly(String),
    #[error(
        "{dir}: no .deb file for package '{package}' (expected {package}_<version>_<arch>.deb)"
    )]
    MissingDeb { dir: String, package: String },
    #[error("fetching Debian packages failed: {0}")]
    Fetch(String),
    #[error(transparent)]
    Deb(#[from] DebError),
    #[error(transparent)]
    Layer(#[from] crate::model_image::layer::LayerError),
    #[error(transparent)]
    Image(#[from] BuildError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Packages(#[from] crate::packages::PackagesError),
    #[error(
        "runtime '{0}' declares Python packages but no `python` and `glibc` to install them for"
    )]
    NoPython(String),
}

/// The .deb files a runtime was assembled from: only mlambda's assembled runtimes have it.
pub const DEBIAN_PACKAGES_ANNOTATION: &str = "io.mlambda.base.debian-packages";

/// The digest of the runtime's definition it was built from (see `Runtime::definition_digest`).
pub const DEFINITION_ANNOTATION: &str = "io.mlambda.runtime.definition";

/// How a runtime is assembled: where its .deb files and wheels come from, and when it is.
#[derive(Debug, Clone, Copy)]
pub struct Assembly<'a> {
    /// A folder with the .deb files; `None`: fetched with `apt-get download`.
    pub debs: Option<&'a Path>,
    pub created: u64,
    pub packages: &'a crate::packages::Settings,
    pub wheel_cache: &'a Path,
}

/// Builds `runtime` from its .deb files and wheels, and tags it in the store.
pub fn build_runtime(
    store: &Store,
    runtime: &Runtime,
    assembly: &Assembly,
    log: &mut dyn FnMut(String),
) -> Result<BuiltImage, AssembleError> {
    let created = assembly.created;
    if runtime.debian.is_empty() {
        return Err(AssembleError::ImportOnly(runtime.name.clone()));
    }
    let fetched;
    let debs_dir = match assembly.debs {
        Some(dir) => dir.to_path_buf(),
        None => {
            fetched = tempfile::Builder::new()
                .prefix("mlambda-debs-")
                .tempdir()
                .map_err(|e| AssembleError::Fetch(e.to_string()))?;
            log(format!(
                "fetching {} Debian packages with apt-get download",
                runtime.debian.len()
            ));
            fetch_debs(&runtime.debian, fetched.path())?;
            fetched.path().to_path_buf()
        }
    };
    let layout = store.repository(&runtime_repository(&runtime.name))?;
    let options = LayerOptions {
        mtime: created,
        ..LayerOptions::default()
    };
    let mut layers = Vec::new();
    let mut packages = Vec::new();
    for package in &runtime.debian {
        let deb = find_deb(&debs_dir, package)?;
        let layer = deb_layer(&deb, &layout, &options)?;
        log(format!(
            "layer {} ({} bytes): {}",
            layer.descriptor.digest, layer.descriptor.size, layer.comment
        ));
        packages.push(
            deb.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        layers.push(layer);
    }
    let mut provided = Provided::default();
    if let Some(lock) = &runtime.wheels {
        let (wheels, installed) =
            runtime_wheels(runtime, lock, &layout, &layers, assembly, &options, log)?;
        layers.extend(wheels);
        provided = installed;
    }
    if let Some(sources) = &runtime.sources {
        let python = runtime
            .python
            .as_deref()
            .ok_or_else(|| AssembleError::NoPython(runtime.name.clone()))?;
        let site = format!("usr/local/lib/python{python}/dist-packages");
        layers.extend(super::sources::source_layers(
            sources,
            &runtime.name,
            &site,
            &layout,
            assembly,
            &options,
            log,
        )?);
    }
    layers.push(runtime_layer(runtime, &layout, &options)?);

    let created_text = oci::rfc3339(created);
    let mut runtime_config = serde_json::Map::new();
    runtime_config.insert("Env".into(), json!(runtime.env));
    if !runtime.entrypoint.is_empty() {
        runtime_config.insert("Entrypoint".into(), json!(runtime.entrypoint));
    }
    if !runtime.cmd.is_empty() {
        runtime_config.insert("Cmd".into(), json!(runtime.cmd));
    }
    if !runtime.expose.is_empty() {
        let ports: serde_json::Map<String, serde_json::Value> = runtime
            .expose
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        runtime_config.insert("ExposedPorts".into(), serde_json::Value::Object(ports));
    }
    if let Some(dir) = &runtime.workdir {
        runtime_config.insert("WorkingDir".into(), json!(dir));
    }
    let mut labels = serde_json::Map::new();
    if let Some(python) = &runtime.python {
        labels.insert(LABEL_PYTHON.into(), json!(python));
        labels.insert(LABEL_SCHEME.into(), json!("debian"));
    }
    if let Some(glibc) = &runtime.glibc {
        labels.insert(LABEL_GLIBC.into(), json!(glibc));
    }
    if !provided.is_empty() {
        labels.insert(LABEL_PACKAGES.into(), json!(provided.label()));
    }
    if !labels.is_empty() {
        runtime_config.insert("Labels".into(), serde_json::Value::Object(labels));
    }
    let config = json!({
        "created": created_text,
        "architecture": crate::oci::host_architecture(),
        "os": "linux",
        "config": runtime_config,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|l| json!({"created": created_text, "created_by": format!("mlambda base build: {}", l.comment)})).collect::<Vec<_>>(),
    });
    let annotations = BTreeMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            runtime.name.clone(),
        ),
        (
            "org.opencontainers.image.description".to_string(),
            runtime.description.clone(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            created_text.clone(),
        ),
        (DEBIAN_PACKAGES_ANNOTATION.to_string(), packages.join(" ")),
        (
            DEFINITION_ANNOTATION.to_string(),
            runtime.definition_digest(),
        ),
    ]);
    let built = write_image(
        &layout,
        &config,
        layers.iter().map(|l| l.descriptor.clone()).collect(),
        annotations,
    )?;
    layout.set_tag(RUNTIME_TAG, built.manifest.clone())?;
    log(format!(
        "runtime {} built: {} ({} layers)",
        runtime.name,
        built.manifest.digest,
        layers.len()
    ));
    Ok(built)
}

/// The runtime's Python packages, installed from its lock onto its Debian packages (whose
/// libraries the extension modules may need), and what they are.
fn runtime_wheels(
    runtime: &Runtime,
    lock: &str,
    layout: &crate::store::Layout,
    debian: &[Layer],
    assembly: &Assembly,
    options: &LayerOptions,
    log: &mut dyn FnMut(String),
) -> Result<(Vec<Layer>, Provided), AssembleError> {
    let (Some(python), Some(glibc)) = (&runtime.python, runtime.glibc_version()) else {
        return Err(AssembleError::NoPython(runtime.name.clone()));
    };
    let target = crate::packages::target::PythonTarget::for_platform(
        python,
        crate::oci::host_architecture(),
        glibc,
    )
    .map_err(|_| AssembleError::NoPython(runtime.name.clone()))?;
    let origin = format!("the wheels of runtime {}", runtime.name);
    let prepared = crate::packages::prepare_lock(
        lock,
        &origin,
        target,
        assembly.packages,
        assembly.wheel_cache,
        log,
    )?;
    let so_far = crate::model_image::BaseImage {
        reference: format!("runtime {} (its Debian packages)", runtime.name),
        manifest_digest: None,
        config: json!({}),
        layers: debian.iter().map(|l| l.descriptor.clone()).collect(),
        source: Some(std::sync::Arc::new(layout.clone())),
    };
    let room = crate::packages::MAX_LAYERS.saturating_sub(debian.len() + 1);
    let layers = crate::packages::install(
        &prepared,
        &so_far,
        layout,
        options,
        room,
        assembly.wheel_cache,
        log,
    )?;
    let provided = Provided::of_wheels(prepared.wheels.iter().map(|(wheel, _)| wheel));
    Ok((layers, provided))
}

/// The runtime's own files, links and folders, after its packages.
fn runtime_layer(
    runtime: &Runtime,
    layout: &crate::store::Layout,
    options: &LayerOptions,
) -> Result<Layer, AssembleError> {
    let io_err = |e| crate::model_image::layer::LayerError::Write {
        layer: "runtime files".into(),
        source: e,
    };
    let mut tar = LayerTar::start(layout, Compression::Gzip)?;
    let mut dirs: Vec<String> = runtime.dirs.clone();
    for (path, _) in &runtime.files {
        let mut parent = Path::new(path).parent();
        while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.push(dir.to_string_lossy().into_owned());
            parent = dir.parent();
        }
    }
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        // /tmp is world-writable with the sticky bit, as on any Linux system.
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        let mut h = header(tar::EntryType::Directory, mode, 0, options);
        tar.append(&mut h, &format!("{dir}/"), std::io::empty())
            .map_err(io_err)?;
    }
    let mut entries: Vec<(&String, Option<&str>, Option<&String>)> = Vec::new();
    for (path, source) in &runtime.files {
        entries.push((path, runtime_file(source), None));
    }
    for (path, target) in &runtime.links {
        entries.push((path, None, Some(target)));
    }
    entries.sort_by(|a, b| a.0.cmp(b.0));
    for (path, content, target) in entries {
        match (content, target) {
            (Some(content), _) => {
                let mut h = header(
                    tar::EntryType::Regular,
                    0o644,
                    content.len() as u64,
                    options,
                );
                tar.append(&mut h, path, content.as_bytes())
                    .map_err(io_err)?;
            }
            (None, Some(target)) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0, options);
                tar.append_link(&mut h, path, target).map_err(io_err)?;
            }
            (None, None) => {}
        }
    }
    Ok(tar.finish(layout, format!("runtime {} files", runtime.name))?)
}

fn fetch_debs(packages: &[String], dest: &Path) -> Result<(), AssembleError> {
    let script = dest.join(".fetch-debs.sh");
    let content = runtime_file("fetch-debs.sh").unwrap_or_default();
    std::fs::write(&script, content).map_err(|e| AssembleError::Fetch(e.to_string()))?;
    let output = Command::new("sh")
        .arg(&script)
        .arg(dest)
        .args(packages)
        .output()
        .map_err(|e| AssembleError::Fetch(format!("cannot run sh: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("no message");
        return Err(AssembleError::Fetch(last.to_string()));
    }
    Ok(())
}

fn find_deb(dir: &Path, package: &str) -> Result<PathBuf, AssembleError> {
    let missing = || AssembleError::MissingDeb {
        dir: dir.display().to_string(),
        package: package.to_string(),
    };
    let prefix = format!("{package}_");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(&prefix) && n.ends_with(".deb")
            })
        })
        .collect();
    found.sort();
    found.pop().ok_or_else(missing)
}
