//! Contract inference from TFLite models and PyTorch exported programs, and the explanations
//! (with contract skeletons) for formats that save no metadata: TorchScript, state_dicts,
//! scikit-learn pickles, MXNet symbols. Real files: `../shared/fixtures` (compared with
//! `EXPECTED.json`) and `tests/fixtures` (written by `scripts/fixtures/*.py`). Then truncated,
//! mutated and hostile versions of them: an error naming the file, never a panic.

use crate::common::mutate;

use crate::common;
use common::lines;

use common::{own_fixture as own, shared_fixtures as shared};
use mlambda::contract::{DataType, Field, Shape};
use mlambda::infer::{
    InferError, Inferred, explain_mxnet_symbol, explain_pickle, explain_torch_zip, infer,
    infer_pt2_reader, infer_tflite_reader,
};
use mlambda::model::parse_serving_str;
use mutate::{Reader, Rng, mutate, run, scale};
use serde_json::Value;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

fn expected(root: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(root.join("EXPECTED.json")).expect("EXPECTED.json");
    match serde_json::from_str(&text).expect("EXPECTED.json is JSON") {
        Value::Object(map) => map,
        other => panic!("EXPECTED.json is not an object: {other}"),
    }
}

/// Infers from a folder holding only a copy of `file` (named `name`).
fn infer_alone(file: &Path, name: &str) -> Result<Option<Inferred>, InferError> {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::copy(file, tmp.path().join(name)).expect("copy");
    infer(tmp.path(), None)
}

// ---------------------------------------------------------------------------------------------
// TFLite

fn tflite_dtype(numpy: &str) -> DataType {
    match numpy {
        "float32" => DataType::DtFloat,
        "bytes_" | "object_" => DataType::DtString,
        "int32" => DataType::DtInt32,
        "int64" => DataType::DtInt64,
        "bool" | "bool_" => DataType::DtBool,
        other => panic!("EXPECTED.json: numpy dtype {other} not in this test's table"),
    }
}

/// The interpreter's view of subgraph 0, as the contract should show it: fields named by tensor
/// name, sorted, shape from `shape_signature`.
fn tflite_expected(details: &Value) -> Vec<String> {
    let mut fields: Vec<Field> = details
        .as_array()
        .expect("a list of tensors")
        .iter()
        .map(|t| {
            let sizes: Vec<i64> = t["shape_signature"]
                .as_array()
                .expect("shape_signature")
                .iter()
                .map(|d| d.as_i64().expect("a dim"))
                .collect();
            Field::tensor(
                t["name"].as_str().expect("name"),
                tflite_dtype(t["dtype"].as_str().expect("dtype")),
                Some(Shape::from_sizes(&sizes)),
            )
        })
        .collect();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    lines(&fields)
}

