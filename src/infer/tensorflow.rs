//! TensorFlow SavedModel (`saved_model.pb`, or `saved_model.pbtxt` in text format).
//!
//! The MetaGraphDef tagged `serve` (else the first) gives the signatures: every SignatureDef
//! but `__saved_model_init_op`, named by its key, its fields by their map keys.

use super::proto::tensorflow as pb;
use super::text::{TextError, prune_text};
use super::wire::decode_pruned;
use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Dim, Field, Shape, Signature};
use prost::Message;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "tensorflow",
    detect,
    infer: infer_file,
};

const BINARY: &str = "saved_model.pb";
const TEXT: &str = "saved_model.pbtxt";
const FORMAT: &str = "TensorFlow SavedModel";
/// Added by TF2 to run initialisers at load time; not something a client calls.
const INIT_OP: &str = "__saved_model_init_op";

fn detect(folder: &Folder) -> Vec<PathBuf> {
    // As TensorFlow's loader: the binary form wins when both are present.
    [BINARY, TEXT]
        .into_iter()
        .find(|name| folder.has(name))
        .map(|name| folder.dir.join(name))
        .into_iter()
        .collect()
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let file = super::open_model_file(path)?;
    let is_text = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("pbtxt"));
    let mut inferred = if is_text {
        infer_savedmodel_text_reader(file, path)?
    } else {
        infer_savedmodel_reader(file, path)?
    };
    if !is_text && path.with_file_name(TEXT).is_file() {
        inferred.warnings.push(format!(
            "{TEXT} is ignored: TensorFlow loads {BINARY} when both are present"
        ));
    }
    Ok(inferred)
}

/// Infers from a binary `saved_model.pb` read from `reader`; `path` names it in messages.
/// Reads only the MetaGraphDefs' tags, version and SignatureDefs; the graphs are skipped.
pub fn infer_savedmodel_reader<R: Read + Seek>(
    reader: R,
    path: &Path,
) -> Result<Inferred, InferError> {
    let saved: pb::SavedModel = decode_pruned(reader, "tensorflow.SavedModel", path, FORMAT)?;
    from_saved_model(saved, path)
}

/// Infers from a text-format `saved_model.pbtxt` read from `reader`; `path` names it in messages.
pub fn infer_savedmodel_text_reader<R: Read>(
    reader: R,
    path: &Path,
) -> Result<Inferred, InferError> {
    let schema = super::proto::message("tensorflow.SavedModel");
    let kept = prune_text(reader, &schema).map_err(|e| match e {
        TextError::Io(source) => InferError::Io {
            path: path.to_path_buf(),
            source,
        },
        TextError::Malformed(reason) => corrupt(path, reason),
    })?;
    let message = prost_reflect::DynamicMessage::parse_text_format(schema, &kept)
        .map_err(|e| corrupt(path, e.to_string()))?;
    let saved = pb::SavedModel::decode(message.encode_to_vec().as_slice())
        .map_err(|e| corrupt(path, e.to_string()))?;
    from_saved_model(saved, path)
}

fn corrupt(path: &Path, reason: String) -> InferError {
    InferError::Corrupt {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    }
}

