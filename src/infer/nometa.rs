//! Formats that save no usable input/output metadata: Python pickles (scikit-learn, joblib,
//! Theano), TorchScript modules, PyTorch state_dicts, MXNet symbol files.
//!
//! Recognising them still helps: instead of "no contract", the user learns why none can be
//! inferred and gets a serving.yaml `contract:` skeleton with the names the file does reveal
//! (TorchScript `forward` arguments, scikit-learn `feature_names_in_`, MXNet data inputs), as
//! an [`InferError::NoMetadata`]. These detectors are asked only when no framework with
//! metadata recognised the folder (a preprocessing pickle next to a model.onnx is not a model).
//! Nothing is executed: pickles are walked opcode by opcode, archives read entry by entry,
//! everything capped in size.

use super::pickle;
use super::pytorch::{entry_names, read_entry};
use super::{Detector, Folder, InferError, Inferred, weights};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Asked in this order, after every detector in `super::DETECTORS` found nothing.
pub(crate) const DETECTORS: &[Detector] = &[
    Detector {
        framework: "scikit-learn",
        detect: detect_pickle,
        infer: infer_pickle,
    },
    Detector {
        framework: "pytorch",
        detect: detect_torch,
        infer: infer_torch,
    },
    Detector {
        framework: "mxnet",
        detect: detect_mxnet,
        infer: infer_mxnet,
    },
    Detector {
        framework: "safetensors",
        detect: |folder| weights::representative(folder, "safetensors"),
        infer: infer_weights,
    },
    Detector {
        framework: "gguf",
        detect: |folder| weights::representative(folder, "gguf"),
        infer: infer_weights,
    },
];

/// The placeholder a user must replace; the serving.yaml reader rejects it until then.
const FILL: &str = "FILL_IN";
/// Bytes of a pickle walked for names; estimators keep `feature_names_in_` near the start.
const PICKLE_PREFIX: u64 = 16 << 20;
const MAX_CODE_FILE: u64 = 4 << 20;
const MAX_CODE_TOTAL: u64 = 64 << 20;
const MAX_SYMBOL_JSON: u64 = 256 << 20;

fn detect_pickle(folder: &Folder) -> Vec<PathBuf> {
    let mut found = folder.with_extension("pkl");
    found.extend(folder.with_extension("pickle"));
    found.extend(folder.with_extension("joblib"));
    found.sort();
    found
}

fn detect_torch(folder: &Folder) -> Vec<PathBuf> {
    let mut found = folder.with_extension("pt");
    found.extend(folder.with_extension("pth"));
    // `.bin` is used by many formats: only a zip holding a pickle is taken to be torch.save's.
    found.extend(
        folder
            .with_extension("bin")
            .into_iter()
            .filter(|p| is_torch_zip(p)),
    );
    found.sort();
    found
}

fn detect_mxnet(folder: &Folder) -> Vec<PathBuf> {
    folder
        .files
        .iter()
        .filter(|f| f.ends_with("-symbol.json"))
        .map(|f| folder.dir.join(f))
        .collect()
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> InferError + '_ {
    |source| InferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn is_torch_zip(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let Ok(archive) = zip::ZipArchive::new(file) else {
        return false;
    };
    entry_names(&archive)
        .iter()
        .any(|n| n.ends_with("data.pkl"))
}

/// The first `max` bytes of a file.
fn prefix(path: &Path, max: u64) -> Result<Vec<u8>, InferError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(max).read_to_end(&mut bytes))
        .map_err(io(path))?;
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------------
// The skeleton

/// A field of the skeleton: its name and what is known of it.
struct Slot {
    name: String,
    /// A contract type name, or `None`: FILL_IN.
    dtype: Option<&'static str>,
    /// `[-1]`-style dims, or `None`: FILL_IN.
    shape: Option<String>,
    /// What the file says about it, as a comment.
    note: Option<String>,
}

impl Slot {
    fn unknown(name: &str, note: Option<String>) -> Slot {
        Slot {
            name: name.to_string(),
            dtype: None,
            shape: None,
            note,
        }
    }
}

struct SkeletonSignature {
    name: String,
    inputs: Vec<Slot>,
    outputs: Vec<Slot>,
}

