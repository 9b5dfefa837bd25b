//! Contract inference for Spark ML, Keras and MLflow: the shared Spark fixture compared with
//! `EXPECTED.json`; the project's own fixtures (`tests/fixtures/`, written by the real
//! frameworks through `scripts/fixtures/make.sh`) with their exact contracts; renamed,
//! edited, truncated and hostile versions of them.

use crate::common;

use common::{own_fixture as own, shared_fixtures};
use mlambda::contract::{DataType, Field, FieldKind, Signature};
use mlambda::infer::{
    InferError, Inferred, infer, infer_keras_h5_reader, infer_keras_reader, infer_mlmodel,
};
use serde_json::Value;
use std::io::{Cursor, Write};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

const RFORMULA: &str = "spark/apache_spark_rFormulaModel-2.4.4_metadata_only";

/// `name: DT_TYPE [d0, d1]`, `scalar` for `[]`, `any` for no shape.
fn show(fields: &[Field]) -> Vec<String> {
    fields
        .iter()
        .map(|f| {
            let dtype = match &f.kind {
                FieldKind::Tensor(dtype) => dtype.as_str_name().to_string(),
                FieldKind::Nested(_) => "nested".to_string(),
            };
            let shape = match &f.shape {
                None => "any".to_string(),
                Some(s) if s.dims.is_empty() => "scalar".to_string(),
                Some(s) => format!("{:?}", s.dims.iter().map(|d| d.size).collect::<Vec<i64>>()),
            };
            format!("{}: {dtype} {shape}", f.name)
        })
        .collect()
}

fn only_signature(inferred: &Inferred) -> &Signature {
    assert_eq!(inferred.signatures.len(), 1, "{inferred:?}");
    &inferred.signatures[0]
}

fn infer_dir(dir: &Path) -> Inferred {
    match infer(dir, None) {
        Ok(Some(inferred)) => inferred,
        Ok(None) => panic!("{}: nothing recognised", dir.display()),
        Err(e) => panic!("{}: {e}", dir.display()),
    }
}

fn copy_tree(from: &Path, to: &Path, rename: &dyn Fn(&str) -> String) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), rename);
        } else {
            std::fs::copy(&path, to.join(rename(&name))).expect("copy");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Spark

#[test]
fn spark_rformula_fixture_matches_expected() {
    let Some(root) = shared_fixtures() else {
        return;
    };
    let text = std::fs::read_to_string(root.join("EXPECTED.json")).expect("EXPECTED.json");
    let expected: Value = serde_json::from_str(&text).expect("JSON");
    let want = &expected[RFORMULA];
    let inferred = infer_dir(&root.join(RFORMULA));
    let signature = only_signature(&inferred);
    assert_eq!(signature.name, "default_spark");

    let version = want["sparkVersion"].as_str().expect("sparkVersion");
    let major_minor: Vec<&str> = version.split('.').take(2).collect();
    assert_eq!(
        inferred.model_type,
        format!("spark:{}", major_minor.join("."))
    );
    let file = want["metadata_file_name"].as_str().expect("file name");
    assert!(inferred.source.contains(file), "{}", inferred.source);

    let required = want["required_input_columns"]
        .as_object()
        .expect("required columns");
    let mut names: Vec<&str> = required.keys().map(String::as_str).collect();
    names.sort();
    let got: Vec<&str> = signature.inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(got, names, "inputs: {:?}", show(&signature.inputs));
    for field in &signature.inputs {
        let kinds = required[&field.name].as_str().expect("kind");
        let FieldKind::Tensor(dtype) = field.kind else {
            panic!("nested")
        };
        let fits = kinds.split('|').any(|kind| match kind {
            "string" => dtype == DataType::DtString,
            "numeric" => matches!(dtype, DataType::DtDouble | DataType::DtFloat),
            other => panic!("EXPECTED kind {other}"),
        });
        assert!(fits, "{}: {dtype:?} is not {kinds}", field.name);
    }

    let mut produced: Vec<&str> = want["produced_columns"]
        .as_array()
        .expect("produced")
        .iter()
        .map(|v| v.as_str().expect("name"))
        .collect();
    produced.sort();
    let got: Vec<&str> = signature.outputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(got, produced, "outputs: {:?}", show(&signature.outputs));

    // The exact contract, shapes included.
    assert_eq!(
        show(&signature.inputs),
        ["a: DT_STRING scalar", "b: DT_STRING scalar"]
    );
    assert_eq!(
        show(&signature.outputs),
        [
            "features: DT_DOUBLE [-1]",
            "interaction_a6ce8eb05acd: DT_DOUBLE [-1]",
            "stridx_4129a6e7b9ed: DT_DOUBLE scalar",
            "stridx_6fa9560595db: DT_DOUBLE scalar",
        ]
    );
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
}

#[test]
fn spark_4_metadata_file_names() {
    let Some(root) = shared_fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    let spark4 = |name: &str| {
        if name == "part-00000" {
            "part-00000-6f2c1b8e-0d5a-4c47-9f1e-2b7d3a9c8e41-c000.txt".to_string()
        } else {
            name.to_string()
        }
    };
    copy_tree(&root.join(RFORMULA), tmp.path(), &spark4);
    let renamed = infer_dir(tmp.path());
    let original = infer_dir(&root.join(RFORMULA));
    assert_eq!(renamed.signatures, original.signatures);
    assert_eq!(renamed.model_type, original.model_type);
    assert!(renamed.source.contains("-c000.txt"), "{}", renamed.source);
    // A model-type hint naming the framework picks it.
    let hinted = infer(tmp.path(), Some("spark:2.4")).expect("hinted");
    assert!(hinted.is_some());
}

#[test]
fn spark_4_pipeline_written_by_pyspark() {
    let dir = own("spark/text_pipeline");
    let inferred = infer_dir(&dir);
    assert_eq!(inferred.model_type, "spark:4.3");
    assert!(inferred.source.contains("-c000.txt"), "{}", inferred.source);
    let signature = only_signature(&inferred);
    assert_eq!(signature.name, "default_spark");
    // `label` is training-only: not an input, not an output.
    assert_eq!(
        show(&signature.inputs),
        [
            "amount: DT_DOUBLE any",
            "colour: DT_STRING scalar",
            "text: DT_STRING scalar",
        ]
    );
    assert_eq!(
        show(&signature.outputs),
        [
            "colour_index: DT_DOUBLE scalar",
            "features: DT_DOUBLE [-1]",
            "prediction: DT_DOUBLE scalar",
            "probability: DT_DOUBLE [-1]",
            "rawPrediction: DT_DOUBLE [-1]",
            "tf: DT_DOUBLE [16]",
            "words: DT_STRING [-1]",
        ]
    );
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
}

/// A copy of the pyspark fixture in a temp dir, for editing.
fn spark_copy() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(&own("spark/text_pipeline"), tmp.path(), &|n| n.to_string());
    tmp
}