fn from_saved_model(saved: pb::SavedModel, path: &Path) -> Result<Inferred, InferError> {
    let mut warnings = Vec::new();
    let tags_of = |graph: &pb::MetaGraphDef| {
        graph
            .meta_info_def
            .as_ref()
            .map(|info| info.tags.clone())
            .unwrap_or_default()
    };
    let serve = |graph: &&pb::MetaGraphDef| tags_of(graph).iter().any(|t| t == "serve");
    // TensorFlow Serving loads the graph whose tag set is exactly {serve}; any graph with the
    // tag comes next, then the first, as SPEC says.
    let exactly_serve = saved.meta_graphs.iter().find(|g| tags_of(g) == ["serve"]);
    let graph = match exactly_serve.or_else(|| saved.meta_graphs.iter().find(serve)) {
        Some(graph) => graph,
        None => {
            let first = saved
                .meta_graphs
                .first()
                .ok_or_else(|| InferError::NoContract {
                    path: path.to_path_buf(),
                    reason: "the SavedModel has no MetaGraphDef".into(),
                })?;
            warnings.push(format!(
                "no MetaGraphDef is tagged 'serve'; using the first one (tags {:?})",
                tags_of(first)
            ));
            first
        }
    };
    if saved.meta_graphs.len() > 1 {
        warnings.push(format!(
            "the SavedModel has {} MetaGraphDefs; the contract comes from the one tagged {:?}",
            saved.meta_graphs.len(),
            tags_of(graph)
        ));
    }

    let version = graph
        .meta_info_def
        .as_ref()
        .map(|info| info.tensorflow_version.as_str())
        .unwrap_or_default();
    let model_type = match clean_version(version) {
        Some(version) => format!("tensorflow:{version}"),
        None => {
            warnings.push(if version.is_empty() {
                "the SavedModel does not record its TensorFlow version; model-type is \
                 tensorflow:unknown, set model-type in serving.yaml to choose the runtime"
                    .to_string()
            } else {
                format!(
                    "the SavedModel's TensorFlow version {} is not a usable version; model-type \
                     is tensorflow:unknown, set model-type in serving.yaml to choose the runtime",
                    quote(version)
                )
            });
            "tensorflow:unknown".to_string()
        }
    };

    // signature_def and its inputs/outputs are BTreeMaps: already sorted by key.
    let signatures: Vec<Signature> = graph
        .signature_def
        .iter()
        .filter(|(key, _)| key.as_str() != INIT_OP)
        .map(|(key, def)| Signature {
            name: key.clone(),
            inputs: fields(key, "input", &def.inputs, &mut warnings),
            outputs: fields(key, "output", &def.outputs, &mut warnings),
        })
        .collect();
    if signatures.is_empty() {
        return Err(InferError::NoContract {
            path: path.to_path_buf(),
            reason: format!(
                "the MetaGraphDef tagged {:?} has no SignatureDef (export the model with \
                 signatures), so there is no contract to infer",
                tags_of(graph)
            ),
        });
    }
    Ok(Inferred {
        signatures,
        model_type,
        source: format!("{FORMAT} ({})", file_name(path)),
        warnings,
    })
}

fn fields(
    signature: &str,
    direction: &str,
    infos: &std::collections::BTreeMap<String, pb::TensorInfo>,
    warnings: &mut Vec<String>,
) -> Vec<Field> {
    infos
        .iter()
        .map(|(name, info)| {
            let what = || format!("signature '{signature}', {direction} '{name}'");
            let dtype = match data_type(info.dtype) {
                Some(DataType::DtInvalid) => {
                    warnings.push(format!("{}: no data type is recorded (DT_INVALID)", what()));
                    DataType::DtInvalid
                }
                Some(dtype) => dtype,
                None => {
                    warnings.push(format!(
                        "{}: TensorFlow data type {} has no contract equivalent; recorded as \
                         DT_INVALID",
                        what(),
                        dtype_name(info.dtype)
                    ));
                    DataType::DtInvalid
                }
            };
            match info.encoding {
                Some(pb::tensor_info::Encoding::CooSparse(_)) => warnings.push(format!(
                    "{}: a sparse tensor; the contract describes its dense shape",
                    what()
                )),
                Some(pb::tensor_info::Encoding::CompositeTensor(_)) => warnings.push(format!(
                    "{}: a composite tensor (e.g. ragged); the contract cannot describe its \
                     components",
                    what()
                )),
                Some(pb::tensor_info::Encoding::Name(_)) | None => {}
            }
            let shape = info.tensor_shape.as_ref().map(|shape| Shape {
                dims: shape
                    .dim
                    .iter()
                    .map(|d| Dim {
                        size: d.size,
                        name: d.name.clone(),
                    })
                    .collect(),
                unknown_rank: shape.unknown_rank,
            });
            Field::tensor(name, dtype, shape)
        })
        .collect()
}

/// The contract's DataType for a TensorFlow one: the same numbers up to DT_UINT64, reference
/// types (value + 100, TF1 variables) as their base type. `None` for types the contract lacks
/// (float8, int4...), whose TensorFlow numbers the contract uses for other things.
fn data_type(value: i32) -> Option<DataType> {
    let base = if value > 100 { value - 100 } else { value };
    match base {
        0..=23 => DataType::try_from(base).ok(),
        _ => None,
    }
}

fn dtype_name(value: i32) -> String {
    pb::DataType::try_from(value)
        .map(|d| d.as_str_name().to_string())
        .unwrap_or_else(|_| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_types_map_to_their_base() {
        assert_eq!(data_type(101), Some(DataType::DtFloat));
        assert_eq!(data_type(119), Some(DataType::DtHalf));
        assert_eq!(data_type(123), Some(DataType::DtUint64));
        assert_eq!(
            data_type(27),
            None,
            "TF's DT_FLOAT8_E4M3B11FNUZ is not the contract's DT_MAP"
        );
        assert_eq!(data_type(129), None);
        assert_eq!(data_type(-5), None);
    }
}
