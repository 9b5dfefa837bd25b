//! MLflow (`MLmodel`): one signature `infer`, from the model signature MLflow saved with the
//! model (`signature: {inputs: '<json>', outputs: '<json>'}`).
//!
//! Column-based specs (`[{"name": "x", "type": "double"}, ...]`, a DataFrame): every column is
//! a field, a vector of its type with one element per row, shape `[-1]`. Unnamed columns are
//! positional: named `_0`, `_1`... Tensor-based specs (`{"type": "tensor", "tensor-spec":
//! {"dtype": "float32", "shape": [-1, 4]}}`): dtype and shape copied; an unnamed tensor is
//! `input`/`output` (with `_<i>` after it when there are several).
//!
//! Column types: boolean → DT_BOOL, integer → DT_INT32, long → DT_INT64, float → DT_FLOAT,
//! double → DT_DOUBLE, string and binary → DT_STRING, datetime → DT_STRING (MLflow's scoring
//! server takes datetimes as ISO 8601 text in JSON); array, object, map and any → DT_VARIANT
//! with any shape and a warning.
//!
//! model-type: the first flavor other than `python_function` with its `<flavor>_version`
//! (`sklearn:1.3.0`, `pytorch:2.1.0`...), else `mlflow:<mlflow_version>`.

use super::capped::{read_file, utf8};
use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Field, Shape, Signature, parse_dtype};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::TScalarStyle;

pub(crate) const DETECTOR: Detector = Detector {
    framework: "mlflow",
    detect,
    infer: infer_file,
};

const FILE: &str = "MLmodel";
const FORMAT: &str = "MLflow MLmodel";
const SIGNATURE: &str = "infer";
/// MLmodel files nest three or four levels; this leaves room without risking the stack.
const MAX_DEPTH: usize = 64;

fn detect(folder: &Folder) -> Vec<PathBuf> {
    if folder.has(FILE) {
        vec![folder.dir.join(FILE)]
    } else {
        Vec::new()
    }
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let bytes = read_file(path, FORMAT)?;
    infer_mlmodel(&bytes, path)
}

/// Infers from the text of an `MLmodel` file; `path` names it in messages.
pub fn infer_mlmodel(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    let text = utf8(bytes, path, FORMAT)?;
    let doc = yaml_to_json(text).map_err(|reason| corrupt(path, reason))?;
    let Value::Object(doc) = doc else {
        return Err(corrupt(path, "not a YAML mapping".into()));
    };
    let mut warnings = Vec::new();
    let model_type = model_type(&doc, &mut warnings);

    let no_signature = || InferError::NoContract {
        path: path.to_path_buf(),
        reason: "the MLmodel has no signature, so MLflow did not record what the model takes \
                 and returns; log the model again with one (signature=mlflow.models.\
                 infer_signature(model_input, model_output))"
            .into(),
    };
    let signature = match doc.get("signature") {
        Some(Value::Object(signature)) => signature,
        None | Some(Value::Null) => return Err(no_signature()),
        Some(_) => return Err(corrupt(path, "\"signature\" is not a mapping".into())),
    };
    let spec = |key: &str| -> Result<Option<Value>, InferError> {
        match signature.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(json)) => serde_json::from_str(json)
                .map(Some)
                .map_err(|e| corrupt(path, format!("signature.{key} is not JSON: {e}"))),
            // Written by hand as YAML instead of a JSON string: same meaning.
            Some(other) => Ok(Some(other.clone())),
        }
    };
    let Some(input_spec) = spec("inputs")? else {
        return Err(no_signature());
    };
    let mut inputs = fields(&input_spec, "input", &mut warnings)
        .map_err(|reason| corrupt(path, format!("signature.inputs: {reason}")))?;
    let mut outputs = match spec("outputs")? {
        Some(output_spec) => fields(&output_spec, "output", &mut warnings)
            .map_err(|reason| corrupt(path, format!("signature.outputs: {reason}")))?,
        None => {
            warnings
                .push("the MLmodel signature has no outputs; the contract lists none".to_string());
            Vec::new()
        }
    };
    if let Some(Value::String(params)) = signature.get("params") {
        warnings.push(format!(
            "the MLmodel signature has inference params ({}), which a contract cannot \
             describe; they are left out",
            quote(params)
        ));
    }
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Inferred {
        signatures: vec![Signature {
            name: SIGNATURE.into(),
            inputs,
            outputs,
        }],
        model_type,
        source: format!("{FORMAT} signature ({})", file_name(path)),
        warnings,
    })
}

