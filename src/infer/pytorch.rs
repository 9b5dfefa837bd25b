//! PyTorch export (`*.pt2`, written by `torch.export.save`): a zip archive holding the
//! exported program as JSON, `<archive>/models/<name>.json` (torch 2.6 and later) or
//! `<archive>/serialized_exported_program.json` (earlier).
//!
//! One signature `infer`. Inputs: the graph signature's `user_input` specs (parameters,
//! buffers and constants are weights, not inputs), named by their graph name, which is the
//! `forward` argument's name. Outputs: the `user_output` specs, named `output_0`, `output_1`...
//! in the order `forward` returns them: the graph's names for them ("linear", "add_1") are node
//! names, which nobody calling the model sees and which change with the model's code. Dtype and
//! shape come from `graph.tensor_values`; a symbolic size (a dynamic dimension) is -1 with the
//! symbol's name kept. Model-type: `pytorch:<torch_version>` as recorded, else `pytorch:unknown`.
//!
//! Only the JSON entry is read, capped in size; the weights are never read.

use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Dim, Field, Shape, Signature};
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "pytorch",
    detect,
    infer: infer_file,
};

const FORMAT: &str = "PyTorch exported program";
const SIGNATURE: &str = "infer";
/// The exported program's JSON: graphs of big models are tens of MiB, mostly stack traces.
const MAX_JSON: u64 = 512 << 20;
const MAX_ENTRIES: usize = 1_000_000;
const MAX_DIMS: usize = 1024;

fn detect(folder: &Folder) -> Vec<PathBuf> {
    folder.with_extension("pt2")
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let file = super::open_model_file(path)?;
    infer_pt2_reader(file, path)
}

fn corrupt(path: &Path, reason: String) -> InferError {
    InferError::Corrupt {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    }
}

/// Infers from a `.pt2` archive read from `reader`; `path` names it in messages.
pub fn infer_pt2_reader<R: Read + Seek>(reader: R, path: &Path) -> Result<Inferred, InferError> {
    let mut archive = zip::ZipArchive::new(reader)
        .map_err(|e| corrupt(path, format!("not a zip archive: {e}")))?;
    if archive.len() > MAX_ENTRIES {
        return Err(corrupt(path, format!("{} zip entries", archive.len())));
    }
    let names = entry_names(&archive);
    let mut warnings = Vec::new();
    let entry = program_entry(&names, &mut warnings).ok_or_else(|| InferError::NoContract {
        path: path.to_path_buf(),
        reason: "the archive holds no exported program (no models/*.json or \
                 serialized_exported_program.json entry); was it written by torch.export.save?"
            .into(),
    })?;
    let json = read_entry(&mut archive, &entry, MAX_JSON)
        .map_err(|reason| corrupt(path, format!("{entry}: {reason}")))?;
    let program: Program =
        serde_json::from_slice(&json).map_err(|e| corrupt(path, format!("{entry}: {e}")))?;
    from_program(program, path, warnings)
}

/// The JSON entry of the exported program: `models/model.json` first, then any other model,
/// then the older layout's name.
fn program_entry(names: &[String], warnings: &mut Vec<String>) -> Option<String> {
    let in_models = |n: &&String| {
        let parts: Vec<&str> = n.split('/').collect();
        parts.len() >= 2
            && parts[parts.len() - 2] == "models"
            && parts[parts.len() - 1].ends_with(".json")
    };
    let mut models: Vec<&String> = names.iter().filter(in_models).collect();
    models.sort();
    if let Some(first) = models
        .iter()
        .find(|n| n.ends_with("/models/model.json"))
        .or(models.first())
    {
        if models.len() > 1 {
            let others: Vec<&str> = models
                .iter()
                .filter(|n| *n != first)
                .map(|n| n.as_str())
                .collect();
            warnings.push(format!(
                "the archive holds {} exported programs; the contract describes {first}, not {}",
                models.len(),
                others.join(", ")
            ));
        }
        return Some(first.to_string());
    }
    names
        .iter()
        .filter(|n| n.rsplit('/').next() == Some("serialized_exported_program.json"))
        .min()
        .cloned()
}

/// The names of a zip's entries; names that are not valid text are left out.
pub(crate) fn entry_names<R: Read + Seek>(archive: &zip::ZipArchive<R>) -> Vec<String> {
    archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect()
}

/// An entry's bytes, refusing entries that are, or claim to be, bigger than `max`.
pub(crate) fn read_entry<R: Read + Seek>(
    archive: &mut zip::ZipArchive<R>,
    name: &str,
    max: u64,
) -> Result<Vec<u8>, String> {
    let entry = archive.by_name(name).map_err(|e| e.to_string())?;
    if entry.size() > max {
        return Err(format!(
            "{} bytes uncompressed, more than the {max} read",
            entry.size()
        ));
    }
    let mut bytes = Vec::new();
    entry
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > max {
        return Err(format!("more than {max} bytes uncompressed"));
    }
    Ok(bytes)
}

