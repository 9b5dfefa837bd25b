//! ONNX (`*.onnx`): one signature `infer`, from the graph's inputs (minus initializers) and
//! outputs.

use super::proto::onnx as pb;
use super::wire::decode_pruned;
use super::{Detector, Folder, InferError, Inferred, file_name, quote};
use crate::contract::{DataType, Dim, Field, Shape, Signature};
use pb::tensor_shape_proto::dimension::Value as DimValue;
use pb::type_proto::Value as Type;
use std::collections::HashSet;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "onnx",
    detect,
    infer: infer_file,
};

const FORMAT: &str = "ONNX model";
const SIGNATURE: &str = "infer";

fn detect(folder: &Folder) -> Vec<PathBuf> {
    folder.with_extension("onnx")
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let file = super::open_model_file(path)?;
    let model: pb::ModelProto = decode_pruned(file, "onnx.ModelProto", path, FORMAT)?;
    check_external_data(&model, path)?;
    from_model(model, path)
}

/// Checks the external data of every ONNX model at the top of `dir`, whatever the contract
/// came from: an image missing the data would build and fail at run time. (The pruned read
/// skips the weights, so reading the model file again costs little.)
pub fn check_external_data_in(dir: &Path) -> Result<(), InferError> {
    for path in detect(&Folder::read(dir)?) {
        // A model file this reader cannot parse is what a hand-written contract is for: only
        // the missing data fails the build here.
        let Ok(file) = super::open_model_file(&path) else {
            continue;
        };
        let Ok(model) = decode_pruned::<pb::ModelProto, _>(file, "onnx.ModelProto", &path, FORMAT)
        else {
            continue;
        };
        check_external_data(&model, &path)?;
    }
    Ok(())
}

/// ONNX's external data value for "the tensor's bytes are in the file `location`".
const EXTERNAL: i32 = 1;

/// Weights stored outside the model file (`model.onnx` + `model.onnx.data`) are loaded from
/// the folder of the model file at run time: each file they name must be there, inside the
/// folder, or the image would not run. (They travel in the payload like any file; past the
/// big-file threshold each one is its own layer.)
fn check_external_data(model: &pb::ModelProto, path: &Path) -> Result<(), InferError> {
    let Some(graph) = &model.graph else {
        return Ok(());
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let tensors = graph.initializer.iter().chain(
        graph
            .sparse_initializer
            .iter()
            .filter_map(|s| s.values.as_ref()),
    );
    let mut checked: HashSet<&str> = HashSet::new();
    for tensor in tensors {
        let location = tensor
            .external_data
            .iter()
            .find(|e| e.key == "location")
            .map(|e| e.value.as_str());
        let location = match (tensor.data_location, location) {
            (_, Some(location)) => location,
            (EXTERNAL, None) => {
                return Err(external_error(
                    path,
                    &tensor.name,
                    "is stored outside the model file but names no location".into(),
                ));
            }
            _ => continue,
        };
        if !checked.insert(location) {
            continue;
        }
        let relative = Path::new(location);
        let inside = !location.is_empty()
            && relative
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !inside {
            return Err(external_error(
                path,
                &tensor.name,
                format!(
                    "is stored in {}, which is not a path inside the model folder; save the \
                     model again with its external data beside it",
                    quote(location)
                ),
            ));
        }
        if !dir.join(relative).is_file() {
            return Err(external_error(
                path,
                &tensor.name,
                format!(
                    "is stored in {}, which is not in the model folder; copy it beside {}",
                    quote(location),
                    file_name(path)
                ),
            ));
        }
    }
    Ok(())
}

fn external_error(path: &Path, tensor: &str, problem: String) -> InferError {
    InferError::MissingFile {
        path: path.to_path_buf(),
        reason: format!(
            "the weights of initializer {} {problem} (ONNX external data is read from the \
             model file's folder at run time)",
            quote(tensor)
        ),
    }
}

/// Infers from an ONNX model read from `reader`; `path` names it in messages. Reads only the
/// opset imports, the graph's inputs and outputs and the initializers' names: nodes and
/// weights are skipped, so the cost does not grow with the size of the weights.
pub fn infer_onnx_reader<R: Read + Seek>(reader: R, path: &Path) -> Result<Inferred, InferError> {
    let model: pb::ModelProto = decode_pruned(reader, "onnx.ModelProto", path, FORMAT)?;
    from_model(model, path)
}

fn from_model(model: pb::ModelProto, path: &Path) -> Result<Inferred, InferError> {
    let mut warnings = Vec::new();
    let graph = model.graph.ok_or_else(|| InferError::NoContract {
        path: path.to_path_buf(),
        reason: "the ONNX model has no graph".into(),
    })?;

    // The default operator set ("" or its alias "ai.onnx") is what the runtime must support.
    let default_opset = model
        .opset_import
        .iter()
        .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version);
    let model_type = match default_opset {
        Some(version) if version > 0 => format!("onnx:{version}"),
        _ => {
            let imported: Vec<String> = model
                .opset_import
                .iter()
                .map(|o| format!("{} {}", quote(&o.domain), o.version))
                .collect();
            warnings.push(format!(
                "the model imports no version of the default ONNX operator set (imports: {}); \
                 model-type is onnx:unknown, set model-type in serving.yaml to choose the runtime",
                if imported.is_empty() {
                    "none".to_string()
                } else {
                    imported.join(", ")
                }
            ));
            "onnx:unknown".to_string()
        }
    };

    // Before IR version 4 initializers had to be listed as graph inputs too; they are weights,
    // not something a caller supplies.
    let initializers: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(
            graph
                .sparse_initializer
                .iter()
                .filter_map(|s| s.values.as_ref().map(|v| v.name.as_str())),
        )
        .collect();
    let mut inputs: Vec<Field> = graph
        .input
        .iter()
        .filter(|v| !initializers.contains(v.name.as_str()))
        .map(|v| field(v, "input", &mut warnings))
        .collect();
    let mut outputs: Vec<Field> = graph
        .output
        .iter()
        .map(|v| field(v, "output", &mut warnings))
        .collect();
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    outputs.sort_by(|a, b| a.name.cmp(&b.name));

    Ok(Inferred {
        signatures: vec![Signature {
            name: SIGNATURE.into(),
            inputs,
            outputs,
        }],
        model_type,
        source: format!("{FORMAT} ({})", file_name(path)),
        warnings,
    })
}