fn stage_file(dir: &Path, prefix: &str) -> PathBuf {
    let stages = dir.join("stages");
    for entry in std::fs::read_dir(&stages).expect("stages") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(prefix)
        {
            for file in std::fs::read_dir(path.join("metadata")).expect("metadata") {
                let file = file.expect("file").path();
                if file
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("part-")
                {
                    return file;
                }
            }
        }
    }
    panic!("no stage {prefix}")
}

#[test]
fn spark_unknown_stage_is_string_with_a_warning() {
    let tmp = spark_copy();
    let file = stage_file(tmp.path(), "0_");
    std::fs::write(
        &file,
        r#"{"class":"com.example.MyTokenizer","sparkVersion":"4.3.0","paramMap":{"inputCol":"text","outputCol":"words"}}"#,
    )
    .expect("write");
    let inferred = infer_dir(tmp.path());
    let signature = only_signature(&inferred);
    let inputs = show(&signature.inputs);
    assert!(
        inputs.contains(&"text: DT_STRING any".to_string()),
        "{inputs:?}"
    );
    let outputs = show(&signature.outputs);
    assert!(
        outputs.contains(&"words: DT_STRING any".to_string()),
        "{outputs:?}"
    );
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("com.example.MyTokenizer") && w.contains("DT_STRING")),
        "{:?}",
        inferred.warnings
    );
}

#[test]
fn spark_broken_metadata_is_an_error_naming_the_file() {
    let cases: &[(&str, &[u8])] = &[
        ("garbage", b"\x00\xff not json"),
        (
            "truncated",
            br#"{"class":"org.apache.spark.ml.feature.Tokenizer","paramMap":{"inp"#,
        ),
        ("not an object", b"[1, 2, 3]"),
        ("no class", br#"{"paramMap":{}}"#),
        ("bad params", br#"{"class":"x.Y","paramMap":[1]}"#),
        ("empty", b""),
    ];
    for (what, bytes) in cases {
        let tmp = spark_copy();
        let file = stage_file(tmp.path(), "1_");
        std::fs::write(&file, bytes).expect("write");
        let err = infer(tmp.path(), None).expect_err(what);
        assert!(matches!(err, InferError::Corrupt { .. }), "{what}: {err}");
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        assert!(err.to_string().contains(&name), "{what}: {err}");
    }
    // Deep nesting: serde_json's recursion limit, an error.
    let tmp = spark_copy();
    let file = stage_file(tmp.path(), "1_");
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    std::fs::write(&file, deep).expect("write");
    let err = infer(tmp.path(), None).expect_err("deep");
    assert!(err.to_string().contains("recursion limit"), "{err}");
}

#[test]
fn spark_missing_stage_metadata_and_huge_files() {
    let tmp = spark_copy();
    let file = stage_file(tmp.path(), "2_");
    std::fs::remove_file(&file).expect("rm");
    let err = infer(tmp.path(), None).expect_err("missing stage metadata");
    assert!(err.to_string().contains("2_StringIndexer"), "{err}");

    let tmp = spark_copy();
    let file = stage_file(tmp.path(), "3_");
    // A sparse 65 MiB file: refused before it is read into memory.
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open");
    f.set_len(65 << 20).expect("set_len");
    let err = infer(tmp.path(), None).expect_err("huge");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
}

#[test]
fn spark_without_version_is_unknown_with_a_warning() {
    let tmp = spark_copy();
    let top = std::fs::read_dir(tmp.path().join("metadata"))
        .expect("metadata")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
        })
        .expect("top metadata");
    let text = std::fs::read_to_string(&top).expect("read");
    std::fs::write(&top, text.replace("\"sparkVersion\":\"4.3.0\",", "")).expect("write");
    let inferred = infer_dir(tmp.path());
    assert_eq!(inferred.model_type, "spark:unknown");
    assert!(
        inferred.warnings.iter().any(|w| w.contains("sparkVersion")),
        "{:?}",
        inferred.warnings
    );
}

