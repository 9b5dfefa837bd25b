//! A runtime's Python packages that PyPI has only as a source distribution (pyspark: its jars
//! are too big for a wheel there). Nothing is built: the archive, pinned by its sha256 and
//! fetched through the wheel cache like a wheel, is streamed once and the folders its
//! `sources.toml` names are copied to site-packages where the package's own setup.py puts them.

use super::assemble::AssembleError;
use crate::model_image::layer::{Compression, Layer, LayerError, LayerOptions, LayerTar, header};
use crate::packages::fetch::{Fetcher, Sources, WheelCache};
use crate::packages::lock::LockedWheel;
use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Deserialize)]
struct SourcesFile {
    source: Vec<Source>,
}

#[derive(Debug, Deserialize)]
struct Source {
    name: String,
    version: String,
    url: String,
    size: Option<u64>,
    sha256: String,
    copy: Vec<Copy>,
}

/// A file or folder of the archive (`from`, with the archive's top folder) and where it goes
/// under site-packages (`to`).
#[derive(Debug, Deserialize)]
struct Copy {
    from: String,
    to: String,
}

/// One layer per source distribution of `text` (a sources.toml), installed under `site`
/// (e.g. `usr/local/lib/python3.11/dist-packages`).
pub fn source_layers(
    text: &str,
    runtime: &str,
    site: &str,
    layout: &crate::store::Layout,
    assembly: &super::Assembly,
    options: &LayerOptions,
    log: &mut dyn FnMut(String),
) -> Result<Vec<Layer>, AssembleError> {
    let file: SourcesFile = toml::from_str(text).map_err(|e| {
        AssembleError::Fetch(format!(
            "the source distributions of runtime {runtime}: {e}"
        ))
    })?;
    let settings = assembly.packages;
    let mut fetcher = Fetcher::new(
        WheelCache::new(assembly.wheel_cache.to_path_buf()),
        Sources {
            wheelhouse: settings.wheelhouse.clone(),
            offline: settings.offline,
            indexes: settings.index_url.iter().cloned().collect(),
        },
    );
    let mut layers = Vec::new();
    for source in &file.source {
        let filename = source
            .url
            .rsplit('/')
            .next()
            .unwrap_or(&source.url)
            .to_string();
        let pinned = LockedWheel {
            name: source.name.clone(),
            version: source.version.clone(),
            filename: filename.clone(),
            url: Some(source.url.clone()),
            sha256: source.sha256.clone(),
            size: source.size,
        };
        let archive = fetcher.wheel(&pinned, None, log)?;
        let layer = copy_layer(&archive, source, site, layout, options)?;
        log(format!(
            "python package {} {} from its source distribution {filename} (copied, not built): layer {} ({} bytes)",
            source.name, source.version, layer.descriptor.digest, layer.descriptor.size
        ));
        layers.push(layer);
    }
    Ok(layers)
}

/// Streams the .tar.gz once, writing each entry under one of the `copy` folders to its place.
fn copy_layer(
    archive: &Path,
    source: &Source,
    site: &str,
    layout: &crate::store::Layout,
    options: &LayerOptions,
) -> Result<Layer, AssembleError> {
    let what = format!("{} {}", source.name, source.version);
    let unreadable = |e: std::io::Error| {
        AssembleError::Fetch(format!(
            "cannot read {} ({what}): {e}",
            archive.display()
        ))
    };
    let io_err = |e| LayerError::Write {
        layer: what.clone(),
        source: e,
    };
    let file = std::fs::File::open(archive).map_err(unreadable)?;
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut layer = LayerTar::start(layout, Compression::Gzip)?;
    let mut dirs = std::collections::BTreeSet::new();
    let mut copied = vec![false; source.copy.len()];
    for entry in entries.entries().map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path().map_err(unreadable)?.to_string_lossy().into_owned();
        let path = path.trim_end_matches('/');
        let Some((index, target)) = source.copy.iter().enumerate().find_map(|(i, c)| {
            let rest = path.strip_prefix(&c.from)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| (i, format!("{}{rest}", c.to)))
        }) else {
            continue;
        };
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            continue;
        }
        copied[index] = true;
        // Parent folders first, each once: the copied trees nest (jars go into pyspark/).
        let mut parent = String::new();
        let parents: Vec<&str> = target.split('/').collect();
        let upto = if kind.is_dir() {
            parents.len()
        } else {
            parents.len() - 1
        };
        for part in &parents[..upto] {
            parent = if parent.is_empty() {
                part.to_string()
            } else {
                format!("{parent}/{part}")
            };
            if dirs.insert(parent.clone()) {
                layer
                    .append_dir(&format!("{site}/{parent}"), options)
                    .map_err(io_err)?;
            }
        }
        if kind.is_file() {
            let mode = if entry.header().mode().unwrap_or(0o644) & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            let mut h = header(tar::EntryType::Regular, mode, entry.size(), options);
            layer
                .append(&mut h, &format!("{site}/{target}"), entry)
                .map_err(io_err)?;
        }
    }
    if let Some(missing) = copied.iter().position(|c| !c) {
        return Err(AssembleError::Fetch(format!(
            "{}: the source distribution of {what} has no '{}'",
            archive.display(),
            source.copy[missing].from
        )));
    }
    Ok(layer.finish(layout, format!("python package {what} (source distribution, copied)"))?)
}