/// The `contract:` block of a serving.yaml, in the form `contract::to_yaml` writes, with
/// FILL_IN where the file says nothing.
fn render(signatures: &[SkeletonSignature]) -> String {
    let mut out = String::from("contract:\n");
    for signature in signatures {
        let _ = writeln!(out, "  {}:", key(&signature.name));
        for (section, slots) in [
            ("inputs", &signature.inputs),
            ("outputs", &signature.outputs),
        ] {
            let _ = writeln!(out, "    {section}:");
            for slot in slots {
                let _ = write!(out, "      {}:", key(&slot.name));
                if let Some(note) = &slot.note {
                    let _ = write!(out, "  # {note}");
                }
                out.push('\n');
                let _ = writeln!(
                    out,
                    "        shape: {}",
                    slot.shape.clone().unwrap_or_else(|| format!("[{FILL}]"))
                );
                let _ = writeln!(out, "        type: {}", slot.dtype.unwrap_or(FILL));
            }
        }
    }
    out
}

/// Plain keys stay plain; anything else is double-quoted (JSON strings are YAML strings).
fn key(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && !matches!(
            name.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n"
        );
    if plain {
        name.to_string()
    } else {
        serde_json::to_string(name).unwrap_or_default()
    }
}

fn no_metadata(
    path: &Path,
    format: &str,
    reason: &str,
    signatures: &[SkeletonSignature],
) -> InferError {
    InferError::NoMetadata {
        path: path.to_path_buf(),
        format: format.to_string(),
        reason: reason.to_string(),
        skeleton: render(signatures),
    }
}

fn generic(name: &str) -> SkeletonSignature {
    SkeletonSignature {
        name: name.into(),
        inputs: vec![Slot::unknown("input", None)],
        outputs: vec![Slot::unknown("output", None)],
    }
}

// ---------------------------------------------------------------------------------------------
// Pickles: scikit-learn, joblib, Theano, anything else

fn infer_pickle(path: &Path) -> Result<Inferred, InferError> {
    let bytes = prefix(path, PICKLE_PREFIX)?;
    Err(explain_pickle(path, &bytes))
}

/// The NoMetadata error for a pickle's first bytes (`bytes` may be cut short): what the
/// pickle reveals, never executing it.
pub fn explain_pickle(path: &Path, bytes: &[u8]) -> InferError {
    let compressed = bytes.starts_with(b"\x78") // zlib
        || bytes.starts_with(b"\x1f\x8b") // gzip
        || bytes.starts_with(b"\xfd7zXZ") // xz
        || bytes.starts_with(b"BZh") // bz2
        || bytes.starts_with(b"\x04\x22\x4d\x18") // lz4
        || bytes.starts_with(b"ZF"); // joblib's old zlib files
    if compressed {
        return no_metadata(
            path,
            "compressed joblib file",
            "a compressed joblib file is a Python pickle, which saves no input/output types or \
             shapes (and compressed, mlambda does not look inside for names)",
            &[generic("infer")],
        );
    }
    let packages = pickle::packages(bytes, 200_000);
    let has = |p: &str| packages.iter().any(|x| x == p);
    let format = if has("sklearn") {
        "scikit-learn pickle"
    } else if has("theano") {
        "Theano pickle"
    } else if has("xgboost") {
        "XGBoost pickle"
    } else if has("lightgbm") {
        "LightGBM pickle"
    } else if has("torch") {
        "PyTorch pickle (legacy torch.save)"
    } else {
        "Python pickle"
    };
    let reason = format!("a {format} saves no input/output types or shapes");
    let found = pickle::sklearn_input(bytes, 2_000_000);
    let inputs = if !found.feature_names.is_empty() {
        found
            .feature_names
            .iter()
            .map(|name| Slot {
                name: name.clone(),
                dtype: None,
                shape: Some("[-1]".into()),
                note: Some("a column the model was fitted with (feature_names_in_)".into()),
            })
            .collect()
    } else if let Some(n) = found.n_features.filter(|n| *n > 0) {
        vec![Slot {
            name: "features".into(),
            dtype: None,
            shape: Some(format!("[-1, {n}]")),
            note: Some(format!("fitted with {n} features (n_features_in_)")),
        }]
    } else {
        vec![Slot::unknown("input", None)]
    };
    let signature = SkeletonSignature {
        name: "infer".into(),
        inputs,
        outputs: vec![Slot::unknown("prediction", None)],
    };
    no_metadata(path, format, &reason, &[signature])
}

// ---------------------------------------------------------------------------------------------
// TorchScript and state_dict archives

