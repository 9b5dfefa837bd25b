//! The shared libraries a base image has: the file names in its library folders, read from
//! the tar headers of its layers (remembered per base digest). A wheel's extension modules
//! need some of them (`libstdc++.so.6`, `libgomp.so.1`); manylinux wheels bundle the rest.

use super::PackagesError;
use crate::model_image::BaseImage;
use crate::oci::{MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::Path;

/// Where the dynamic loader looks without an rpath, on Debian and elsewhere.
const LIBRARY_DIRS: &[&str] = &[
    "lib",
    "lib64",
    "usr/lib",
    "usr/lib64",
    "usr/local/lib",
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
    "usr/lib/aarch64-linux-gnu",
];

/// The library file names of `base`; `cache_dir` keeps them per base manifest digest.
pub fn base_libraries(
    base: &BaseImage,
    cache_dir: &Path,
) -> Result<BTreeSet<String>, PackagesError> {
    let Some(source) = &base.source else {
        return Ok(BTreeSet::new());
    };
    let remembered = base
        .manifest_digest
        .as_ref()
        .map(|d| cache_dir.join(d.replace(':', "-")));
    if let Some(text) = remembered
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        return Ok(text.lines().map(str::to_string).collect());
    }
    let mut names = BTreeSet::new();
    for layer in &base.layers {
        let failed = |problem: String| PackagesError::Base {
            base: base.reference.clone(),
            problem: format!("layer {}: {problem}", layer.digest),
        };
        let blob = source
            .blob(&layer.digest, 0)
            .map_err(|e| failed(e.to_string()))?;
        let tar: Box<dyn Read> = match layer.media_type.as_str() {
            MEDIA_LAYER_GZIP => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            MEDIA_LAYER_ZSTD => {
                Box::new(zstd::stream::read::Decoder::new(blob).map_err(|e| failed(e.to_string()))?)
            }
            MEDIA_LAYER_TAR => blob,
            other => {
                return Err(failed(format!(
                    "media type {other} is not a layer mlambda reads"
                )));
            }
        };
        let mut archive = tar::Archive::new(tar);
        for entry in archive.entries().map_err(|e| failed(e.to_string()))? {
            let entry = entry.map_err(|e| failed(e.to_string()))?;
            let path = entry.path().map_err(|e| failed(e.to_string()))?;
            let path = path.to_string_lossy();
            let path = path.trim_start_matches("./").trim_start_matches('/');
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            if name.contains(".so") && LIBRARY_DIRS.contains(&dir) {
                names.insert(name.to_string());
            }
        }
    }
    if let Some(path) = remembered {
        // Best effort: a cache that cannot be written is read from the layers next time.
        let _ = std::fs::create_dir_all(cache_dir);
        let text: Vec<&str> = names.iter().map(String::as_str).collect();
        let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
        if std::fs::write(&tmp, text.join("\n")).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }
    Ok(names)
}