// ---------------------------------------------------------------------------------------------
// Keras

#[test]
fn keras_functional_with_two_inputs_and_two_outputs() {
    let inferred = infer_dir(&own("keras/functional_two_inputs"));
    assert_eq!(inferred.model_type, "keras:3.15.1");
    assert_eq!(inferred.source, "Keras model (.keras zip) (model.keras)");
    let signature = only_signature(&inferred);
    assert_eq!(signature.name, "infer");
    assert_eq!(
        show(&signature.inputs),
        ["image: DT_FLOAT [-1, 8]", "tokens: DT_INT32 [-1, 5]"]
    );
    assert_eq!(
        show(&signature.outputs),
        ["classes: DT_FLOAT [-1, 3]", "score: DT_FLOAT [-1, 1]"]
    );
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
}

#[test]
fn keras_sequential_zip_and_h5_agree() {
    let zip = infer_dir(&own("keras/sequential"));
    let h5 = infer_dir(&own("keras/sequential_h5"));
    let latest = infer_dir(&own("keras/sequential_h5_latest"));
    for inferred in [&zip, &h5, &latest] {
        assert_eq!(inferred.model_type, "keras:3.15.1");
        let signature = only_signature(inferred);
        assert_eq!(show(&signature.inputs), ["features: DT_FLOAT [-1, 4]"]);
        assert_eq!(show(&signature.outputs), ["logits: DT_FLOAT [-1, 2]"]);
    }
    assert_eq!(h5.source, "Keras model (HDF5) (model.h5)");
}

#[test]
fn keras_h5_functional_with_unknown_dims() {
    let inferred = infer_dir(&own("keras/functional_h5"));
    assert_eq!(inferred.model_type, "keras:3.15.1");
    let signature = only_signature(&inferred);
    assert_eq!(show(&signature.inputs), ["series: DT_FLOAT [-1, -1, 3]"]);
    assert_eq!(show(&signature.outputs), ["probs: DT_FLOAT [-1, -1, 2]"]);
}

/// A `.keras` zip with the given config.json (and metadata.json).
fn keras_zip(config: &str, metadata: Option<&str>) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    let mut zip = zip::ZipWriter::new(&mut out);
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file("config.json", options).expect("start");
    zip.write_all(config.as_bytes()).expect("write");
    if let Some(metadata) = metadata {
        zip.start_file("metadata.json", options).expect("start");
        zip.write_all(metadata.as_bytes()).expect("write");
    }
    zip.finish().expect("finish");
    out.into_inner()
}

fn read_keras(bytes: &[u8]) -> Result<Inferred, InferError> {
    infer_keras_reader(Cursor::new(bytes.to_vec()), Path::new("/m/model.keras"))
}

#[test]
fn keras_2_configs_and_what_they_lack() {
    // Keras 2 (tf.keras) Sequential: batch_input_shape on the first layer, no InputLayer.
    let config = r#"{"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Dense", "config": {"name": "d1", "batch_input_shape": [null, 3],
         "dtype": "float64", "units": 2}}]}}"#;
    let inferred = read_keras(&keras_zip(config, Some(r#"{"keras_version": "2.15.0"}"#)))
        .expect("keras 2 sequential");
    assert_eq!(inferred.model_type, "keras:2.15.0");
    let signature = only_signature(&inferred);
    assert_eq!(show(&signature.inputs), ["d1_input: DT_DOUBLE [-1, 3]"]);
    // Dense: the output shape follows from the input's.
    assert_eq!(show(&signature.outputs), ["d1: DT_DOUBLE [-1, 2]"]);
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);

    // Keras 2 Functional: nested input_layers, mixed precision policy, no metadata.json.
    let config = r#"{"class_name": "Functional", "config": {"layers": [
        {"class_name": "InputLayer", "name": "a", "config": {"batch_input_shape": [null, 2],
         "dtype": "string", "name": "a"}},
        {"class_name": "InputLayer", "name": "b", "config": {"batch_input_shape": [4, null],
         "dtype": "int64", "name": "b"}},
        {"class_name": "Custom", "name": "out", "config": {"dtype": {"class_name":
         "DTypePolicy", "config": {"name": "mixed_float16"}}}}],
        "input_layers": [["a", 0, 0], ["b", 0, 0]], "output_layers": [["out", 0, 0]]}}"#;
    let inferred = read_keras(&keras_zip(config, None)).expect("functional");
    assert_eq!(inferred.model_type, "keras:unknown");
    let signature = only_signature(&inferred);
    assert_eq!(
        show(&signature.inputs),
        ["a: DT_STRING [-1, 2]", "b: DT_INT64 [4, -1]"]
    );
    // A layer whose shape rule is not known: any shape, with a warning naming it.
    assert_eq!(show(&signature.outputs), ["out: DT_HALF any"]);
    assert!(
        inferred.warnings.iter().any(|w| w.contains("'out'")),
        "{:?}",
        inferred.warnings
    );

    // A subclassed model has no usable config.
    let config = r#"{"class_name": "MyModel", "config": {}}"#;
    let err = read_keras(&keras_zip(config, None)).expect_err("subclassed");
    assert!(matches!(err, InferError::NoContract { .. }), "{err}");
    assert!(err.to_string().contains("subclassed"), "{err}");

    // An unbuilt Sequential model has no input shape.
    let config = r#"{"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 1}}]}}"#;
    let err = read_keras(&keras_zip(config, None)).expect_err("unbuilt");
    assert!(err.to_string().contains("before it was built"), "{err}");
}