fn field(value: &pb::ValueInfoProto, direction: &str, warnings: &mut Vec<String>) -> Field {
    let what = || format!("{direction} '{}'", value.name);
    let r#type = value.r#type.as_ref().and_then(|t| t.value.as_ref());
    let (dtype, shape) = match r#type {
        Some(Type::TensorType(tensor)) => (
            elem_type(tensor.elem_type, &what, warnings),
            tensor.shape.as_ref().map(shape),
        ),
        Some(Type::SparseTensorType(tensor)) => {
            warnings.push(format!(
                "{} is a sparse tensor; the contract describes its dense shape",
                what()
            ));
            (
                elem_type(tensor.elem_type, &what, warnings),
                tensor.shape.as_ref().map(shape),
            )
        }
        Some(other) => {
            warnings.push(format!(
                "{} is {}, which a contract cannot describe; recorded as DT_VARIANT with any shape",
                what(),
                describe(other)
            ));
            (DataType::DtVariant, None)
        }
        None => {
            warnings.push(format!(
                "{} has no type in the model; recorded as DT_INVALID with any shape",
                what()
            ));
            (DataType::DtInvalid, None)
        }
    };
    Field::tensor(&value.name, dtype, shape)
}

fn shape(shape: &pb::TensorShapeProto) -> Shape {
    Shape {
        dims: shape
            .dim
            .iter()
            .map(|d| match &d.value {
                // A negative dim_value is invalid ONNX; unknown is the honest reading.
                Some(DimValue::DimValue(size)) => Dim {
                    size: (*size).max(-1),
                    name: String::new(),
                },
                Some(DimValue::DimParam(name)) => Dim {
                    size: -1,
                    name: name.clone(),
                },
                None => Dim {
                    size: -1,
                    name: String::new(),
                },
            })
            .collect(),
        unknown_rank: false,
    }
}