fn corrupt(path: &Path, reason: String) -> InferError {
    InferError::Corrupt {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    }
}

fn model_type(doc: &Map<String, Value>, warnings: &mut Vec<String>) -> String {
    if let Some(Value::Object(flavors)) = doc.get("flavors") {
        for (flavor, config) in flavors {
            if flavor == "python_function" || clean_version(flavor).is_none() {
                continue;
            }
            let Value::Object(config) = config else {
                continue;
            };
            // `sklearn_version`, `pytorch_version`, `keras_version`, `xgb_version`...
            let own = format!("{flavor}_version");
            let version = config.get(&own).or_else(|| {
                config
                    .iter()
                    .find(|(k, _)| k.ends_with("_version") && k.as_str() != "python_version")
                    .map(|(_, v)| v)
            });
            if let Some(version) = version.and_then(Value::as_str).and_then(clean_version) {
                return format!("{flavor}:{version}");
            }
        }
    }
    let mlflow = doc
        .get("mlflow_version")
        .and_then(Value::as_str)
        .and_then(clean_version);
    match mlflow {
        Some(version) => format!("mlflow:{version}"),
        None => {
            warnings.push(
                "the MLmodel names no flavor version and no mlflow_version; model-type is \
                 mlflow:unknown, set model-type in serving.yaml to choose the runtime"
                    .to_string(),
            );
            "mlflow:unknown".into()
        }
    }
}

/// The fields of one side of a signature (a list of column or tensor specs).
fn fields(spec: &Value, direction: &str, warnings: &mut Vec<String>) -> Result<Vec<Field>, String> {
    let Value::Array(items) = spec else {
        return Err("not a list of column or tensor specs".into());
    };
    let count = items.len();
    let mut fields: Vec<Field> = Vec::with_capacity(count);
    for (i, item) in items.iter().enumerate() {
        let Value::Object(item) = item else {
            return Err(format!("entry {i} is not an object"));
        };
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let name = item
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty());
        let field = if kind == "tensor" {
            let name = match name {
                Some(name) => name.to_string(),
                None if count == 1 => direction.to_string(),
                None => format!("{direction}_{i}"),
            };
            tensor(&name, item.get("tensor-spec"), direction, warnings)
                .map_err(|reason| format!("tensor {}: {reason}", quote(&name)))?
        } else {
            let name = name.map_or_else(|| format!("_{i}"), str::to_string);
            column(&name, kind, direction, warnings)
                .map_err(|reason| format!("column {}: {reason}", quote(&name)))?
        };
        if fields.iter().any(|f| f.name == field.name) {
            return Err(format!("two entries are named {}", quote(&field.name)));
        }
        fields.push(field);
    }
    Ok(fields)
}

fn column(
    name: &str,
    kind: &str,
    direction: &str,
    warnings: &mut Vec<String>,
) -> Result<Field, String> {
    let dtype = match kind {
        "boolean" => DataType::DtBool,
        "integer" => DataType::DtInt32,
        "long" => DataType::DtInt64,
        "float" => DataType::DtFloat,
        "double" => DataType::DtDouble,
        "string" | "binary" | "datetime" => DataType::DtString,
        "array" | "object" | "map" | "any" | "sparkml_vector" => {
            warnings.push(format!(
                "{direction} '{name}' is an MLflow {kind} column, which a contract cannot \
                 describe; recorded as DT_VARIANT with any shape"
            ));
            return Ok(Field::tensor(name, DataType::DtVariant, None));
        }
        "" => return Err("no \"type\"".into()),
        other => return Err(format!("unknown column type {}", quote(other))),
    };
    Ok(Field::tensor(name, dtype, Some(Shape::from_sizes(&[-1]))))
}