#[test]
fn keras_broken_files_are_errors_naming_the_file() {
    let zip_cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a zip", b"PK\x03\x04 garbage".to_vec()),
        ("empty", Vec::new()),
        ("no config.json", {
            let mut out = Cursor::new(Vec::new());
            let mut zip = zip::ZipWriter::new(&mut out);
            zip.start_file("other.txt", zip::write::SimpleFileOptions::default())
                .expect("start");
            zip.finish().expect("finish");
            out.into_inner()
        }),
        ("garbage config", keras_zip("{\"class_name\": ", None)),
        ("deep config", keras_zip(&"[".repeat(10_000), None)),
        ("config not a model", keras_zip("[1, 2]", None)),
        (
            "missing layer",
            keras_zip(
                r#"{"class_name": "Functional", "config": {"layers": [],
                    "input_layers": [["x", 0, 0]], "output_layers": []}}"#,
                None,
            ),
        ),
    ];
    for (what, bytes) in &zip_cases {
        let err = read_keras(bytes).expect_err(what);
        assert!(err.to_string().contains("model.keras"), "{what}: {err}");
    }
    // Truncations of a real file: errors, never panics.
    let real = std::fs::read(own("keras/functional_two_inputs/model.keras")).expect("read");
    for cut in (0..real.len()).step_by(97) {
        let result = catch_unwind(AssertUnwindSafe(|| read_keras(&real[..cut])));
        assert!(result.expect("no panic").is_err(), "cut at {cut}");
    }
}

fn read_h5(bytes: &[u8]) -> Result<Inferred, InferError> {
    infer_keras_h5_reader(Cursor::new(bytes.to_vec()), Path::new("/m/model.h5"))
}

#[test]
fn keras_h5_truncated_and_mutated_never_panic() {
    for file in [
        "keras/sequential_h5/model.h5",
        "keras/functional_h5/model.h5",
    ] {
        let real = std::fs::read(own(file)).expect("read");
        read_h5(&real).expect("the real file");
        for cut in (0..real.len()).step_by(61) {
            let result = catch_unwind(AssertUnwindSafe(|| read_h5(&real[..cut])));
            let result = result.unwrap_or_else(|_| panic!("{file}: panic at cut {cut}"));
            if let Err(e) = result {
                assert!(e.to_string().contains("model.h5"), "{e}");
            }
        }
        // Deterministic byte flips over the first 4 KiB, where the metadata lives.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut bytes = real.clone();
            let at = (state as usize) % bytes.len().min(4096);
            bytes[at] = (state >> 32) as u8;
            let result = catch_unwind(AssertUnwindSafe(|| read_h5(&bytes)));
            assert!(result.is_ok(), "{file}: panic with byte {at} changed");
        }
    }
    let err = read_h5(b"not hdf5 at all").expect_err("garbage");
    assert!(err.to_string().contains("not an HDF5 file"), "{err}");
}

#[test]
fn weights_only_h5_has_no_contract() {
    // model.weights.h5 from inside a .keras zip: HDF5 without model_config.
    let real = std::fs::read(own("keras/sequential/model.keras")).expect("read");
    let mut archive = zip::ZipArchive::new(Cursor::new(real)).expect("zip");
    let mut weights = Vec::new();
    std::io::Read::read_to_end(
        &mut archive.by_name("model.weights.h5").expect("weights"),
        &mut weights,
    )
    .expect("read");
    let err = read_h5(&weights).expect_err("weights only");
    assert!(matches!(err, InferError::NoContract { .. }), "{err}");
    assert!(err.to_string().contains("model_config"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// MLflow

#[test]
fn mlflow_column_signature() {
    let inferred = infer_dir(&own("mlflow/sklearn_columns"));
    assert_eq!(inferred.model_type, "sklearn:1.9.1");
    assert_eq!(inferred.source, "MLflow MLmodel signature (MLmodel)");
    let signature = only_signature(&inferred);
    assert_eq!(signature.name, "infer");
    assert_eq!(
        show(&signature.inputs),
        [
            "age: DT_INT64 [-1]",
            "height: DT_DOUBLE [-1]",
            "score: DT_FLOAT [-1]",
            "visits: DT_INT32 [-1]",
        ]
    );
    assert_eq!(show(&signature.outputs), ["output: DT_INT64 [-1]"]);
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
}

#[test]
fn mlflow_tensor_signature() {
    let inferred = infer_dir(&own("mlflow/pyfunc_tensor"));
    assert_eq!(inferred.model_type, "mlflow:3.17.2");
    let signature = only_signature(&inferred);
    assert_eq!(show(&signature.inputs), ["input: DT_FLOAT [-1, 4]"]);
    assert_eq!(show(&signature.outputs), ["output: DT_DOUBLE [-1, 4]"]);
}

#[test]
fn mlflow_without_signature_says_how_to_add_one() {
    let err = infer(&own("mlflow/sklearn_no_signature"), None).expect_err("no signature");
    assert!(matches!(err, InferError::NoContract { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("MLmodel"), "{message}");
    assert!(message.contains("infer_signature"), "{message}");
    assert!(message.contains("serving.yaml"), "{message}");
}

fn mlmodel(signature: &str) -> Result<Inferred, InferError> {
    let text = format!("flavors:\n  pytorch:\n    pytorch_version: 2.1.0\n{signature}");
    infer_mlmodel(text.as_bytes(), Path::new("/m/MLmodel"))
}

#[test]
fn mlflow_types_names_and_variants() {
    let inferred = mlmodel(
        r#"signature:
  inputs: '[{"type": "boolean", "name": "flag"}, {"type": "binary"}, {"type": "datetime",
    "name": "when"}, {"type": "array", "items": {"type": "string"}, "name": "tags"},
    {"type": "string", "name": "text"}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 2]},
    "name": "a"}, {"type": "tensor", "tensor-spec": {"dtype": "str", "shape": [-1]}}]'
  params: '[{"name": "temperature", "type": "float", "default": 0.5, "shape": null}]'
"#,
    )
    .expect("mlmodel");
    assert_eq!(inferred.model_type, "pytorch:2.1.0");
    let signature = only_signature(&inferred);
    assert_eq!(
        show(&signature.inputs),
        [
            "_1: DT_STRING [-1]",
            "flag: DT_BOOL [-1]",
            "tags: DT_VARIANT any",
            "text: DT_STRING [-1]",
            "when: DT_STRING [-1]",
        ]
    );
    assert_eq!(
        show(&signature.outputs),
        ["a: DT_FLOAT [-1, 2]", "output_1: DT_STRING [-1]"]
    );
    let warnings = inferred.warnings.join("\n");
    assert!(
        warnings.contains("'tags'") && warnings.contains("DT_VARIANT"),
        "{warnings}"
    );
    assert!(warnings.contains("temperature"), "{warnings}");
}

