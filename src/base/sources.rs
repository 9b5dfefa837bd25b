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
        AssembleError::Fetch(format!("cannot read {} ({what}): {e}", archive.display()))
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
        let path = entry
            .path()
            .map_err(unreadable)?
            .to_string_lossy()
            .into_owned();
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
    Ok(layer.finish(
        layout,
        format!("python package {what} (source distribution, copied)"),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Layout;

    /// A .tar.gz laid out as pyspark's sdist is: the package, and its jars beside it.
    fn sdist(path: &Path) {
        let file = std::fs::File::create(path).unwrap();
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::fast(),
        ));
        let mut add = |name: &str, data: &[u8], mode: u32| {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_cksum();
            tar.append_data(&mut h, name, data).unwrap();
        };
        add("pkg-1.0/pkg/__init__.py", b"VERSION = '1.0'\n", 0o644);
        add("pkg-1.0/deps/jars/core.jar", b"PK", 0o644);
        add("pkg-1.0/deps/bin/run", b"#!/bin/sh\n", 0o755);
        add("pkg-1.0/PKG-INFO", b"Name: pkg\nVersion: 1.0\n", 0o644);
        tar.into_inner().unwrap().finish().unwrap();
    }

    fn source(copy: &[(&str, &str)]) -> Source {
        Source {
            name: "pkg".into(),
            version: "1.0".into(),
            url: "https://files.example/pkg-1.0.tar.gz".into(),
            size: None,
            sha256: String::new(),
            copy: copy
                .iter()
                .map(|(from, to)| Copy {
                    from: from.to_string(),
                    to: to.to_string(),
                })
                .collect(),
        }
    }

    #[test]
    fn the_named_folders_of_a_source_distribution_are_copied_where_setup_py_puts_them() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("pkg-1.0.tar.gz");
        sdist(&archive);
        let layout = Layout::create(&dir.path().join("layout")).unwrap();
        let pkg = source(&[
            ("pkg-1.0/pkg", "pkg"),
            ("pkg-1.0/deps/jars", "pkg/jars"),
            ("pkg-1.0/PKG-INFO", "pkg-1.0.dist-info/METADATA"),
        ]);
        let layer = copy_layer(&archive, &pkg, "site", &layout, &LayerOptions::default()).unwrap();
        let blob = layout.open_blob(&layer.descriptor.digest).unwrap();
        let mut names = Vec::new();
        for entry in tar::Archive::new(flate2::read::GzDecoder::new(blob))
            .entries()
            .unwrap()
        {
            names.push(entry.unwrap().path().unwrap().display().to_string());
        }
        assert_eq!(
            names,
            [
                "site/pkg/",
                "site/pkg/__init__.py",
                "site/pkg/jars/",
                "site/pkg/jars/core.jar",
                "site/pkg-1.0.dist-info/",
                "site/pkg-1.0.dist-info/METADATA",
            ]
        );

        // A folder the archive does not have is an error that names it, not a silent gap.
        let wrong = source(&[("pkg-1.0/python/pkg", "pkg")]);
        let error = copy_layer(&archive, &wrong, "site", &layout, &LayerOptions::default())
            .unwrap_err()
            .to_string();
        assert!(error.contains("has no 'pkg-1.0/python/pkg'"), "{error}");
    }
}
