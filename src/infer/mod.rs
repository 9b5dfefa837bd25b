//! Contract inference: the contract a model folder's own framework metadata describes
//! (SPEC section 3), for folders that come without a hand-written contract.
//!
//! One file per framework. Each offers a [`Detector`]: which files of a folder it would read,
//! and how to turn one of them into signatures. [`infer`] asks every detector in turn; adding a
//! framework is one more file and one more line in [`DETECTORS`].

mod capped;
mod flatbuf;
mod gguf;
mod hdf5;
mod keras;
mod mlflow;
mod nometa;
mod onnx;
mod pickle;
mod proto;
mod pytorch;
mod safetensors;
mod spark;
mod tensorflow;
mod text;
mod tflite;
mod weights;
mod wire;

pub use keras::{infer_keras_h5_reader, infer_keras_reader};
pub use mlflow::infer_mlmodel;
pub use nometa::{explain_mxnet_symbol, explain_pickle, explain_torch_zip};
pub use onnx::{check_external_data_in, infer_onnx_reader};
pub use pytorch::infer_pt2_reader;
pub use spark::infer_spark_dir;
pub use tensorflow::{infer_savedmodel_reader, infer_savedmodel_text_reader};
pub use tflite::infer_tflite_reader;
pub use weights::{summary as weights_summary, weight_facts};

use crate::contract::Signature;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Opens a model file, with an error that names it.
pub(crate) fn open_model_file(path: &Path) -> Result<std::fs::File, InferError> {
    std::fs::File::open(path).map_err(|source| InferError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What a framework's metadata says about a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inferred {
    /// Sorted by name, with their fields sorted by name, so the output is deterministic.
    pub signatures: Vec<Signature>,
    /// `<framework>:<version>`, e.g. "tensorflow:2.4.0", "onnx:13".
    pub model_type: String,
    /// Where the contract came from, naming the file, e.g. "TensorFlow SavedModel (saved_model.pb)".
    pub source: String,
    /// What the contract could not express faithfully; for the user to read.
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("cannot read {}: {source}; check that it exists and is readable", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: not a valid {format}: {reason}. The file is corrupt or truncated: export the model \
         again, or write the contract in serving.yaml",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    /// A damaged weight file (safetensors, GGUF): read whatever the contract came from, so
    /// writing one does not help, unlike [`InferError::Corrupt`].
    #[error(
        "{}: not a valid {format}: {reason}. The file is corrupt or truncated: save or \
         download the weights again",
        path.display()
    )]
    CorruptWeights {
        path: PathBuf,
        format: &'static str,
        reason: String,
    },
    #[error("{}: {reason}. Write the contract in serving.yaml", path.display())]
    NoContract { path: PathBuf, reason: String },
    /// The model file is fine but a file it needs (ONNX external data) is not in the folder.
    #[error("{}: {reason}", path.display())]
    MissingFile { path: PathBuf, reason: String },
    #[error(
        "{}: cannot tell which model to infer the contract from, there are several: {}; {help}",
        dir.display(),
        candidates.join(", ")
    )]
    Ambiguous {
        dir: PathBuf,
        /// "framework: file" for each candidate.
        candidates: Vec<String>,
        help: String,
    },
    /// A format that saves no usable input/output metadata (pickles, TorchScript, state_dicts,
    /// MXNet symbols): why, and a serving.yaml `contract:` block to fill in.
    #[error(
        "{}: cannot infer a contract from this {format}: {reason}. Write the contract in \
         serving.yaml; this skeleton has the names the file reveals, replace each FILL_IN:\n\n\
         {skeleton}",
        path.display()
    )]
    NoMetadata {
        path: PathBuf,
        format: String,
        reason: String,
        skeleton: String,
    },
}

/// Looks at the folder's files and infers from the first framework that recognises it.
///
/// `Ok(None)`: no recognised framework file. `model_type_hint` ("onnx:13", "tensorflow:*"...)
/// picks among several formats: only the framework it names is considered, so a hint naming a
/// framework with no file here gives `Ok(None)`. Several candidates and no hint: an error
/// listing the candidates.
pub fn infer(dir: &Path, model_type_hint: Option<&str>) -> Result<Option<Inferred>, InferError> {
    let folder = Folder::read(dir)?;
    let wanted = model_type_hint.map(framework_of);
    let mut candidates = Vec::new();
    for detector in DETECTORS {
        if wanted.as_ref().is_some_and(|w| w != detector.framework) {
            continue;
        }
        for path in (detector.detect)(&folder) {
            candidates.push((detector, path));
        }
    }
    // Formats without metadata only explain themselves when nothing better is here, whatever
    // the hint: without a contract the build cannot go on anyway.
    if candidates.is_empty() {
        for detector in nometa::DETECTORS {
            for path in (detector.detect)(&folder) {
                candidates.push((detector, path));
            }
        }
    }
    match candidates.as_slice() {
        [] => Ok(None),
        [(detector, path)] => (detector.infer)(path).map(Some),
        _ => Err(ambiguous(dir, &candidates, wanted.is_some())),
    }
}