// The parts of torch/_export/serde/schema.py that inference reads; the rest is skipped.

#[derive(Deserialize)]
struct Program {
    graph_module: GraphModule,
    #[serde(default)]
    torch_version: Option<String>,
}

#[derive(Deserialize)]
struct GraphModule {
    graph: Graph,
    signature: GraphSignature,
}

#[derive(Deserialize)]
struct Graph {
    #[serde(default)]
    tensor_values: HashMap<String, TensorMeta>,
}

#[derive(Deserialize)]
struct TensorMeta {
    dtype: i64,
    sizes: Vec<SymInt>,
}

/// A union: exactly one member is set.
#[derive(Deserialize)]
struct SymInt {
    #[serde(default)]
    as_int: Option<i64>,
    #[serde(default)]
    as_expr: Option<SymExpr>,
}

#[derive(Deserialize)]
struct SymExpr {
    expr_str: String,
}

#[derive(Deserialize)]
struct GraphSignature {
    #[serde(default)]
    input_specs: Vec<InputSpec>,
    #[serde(default)]
    output_specs: Vec<OutputSpec>,
}

#[derive(Deserialize)]
struct InputSpec {
    #[serde(default)]
    user_input: Option<UserArg>,
}

#[derive(Deserialize)]
struct OutputSpec {
    #[serde(default)]
    user_output: Option<UserArg>,
}

#[derive(Deserialize)]
struct UserArg {
    arg: Argument,
}

/// The members of the `Argument` union that a caller can pass or get back as a value.
#[derive(Deserialize)]
struct Argument {
    #[serde(default)]
    as_tensor: Option<Named>,
    #[serde(default)]
    as_sym_int: Option<SymArg>,
    #[serde(default)]
    as_sym_float: Option<SymArg>,
    #[serde(default)]
    as_sym_bool: Option<SymArg>,
}

#[derive(Deserialize)]
struct Named {
    name: String,
}

/// `{"as_name": "s0"}` for a symbolic value, or a constant.
#[derive(Deserialize)]
struct SymArg {
    #[serde(default)]
    as_name: Option<String>,
}

fn from_program(
    program: Program,
    path: &Path,
    mut warnings: Vec<String>,
) -> Result<Inferred, InferError> {
    let graph = &program.graph_module.graph;
    let signature = &program.graph_module.signature;

    let mut inputs = Vec::new();
    for (i, spec) in signature.input_specs.iter().enumerate() {
        let Some(user) = &spec.user_input else {
            continue;
        };
        match field(&user.arg, None, graph, path, &mut warnings)? {
            Some(field) => inputs.push(field),
            None => warnings.push(format!(
                "user input #{i} is a constant fixed at export time; it is not in the contract"
            )),
        }
    }
    let users: Vec<&UserArg> = signature
        .output_specs
        .iter()
        .filter_map(|s| s.user_output.as_ref())
        .collect();
    let width = users.len().saturating_sub(1).to_string().len();
    let mut outputs = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let name = format!("output_{i:0width$}");
        match field(&user.arg, Some(name.clone()), graph, path, &mut warnings)? {
            Some(field) => outputs.push(field),
            None => warnings.push(format!(
                "{name} is a constant fixed at export time; it is not in the contract"
            )),
        }
    }
    if inputs.is_empty() && outputs.is_empty() {
        return Err(InferError::NoContract {
            path: path.to_path_buf(),
            reason: "the exported program has no user inputs or outputs".into(),
        });
    }
    // Two inputs may not share a name in one graph, but a hostile file could say so.
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    inputs.dedup_by(|a, b| a.name == b.name);
    outputs.sort_by(|a, b| a.name.cmp(&b.name));

    let model_type = match program.torch_version.as_deref().and_then(clean_version) {
        Some(version) => format!("pytorch:{version}"),
        None => {
            warnings.push(
                "the archive records no torch version; model-type is pytorch:unknown, set \
                 model-type in serving.yaml to choose the runtime"
                    .into(),
            );
            "pytorch:unknown".into()
        }
    };
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