#[test]
fn every_tflite_fixture_matches_expected() {
    let Some(root) = shared() else { return };
    let expected = expected(&root);
    let mut checked = 0;
    for (file, want) in &expected {
        if !file.starts_with("tflite/") {
            continue;
        }
        let inferred = infer_alone(&root.join(file), "model.tflite")
            .unwrap_or_else(|e| panic!("{file}: {e}"))
            .unwrap_or_else(|| panic!("{file}: not recognised"));
        // None of TF Serving's files has SignatureDefs (the interpreter lists no runners):
        // subgraph 0 under the name TF Serving gives it.
        assert_eq!(
            want["signature_runner_list"],
            serde_json::json!({}),
            "{file}"
        );
        assert_eq!(inferred.signatures.len(), 1, "{file}");
        let signature = &inferred.signatures[0];
        assert_eq!(signature.name, "serving_default", "{file}");
        assert_eq!(
            lines(&signature.inputs),
            tflite_expected(&want["subgraph0_inputs"]),
            "{file} inputs"
        );
        assert_eq!(
            lines(&signature.outputs),
            tflite_expected(&want["subgraph0_outputs"]),
            "{file} outputs"
        );
        assert_eq!(inferred.source, "TFLite model (model.tflite)");
        assert!(
            inferred
                .warnings
                .iter()
                .any(|w| w.contains("no SignatureDef")),
            "{file}: {:?}",
            inferred.warnings
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "the three TFLite fixtures");

    let half = infer_alone(
        &root.join("tflite/serving_saved_model_half_plus_two_tflite/00000123/model.tflite"),
        "model.tflite",
    )
    .expect("ok")
    .expect("recognised");
    assert_eq!(half.model_type, "tflite:1.5.0");
    // parse_example's min_runtime_version buffer is all NULs.
    let parse = infer_alone(
        &root.join("tflite/serving_parse_example_tflite/00000123/model.tflite"),
        "model.tflite",
    )
    .expect("ok")
    .expect("recognised");
    assert_eq!(parse.model_type, "tflite:unknown");
    assert!(
        parse
            .warnings
            .iter()
            .any(|w| w.contains("min_runtime_version") && w.contains("schema version 3")),
        "{:?}",
        parse.warnings
    );
}

#[test]
fn tflite_signature_defs_name_the_signatures_and_fields() {
    // Written by scripts/fixtures/make_tflite.py; the interpreter reported exactly this.
    let inferred = infer_alone(&own("tflite/two_signatures.tflite"), "two.tflite")
        .expect("ok")
        .expect("recognised");
    assert_eq!(inferred.model_type, "tflite:1.14.0");
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
    let names: Vec<&str> = inferred
        .signatures
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["classify", "lookup"]);
    let classify = &inferred.signatures[0];
    assert_eq!(lines(&classify.inputs), ["features DtFloat [-1,4]"]);
    assert_eq!(
        lines(&classify.outputs),
        ["label DtInt64 [-1]", "scores DtFloat [-1,3]"]
    );
    let lookup = &inferred.signatures[1];
    assert_eq!(
        lines(&lookup.inputs),
        ["ids DtInt64 [2,5]", "threshold DtFloat []"]
    );
    assert_eq!(
        lines(&lookup.outputs),
        ["count DtInt32 [2]", "mask DtBool [2,5]"]
    );
}

// ---------------------------------------------------------------------------------------------
// PyTorch export

#[test]
fn pt2_dynamic_batch_keeps_the_symbol() {
    let inferred = infer_alone(&own("pytorch/dynamic_batch.pt2"), "model.pt2")
        .expect("ok")
        .expect("recognised");
    assert_eq!(inferred.model_type, "pytorch:2.15.0+cu132");
    assert_eq!(inferred.source, "PyTorch exported program (model.pt2)");
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
    assert_eq!(inferred.signatures.len(), 1);
    let signature = &inferred.signatures[0];
    assert_eq!(signature.name, "infer");
    // The Linear layer's weight and bias are parameters, not inputs.
    assert_eq!(lines(&signature.inputs), ["features DtFloat [-1,4] (s97,)"]);
    assert_eq!(
        lines(&signature.outputs),
        ["output_0 DtFloat [-1,2] (s97,)"]
    );
}

#[test]
fn pt2_two_inputs_two_outputs() {
    let inferred = infer_alone(&own("pytorch/two_in_two_out.pt2"), "model.pt2")
        .expect("ok")
        .expect("recognised");
    let signature = &inferred.signatures[0];
    assert_eq!(
        lines(&signature.inputs),
        ["image DtFloat [1,3,8,8]", "mask DtBool [5,7]"]
    );
    assert_eq!(
        lines(&signature.outputs),
        ["output_0 DtFloat [1,3,8,8]", "output_1 DtInt64 [5]"]
    );
}

/// What to do with a zip entry: `None` drops it, else its new name and content.
type Edit = dyn Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>;

/// Rewrites a zip, renaming, replacing or dropping entries.
fn rezip(bytes: &[u8], edit: &Edit) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
    let mut writer = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).expect("entry");
        let name = entry.name().expect("a text name").to_string();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut data).expect("read");
        if let Some((name, data)) = edit(&name, data) {
            writer.start_file(name, options).expect("start");
            writer.write_all(&data).expect("write");
        }
    }
    writer.finish().expect("finish").into_inner()
}

fn read_pt2(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    infer_pt2_reader(Cursor::new(bytes), path)
}