fn infer_torch(path: &Path) -> Result<Inferred, InferError> {
    let mut file = File::open(path).map_err(io(path))?;
    let mut magic = [0u8; 4];
    let n = file.read(&mut magic).map_err(io(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io(path))?;
    if magic[..n] != *b"PK\x03\x04" {
        // torch.save before PyTorch 1.6: a pickle stream.
        let bytes = prefix(path, PICKLE_PREFIX)?;
        return Err(explain_pickle(path, &bytes));
    }
    Err(explain_torch_zip(file, path))
}

/// The NoMetadata error for a zip written by torch (TorchScript or torch.save), or a
/// Corrupt error when it is not a readable zip.
pub fn explain_torch_zip<R: Read + Seek>(reader: R, path: &Path) -> InferError {
    let corrupt = |reason: String| InferError::Corrupt {
        path: path.to_path_buf(),
        format: "PyTorch archive",
        reason,
    };
    let mut archive = match zip::ZipArchive::new(reader) {
        Ok(archive) => archive,
        Err(e) => return corrupt(format!("not a zip archive: {e}")),
    };
    let names = entry_names(&archive);
    let code: Vec<&String> = names
        .iter()
        .filter(|n| n.contains("/code/") && n.ends_with(".py"))
        .collect();
    if code.is_empty() {
        return no_metadata(
            path,
            "PyTorch state_dict",
            "a PyTorch state_dict (torch.save) holds weights only: no code, no input/output \
             types or shapes",
            &[generic("infer")],
        );
    }
    let reason = "a TorchScript module records its methods' argument names and Python types, \
                  but not the dtypes or shapes of its tensors";
    // The root module's class, from data.pkl: `__torch__.Foo` is defined in code/__torch__.py,
    // `__torch__.a.b.Foo` in code/__torch__/a/b.py.
    let data = names
        .iter()
        .find(|n| n.ends_with("/data.pkl") || *n == "data.pkl");
    let root = data
        .and_then(|name| read_entry(&mut archive, name, 1 << 20).ok())
        .and_then(|bytes| pickle::first_global(&bytes));
    let mut sources = Vec::new();
    let mut total = 0u64;
    let mut ordered = code.clone();
    if let Some((module, _)) = &root {
        let wanted = format!("/code/{}.py", module.replace('.', "/"));
        ordered.sort_by_key(|n| !n.ends_with(&wanted));
    }
    for name in ordered {
        if total > MAX_CODE_TOTAL {
            break;
        }
        if let Ok(bytes) = read_entry(&mut archive, name, MAX_CODE_FILE) {
            total += bytes.len() as u64;
            sources.push(String::from_utf8_lossy(&bytes).into_owned());
        }
    }
    let class = root.as_ref().map(|(_, class)| class.as_str());
    let methods = sources
        .iter()
        .map(|source| methods_of(source, class))
        .find(|m| !m.is_empty())
        .unwrap_or_default();
    let signatures: Vec<SkeletonSignature> = if methods.is_empty() {
        vec![generic("infer")]
    } else {
        let wanted: Vec<&Method> = match methods.iter().find(|m| m.name == "forward") {
            Some(forward) => vec![forward],
            None => methods.iter().collect(),
        };
        wanted.into_iter().map(skeleton_of).collect()
    };
    no_metadata(path, "TorchScript module", reason, &signatures)
}

#[derive(Debug, PartialEq, Eq)]
struct Method {
    name: String,
    /// (name, TorchScript type), `self` left out.
    args: Vec<(String, String)>,
    returns: String,
}

/// The methods of `class` (or of the first class, when not known) in serialized TorchScript
/// code: `def name(self: __torch__.Foo,\n    x: Tensor) -> Tensor:`. Helper functions and
/// private methods are left out.
fn methods_of(source: &str, class: Option<&str>) -> Vec<Method> {
    let mut methods = Vec::new();
    let mut in_class = false;
    let lines = source.lines().take(1_000_000);
    let mut pending: Option<String> = None;
    for line in lines {
        if let Some(rest) = line.strip_prefix("class ") {
            let name = rest.split(['(', ':']).next().unwrap_or_default().trim();
            in_class = class.is_none_or(|c| c == name);
            if !in_class && !methods.is_empty() {
                break;
            }
            continue;
        }
        if !in_class {
            continue;
        }
        if let Some(def) = line.strip_prefix("  def ") {
            pending = Some(def.to_string());
        } else if let Some(text) = pending.as_mut() {
            text.push(' ');
            text.push_str(line.trim());
        } else {
            continue;
        }
        let Some(text) = pending.take_if(|t| t.trim_end().ends_with(':')) else {
            if pending.as_ref().is_some_and(|t| t.len() > 64 << 10) {
                pending = None;
            }
            continue;
        };
        if let Some(method) = parse_def(&text)
            && !method.name.starts_with('_')
        {
            methods.push(method);
        }
    }
    methods
}

/// `forward(self: T, x: Tensor, y: Tensor) -> Tensor:` → the method.
fn parse_def(text: &str) -> Option<Method> {
    let (name, rest) = text.split_once('(')?;
    let (args, returns) = rest.rsplit_once(')')?;
    let returns = returns
        .trim()
        .strip_prefix("->")
        .map_or("None", |r| r.trim().trim_end_matches(':').trim());
    let mut parsed = Vec::new();
    for arg in split_top(args) {
        let (arg_name, ty) = arg.split_once(':').unwrap_or((arg, "?"));
        let arg_name = arg_name.trim();
        // Defaults (`x: int=1`) are kept out of the type.
        let ty = ty.split('=').next().unwrap_or_default().trim();
        if arg_name == "self" || arg_name.is_empty() {
            continue;
        }
        parsed.push((arg_name.to_string(), ty.to_string()));
    }
    Some(Method {
        name: name.trim().to_string(),
        args: parsed,
        returns: returns.to_string(),
    })
}

/// Splits at commas that are not inside brackets.
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty()).collect()
}

