//! Reading the small metadata files some frameworks keep beside their weights (Spark's JSON
//! lines, Keras' `config.json`, MLflow's `MLmodel`) with a cap on their size, so that a hostile
//! or mistaken multi-gigabyte file is refused instead of read into memory.

use super::InferError;
use std::io::Read;
use std::path::Path;

/// Larger than any real metadata file by orders of magnitude (a Keras `config.json` of a
/// thousand-layer model is a few MiB).
pub(crate) const MAX_METADATA: u64 = 64 << 20;

/// Reads the whole of `path`, refusing more than [`MAX_METADATA`] bytes.
pub(crate) fn read_file(path: &Path, format: &'static str) -> Result<Vec<u8>, InferError> {
    let file = super::open_model_file(path)?;
    read_all(file, path, format)
}

/// Reads `reader` to its end, refusing more than [`MAX_METADATA`] bytes; `path` names it.
pub(crate) fn read_all<R: Read>(
    reader: R,
    path: &Path,
    format: &'static str,
) -> Result<Vec<u8>, InferError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_METADATA + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| InferError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_METADATA {
        return Err(too_large(path, format));
    }
    Ok(bytes)
}

pub(crate) fn too_large(path: &Path, format: &'static str) -> InferError {
    InferError::Corrupt {
        path: path.to_path_buf(),
        format,
        reason: format!(
            "it is larger than {} MiB, far more than such metadata ever is; refusing to read it",
            MAX_METADATA >> 20
        ),
    }
}

/// Bytes as UTF-8 text, or a `Corrupt` error naming the file.
pub(crate) fn utf8<'a>(
    bytes: &'a [u8],
    path: &Path,
    format: &'static str,
) -> Result<&'a str, InferError> {
    std::str::from_utf8(bytes).map_err(|e| InferError::Corrupt {
        path: path.to_path_buf(),
        format,
        reason: format!("not UTF-8 text ({e})"),
    })
}