#[test]
fn pt2_older_layout_and_broken_programs() {
    let original = std::fs::read(own("pytorch/two_in_two_out.pt2")).expect("fixture");
    let path = Path::new("old.pt2");
    // torch before 2.6 named the entry serialized_exported_program.json.
    let old = rezip(&original, &|name, data| {
        Some(match name.strip_suffix("models/model.json") {
            Some(prefix) => (format!("{prefix}serialized_exported_program.json"), data),
            None => (name.to_string(), data),
        })
    });
    let inferred = read_pt2(&old, path).expect("older layout");
    assert_eq!(inferred.signatures[0].inputs.len(), 2);

    let replaced = |json: &str| {
        let json = json.to_string();
        rezip(&original, &move |name, data| {
            Some(if name.ends_with("models/model.json") {
                (name.to_string(), json.clone().into_bytes())
            } else {
                (name.to_string(), data)
            })
        })
    };
    // Deep nesting: serde_json's recursion limit, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = read_pt2(&replaced(&deep), path).expect_err("deep");
    assert!(matches!(err, InferError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("old.pt2"), "{err}");
    // A user input whose tensor is not described.
    let missing = r#"{"graph_module": {"graph": {"tensor_values": {}}, "signature": {"input_specs": [{"user_input": {"arg": {"as_tensor": {"name": "x"}}}}], "output_specs": []}}}"#;
    let err = read_pt2(&replaced(missing), path).expect_err("missing");
    assert!(err.to_string().contains("\"x\""), "{err}");
    // No torch version, an unknown dtype and a symbolic size.
    let odd = r#"{"graph_module": {"graph": {"tensor_values": {"x": {"dtype": 29, "sizes": [{"as_expr": {"expr_str": "s0"}}, {"as_int": 3}]}}}, "signature": {"input_specs": [{"user_input": {"arg": {"as_tensor": {"name": "x"}}}}], "output_specs": [{"user_output": {"arg": {"as_tensor": {"name": "x"}}}}]}}}"#;
    let inferred = read_pt2(&replaced(odd), path).expect("odd");
    assert_eq!(inferred.model_type, "pytorch:unknown");
    assert_eq!(
        lines(&inferred.signatures[0].inputs),
        ["x DtInvalid [-1,3] (s0,)"]
    );
    assert!(
        inferred.warnings.iter().any(|w| w.contains("FLOAT8E4M3FN")),
        "{:?}",
        inferred.warnings
    );
    // Not an exported program at all.
    let none = rezip(&original, &|name, data| {
        (!name.ends_with(".json")).then(|| (name.to_string(), data))
    });
    let err = read_pt2(&none, path).expect_err("no program");
    assert!(matches!(err, InferError::NoContract { .. }), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Formats without metadata

fn no_metadata(err: InferError) -> (String, String) {
    match err {
        InferError::NoMetadata {
            format, skeleton, ..
        } => (format, skeleton),
        other => panic!("expected NoMetadata, got {other}"),
    }
}

/// `forward(__torch__.Foo self, Tensor x, Tensor y) -> Tensor` → ("forward", ["x", "y"]).
fn torchscript_method(text: &str) -> (String, Vec<String>) {
    let (name, rest) = text.split_once('(').expect("(");
    let (args, _) = rest.rsplit_once(") ->").expect(") ->");
    let mut depth = 0;
    let mut parts = vec![String::new()];
    for c in args.chars() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(String::new());
                continue;
            }
            _ => {}
        }
        parts.last_mut().expect("a part").push(c);
    }
    let names = parts
        .iter()
        .skip(1) // self
        .map(|p| p.trim().rsplit(' ').next().expect("a name").to_string())
        .collect();
    (name.to_string(), names)
}

/// Fills every FILL_IN and reads the skeleton back as a serving.yaml.
fn filled_skeleton_parses(skeleton: &str) -> Vec<mlambda::contract::Signature> {
    let filled = skeleton
        .replace("[FILL_IN]", "[-1]")
        .replace("FILL_IN", "float");
    let text = format!("kind: Model\nname: m\nmodel-type: python:3.11\n{filled}");
    let file = parse_serving_str(Path::new("serving.yaml"), &text)
        .unwrap_or_else(|e| panic!("the filled skeleton is not a valid serving.yaml: {e}\n{text}"));
    file.contract.expect("a contract")
}