#[test]
fn mlflow_broken_files_are_errors_naming_the_file() {
    let cases: &[(&str, &str)] = &[
        ("bad json", "signature:\n  inputs: '[{\"type\": '\n"),
        (
            "unknown type",
            "signature:\n  inputs: '[{\"type\": \"flaot\"}]'\n",
        ),
        ("not a list", "signature:\n  inputs: '{\"a\": 1}'\n"),
        (
            "bad dtype",
            "signature:\n  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"qq\"}}]'\n",
        ),
        (
            "bad shape",
            "signature:\n  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"int8\", \"shape\": [-7]}}]'\n",
        ),
        (
            "duplicate",
            "signature:\n  inputs: '[{\"type\": \"long\", \"name\": \"a\"}, {\"type\": \"long\", \"name\": \"a\"}]'\n",
        ),
        ("bad yaml", "signature: [\n"),
        (
            "alias bomb",
            "a: &a [x, x]\nb: &b [*a, *a]\nsignature: *b\n",
        ),
    ];
    for (what, text) in cases {
        let result = infer_mlmodel(text.as_bytes(), Path::new("/m/MLmodel"));
        let err = result.expect_err(what);
        assert!(matches!(err, InferError::Corrupt { .. }), "{what}: {err}");
        assert!(err.to_string().contains("/m/MLmodel"), "{what}: {err}");
    }
    let deep = format!("signature:\n  inputs: {}\n", "[".repeat(100_000));
    assert!(infer_mlmodel(deep.as_bytes(), Path::new("/m/MLmodel")).is_err());
    let deep_block: String = (0..2000)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    assert!(infer_mlmodel(deep_block.as_bytes(), Path::new("/m/MLmodel")).is_err());
    assert!(infer_mlmodel(b"\xff\xfe", Path::new("/m/MLmodel")).is_err());
}

#[test]
fn mlflow_huge_file_is_refused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(tmp.path().join("MLmodel")).expect("create");
    file.set_len(65 << 20).expect("set_len");
    let err = infer(tmp.path(), None).expect_err("huge");
    assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
}

#[test]
fn spark_rformula_without_its_pipeline_reads_the_formula() {
    let Some(root) = shared_fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tempdir");
    copy_tree(&root.join(RFORMULA), tmp.path(), &|n| n.to_string());
    std::fs::remove_dir_all(tmp.path().join("pipelineModel")).expect("rm");
    let inferred = infer_dir(tmp.path());
    let signature = only_signature(&inferred);
    // `id ~ a:b`: id is the label, a and b the inputs, of a type the metadata does not say.
    assert_eq!(
        show(&signature.inputs),
        ["a: DT_STRING any", "b: DT_STRING any"]
    );
    assert_eq!(show(&signature.outputs), ["features: DT_DOUBLE [-1]"]);
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("pipelineModel")),
        "{:?}",
        inferred.warnings
    );
}