fn tensor(
    name: &str,
    spec: Option<&Value>,
    direction: &str,
    warnings: &mut Vec<String>,
) -> Result<Field, String> {
    let Some(Value::Object(spec)) = spec else {
        return Err("no \"tensor-spec\"".into());
    };
    let numpy = spec
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("no \"dtype\"")?;
    let dtype = match numpy {
        "str" | "bytes" | "object" => {
            if numpy == "object" {
                warnings.push(format!(
                    "{direction} '{name}' is a numpy object tensor; recorded as DT_STRING"
                ));
            }
            DataType::DtString
        }
        other => match parse_dtype(other) {
            Some(dtype) if !matches!(dtype, DataType::DtResource | DataType::DtVariant) => dtype,
            _ => return Err(format!("unknown dtype {}", quote(other))),
        },
    };
    let shape = match spec.get("shape") {
        None | Some(Value::Null) => None,
        Some(Value::Array(dims)) => {
            let mut sizes = Vec::with_capacity(dims.len());
            for dim in dims {
                match dim.as_i64() {
                    Some(size) if size >= -1 => sizes.push(size),
                    _ => return Err(format!("bad dimension {dim}")),
                }
            }
            Some(Shape::from_sizes(&sizes))
        }
        Some(other) => return Err(format!("shape {other} is not a list")),
    };
    Ok(Field::tensor(name, dtype, shape))
}

/// YAML to a JSON value, keeping every scalar a string (or null): MLmodel's values that matter
/// here are strings, and versions like `1.10` must not become numbers. Walks the parser's
/// events without recursion, refuses aliases (they can multiply a small file into a huge
/// tree) and nesting deeper than [`MAX_DEPTH`].
fn yaml_to_json(text: &str) -> Result<Value, String> {
    enum Open {
        List(Vec<Value>),
        Map(Map<String, Value>, Option<String>),
    }
    let mut parser = Parser::new_from_str(text);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Value> = None;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| e.to_string())?;
        let at = || format!("line {}, column {}", mark.line(), mark.col() + 1);
        let value = match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentStart | Event::DocumentEnd | Event::Nothing => {
                continue;
            }
            Event::Alias(_) => return Err(format!("{}: YAML aliases are not accepted", at())),
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(format!("{}: nested more than {MAX_DEPTH} deep", at()));
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Open::List(Vec::new()),
                    _ => Open::Map(Map::new(), None),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::List(items)) => Value::Array(items),
                Some(Open::Map(map, _)) => Value::Object(map),
                None => return Err(format!("{}: unbalanced YAML", at())),
            },
            Event::Scalar(text, style, ..) => {
                let null = style == TScalarStyle::Plain && matches!(text.as_str(), "~" | "null");
                if null {
                    Value::Null
                } else {
                    Value::String(text)
                }
            }
        };
        match stack.last_mut() {
            None => {
                if root.is_some() {
                    return Err(format!("{}: more than one YAML document", at()));
                }
                root = Some(value);
            }
            Some(Open::List(items)) => items.push(value),
            Some(Open::Map(map, key)) => match key.take() {
                None => match value {
                    Value::String(k) => *key = Some(k),
                    Value::Null => *key = Some(String::new()),
                    _ => return Err(format!("{}: a mapping key that is not text", at())),
                },
                Some(k) => {
                    map.insert(k, value);
                }
            },
        }
    }
    Ok(root.unwrap_or(Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_scalars_stay_text() {
        let value = yaml_to_json("a: 1.10\nb: [x, ~]\nc: {d: 'e'}\n").unwrap();
        assert_eq!(
            value,
            serde_json::json!({"a": "1.10", "b": ["x", null], "c": {"d": "e"}})
        );
    }

    #[test]
    fn yaml_aliases_and_depth_are_refused() {
        assert!(yaml_to_json("a: &x [1]\nb: *x\n").is_err());
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(yaml_to_json(&deep).is_err());
    }
}