#[test]
fn torchscript_fixtures_explain_and_name_the_arguments() {
    let Some(root) = shared() else { return };
    let mut checked = 0;
    for (file, want) in expected(&root) {
        if !file.starts_with("torchscript/") {
            continue;
        }
        let err = infer_alone(&root.join(&file), "model.pt").expect_err(&file);
        let message = err.to_string();
        assert!(message.contains("model.pt"), "{message}");
        assert!(message.contains("TorchScript"), "{message}");
        assert!(message.contains("dtypes or shapes"), "{message}");
        let (format, skeleton) = no_metadata(err);
        assert_eq!(format, "TorchScript module");
        let methods = want["methods"].as_object().expect("methods");
        assert_eq!(methods.len(), 1, "{file}");
        let (method, args) = torchscript_method(methods.values().next().unwrap().as_str().unwrap());
        let signature = if method == "forward" {
            "infer"
        } else {
            &method
        };
        let contract = filled_skeleton_parses(&skeleton);
        assert_eq!(contract.len(), 1, "{file}: {skeleton}");
        assert_eq!(contract[0].name, signature, "{file}");
        let inputs: Vec<&str> = contract[0].inputs.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(inputs, args, "{file}: {skeleton}");
        checked += 1;
    }
    assert_eq!(checked, 5);

    // What the TorchScript types tell: List[str] is a string vector; Tuple returns are numbered.
    let (_, foo5) = no_metadata(
        infer_alone(&root.join("torchscript/tchrs_foo5/foo5.pt"), "foo5.pt").expect_err("foo5"),
    );
    assert!(
        foo5.contains(
            "      xs:  # TorchScript type: List[str]\n        shape: [-1]\n        type: string\n"
        ),
        "{foo5}"
    );
    let (_, foo2) = no_metadata(
        infer_alone(&root.join("torchscript/tchrs_foo2/foo2.pt"), "foo2.pt").expect_err("foo2"),
    );
    assert!(
        foo2.contains("      output_0:") && foo2.contains("      output_1:"),
        "{foo2}"
    );
}

#[test]
fn a_state_dict_is_weights_only() {
    let Some(root) = shared() else { return };
    // A torch.save zip: data.pkl and tensors, no code/.
    let original = std::fs::read(root.join("torchscript/tchrs_foo/foo.pt")).expect("fixture");
    let state = rezip(&original, &|name, data| {
        (!name.contains("/code/")).then(|| (name.to_string(), data))
    });
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("pytorch_model.bin"), &state).expect("write");
    // An unrelated .bin is not claimed.
    std::fs::write(tmp.path().join("weights.bin"), b"\x00\x01\x02").expect("write");
    let (format, skeleton) = no_metadata(infer(tmp.path(), None).expect_err("state dict"));
    assert_eq!(format, "PyTorch state_dict");
    filled_skeleton_parses(&skeleton);
}

#[test]
fn sklearn_pickles_reveal_their_columns() {
    let (format, skeleton) =
        no_metadata(infer_alone(&own("sklearn/named_columns.pkl"), "model.pkl").expect_err("pkl"));
    assert_eq!(format, "scikit-learn pickle");
    let columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
    let contract = filled_skeleton_parses(&skeleton);
    let inputs: Vec<&str> = contract[0].inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(inputs, columns, "{skeleton}");

    // joblib writes numpy arrays inline, and the names as a nested pickle.
    let err =
        infer_alone(&own("sklearn/named_columns.joblib"), "model.joblib").expect_err("joblib");
    assert!(
        err.to_string()
            .contains("a scikit-learn pickle saves no input/output types or shapes"),
        "{err}"
    );
    let (_, skeleton) = no_metadata(err);
    let contract = filled_skeleton_parses(&skeleton);
    let inputs: Vec<&str> = contract[0].inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(inputs, columns, "{skeleton}");

    let (_, skeleton) =
        no_metadata(infer_alone(&own("sklearn/unnamed.pkl"), "model.pkl").expect_err("unnamed"));
    assert!(skeleton.contains("shape: [-1, 3]"), "{skeleton}");
    filled_skeleton_parses(&skeleton);

    let (format, _) = no_metadata(
        infer_alone(&own("sklearn/compressed.joblib"), "model.joblib").expect_err("compressed"),
    );
    assert_eq!(format, "compressed joblib file");
}