/// What a TorchScript type tells of a field: Python scalars and lists of them are known,
/// tensors and containers are not.
fn slot(name: &str, ty: &str) -> Slot {
    let scalar = |t: &str| match t {
        "float" => Some("double"),
        "int" => Some("int64"),
        "bool" => Some("bool"),
        "str" => Some("string"),
        _ => None,
    };
    let note = Some(format!("TorchScript type: {ty}"));
    if let Some(dtype) = scalar(ty) {
        return Slot {
            name: name.into(),
            dtype: Some(dtype),
            shape: Some("scalar".into()),
            note,
        };
    }
    if let Some(dtype) = ty
        .strip_prefix("List[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(scalar)
    {
        return Slot {
            name: name.into(),
            dtype: Some(dtype),
            shape: Some("[-1]".into()),
            note,
        };
    }
    Slot::unknown(name, note)
}

fn skeleton_of(method: &Method) -> SkeletonSignature {
    let outputs = match method
        .returns
        .strip_prefix("Tuple[")
        .and_then(|t| t.strip_suffix(']'))
    {
        Some(items) => split_top(items)
            .into_iter()
            .enumerate()
            .map(|(i, ty)| slot(&format!("output_{i}"), ty.trim()))
            .collect(),
        None => vec![slot("output", &method.returns)],
    };
    SkeletonSignature {
        // `forward` is what the runtime calls for `infer`, as for exported programs.
        name: if method.name == "forward" {
            "infer".into()
        } else {
            method.name.clone()
        },
        inputs: method.args.iter().map(|(n, t)| slot(n, t)).collect(),
        outputs,
    }
}

// ---------------------------------------------------------------------------------------------
// Weight files: safetensors, GGUF

/// Weights say what tensors a model has, not what it takes and returns: the refusal reports
/// what the headers say (and checks them: a damaged header is the error instead).
fn infer_weights(path: &Path) -> Result<Inferred, InferError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let facts = weights::weight_facts(dir)?;
    let format = if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    {
        "GGUF file"
    } else {
        "safetensors checkpoint"
    };
    let what = weights::summary(&facts).unwrap_or_default();
    let reason = format!(
        "{what}. Weight files hold tensors, not the model's inputs and outputs, nor the code \
         that runs them"
    );
    Err(no_metadata(path, format, &reason, &[generic("infer")]))
}

// ---------------------------------------------------------------------------------------------
// MXNet

fn infer_mxnet(path: &Path) -> Result<Inferred, InferError> {
    let bytes = prefix(path, MAX_SYMBOL_JSON + 1)?;
    if bytes.len() as u64 > MAX_SYMBOL_JSON {
        return Err(InferError::Corrupt {
            path: path.to_path_buf(),
            format: "MXNet symbol file",
            reason: format!("more than {MAX_SYMBOL_JSON} bytes"),
        });
    }
    Err(explain_mxnet_symbol(&bytes, path))
}