/// One framework's way of recognising a folder and reading a contract out of it.
pub(crate) struct Detector {
    /// The framework part of a model-type ("tensorflow" in "tensorflow:2.4.0").
    pub framework: &'static str,
    /// The files (or folders) in `folder` this framework would infer from; empty if none.
    pub detect: fn(&Folder) -> Vec<PathBuf>,
    pub infer: fn(&Path) -> Result<Inferred, InferError>,
}

/// In the order they are asked; the order matters only for the listing of candidates.
const DETECTORS: &[Detector] = &[
    tensorflow::DETECTOR,
    onnx::DETECTOR,
    spark::DETECTOR,
    keras::DETECTOR,
    mlflow::DETECTOR,
    tflite::DETECTOR,
    pytorch::DETECTOR,
];

/// The top level of a model folder, read once for all detectors.
pub(crate) struct Folder {
    pub dir: PathBuf,
    /// Names of the regular files (symlinks followed), hidden ones excluded, sorted.
    pub files: Vec<String>,
}

impl Folder {
    fn read(dir: &Path) -> Result<Folder, InferError> {
        let io = |source| InferError::Io {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            // A dangling symlink is not a model file; the payload step reports it.
            let is_file = std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file());
            if is_file && !name.starts_with('.') {
                files.push(name);
            }
        }
        files.sort();
        Ok(Folder {
            dir: dir.to_path_buf(),
            files,
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.files.iter().any(|f| f == name)
    }

    /// Files whose extension is `ext`, compared without regard to case.
    pub fn with_extension(&self, ext: &str) -> Vec<PathBuf> {
        self.files
            .iter()
            .filter(|f| {
                Path::new(f)
                    .extension()
                    .is_some_and(|e| e.eq_ignore_ascii_case(ext))
            })
            .map(|f| self.dir.join(f))
            .collect()
    }
}

fn framework_of(model_type: &str) -> String {
    let framework = model_type.split(':').next().unwrap_or_default();
    framework.trim().to_ascii_lowercase()
}

fn ambiguous(dir: &Path, candidates: &[(&Detector, PathBuf)], hinted: bool) -> InferError {
    let name = |path: &Path| path.strip_prefix(dir).unwrap_or(path).display().to_string();
    let mut frameworks: Vec<&str> = candidates.iter().map(|(d, _)| d.framework).collect();
    frameworks.dedup();
    let mut help = String::new();
    if frameworks.len() > 1 && !hinted {
        let _ = write!(
            help,
            "set model-type to choose the framework (e.g. \"{}:*\"), ",
            frameworks[0]
        );
    }
    help.push_str("keep only one model file in the folder, or write the contract in serving.yaml");
    InferError::Ambiguous {
        dir: dir.to_path_buf(),
        candidates: candidates
            .iter()
            .map(|(d, path)| format!("{}: {}", d.framework, name(path)))
            .collect(),
        help,
    }
}

/// The file name, for messages and `Inferred::source`.
pub(crate) fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// A version string from a file, if it is fit to be part of a model-type.
pub(crate) fn clean_version(version: &str) -> Option<&str> {
    let fits = !version.is_empty()
        && version.len() <= 64
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    fits.then_some(version)
}

/// Quotes a string from a file for a message: escaped and cut short.
pub(crate) fn quote(text: &str) -> String {
    let mut quoted: String = text
        .chars()
        .take(80)
        .collect::<String>()
        .escape_debug()
        .collect();
    if text.chars().count() > 80 {
        quoted.push('…');
    }
    format!("\"{quoted}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framework_of_model_type() {
        assert_eq!(framework_of("onnx:13"), "onnx");
        assert_eq!(framework_of("TensorFlow:*"), "tensorflow");
        assert_eq!(framework_of("spark"), "spark");
    }

    #[test]
    fn versions_fit_for_a_model_type() {
        assert_eq!(clean_version("2.0.0-beta1"), Some("2.0.0-beta1"));
        assert_eq!(clean_version(""), None);
        assert_eq!(clean_version("1.0\nx"), None);
        assert_eq!(clean_version("1 0"), None);
    }
}