/// The rule on a pipeline whose label is indexed by a stage of its own: that stage and its
/// input are training-only. (Metadata lines in the form Spark writes; sizes at the top level
/// as tree models keep them.)
#[test]
fn spark_label_indexer_is_training_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let write = |dir: &str, line: &str| {
        let dir = tmp.path().join(dir).join("metadata");
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("part-00000"), format!("{line}\n")).expect("write");
    };
    write(
        "",
        r#"{"class":"org.apache.spark.ml.PipelineModel","sparkVersion":"3.5.1","paramMap":{"stageUids":["s0","s1","s2","s3"]}}"#,
    );
    write(
        "stages/0_s0",
        r#"{"class":"org.apache.spark.ml.feature.StringIndexerModel","sparkVersion":"3.5.1","paramMap":{"inputCol":"species","outputCol":"label"}}"#,
    );
    write(
        "stages/1_s1",
        r#"{"class":"org.apache.spark.ml.feature.StringIndexerModel","sparkVersion":"3.5.1","paramMap":{"inputCols":["colour"],"outputCols":["colour_idx"]}}"#,
    );
    write(
        "stages/2_s2",
        r#"{"class":"org.apache.spark.ml.feature.VectorAssembler","sparkVersion":"3.5.1","paramMap":{"inputCols":["colour_idx","size"],"outputCol":"features"}}"#,
    );
    write(
        "stages/10_s3",
        r#"{"class":"org.apache.spark.ml.classification.DecisionTreeClassificationModel","sparkVersion":"3.5.1","numFeatures":2,"numClasses":3,"paramMap":{},"defaultParamMap":{"featuresCol":"features","labelCol":"label","predictionCol":"prediction","probabilityCol":"probability","rawPredictionCol":"rawPrediction","leafCol":""}}"#,
    );
    let inferred = infer_dir(tmp.path());
    assert_eq!(inferred.model_type, "spark:3.5");
    let signature = only_signature(&inferred);
    assert_eq!(
        show(&signature.inputs),
        ["colour: DT_STRING scalar", "size: DT_DOUBLE any"]
    );
    assert_eq!(
        show(&signature.outputs),
        [
            "colour_idx: DT_DOUBLE scalar",
            "features: DT_DOUBLE [-1]",
            "prediction: DT_DOUBLE scalar",
            "probability: DT_DOUBLE [3]",
            "rawPrediction: DT_DOUBLE [3]",
        ]
    );
}

/// The fixtures of `scripts/fixtures/make_keras_shapes.py`, with Keras' own shapes: written by
/// Keras 3, and by tf.keras 2 (`tf_keras`, Keras 2 configs whose nodes record no shapes), each
/// with the Keras version that wrote it.
const SHAPE_FIXTURES: &[(&str, &str)] = &[
    ("tests/fixtures/keras_shapes", "keras:3.15.1"),
    ("tests/fixtures/keras2_shapes", "keras:2.20.1"),
];

/// Outputs computed through a layer with no shape rule (a Lambda): Keras' own shape (Keras 3
/// records the shapes a layer is called with) or none, never another.
const MAY_BE_UNKNOWN: &[(&str, &str)] = &[("lambda_layer", "head")];

/// The `(model, {inputs, outputs})` entries of a fixture folder's expected.json.
fn keras_shapes_expected(dir: &Path) -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    serde_json::from_str(&text).expect("json")
}

/// `{name: [sizes]}` of expected.json, as `name: [sizes]` lines the way `show` writes shapes.
fn expected_shapes(value: &Value) -> Vec<String> {
    let mut out: Vec<String> = value
        .as_object()
        .expect("map")
        .iter()
        .map(|(name, shape)| {
            let dims: Vec<String> = shape
                .as_array()
                .expect("list")
                .iter()
                .map(|d| d.as_i64().expect("int").to_string())
                .collect();
            format!("{name}: [{}]", dims.join(", "))
        })
        .collect();
    out.sort();
    out
}

/// Fields as `name: shape`, without the dtype.
fn shapes_of(fields: &[Field]) -> Vec<String> {
    show(fields)
        .iter()
        .map(|line| {
            let (name, rest) = line.split_once(": ").expect("name");
            let shape = rest.split_once(' ').expect("dtype").1;
            format!("{name}: {shape}")
        })
        .collect()
}

/// The output's shape as `show` writes it, without name and dtype.
fn only_output_shape(inferred: &Inferred) -> String {
    let outputs = shapes_of(&only_signature(inferred).outputs);
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    outputs[0].split_once(": ").expect("shape").1.to_string()
}

/// Removes every shape Keras recorded (`build_config`, the shapes of Keras 3's inbound
/// tensors), so that every shape must be propagated through the layers.
fn strip_recorded_shapes(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.remove("build_config");
            if map.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__")
                && let Some(Value::Object(config)) = map.get_mut("config")
            {
                config.remove("shape");
            }
            map.values_mut().for_each(strip_recorded_shapes);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_recorded_shapes),
        _ => {}
    }
}