#[test]
fn formats_without_metadata_never_shadow_a_real_one() {
    let Some(root) = shared() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    std::fs::copy(own("sklearn/named_columns.pkl"), dir.join("preprocess.pkl")).expect("copy");
    // Whatever the hint, a lone pickle explains itself (no contract is possible anyway).
    let err = infer(dir, Some("sklearn:1.9")).expect_err("pickle");
    assert!(matches!(err, InferError::NoMetadata { .. }), "{err}");
    std::fs::copy(
        root.join("onnx/skl2onnx_docs_rf_iris/rf_iris.onnx"),
        dir.join("model.onnx"),
    )
    .expect("copy");
    let onnx = infer(dir, None).expect("onnx wins").expect("recognised");
    assert_eq!(onnx.model_type, "onnx:9");
    // Two pickles and nothing else: which one is the model?
    std::fs::remove_file(dir.join("model.onnx")).expect("rm");
    std::fs::copy(own("sklearn/unnamed.pkl"), dir.join("model.pkl")).expect("copy");
    let err = infer(dir, None).expect_err("two pickles");
    assert!(matches!(err, InferError::Ambiguous { .. }), "{err}");
}

#[test]
fn mxnet_symbols_name_their_data_inputs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("resnet-symbol.json"), MXNET_SYMBOL).expect("write");
    std::fs::write(tmp.path().join("resnet-0000.params"), b"weights").expect("write");
    let err = infer(tmp.path(), None).expect_err("mxnet");
    assert!(err.to_string().contains("resnet-symbol.json"), "{err}");
    let (format, skeleton) = no_metadata(err);
    assert_eq!(format, "MXNet symbol file");
    let contract = filled_skeleton_parses(&skeleton);
    let inputs: Vec<&str> = contract[0].inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(inputs, ["data"]);
    let outputs: Vec<&str> = contract[0]
        .outputs
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(outputs, ["softmax_output"]);
}

/// The shape of what `mx.sym.SoftmaxOutput(mx.sym.FullyConnected(data, num_hidden=2))` saves.
const MXNET_SYMBOL: &str = r#"{
  "nodes": [
    {"op": "null", "name": "data", "inputs": []},
    {"op": "null", "name": "fc1_weight", "attrs": {"num_hidden": "2"}, "inputs": []},
    {"op": "null", "name": "fc1_bias", "attrs": {"num_hidden": "2"}, "inputs": []},
    {"op": "FullyConnected", "name": "fc1", "attrs": {"num_hidden": "2"}, "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0]]},
    {"op": "null", "name": "softmax_label", "inputs": []},
    {"op": "SoftmaxOutput", "name": "softmax", "inputs": [[3, 0, 0], [4, 0, 0]]}
  ],
  "arg_nodes": [0, 1, 2, 4],
  "node_row_ptr": [0, 1, 2, 3, 4, 5, 6],
  "heads": [[5, 0, 0]],
  "attrs": {"mxnet_version": ["int", 10500]}
}"#;

// ---------------------------------------------------------------------------------------------
// Hostile input

fn read_tflite(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    infer_tflite_reader(Cursor::new(bytes), path)
}

fn read_torch_zip(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    Err(explain_torch_zip(Cursor::new(bytes), path))
}

fn read_pickle(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    Err(explain_pickle(path, bytes))
}

fn read_mxnet(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    Err(explain_mxnet_symbol(bytes, path))
}

/// Every input of the hostile tests: (bytes, reader, file name).
fn inputs() -> Vec<(Vec<u8>, Reader, &'static str)> {
    let read = |p: PathBuf| std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let mut all: Vec<(Vec<u8>, Reader, &'static str)> = vec![
        (
            read(own("tflite/two_signatures.tflite")),
            read_tflite,
            "model.tflite",
        ),
        (
            read(own("pytorch/dynamic_batch.pt2")),
            read_pt2,
            "model.pt2",
        ),
        (
            read(own("pytorch/two_in_two_out.pt2")),
            read_pt2,
            "model.pt2",
        ),
        (
            read(own("sklearn/named_columns.pkl")),
            read_pickle,
            "model.pkl",
        ),
        (
            read(own("sklearn/named_columns.joblib")),
            read_pickle,
            "model.joblib",
        ),
        (read(own("sklearn/unnamed.pkl")), read_pickle, "model.pkl"),
        (
            MXNET_SYMBOL.as_bytes().to_vec(),
            read_mxnet,
            "m-symbol.json",
        ),
    ];
    if let Some(root) = shared() {
        for (file, _) in expected(&root) {
            if file.starts_with("tflite/") {
                all.push((read(root.join(&file)), read_tflite, "model.tflite"));
            } else if file.starts_with("torchscript/") {
                all.push((read(root.join(&file)), read_torch_zip, "model.pt"));
            }
        }
    }
    all
}

