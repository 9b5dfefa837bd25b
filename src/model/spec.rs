//! Everything `upload`, `build` and `contract` need to know about a model folder, resolved
//! with the precedence of SPEC section 1: flags > serving.yaml > contract files > inference.

use super::name::{normalize_model_name, validate_model_name};
use super::payload::{Payload, PayloadError, RequestedEntry, resolve_payload};
use super::serving::{ServingError, ServingFile, Spanned, parse_serving_yaml, read_contract_file};
use crate::contract::{Contract, Signature};
use crate::infer::{InferError, infer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Values given on the command line; they win over the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub name: Option<String>,
    pub model_type: Option<String>,
    /// A contract given beside the folder (an upload's metadata), and where it came from.
    pub contract: Option<(Vec<Signature>, String)>,
    /// Metadata entries given beside the folder; they win over serving.yaml's.
    pub metadata: BTreeMap<String, String>,
    /// The folder's name means nothing (a server's temporary folder): a model without a
    /// name is an error instead of being named after it.
    pub no_folder_name: bool,
}

#[derive(Debug, Clone)]
pub struct ModelSpec {
    pub dir: PathBuf,
    pub name: String,
    pub model_type: String,
    pub description: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub contract: Contract,
    /// Where the contract came from, for people: "serving.yaml", "contract.prototxt",
    /// "inferred from TensorFlow SavedModel (saved_model.pb)".
    pub contract_source: String,
    pub payload: Payload,
    /// Notes and warnings to show the user (defaults taken, keys without effect).
    pub notes: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{0}: no such model folder")]
    NoFolder(PathBuf),
    #[error(transparent)]
    Serving(#[from] ServingError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error(transparent)]
    Infer(#[from] InferError),
    #[error("{location}invalid model name '{name}': {problem}")]
    Name {
        location: String,
        name: String,
        problem: String,
    },
    #[error(
        "the model has no name: set `name:` in serving.yaml or give one with the upload (`name` in its metadata)"
    )]
    NoName,
    #[error(
        "{dir}: no contract found: add a `contract:` section to serving.yaml (signatures with inputs and outputs), a contract.prototxt, or a model file mlambda can read the contract from (TensorFlow SavedModel, ONNX, …)"
    )]
    NoContract { dir: String },
}

pub fn load_model(dir: &Path, overrides: &Overrides) -> Result<ModelSpec, ModelError> {
    if !dir.is_dir() {
        return Err(ModelError::NoFolder(dir.to_path_buf()));
    }
    let mut notes = Vec::new();
    let serving_path = ["serving.yaml", "serving.yml"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file());
    let serving = match &serving_path {
        Some(path) => Some(parse_serving_yaml(path)?),
        None => None,
    };
    if let Some(file) = &serving {
        notes.extend(file.warnings.iter().cloned());
    }

    let name = resolve_name(dir, overrides, serving.as_ref(), &mut notes)?;
    let hint = overrides.model_type.clone().or_else(|| {
        serving
            .as_ref()
            .and_then(|s| s.model_type.as_ref())
            .map(|m| m.value.clone())
    });

    let (signatures, contract_source, inferred_type) = match &overrides.contract {
        Some((signatures, source)) => (signatures.clone(), source.clone(), None),
        None => resolve_contract(dir, serving.as_ref(), hint.as_deref(), &mut notes)?,
    };
    let model_type = match (hint, inferred_type) {
        (Some(given), _) => given,
        (None, Some(inferred)) => inferred,
        (None, None) => {
            notes.push(
                "no model-type given (serving.yaml `model-type:` or --model-type); using 'unknown'"
                    .into(),
            );
            "unknown".into()
        }
    };

    let requested: Option<Vec<RequestedEntry>> = serving.as_ref().and_then(|s| {
        s.payload.as_ref().map(|entries| {
            entries
                .iter()
                .map(|e| RequestedEntry {
                    path: e.value.clone(),
                    location: location(&s.path, e),
                })
                .collect()
        })
    });
    let payload = resolve_payload(dir, requested.as_deref())?;
    // Weight files say what the model is even when the contract is written by hand.
    let weights = crate::infer::weight_facts(dir)?;
    // Inference checks it too, but not when the contract is written by hand.
    crate::infer::check_external_data_in(dir)?;
    notes.extend(crate::infer::weights_summary(&weights));
    notes.extend(payload.warnings.iter().cloned());

    Ok(ModelSpec {
        dir: dir.to_path_buf(),
        contract: Contract {
            model_name: name.clone(),
            signatures,
        },
        name,
        model_type,
        description: serving.as_ref().and_then(|s| s.description.clone()),
        metadata: serving
            .as_ref()
            .map(|s| s.metadata.clone())
            .unwrap_or_default()
            .into_iter()
            .chain(overrides.metadata.clone())
            .chain(weights)
            .collect(),
        contract_source,
        payload,
        notes,
    })
}

fn resolve_name(
    dir: &Path,
    overrides: &Overrides,
    serving: Option<&ServingFile>,
    notes: &mut Vec<String>,
) -> Result<String, ModelError> {
    let checked = |name: &str, location: String| {
        validate_model_name(name)
            .map(|()| name.to_string())
            .map_err(|problem| ModelError::Name {
                location,
                name: name.to_string(),
                problem,
            })
    };
    if let Some(name) = &overrides.name {
        return checked(name, "--name: ".into());
    }
    if let Some(file) = serving
        && let Some(name) = &file.name
    {
        return checked(&name.value, format!("{}name: ", location(&file.path, name)));
    }
    if overrides.no_folder_name {
        return Err(ModelError::NoName);
    }
    let folder = folder_name_for_model(dir);
    let name = normalize_model_name(&folder);
    checked(&name, format!("{}: ", dir.display()))?;
    notes.push(format!("no model name given; using '{name}' from the folder name (set `name:` in serving.yaml or --name)"));
    Ok(name)
}

/// The folder's name; for a TensorFlow Serving version folder (`my_model/00000123`), the
/// name of the model folder above it.
fn folder_name_for_model(dir: &Path) -> String {
    let Ok(full) = std::fs::canonicalize(dir) else {
        return String::new();
    };
    let name_of = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name_of(&full) {
        Some(name) if name.bytes().all(|b| b.is_ascii_digit()) => {
            full.parent().and_then(name_of).unwrap_or(name)
        }
        other => other.unwrap_or_default(),
    }
}

fn resolve_contract(
    dir: &Path,
    serving: Option<&ServingFile>,
    model_type_hint: Option<&str>,
    notes: &mut Vec<String>,
) -> Result<(Vec<Signature>, String, Option<String>), ModelError> {
    if let Some(file) = serving
        && let Some(signatures) = &file.contract
    {
        return Ok((signatures.clone(), file_name(&file.path), None));
    }
    if let Some((signatures, path)) = read_contract_file(dir)? {
        return Ok((signatures, file_name(&path), None));
    }
    match infer(dir, model_type_hint)? {
        Some(inferred) => {
            notes.extend(inferred.warnings);
            Ok((
                inferred.signatures,
                format!("inferred from {}", inferred.source),
                Some(inferred.model_type),
            ))
        }
        None => Err(ModelError::NoContract {
            dir: dir.display().to_string(),
        }),
    }
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// "serving.yaml:7:5: ", the prefix of a message about a value of the file.
fn location<T>(path: &Path, spanned: &Spanned<T>) -> String {
    format!("{}:{}:{}: ", path.display(), spanned.line, spanned.col)
}