#[test]
fn keras_output_shapes_match_what_keras_reports() {
    let mut checked = 0;
    for (dir, model_type) in SHAPE_FIXTURES {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        for (name, expected) in keras_shapes_expected(&root) {
            let keras = std::fs::read(root.join(format!("{name}.keras"))).expect("read");
            let h5 = std::fs::read(root.join(format!("{name}.h5"))).expect("read");
            let from_zip = read_keras(&keras).expect("keras");
            let from_h5 = read_h5(&h5).expect("h5");
            // The same model with nothing recorded: the shapes come from the rules alone.
            let mut archive = zip::ZipArchive::new(Cursor::new(keras)).expect("zip");
            let mut config: Value = {
                let file = archive.by_name("config.json").expect("config.json");
                serde_json::from_reader(file).expect("json")
            };
            strip_recorded_shapes(&mut config);
            let metadata = format!(r#"{{"keras_version": "{}"}}"#, &model_type[6..]);
            let stripped =
                read_keras(&keras_zip(&config.to_string(), Some(&metadata))).expect("stripped");
            let inputs = expected_shapes(&expected["inputs"]);
            let outputs = expected_shapes(&expected["outputs"]);
            for (what, inferred) in [
                ("keras", &from_zip),
                ("h5", &from_h5),
                ("stripped", &stripped),
            ] {
                let context = format!("{dir}/{name} ({what})");
                assert_eq!(&inferred.model_type, model_type, "{context}");
                let signature = only_signature(inferred);
                assert_eq!(shapes_of(&signature.inputs), inputs, "{context}");
                let got = shapes_of(&signature.outputs);
                assert_eq!(got.len(), outputs.len(), "{context}: {got:?}");
                for (got, expected) in got.iter().zip(&outputs) {
                    let output = expected.split_once(": ").expect("name").0;
                    if MAY_BE_UNKNOWN.contains(&(name.as_str(), output)) {
                        // Never a wrong shape: Keras' own, or none.
                        assert!(
                            got == expected || *got == format!("{output}: any"),
                            "{context}: {got}"
                        );
                    } else {
                        assert_eq!(got, expected, "{context}");
                    }
                }
                if name == "lambda_layer" {
                    assert!(
                        inferred
                            .warnings
                            .iter()
                            .any(|w| w.contains("\"double\"") && w.contains("Lambda")),
                        "{context}: {:?}",
                        inferred.warnings
                    );
                } else {
                    assert!(
                        inferred.warnings.is_empty(),
                        "{context}: {:?}",
                        inferred.warnings
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 2 * 15 * 3, "only {checked} fixtures checked");
}

#[test]
fn keras_unknown_layer_gives_no_shape_and_a_warning_naming_it() {
    let config = r#"{"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": [null, 3]}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}},
        {"class_name": "Lambda", "config": {"name": "odd"}}]}}"#;
    let inferred = read_keras(&keras_zip(config, None)).expect("infer");
    assert_eq!(only_output_shape(&inferred), "any");
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("odd") && w.contains("Lambda")),
        "{:?}",
        inferred.warnings
    );
}

/// A Keras 2 functional config: `layers` as given, input `x` of `[null, 3]`, outputs as given.
fn keras_2_functional(layers: Value, outputs: Value) -> String {
    let mut all = vec![serde_json::json!({"class_name": "InputLayer", "name": "x",
        "config": {"name": "x", "batch_input_shape": [null, 3]}, "inbound_nodes": []})];
    all.extend(layers.as_array().expect("layers").iter().cloned());
    serde_json::json!({"class_name": "Functional", "config": {"layers": all,
        "input_layers": [["x", 0, 0]], "output_layers": outputs}})
    .to_string()
}

fn dense(name: &str, units: i64, inbound: Value) -> Value {
    serde_json::json!({"class_name": "Dense", "name": name,
        "config": {"name": name, "units": units}, "inbound_nodes": inbound})
}

#[test]
fn keras_graphs_that_make_no_sense_give_no_shape_never_a_panic() {
    let cases = [
        // A cycle: neither call is ever ready.
        (
            "cycle",
            serde_json::json!([
                dense("a", 2, serde_json::json!([[["b", 0, 0, {}]]])),
                dense("b", 2, serde_json::json!([[["a", 0, 0, {}]]]))
            ]),
            serde_json::json!([["b", 0, 0]]),
        ),
        // References to a layer, node or tensor that is not there.
        (
            "missing",
            serde_json::json!([
                dense("a", 2, serde_json::json!([[["nope", 0, 0, {}]]])),
                dense("b", 2, serde_json::json!([[["x", 7, 0, {}]]])),
                dense("c", 2, serde_json::json!([[["x", 0, 99, {}]]])),
                dense("d", 2, serde_json::json!([[["x", -1, 0.5, {}]]]))
            ]),
            serde_json::json!([
                ["a", 0, 0],
                ["b", 0, 0],
                ["c", 0, 0],
                ["d", 0, 0],
                ["a", 5, 0]
            ]),
        ),
        // Nodes of the wrong form, Keras 3 tensors without history, wrappers without a layer.
        (
            "junk",
            serde_json::json!([
                dense("a", 2, serde_json::json!([{"args": 5}, 7, "s", null])),
                dense("b", 2, serde_json::json!([{"args": [{"class_name": "__keras_tensor__",
                    "config": {"keras_history": "x", "shape": "big"}}]}])),
                {"class_name": "TimeDistributed", "name": "c", "config": {"layer": 5},
                 "inbound_nodes": [[["x", 0, 0, {}]]]},
                {"class_name": "Bidirectional", "name": "d", "config": {"merge_mode": 7,
                 "layer": {"class_name": "LSTM", "config": {"units": -2}}},
                 "inbound_nodes": [[["x", 0, 0, {}]]]},
                {"class_name": "Functional", "name": "e", "config": {"layers": "no"},
                 "inbound_nodes": [[["x", 0, 0, {}]]]},
                {"class_name": "Sequential", "name": "f", "config": {"layers": []},
                 "inbound_nodes": [[["x", 0, 0, {}]]]}]),
            serde_json::json!([
                ["a", 0, 0],
                ["b", 0, 0],
                ["c", 0, 0],
                ["d", 0, 0],
                ["e", 1, 0],
                ["f", 1, 0]
            ]),
        ),
    ];
    for (what, layers, outputs) in cases {
        let config = keras_2_functional(layers, outputs);
        let result = catch_unwind(AssertUnwindSafe(|| read_keras(&keras_zip(&config, None))));
        let inferred = result.unwrap_or_else(|_| panic!("{what}: panic"));
        let inferred = inferred.unwrap_or_else(|e| panic!("{what}: {e}"));
        for line in shapes_of(&only_signature(&inferred).outputs) {
            assert!(line.ends_with(": any"), "{what}: {line}");
        }
    }
}

