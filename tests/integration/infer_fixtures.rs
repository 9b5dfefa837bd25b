//! Contract inference against real model files written by TensorFlow and ONNX exporters
//! (`../shared/fixtures`), compared field by field with what the frameworks' own tools report
//! (`EXPECTED.json`); and against truncated, corrupted and hostile versions of those files.

use crate::common;
use crate::common::mutate;

use common::shared_fixtures as fixtures;
use mlambda::contract::{DataType, Dim, Field, FieldKind, Shape, parse_dtype};
use mlambda::infer::{
    InferError, Inferred, infer, infer_onnx_reader, infer_savedmodel_reader,
    infer_savedmodel_text_reader,
};
use mutate::{PROTOBUF, Reader, Rng, mutate_with, run};
use serde_json::Value;
use std::io::Cursor;
use std::path::Path;

fn expected(dir: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir.join("EXPECTED.json")).expect("EXPECTED.json");
    match serde_json::from_str(&text).expect("EXPECTED.json is JSON") {
        Value::Object(map) => map,
        other => panic!("EXPECTED.json is not an object: {other}"),
    }
}

/// Every file under `dir` for which `pick` is true, as paths relative to `root`, sorted.
fn model_files(root: &Path, dir: &Path, pick: &dyn Fn(&Path) -> bool) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("fixture folder") {
            let path = entry.expect("fixture entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if pick(&path) {
                let relative = path.strip_prefix(root).expect("under root");
                found.push(relative.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    found.sort();
    found
}

fn onnx_models(root: &Path) -> Vec<String> {
    model_files(root, &root.join("onnx"), &|p| {
        p.extension().is_some_and(|e| e == "onnx")
    })
}

fn saved_models(root: &Path) -> Vec<String> {
    model_files(root, &root.join("tf_savedmodel"), &|p| {
        p.file_name()
            .is_some_and(|n| n == "saved_model.pb" || n == "saved_model.pbtxt")
    })
}

fn infer_folder_of(root: &Path, file: &str) -> Inferred {
    let path = root.join(file);
    let dir = path.parent().expect("a folder");
    match infer(dir, None) {
        Ok(Some(inferred)) => inferred,
        Ok(None) => panic!("{file}: nothing recognised"),
        Err(e) => panic!("{file}: {e}"),
    }
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("EXPECTED.json: no string '{key}' in {value}"))
}

fn dtype_of(field: &Field) -> DataType {
    match field.kind {
        FieldKind::Tensor(dtype) => dtype,
        FieldKind::Nested(_) => panic!("{}: nested field from inference", field.name),
    }
}

// ---------------------------------------------------------------------------------------------
// ONNX

/// `tensor(FLOAT, [?, 'batch', 3])` → (dtype, shape); `None` for seq/map/optional.
fn onnx_type(text: &str) -> Option<(DataType, Option<Shape>)> {
    let inner = text.strip_prefix("tensor(")?.strip_suffix(')')?;
    let (elem, dims) = inner.split_once(", ").expect("tensor(ELEM, dims)");
    // EXPECTED's element names are ONNX's; SPEC's type names are the oracle for the mapping.
    let dtype = parse_dtype(elem).unwrap_or_else(|| panic!("unknown ONNX element type {elem}"));
    let shape = match dims {
        "unranked" => None,
        dims => {
            let list = dims.strip_prefix('[').and_then(|d| d.strip_suffix(']'));
            let list = list.unwrap_or_else(|| panic!("dims {dims}"));
            let dims = list
                .split(", ")
                .filter(|d| !d.is_empty())
                .map(|d| match d {
                    "?" => Dim {
                        size: -1,
                        name: String::new(),
                    },
                    d if d.starts_with('\'') => Dim {
                        size: -1,
                        name: d.trim_matches('\'').to_string(),
                    },
                    d => Dim {
                        size: d.parse().unwrap_or_else(|_| panic!("dim {d}")),
                        name: String::new(),
                    },
                })
                .collect();
            Some(Shape {
                dims,
                unknown_rank: false,
            })
        }
    };
    Some((dtype, shape))
}

fn check_onnx_fields(
    file: &str,
    direction: &str,
    expected: &[&Value],
    actual: &[Field],
    warnings: &[String],
) {
    let mut expected: Vec<&Value> = expected.to_vec();
    expected.sort_by(|a, b| str_of(a, "name").cmp(str_of(b, "name")));
    let names: Vec<&str> = expected.iter().map(|v| str_of(v, "name")).collect();
    let actual_names: Vec<&str> = actual.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(actual_names, names, "{file}: {direction} names, sorted");
    for (want, got) in expected.iter().zip(actual) {
        let text = str_of(want, "type");
        let what = format!("{file}: {direction} '{}' ({text})", got.name);
        match onnx_type(text) {
            Some((dtype, shape)) => {
                assert_eq!(dtype_of(got), dtype, "{what}: dtype");
                assert_eq!(got.shape, shape, "{what}: shape");
            }
            None => {
                assert_eq!(dtype_of(got), DataType::DtVariant, "{what}: dtype");
                assert_eq!(got.shape, None, "{what}: shape");
                assert!(
                    warnings
                        .iter()
                        .any(|w| w.contains(&format!("'{}'", got.name)) && w.contains("DT_VARIANT")),
                    "{what}: no warning names it: {warnings:?}"
                );
            }
        }
    }
}

#[test]
fn every_onnx_fixture_matches_expected() {
    let Some(root) = fixtures() else { return };
    let expected = expected(&root);
    let models = onnx_models(&root);
    assert!(models.len() >= 21, "found only {models:?}");
    for file in &models {
        let want = expected
            .get(file)
            .unwrap_or_else(|| panic!("{file} is not in EXPECTED.json"));
        let inferred = infer_folder_of(&root, file);
        let name = Path::new(file).file_name().expect("name").to_string_lossy();
        assert!(
            inferred.source.contains(name.as_ref()),
            "{file}: source {}",
            inferred.source
        );

        let opset = want["opset_import"]
            .get("ai.onnx")
            .or_else(|| want["opset_import"].get(""))
            .and_then(Value::as_i64);
        match opset {
            Some(v) => assert_eq!(inferred.model_type, format!("onnx:{v}"), "{file}"),
            None => {
                assert_eq!(inferred.model_type, "onnx:unknown", "{file}");
                assert!(
                    inferred
                        .warnings
                        .iter()
                        .any(|w| w.contains("default ONNX operator set")),
                    "{file}: {:?}",
                    inferred.warnings
                );
            }
        }

        assert_eq!(inferred.signatures.len(), 1, "{file}");
        let signature = &inferred.signatures[0];
        assert_eq!(signature.name, "infer", "{file}");
        let initializers: Vec<&str> = want["inputs_that_are_initializers"]
            .as_array()
            .expect("inputs_that_are_initializers")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let inputs: Vec<&Value> = want["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .filter(|v| !initializers.contains(&str_of(v, "name")))
            .collect();
        let outputs: Vec<&Value> = want["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .collect();
        check_onnx_fields(
            file,
            "input",
            &inputs,
            &signature.inputs,
            &inferred.warnings,
        );
        check_onnx_fields(
            file,
            "output",
            &outputs,
            &signature.outputs,
            &inferred.warnings,
        );
        for initializer in &initializers {
            assert!(
                signature.inputs.iter().all(|f| f.name != *initializer),
                "{file}: initializer {initializer} listed as an input"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// TensorFlow SavedModel

fn tf_dtype(name: &str) -> DataType {
    let base = name.strip_suffix("_REF").unwrap_or(name);
    DataType::from_str_name(base).unwrap_or_else(|| panic!("unknown TensorFlow dtype {name}"))
}

fn tf_shape(text: &str) -> Option<Shape> {
    if text.starts_with("ABSENT") {
        return None;
    }
    if text == "unknown_rank" {
        return Some(Shape {
            dims: vec![],
            unknown_rank: true,
        });
    }
    let list = text.strip_prefix('[').and_then(|t| t.strip_suffix(']'));
    let list = list.unwrap_or_else(|| panic!("shape {text}"));
    let sizes: Vec<i64> = list
        .split(", ")
        .filter(|d| !d.is_empty())
        .map(|d| d.parse().unwrap_or_else(|_| panic!("dim {d}")))
        .collect();
    Some(Shape::from_sizes(&sizes))
}

fn check_tf_fields(what: &str, expected: &Value, actual: &[Field]) {
    let expected = expected.as_object().expect("a map of fields");
    // serde_json's map is sorted by key, as the contract must be.
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    let actual_names: Vec<&str> = actual.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(actual_names, names, "{what}: field names, sorted");
    for ((name, want), got) in expected.iter().zip(actual) {
        let what = format!("{what} '{name}'");
        assert_eq!(
            dtype_of(got),
            tf_dtype(str_of(want, "dtype")),
            "{what}: dtype"
        );
        assert_eq!(got.shape, tf_shape(str_of(want, "shape")), "{what}: shape");
    }
}

fn check_saved_model(file: &str, want: &Value, inferred: &Inferred) {
    let graphs = want["meta_graphs"].as_array().expect("meta_graphs");
    let graph = graphs
        .iter()
        .find(|g| {
            g["tags"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t == "serve"))
        })
        .unwrap_or(&graphs[0]);
    assert_eq!(
        inferred.model_type,
        format!("tensorflow:{}", str_of(graph, "tensorflow_version")),
        "{file}"
    );
    let defs = graph["signature_defs"].as_object().expect("signature_defs");
    let names: Vec<&str> = defs
        .keys()
        .map(String::as_str)
        .filter(|k| *k != "__saved_model_init_op")
        .collect();
    let actual: Vec<&str> = inferred
        .signatures
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(actual, names, "{file}: signature names, sorted");
    for signature in &inferred.signatures {
        let def = &defs[&signature.name];
        let what = format!("{file}: signature '{}'", signature.name);
        check_tf_fields(&format!("{what} input"), &def["inputs"], &signature.inputs);
        check_tf_fields(
            &format!("{what} output"),
            &def["outputs"],
            &signature.outputs,
        );
    }
}

#[test]
fn every_saved_model_fixture_matches_expected() {
    let Some(root) = fixtures() else { return };
    let expected = expected(&root);
    let models = saved_models(&root);
    assert!(models.len() >= 12, "found only {models:?}");
    for file in &models {
        let want = expected
            .get(file)
            .unwrap_or_else(|| panic!("{file} is not in EXPECTED.json"));
        let inferred = infer_folder_of(&root, file);
        assert_eq!(
            inferred.source, "TensorFlow SavedModel (saved_model.pb)",
            "{file}"
        );
        check_saved_model(file, want, &inferred);
    }
}

/// `saved_model.pbtxt` for a binary SavedModel, written through the schema subset (what
/// inference reads; the graph is not part of it).
fn text_form(bytes: &[u8]) -> String {
    let pool = prost_reflect::DescriptorPool::decode(mlambda::contract::proto::DESCRIPTOR_SET)
        .expect("descriptors");
    let schema = pool
        .get_message_by_name("tensorflow.SavedModel")
        .expect("tensorflow.SavedModel");
    prost_reflect::DynamicMessage::decode(schema, bytes)
        .expect("decodes with the subset schema")
        .to_text_format()
}

/// The text form gives the same contract as the binary one.
#[test]
fn saved_model_text_form_matches_binary() {
    let Some(root) = fixtures() else { return };
    for file in saved_models(&root) {
        let bytes = std::fs::read(root.join(&file)).expect("fixture");
        let binary = infer_savedmodel_reader(Cursor::new(&bytes), Path::new("saved_model.pb"))
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let text = text_form(&bytes);
        let from_text =
            infer_savedmodel_text_reader(text.as_bytes(), Path::new("saved_model.pbtxt"))
                .unwrap_or_else(|e| panic!("{file} as text: {e}\n{text}"));
        assert_eq!(from_text.signatures, binary.signatures, "{file}");
        assert_eq!(from_text.model_type, binary.model_type, "{file}");
        assert_eq!(
            from_text.source,
            "TensorFlow SavedModel (saved_model.pbtxt)"
        );
    }
}

/// A `.pbtxt` as TensorFlow writes it, with everything inference must step over.
const PBTXT: &str = r#"
saved_model_schema_version: 1
meta_graphs {
  meta_info_def {
    stripped_op_list { op { name: "Placeholder" attr { name: "dtype" type: "type" } } }
    tags: "train"
    tensorflow_version: "1.15.0"
  }
}
meta_graphs {
  meta_info_def {
    stripped_op_list {
      op { name: "Const" output_arg { name: "output" type_attr: "dtype" } }
    }
    any_info { [type.googleapis.com/tensorflow.Foo] { bar: 1 } }
    tags: "serve"
    tensorflow_version: "1.15.0"
    tensorflow_git_version: "v1.15.0-rc3-22-g590d6ee"
  }
  graph_def {
    node {
      name: "x"
      op: "Placeholder"
      attr { key: "dtype" value { type: DT_FLOAT } }
      attr { key: "value" value { tensor { dtype: DT_FLOAT tensor_content: "\000\000\200?\"}{" } } }
      attr { key: "shape" value { shape { dim { size: -1 } dim { size: 3 } } } }
    }
    versions { producer: 134 }
  }
  saver_def { filename_tensor_name: "save/Const:0" version: V2 }
  collection_def {
    key: "variables"
    value { bytes_list { value: "\n\001w" } }
  }
  signature_def {
    key: "serving_default"
    value {
      inputs {
        key: "x"
        value {
          name: "x:0"
          dtype: DT_FLOAT
          tensor_shape { dim { size: -1 } dim { size: 3 name: "features" } }
        }
      }
      inputs {
        key: "mask"
        value { name: "mask:0" dtype: DT_BOOL_REF }
      }
      outputs {
        key: "y"
        value < name: "y:0" dtype: DT_FLOAT tensor_shape < unknown_rank: true > >
      }
      method_name: "tensorflow/serving/predict"
    }
  }
  asset_file_def { tensor_info { name: "Const:0" } filename: "vocab.txt" }
}
"#;

#[test]
fn saved_model_text_with_graph_and_extras() {
    let inferred = infer_savedmodel_text_reader(PBTXT.as_bytes(), Path::new("saved_model.pbtxt"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(inferred.model_type, "tensorflow:1.15.0");
    assert_eq!(inferred.signatures.len(), 1);
    let signature = &inferred.signatures[0];
    assert_eq!(signature.name, "serving_default");
    let mut x_shape = Shape::from_sizes(&[-1, 3]);
    x_shape.dims[1].name = "features".into();
    assert_eq!(
        signature.inputs,
        vec![
            Field::tensor("mask", DataType::DtBool, None),
            Field::tensor("x", DataType::DtFloat, Some(x_shape)),
        ]
    );
    assert_eq!(
        signature.outputs,
        vec![Field::tensor(
            "y",
            DataType::DtFloat,
            Some(Shape {
                dims: vec![],
                unknown_rank: true
            })
        )]
    );
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("2 MetaGraphDefs")),
        "{:?}",
        inferred.warnings
    );
}

// ---------------------------------------------------------------------------------------------
// The dispatcher

fn copy_into(dir: &Path, root: &Path, file: &str, name: &str) {
    std::fs::copy(root.join(file), dir.join(name)).expect("copy fixture");
}

#[test]
fn folder_dispatch_hint_and_ambiguity() {
    let Some(root) = fixtures() else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    assert!(infer(dir, None).expect("empty folder").is_none());
    std::fs::write(dir.join("README.md"), "not a model").expect("write");
    assert!(infer(dir, None).expect("no model").is_none());

    copy_into(
        dir,
        &root,
        "onnx/skl2onnx_docs_rf_iris/rf_iris.onnx",
        "rf_iris.onnx",
    );
    let one = infer(dir, None).expect("one onnx").expect("recognised");
    assert_eq!(one.model_type, "onnx:9");
    assert_eq!(one.source, "ONNX model (rf_iris.onnx)");

    copy_into(
        dir,
        &root,
        "tf_savedmodel/tfjs_times_two_int/saved_model.pb",
        "saved_model.pb",
    );
    let err = infer(dir, None).expect_err("two frameworks, no hint");
    assert!(matches!(err, InferError::Ambiguous { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("onnx: rf_iris.onnx"), "{message}");
    assert!(message.contains("tensorflow: saved_model.pb"), "{message}");
    assert!(message.contains("model-type"), "{message}");

    let tf = infer(dir, Some("tensorflow:2.0"))
        .expect("hinted")
        .expect("tf");
    assert_eq!(tf.model_type, "tensorflow:2.0.0-beta1");
    let onnx = infer(dir, Some("ONNX:*")).expect("hinted").expect("onnx");
    assert_eq!(onnx.model_type, "onnx:9");
    assert!(
        infer(dir, Some("spark:2.4"))
            .expect("other framework")
            .is_none()
    );

    copy_into(
        dir,
        &root,
        "onnx/onnx_node_test_top_k/model.onnx",
        "top_k.onnx",
    );
    let err = infer(dir, Some("onnx:13")).expect_err("two onnx files");
    let message = err.to_string();
    assert!(
        message.contains("rf_iris.onnx") && message.contains("top_k.onnx"),
        "{message}"
    );
    assert!(message.contains("keep only one model file"), "{message}");

    std::fs::write(dir.join("saved_model.pbtxt"), PBTXT).expect("write");
    let tf = infer(dir, Some("tensorflow")).expect("hinted").expect("tf");
    assert_eq!(tf.source, "TensorFlow SavedModel (saved_model.pb)");
    assert!(
        tf.warnings
            .iter()
            .any(|w| w.contains("saved_model.pbtxt is ignored")),
        "{:?}",
        tf.warnings
    );
    std::fs::remove_file(dir.join("saved_model.pb")).expect("rm");
    let tf = infer(dir, Some("tensorflow")).expect("hinted").expect("tf");
    assert_eq!(tf.source, "TensorFlow SavedModel (saved_model.pbtxt)");
}

#[test]
fn an_unreadable_folder_is_an_error_naming_it() {
    let err = infer(Path::new("/nonexistent/model-folder"), None).expect_err("missing");
    assert!(
        err.to_string().contains("/nonexistent/model-folder"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile input

fn read_onnx(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    infer_onnx_reader(Cursor::new(bytes), path)
}

fn read_saved_model(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    infer_savedmodel_reader(Cursor::new(bytes), path)
}

fn read_saved_model_text(bytes: &[u8], path: &Path) -> Result<Inferred, InferError> {
    infer_savedmodel_text_reader(bytes, path)
}

/// Offsets where a top-level field ends: a file cut there is a shorter valid message.
fn top_level_boundaries(bytes: &[u8]) -> Vec<usize> {
    fn varint(bytes: &[u8], pos: &mut usize) -> u64 {
        let mut value = 0;
        for shift in (0..64).step_by(7) {
            let byte = bytes[*pos];
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        value
    }
    let mut boundaries = vec![0];
    let mut pos = 0;
    while pos < bytes.len() {
        let key = varint(bytes, &mut pos);
        match key & 7 {
            0 => {
                varint(bytes, &mut pos);
            }
            1 => pos += 8,
            2 => {
                let len = varint(bytes, &mut pos);
                pos += usize::try_from(len).expect("fixture length");
            }
            5 => pos += 4,
            other => panic!("fixture uses wire type {other}"),
        }
        boundaries.push(pos);
    }
    boundaries
}

fn binary_fixtures(root: &Path) -> Vec<(String, Reader, &'static str)> {
    let mut all: Vec<(String, Reader, &'static str)> = Vec::new();
    for file in onnx_models(root) {
        all.push((file, read_onnx, "model.onnx"));
    }
    for file in saved_models(root) {
        all.push((file, read_saved_model, "saved_model.pb"));
    }
    all
}

#[test]
fn truncated_fixtures_are_errors_not_panics() {
    let Some(root) = fixtures() else { return };
    for (file, read, name) in binary_fixtures(&root) {
        let bytes = std::fs::read(root.join(&file)).expect("fixture");
        let boundaries = top_level_boundaries(&bytes);
        let len = bytes.len();
        let mut cuts = vec![0, 1, 2, 3, 5, 8, 13, 100, len / 3, len / 2, len * 2 / 3];
        cuts.extend([len - 1, len - 2, len.saturating_sub(10)]);
        cuts.extend((1..20).map(|i| len * i / 20));
        cuts.retain(|&c| c < len);
        for cut in cuts {
            let what = format!("{file} cut at {cut} of {len}");
            let result = run(read, &bytes[..cut], name, &what);
            if !boundaries.contains(&cut) {
                let err = result.err().unwrap_or_else(|| panic!("{what}: accepted"));
                assert!(matches!(err, InferError::Corrupt { .. }), "{what}: {err}");
            }
        }
    }
}

#[test]
fn huge_declared_lengths_are_errors_not_allocations() {
    let huge = |field: u8, len: u64| {
        let mut bytes = vec![(field << 3) | 2];
        let mut len = len;
        loop {
            let byte = (len & 0x7f) as u8;
            len >>= 7;
            if len == 0 {
                bytes.push(byte);
                break;
            }
            bytes.push(byte | 0x80);
        }
        bytes.extend_from_slice(b"a few bytes");
        bytes
    };
    for len in [1 << 20, 1 << 40, u64::MAX >> 1, u64::MAX] {
        // ModelProto.graph, a skipped ModelProto field (doc_string), SavedModel.meta_graphs.
        for (bytes, read, name) in [
            (huge(7, len), read_onnx as Reader, "model.onnx"),
            (huge(6, len), read_onnx, "model.onnx"),
            (huge(2, len), read_saved_model, "saved_model.pb"),
        ] {
            let what = format!("{name} declaring {len} bytes");
            let err = run(read, &bytes, name, &what).expect_err(&what);
            assert!(matches!(err, InferError::Corrupt { .. }), "{what}: {err}");
        }
    }
    // A huge initializer inside an otherwise sane graph: graph { initializer { raw_data: 2^50 } }.
    let initializer = huge(9, 1 << 50);
    let mut graph = vec![(5 << 3) | 2, initializer.len() as u8];
    graph.extend(&initializer);
    let mut model = vec![(7 << 3) | 2, graph.len() as u8];
    model.extend(&graph);
    let err = run(read_onnx, &model, "model.onnx", "nested huge raw_data").expect_err("huge");
    assert!(err.to_string().contains("bytes"), "{err}");
}

#[test]
fn random_garbage_is_an_error_not_a_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for round in 0..600 {
        let len = rng.below(if round % 10 == 0 { 4096 } else { 64 });
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let what = format!("garbage round {round}");
        let _ = run(read_onnx, &bytes, "model.onnx", &what);
        let _ = run(read_saved_model, &bytes, "saved_model.pb", &what);
        let _ = run(read_saved_model_text, &bytes, "saved_model.pbtxt", &what);
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let Some(root) = fixtures() else { return };
    // Deterministic in CI; the variables let a longer local run explore other inputs.
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    let mut rng = Rng(env("INFER_MUTATION_SEED").unwrap_or(0x0123_4567_89ab_cdef) | 1);
    let scale = env("INFER_MUTATION_SCALE").unwrap_or(1).max(1);
    let mut inputs: Vec<(Vec<u8>, Reader, &'static str)> = binary_fixtures(&root)
        .into_iter()
        .map(|(file, read, name)| (std::fs::read(root.join(file)).expect("fixture"), read, name))
        .collect();
    for file in saved_models(&root) {
        let bytes = std::fs::read(root.join(file)).expect("fixture");
        let text = text_form(&bytes).into_bytes();
        inputs.push((text, read_saved_model_text, "saved_model.pbtxt"));
    }
    inputs.push((
        PBTXT.as_bytes().to_vec(),
        read_saved_model_text,
        "saved_model.pbtxt",
    ));
    let mut runs = 0;
    for (original, read, name) in &inputs {
        // Big files are costly to copy in a debug build; small ones get more rounds.
        let rounds = scale * if original.len() > 100_000 { 40 } else { 150 };
        for round in 0..rounds {
            let mut bytes = original.clone();
            for _ in 0..1 + rng.below(4) {
                mutate_with(&mut rng, &mut bytes, PROTOBUF);
            }
            let _ = run(
                *read,
                &bytes,
                name,
                &format!("{name} mutation round {round}"),
            );
            runs += 1;
        }
    }
    assert!(runs > 5000, "only {runs} runs");
}