#[test]
fn truncated_files_are_errors_not_panics() {
    for (bytes, read, name) in inputs() {
        let len = bytes.len();
        let whole = read(&bytes, Path::new(name)).ok();
        let mut cuts: Vec<usize> = (0..20).map(|i| len * i / 20).collect();
        cuts.extend([1, 3, 4, 7, 8, 9, len - 1, len.saturating_sub(22)]);
        for cut in cuts.into_iter().filter(|&c| c < len) {
            let what = format!("{name} ({len} bytes) cut at {cut}");
            let result = run(read, &bytes[..cut], name, &what);
            // A zip's directory is at its end: any cut is noticed. A FlatBuffer is read only
            // where it points, so a cut in parts that are never read (weights, operators) may
            // go unnoticed, but must not change the contract. A pickle's prefix is a fine read.
            if name == "model.pt2" {
                assert!(result.is_err(), "{what}: accepted");
            }
            if name == "model.tflite"
                && let Ok(inferred) = result
            {
                assert_eq!(
                    Some(inferred),
                    whole,
                    "{what}: accepted with another contract"
                );
            }
        }
    }
}

#[test]
fn hostile_tflite_offsets_and_lengths_are_errors() {
    let bytes = std::fs::read(own("tflite/two_signatures.tflite")).expect("fixture");
    let path = "model.tflite";
    // Root offset past the end, pointing at itself, at the identifier.
    for root in [u32::MAX, 0, 4, bytes.len() as u32] {
        let mut b = bytes.clone();
        b[..4].copy_from_slice(&root.to_le_bytes());
        let err = run(read_tflite, &b, path, "root offset").expect_err("root offset");
        assert!(matches!(err, InferError::Corrupt { .. }), "{err}");
    }
    let mut b = bytes.clone();
    b[4..8].copy_from_slice(b"ONNX");
    let err = run(read_tflite, &b, path, "identifier").expect_err("identifier");
    assert!(err.to_string().contains("file identifier"), "{err}");
    // Every aligned u32 set to huge values in turn: lengths, offsets and indices.
    for at in (0..bytes.len() - 4).step_by(4) {
        for value in [u32::MAX, 0x7fff_ffff, 0x4000_0000] {
            let mut b = bytes.clone();
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            let _ = run(read_tflite, &b, path, &format!("u32 {value:#x} at {at}"));
        }
    }
}

#[test]
fn random_garbage_is_an_error_not_a_panic() {
    let mut rng = Rng::from_env(0x5eed_0f7f_117e);
    for round in 0..500 {
        let len = rng.below(if round % 10 == 0 { 4096 } else { 64 });
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if round % 3 == 0 && bytes.len() >= 8 {
            bytes[4..8].copy_from_slice(b"TFL3");
        }
        let what = format!("garbage round {round}");
        let _ = run(read_tflite, &bytes, "model.tflite", &what);
        let _ = run(read_pt2, &bytes, "model.pt2", &what);
        let _ = run(read_torch_zip, &bytes, "model.pt", &what);
        let _ = run(read_pickle, &bytes, "model.pkl", &what);
        let _ = run(read_mxnet, &bytes, "m-symbol.json", &what);
    }
}

#[test]
fn mutated_files_never_panic() {
    let mut rng = Rng::from_env(0x0ddb_a11c_0ffe);
    let mut runs = 0;
    for (original, read, name) in inputs() {
        for round in 0..400 * scale() {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                mutate(&mut rng, &mut bytes);
            }
            let _ = run(
                read,
                &bytes,
                name,
                &format!("{name} mutation round {round}"),
            );
            runs += 1;
        }
    }
    assert!(runs >= 2800, "only {runs} runs");
}