#[test]
fn keras_nesting_too_deep_or_too_costly_gives_up_with_a_warning() {
    // A Dense in 40 TimeDistributed wrappers: past the depth limit.
    let mut layer = serde_json::json!({"class_name": "Dense", "config": {"name": "d", "units": 2}});
    for i in 0..40 {
        layer = serde_json::json!({"class_name": "TimeDistributed",
            "config": {"name": format!("td{i}"), "layer": layer}});
    }
    let shape = (0..42).map(|_| Value::Null).collect::<Vec<_>>();
    let config = serde_json::json!({"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "x", "batch_shape": shape}}, layer]}});
    let inferred = read_keras(&keras_zip(&config.to_string(), None)).expect("deep");
    assert_eq!(only_output_shape(&inferred), "any");
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("nested too deep")),
        "{:?}",
        inferred.warnings
    );

    // Models nested 12 deep, each called 40 times by the one around it: 40^12 calls if each
    // were followed, so the work is capped.
    let mut model = serde_json::json!({"class_name": "Sequential", "config": {"layers": [
        {"class_name": "InputLayer", "config": {"name": "i", "batch_input_shape": [null, 3]}},
        {"class_name": "Dense", "config": {"name": "d", "units": 2}}]}});
    for level in 0..12 {
        let calls: Vec<Value> = (0..40)
            .map(|_| serde_json::json!([["i", 0, 0, {}]]))
            .collect();
        model = serde_json::json!({"class_name": "Functional", "config": {
            "name": format!("m{level}"),
            "layers": [
                {"class_name": "InputLayer", "name": "i",
                 "config": {"name": "i", "batch_input_shape": [null, 3]}, "inbound_nodes": []},
                {"class_name": model["class_name"], "name": "inner", "config": model["config"],
                 "inbound_nodes": calls}],
            "input_layers": [["i", 0, 0]], "output_layers": [["inner", 40, 0]]}});
    }
    let started = std::time::Instant::now();
    let inferred = read_keras(&keras_zip(&model.to_string(), None)).expect("costly");
    assert!(started.elapsed().as_secs() < 60, "{:?}", started.elapsed());
    assert_eq!(only_output_shape(&inferred), "any");
    assert!(
        inferred
            .warnings
            .iter()
            .any(|w| w.contains("steps to follow")),
        "{:?}",
        inferred.warnings
    );
}

#[test]
fn keras_2_2_nested_sequential_calls_are_numbered_from_1() {
    // Keras 2.2 saved a nested Sequential without its InputLayer, and numbered its calls from
    // 1 (node 0 links its own input to its output and is not saved).
    let inner = serde_json::json!({"class_name": "Sequential", "name": "inner",
        "config": {"name": "inner", "layers": [
            {"class_name": "Dense", "config": {"name": "d", "units": 4,
             "batch_input_shape": [null, 3]}}]},
        "inbound_nodes": [[["x", 0, 0, {}]]]});
    let config = keras_2_functional(
        serde_json::json!([
            inner,
            dense("head", 2, serde_json::json!([[["inner", 1, 0, {}]]]))
        ]),
        serde_json::json!([["head", 0, 0], ["inner", 1, 0]]),
    );
    let inferred = read_keras(&keras_zip(&config, None)).expect("infer");
    assert_eq!(
        shapes_of(&only_signature(&inferred).outputs),
        ["head: [-1, 2]", "inner: [-1, 4]"]
    );
}

/// Replaces the `target`-th value of `value` (counted depth first) with `with`.
fn replace_nth(value: &mut Value, target: &mut usize, with: &Value) -> bool {
    if *target == 0 {
        *value = with.clone();
        return true;
    }
    *target -= 1;
    match value {
        Value::Object(map) => map.values_mut().any(|v| replace_nth(v, target, with)),
        Value::Array(items) => items.iter_mut().any(|v| replace_nth(v, target, with)),
        _ => false,
    }
}

fn count_values(value: &Value) -> usize {
    1 + match value {
        Value::Object(map) => map.values().map(count_values).sum(),
        Value::Array(items) => items.iter().map(count_values).sum(),
        _ => 0,
    }
}

#[test]
fn keras_configs_with_mutated_values_never_panic() {
    let replacements = [
        Value::Null,
        serde_json::json!(-1),
        serde_json::json!(0),
        serde_json::json!(i64::MAX),
        serde_json::json!(1e300),
        serde_json::json!("x"),
        serde_json::json!([]),
        serde_json::json!({}),
        serde_json::json!([["x", 5, 9, {}]]),
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for dir in [
        "tests/fixtures/keras_shapes",
        "tests/fixtures/keras2_shapes",
    ] {
        for name in [
            "nested",
            "shared",
            "states",
            "nested_sequential",
            "time_distributed",
        ] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join(dir)
                .join(format!("{name}.keras"));
            let bytes = std::fs::read(path).expect("read");
            let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).expect("zip");
            let config: Value =
                serde_json::from_reader(archive.by_name("config.json").expect("config.json"))
                    .expect("json");
            let total = count_values(&config);
            for _ in 0..60 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let mut mutated = config.clone();
                let mut target = (state as usize) % total;
                let with = &replacements[((state >> 40) as usize) % replacements.len()];
                replace_nth(&mut mutated, &mut target, with);
                let zip = keras_zip(&mutated.to_string(), None);
                let result = catch_unwind(AssertUnwindSafe(|| read_keras(&zip)));
                assert!(result.is_ok(), "{dir}/{name}: panic with {mutated}");
            }
        }
    }
}