fn elem_type(value: i32, what: &dyn Fn() -> String, warnings: &mut Vec<String>) -> DataType {
    match data_type(value) {
        Some(DataType::DtInvalid) => {
            warnings.push(format!("{} has no element type (UNDEFINED)", what()));
            DataType::DtInvalid
        }
        Some(dtype) => dtype,
        None => {
            // A wrong type would let a runtime misread the bytes; DT_INVALID makes it refuse.
            warnings.push(format!(
                "{} has element type {}, which the contract has no type for; recorded as \
                 DT_INVALID",
                what(),
                elem_type_name(value)
            ));
            DataType::DtInvalid
        }
    }
}

/// ONNX TensorProto.DataType to the contract's DataType. `None` for types the contract lacks
/// (float8 variants, 4-bit and 2-bit integers, float4...).
fn data_type(value: i32) -> Option<DataType> {
    Some(match value {
        0 => DataType::DtInvalid,
        1 => DataType::DtFloat,
        2 => DataType::DtUint8,
        3 => DataType::DtInt8,
        4 => DataType::DtUint16,
        5 => DataType::DtInt16,
        6 => DataType::DtInt32,
        7 => DataType::DtInt64,
        8 => DataType::DtString,
        9 => DataType::DtBool,
        10 => DataType::DtHalf,
        11 => DataType::DtDouble,
        12 => DataType::DtUint32,
        13 => DataType::DtUint64,
        14 => DataType::DtComplex64,
        15 => DataType::DtComplex128,
        16 => DataType::DtBfloat16,
        _ => return None,
    })
}

const ELEM_TYPE_NAMES: [&str; 27] = [
    "UNDEFINED",
    "FLOAT",
    "UINT8",
    "INT8",
    "UINT16",
    "INT16",
    "INT32",
    "INT64",
    "STRING",
    "BOOL",
    "FLOAT16",
    "DOUBLE",
    "UINT32",
    "UINT64",
    "COMPLEX64",
    "COMPLEX128",
    "BFLOAT16",
    "FLOAT8E4M3FN",
    "FLOAT8E4M3FNUZ",
    "FLOAT8E5M2",
    "FLOAT8E5M2FNUZ",
    "UINT4",
    "INT4",
    "FLOAT4E2M1",
    "FLOAT8E8M0",
    "UINT2",
    "INT2",
];

fn elem_type_name(value: i32) -> String {
    usize::try_from(value)
        .ok()
        .and_then(|i| ELEM_TYPE_NAMES.get(i))
        .map_or_else(|| format!("#{value}"), |n| n.to_string())
}

/// The type as ONNX tools print it, e.g. `seq(map(INT64, tensor(FLOAT, unranked)))`.
fn describe(r#type: &Type) -> String {
    let inner = |t: &Option<Box<pb::TypeProto>>| match t.as_deref().and_then(|t| t.value.as_ref()) {
        Some(t) => describe(t),
        None => "?".to_string(),
    };
    let tensor = |kind: &str, elem: i32, shape: &Option<pb::TensorShapeProto>| {
        let dims = match shape {
            None => "unranked".to_string(),
            Some(s) => {
                let dims: Vec<String> = s
                    .dim
                    .iter()
                    .map(|d| match &d.value {
                        Some(DimValue::DimValue(v)) => v.to_string(),
                        Some(DimValue::DimParam(p)) => quote(p).replace('"', "'"),
                        None => "?".into(),
                    })
                    .collect();
                format!("[{}]", dims.join(", "))
            }
        };
        format!("{kind}({}, {dims})", elem_type_name(elem))
    };
    match r#type {
        Type::TensorType(t) => tensor("tensor", t.elem_type, &t.shape),
        Type::SparseTensorType(t) => tensor("sparse_tensor", t.elem_type, &t.shape),
        Type::SequenceType(s) => format!("seq({})", inner(&s.elem_type)),
        Type::OptionalType(o) => format!("optional({})", inner(&o.elem_type)),
        Type::MapType(m) => format!(
            "map({}, {})",
            elem_type_name(m.key_type),
            inner(&m.value_type)
        ),
        Type::OpaqueType(o) => format!("opaque({}, {})", quote(&o.domain), quote(&o.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float16_is_half_never_float() {
        assert_eq!(data_type(10), Some(DataType::DtHalf));
        assert_eq!(data_type(16), Some(DataType::DtBfloat16));
        assert_eq!(data_type(17), None);
        assert_eq!(data_type(-1), None);
        assert_eq!(elem_type_name(22), "INT4");
        assert_eq!(elem_type_name(99), "#99");
    }
}