#[derive(serde::Deserialize)]
struct Symbol {
    nodes: Vec<Node>,
    #[serde(default)]
    arg_nodes: Vec<usize>,
    #[serde(default)]
    heads: Vec<Vec<i64>>,
}

#[derive(serde::Deserialize)]
struct Node {
    #[serde(default)]
    name: String,
}

/// Parameters and training-only inputs among an MXNet symbol's argument nodes.
const MXNET_PARAMS: &[&str] = &[
    "_weight",
    "_bias",
    "_gamma",
    "_beta",
    "_moving_mean",
    "_moving_var",
    "_running_mean",
    "_running_var",
    "_label",
];

/// The NoMetadata error for an MXNet `*-symbol.json`, or a Corrupt error when it is not one.
pub fn explain_mxnet_symbol(bytes: &[u8], path: &Path) -> InferError {
    let symbol: Symbol = match serde_json::from_slice(bytes) {
        Ok(symbol) => symbol,
        Err(e) => {
            return InferError::Corrupt {
                path: path.to_path_buf(),
                format: "MXNet symbol file",
                reason: e.to_string(),
            };
        }
    };
    let name_of = |i: usize| symbol.nodes.get(i).map(|n| n.name.as_str());
    let mut inputs: Vec<Slot> = symbol
        .arg_nodes
        .iter()
        .filter_map(|&i| name_of(i))
        .filter(|n| !MXNET_PARAMS.iter().any(|p| n.ends_with(p)))
        .map(|n| Slot::unknown(n, Some("a data input of the symbol graph".into())))
        .collect();
    inputs.dedup_by(|a, b| a.name == b.name);
    if inputs.is_empty() {
        inputs.push(Slot::unknown("data", None));
    }
    let mut outputs: Vec<Slot> = symbol
        .heads
        .iter()
        .filter_map(|h| h.first().and_then(|&i| usize::try_from(i).ok()))
        .filter_map(name_of)
        .map(|n| Slot::unknown(&format!("{n}_output"), None))
        .collect();
    outputs.dedup_by(|a, b| a.name == b.name);
    if outputs.is_empty() {
        outputs.push(Slot::unknown("output", None));
    }
    no_metadata(
        path,
        "MXNet symbol file",
        "an MXNet symbol file names the graph's inputs but saves no types or shapes for them",
        &[SkeletonSignature {
            name: "infer".into(),
            inputs,
            outputs,
        }],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchscript_methods() {
        let code = "class Foo(Module):\n  __parameters__ = []\n  def forward(self: __torch__.Foo,\n    x: Tensor,\n    y: Dict[str, Tuple[int, int]]) -> Tuple[Tensor, List[str]]:\n    return x\n  def _helper(self: __torch__.Foo) -> None:\n    pass\nclass Bar(Module):\n  def forward(self: __torch__.Bar) -> int:\n    return 1\n";
        let methods = methods_of(code, Some("Foo"));
        assert_eq!(
            methods,
            vec![Method {
                name: "forward".into(),
                args: vec![
                    ("x".into(), "Tensor".into()),
                    ("y".into(), "Dict[str, Tuple[int, int]]".into())
                ],
                returns: "Tuple[Tensor, List[str]]".into(),
            }]
        );
        assert_eq!(methods_of(code, Some("Bar"))[0].returns, "int");
        let skeleton = render(&[skeleton_of(&methods[0])]);
        assert!(
            skeleton.contains("      output_1:  # TorchScript type: List[str]\n        shape: [-1]\n        type: string\n"),
            "{skeleton}"
        );
    }

    #[test]
    fn mxnet_inputs_skip_parameters() {
        let json = br#"{"nodes":[{"op":"null","name":"data"},{"op":"null","name":"fc1_weight"},{"op":"null","name":"fc1_bias"},{"op":"FullyConnected","name":"fc1"},{"op":"null","name":"softmax_label"},{"op":"SoftmaxOutput","name":"softmax"}],"arg_nodes":[0,1,2,4],"heads":[[5,0,0]]}"#;
        let err = explain_mxnet_symbol(json, Path::new("m-symbol.json"));
        let InferError::NoMetadata { skeleton, .. } = &err else {
            panic!("{err}")
        };
        assert!(skeleton.contains("      data:"), "{skeleton}");
        assert!(skeleton.contains("      softmax_output:"), "{skeleton}");
        assert!(
            !skeleton.contains("weight") && !skeleton.contains("label"),
            "{skeleton}"
        );
    }
}