/// `None` for a constant argument.
fn field(
    arg: &Argument,
    name: Option<String>,
    graph: &Graph,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Option<Field>, InferError> {
    let scalar = |graph_name: &Option<String>, dtype| {
        graph_name
            .as_ref()
            .map(|n| Field::tensor(name.as_deref().unwrap_or(n), dtype, Some(Shape::scalar())))
    };
    if let Some(tensor) = &arg.as_tensor {
        let field_name = name.clone().unwrap_or_else(|| tensor.name.clone());
        let Some(meta) = graph.tensor_values.get(&tensor.name) else {
            return Err(corrupt(
                path,
                format!(
                    "tensor {} has no entry in graph.tensor_values",
                    quote(&tensor.name)
                ),
            ));
        };
        if meta.sizes.len() > MAX_DIMS {
            return Err(corrupt(
                path,
                format!(
                    "tensor {} has {} dimensions",
                    quote(&tensor.name),
                    meta.sizes.len()
                ),
            ));
        }
        let dtype = match data_type(meta.dtype) {
            Some(dtype) => dtype,
            None => {
                warnings.push(format!(
                    "{} has torch dtype {}, which the contract has no type for; recorded as \
                     DT_INVALID",
                    quote(&field_name),
                    scalar_type_name(meta.dtype)
                ));
                DataType::DtInvalid
            }
        };
        let dims = meta.sizes.iter().map(dim).collect();
        return Ok(Some(Field::tensor(
            &field_name,
            dtype,
            Some(Shape {
                dims,
                unknown_rank: false,
            }),
        )));
    }
    if let Some(sym) = &arg.as_sym_int {
        return Ok(scalar(&sym.as_name, DataType::DtInt64));
    }
    if let Some(sym) = &arg.as_sym_float {
        return Ok(scalar(&sym.as_name, DataType::DtDouble));
    }
    if let Some(sym) = &arg.as_sym_bool {
        return Ok(scalar(&sym.as_name, DataType::DtBool));
    }
    Ok(None)
}

fn dim(size: &SymInt) -> Dim {
    match (size.as_int, &size.as_expr) {
        (Some(size), _) => Dim {
            size: size.max(-1),
            name: String::new(),
        },
        (None, Some(expr)) => Dim {
            size: -1,
            name: symbol_name(&expr.expr_str),
        },
        (None, None) => Dim {
            size: -1,
            name: String::new(),
        },
    }
}

/// `Symbol('s77', positive=True, integer=True)` → `s77`; a plain expression (`s0`, `2*s0`) is
/// kept as it is, cut short.
fn symbol_name(expr: &str) -> String {
    let inner = expr
        .strip_prefix("Symbol(")
        .and_then(|rest| rest.split(',').next())
        .map(|name| name.trim_end_matches(')').trim().trim_matches(['\'', '"']));
    inner.unwrap_or(expr).chars().take(64).collect()
}

/// torch's ScalarType as numbered by the export schema (torch/_export/serde/schema.py).
fn data_type(code: i64) -> Option<DataType> {
    Some(match code {
        1 => DataType::DtUint8,
        2 => DataType::DtInt8,
        3 => DataType::DtInt16,
        4 => DataType::DtInt32,
        5 => DataType::DtInt64,
        6 => DataType::DtHalf,
        7 => DataType::DtFloat,
        8 => DataType::DtDouble,
        10 => DataType::DtComplex64,
        11 => DataType::DtComplex128,
        12 => DataType::DtBool,
        13 => DataType::DtBfloat16,
        28 => DataType::DtUint16,
        34 => DataType::DtUint32,
        35 => DataType::DtUint64,
        _ => return None,
    })
}

fn scalar_type_name(code: i64) -> String {
    let name = match code {
        0 => "UNKNOWN",
        9 => "COMPLEXHALF",
        29 => "FLOAT8E4M3FN",
        30 => "FLOAT8E5M2",
        31 => "FLOAT8E4M3FNUZ",
        32 => "FLOAT8E5M2FNUZ",
        33 => "FLOAT8E8M0FNU",
        _ => return format!("#{code}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_and_types() {
        assert_eq!(
            symbol_name("Symbol('s77', positive=True, integer=True)"),
            "s77"
        );
        assert_eq!(symbol_name("s0"), "s0");
        assert_eq!(symbol_name("2*s0"), "2*s0");
        assert_eq!(data_type(7), Some(DataType::DtFloat));
        assert_eq!(data_type(6), Some(DataType::DtHalf));
        assert_eq!(data_type(9), None);
        assert_eq!(scalar_type_name(29), "FLOAT8E4M3FN");
        assert_eq!(scalar_type_name(99), "#99");
    }

    #[test]
    fn the_newer_layout_wins_and_others_are_named() {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut warnings = Vec::new();
        let got = program_entry(
            &names(&["a/models/b.json", "a/models/model.json", "a/data/x.json"]),
            &mut warnings,
        );
        assert_eq!(got.as_deref(), Some("a/models/model.json"));
        assert!(warnings[0].contains("a/models/b.json"), "{warnings:?}");
        let got = program_entry(
            &names(&["m/serialized_exported_program.json", "m/version"]),
            &mut Vec::new(),
        );
        assert_eq!(got.as_deref(), Some("m/serialized_exported_program.json"));
        assert_eq!(
            program_entry(&names(&["m/data.pkl"]), &mut Vec::new()),
            None
        );
    }
}
