//! serving.yaml and the older contract files, read as a user writes them.

use mlambda::contract::{
    Contract, DTYPE_NAMES, DataType, Field, FieldKind, PROFILE_NAMES, Profile, Shape, Signature,
    to_protobin, to_prototxt,
};
use mlambda::model::{
    ServingError, ServingFile, Spanned, parse_serving_str, parse_serving_yaml, read_contract_file,
};
use std::path::Path;

const FILE: &str = "examples/m/serving.yaml";

fn parse(text: &str) -> ServingFile {
    match parse_serving_str(Path::new(FILE), text) {
        Ok(file) => file,
        Err(error) => panic!("expected {text:?} to parse, got:\n{error}"),
    }
}

/// The whole error as a user sees it.
fn error(text: &str) -> String {
    match parse_serving_str(Path::new(FILE), text) {
        Ok(file) => panic!("expected {text:?} to be rejected, got {file:?}"),
        Err(error) => error.to_string(),
    }
}

/// Asserts the first line of the error is exactly `file:line:col: key_path: message`.
fn assert_first_error(text: &str, line: usize, col: usize, key_path: &str, message: &str) {
    let all = error(text);
    let first = all.lines().next().unwrap_or_default();
    let expected = if key_path.is_empty() {
        format!("{FILE}:{line}:{col}: {message}")
    } else {
        format!("{FILE}:{line}:{col}: {key_path}: {message}")
    };
    assert_eq!(first, expected, "whole error:\n{all}");
}

fn with_field(spec: &str) -> String {
    format!(
        "kind: Model\nname: m\ncontract:\n  sig:\n    inputs:\n      x:\n{}\n",
        spec.lines()
            .map(|l| format!("        {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    )
}

fn only_field(file: &ServingFile) -> &Field {
    let contract = file.contract.as_ref().expect("a contract");
    &contract[0].inputs[0]
}

fn text_field(name: &str) -> Field {
    let mut field = Field::tensor(name, DataType::DtString, Some(Shape::from_sizes(&[-1, 1])));
    field.profile = Profile::Text;
    field
}

// The tokenizer example of Hydrosphere's 1.x docs ("Contracts").
const SEED_TOKENIZER: &str = r#"kind: Model
name: "example_tokenizer_model"
model-type: "python:3.6"
payload:
  - "src/"
  - "requirements.txt/"
  - "nltk_data"
  
contract:
  tokenize:                 # arbitrary: name of the signature
    inputs:                 
      input_text:           # arbitrary: name of the field
        shape: [-1, 1]
        type: string
        profile: text
    outputs:                
      output_text:          # arbitrary: name of the field
        shape: [-1, 1]
        type: string
        profile: text
"#;

#[test]
fn seed_tokenizer() {
    let file = parse(SEED_TOKENIZER);
    assert_eq!(
        file.name,
        Some(Spanned {
            value: "example_tokenizer_model".to_string(),
            line: 2,
            col: 7
        })
    );
    assert_eq!(
        file.model_type.as_ref().map(|t| t.value.as_str()),
        Some("python:3.6")
    );
    let payload: Vec<_> = file
        .payload
        .as_ref()
        .expect("payload")
        .iter()
        .map(|p| (p.value.as_str(), p.line, p.col))
        .collect();
    assert_eq!(
        payload,
        [
            ("src/", 5, 5),
            ("requirements.txt/", 6, 5),
            ("nltk_data", 7, 5)
        ]
    );
    assert_eq!(
        file.contract,
        Some(vec![Signature {
            name: "tokenize".into(),
            inputs: vec![text_field("input_text")],
            outputs: vec![text_field("output_text")],
        }])
    );
    assert!(file.warnings.is_empty(), "{:?}", file.warnings);
    assert_eq!(file.path, Path::new(FILE));
}

#[test]
fn seed_tokenizer_from_disk_and_the_flow_form() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("serving.yaml");
    std::fs::write(&path, SEED_TOKENIZER).unwrap();
    let from_disk = parse_serving_yaml(&path).unwrap();
    assert_eq!(from_disk.path, path);
    // SPEC §1 writes outputs in flow style; the result is the same.
    let flow = parse(
        "kind: Model\nname: example_tokenizer_model\ncontract:\n  tokenize:\n    inputs:\n      \
         input_text: {shape: [-1, 1], type: string, profile: text}\n    outputs:\n      \
         output_text: { shape: [-1, 1], type: string, profile: text }\n",
    );
    assert_eq!(flow.contract, from_disk.contract);
}

#[test]
fn signatures_and_fields_keep_file_order() {
    let file = parse(
        "contract:\n  zeta:\n    inputs: {b: {type: int8}, a: {type: int8}}\n  alpha:\n    outputs: {y: {type: bool}}\n",
    );
    let contract = file.contract.unwrap();
    let names: Vec<_> = contract.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha"]);
    let fields: Vec<_> = contract[0].inputs.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(fields, ["b", "a"]);
    assert!(contract[1].inputs.is_empty());
}

#[test]
fn every_dtype_alias() {
    for (name, dtype) in DTYPE_NAMES {
        for spelling in [
            name.to_string(),
            name.to_uppercase(),
            format!("DT_{}", name.to_uppercase()),
        ] {
            let file = parse(&with_field(&format!("type: {spelling}")));
            assert_eq!(
                only_field(&file).kind,
                FieldKind::Tensor(*dtype),
                "{spelling}"
            );
        }
    }
    // The ones SPEC §1 spells out, to catch a table that lost an alias.
    for (alias, dtype) in [
        ("half", DataType::DtHalf),
        ("float16", DataType::DtHalf),
        ("float", DataType::DtFloat),
        ("float32", DataType::DtFloat),
        ("double", DataType::DtDouble),
        ("float64", DataType::DtDouble),
        ("bfloat16", DataType::DtBfloat16),
        ("map", DataType::DtMap),
    ] {
        let file = parse(&with_field(&format!("type: {alias}")));
        assert_eq!(only_field(&file).kind, FieldKind::Tensor(dtype), "{alias}");
    }
}

#[test]
fn every_profile_alias() {
    for (name, profile) in PROFILE_NAMES {
        for spelling in [name.to_string(), name.to_uppercase()] {
            let file = parse(&with_field(&format!("type: float\nprofile: {spelling}")));
            assert_eq!(only_field(&file).profile, *profile, "{spelling}");
        }
    }
    let file = parse(&with_field("type: float\nprofile: numeric"));
    assert_eq!(only_field(&file).profile, Profile::Numerical);
    let file = parse(&with_field("type: float"));
    assert_eq!(only_field(&file).profile, Profile::None);
}

#[test]
fn shapes_scalar_empty_omitted_and_sized() {
    for (spec, shape) in [
        ("shape: scalar", Some(Shape::scalar())),
        ("shape: \"scalar\"", Some(Shape::scalar())),
        ("shape: []", Some(Shape::scalar())),
        (
            "shape: [-1, 28, 28, 1]",
            Some(Shape::from_sizes(&[-1, 28, 28, 1])),
        ),
        ("shape:\n  - 3\n  - -1", Some(Shape::from_sizes(&[3, -1]))),
        ("profile: none", None),
    ] {
        let file = parse(&with_field(&format!("{spec}\ntype: double")));
        assert_eq!(only_field(&file).shape, shape, "{spec}");
    }
}

#[test]
fn nested_fields() {
    let file = parse(
        "contract:\n  predict:\n    inputs:\n      request:\n        shape: [-1]\n        fields:\n          \
         id: {type: int64, shape: scalar}\n          tags:\n            fields:\n              \
         label: {type: string, profile: categorical}\n",
    );
    let request = &file.contract.unwrap()[0].inputs[0];
    let mut label = Field::tensor("label", DataType::DtString, None);
    label.profile = Profile::Categorical;
    assert_eq!(
        *request,
        Field {
            name: "request".into(),
            shape: Some(Shape::from_sizes(&[-1])),
            kind: FieldKind::Nested(vec![
                Field::tensor("id", DataType::DtInt64, Some(Shape::scalar())),
                Field {
                    name: "tags".into(),
                    shape: None,
                    kind: FieldKind::Nested(vec![label]),
                    profile: Profile::None,
                },
            ]),
            profile: Profile::None,
        }
    );
}

#[test]
fn field_specs_can_be_shared_with_anchors() {
    let file = parse(
        "contract:\n  s:\n    inputs:\n      a: &text {shape: [-1, 1], type: string, profile: text}\n    \
         outputs:\n      b: *text\n      c:\n        <<: *text\n        shape: scalar\n",
    );
    let signature = &file.contract.unwrap()[0];
    assert_eq!(signature.inputs[0], text_field("a"));
    assert_eq!(signature.outputs[0], text_field("b"));
    let mut c = text_field("c");
    c.shape = Some(Shape::scalar());
    assert_eq!(signature.outputs[1], c);
}

#[test]
fn hydrosphere_2_form() {
    let file = parse(
        r#"kind: "Model"
name: "sample_model"
training-data: "s3://bucket/train.csv"
runtime: "hydrosphere/serving-runtime-python-3.6:2.4.2"
install-command: "sudo apt install jq && pip install -r requirements.txt"
payload:
  - "./requirements.txt"
contract:
  name: "infer"
  inputs:
    input_field_1:
      shape: [-1, 1]
      type: string
      profile: text
  outputs:
    output_field_1:
      shape: scalar
      type: int32
      profile: numerical
metadata:
  experiment: "demo"
  epochs: 10
  rate: 1.10
  final: true
  note:
"#,
    );
    assert_eq!(
        file.model_type.as_ref().map(|t| (t.value.as_str(), t.line)),
        Some(("hydrosphere/serving-runtime-python-3.6:2.4.2", 4))
    );
    let contract = file.contract.unwrap();
    assert_eq!(contract.len(), 1);
    assert_eq!(contract[0].name, "infer");
    assert_eq!(contract[0].inputs[0], text_field("input_field_1"));
    let mut output = Field::tensor("output_field_1", DataType::DtInt32, Some(Shape::scalar()));
    output.profile = Profile::Numerical;
    assert_eq!(contract[0].outputs, [output]);
    let metadata: Vec<_> = file
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        metadata,
        [
            ("epochs", "10"),
            ("experiment", "demo"),
            ("final", "true"),
            ("note", ""),
            ("rate", "1.10")
        ]
    );
    assert_eq!(file.warnings.len(), 2, "{:?}", file.warnings);
    assert_eq!(
        file.warnings[0],
        format!(
            "{FILE}:3:1: training-data has no effect: mlambda builds and stores images; training data belongs to the monitoring service, not the image"
        )
    );
    assert_eq!(
        file.warnings[1],
        format!(
            "{FILE}:5:1: install-command has no effect: mlambda builds images without running a container; put installed packages in the payload or the base image"
        )
    );
}

#[test]
fn hydrosphere_2_form_without_name_is_the_predict_signature() {
    let file = parse("contract:\n  inputs:\n    x: {type: float}\n");
    let contract = file.contract.unwrap();
    assert_eq!(contract[0].name, "predict");
    assert_eq!(contract[0].inputs[0].name, "x");
}

#[test]
fn model_type_wins_over_runtime_with_a_warning() {
    let file = parse("model-type: tensorflow:1.8.0\nruntime: some/image:1\n");
    assert_eq!(file.model_type.unwrap().value, "tensorflow:1.8.0");
    assert_eq!(
        file.warnings,
        [format!(
            "{FILE}:2:1: runtime is ignored: model-type (line 1) says which runtime to use"
        )]
    );
}

#[test]
fn minimal_files() {
    let file = parse("kind: Model\n");
    assert!(file.name.is_none() && file.model_type.is_none());
    assert!(file.payload.is_none() && file.contract.is_none());
    assert!(file.metadata.is_empty() && file.description.is_none());
    let file = parse("name: m\ndescription: |\n  Two\n  lines\n");
    assert_eq!(file.description.as_deref(), Some("Two\nlines\n"));
    // A BOM is not content and does not shift columns.
    let file = parse("\u{feff}name: m\n");
    assert_eq!(file.name.map(|n| (n.line, n.col)), Some((1, 7)));
}

#[test]
fn payload_without_entries_falls_back_with_a_warning() {
    let file = parse("payload:\n#  - src/\n");
    assert!(file.payload.is_none());
    assert!(file.warnings[0].starts_with(&format!("{FILE}:1:1: payload has no entries")));
    let file = parse("payload: []\n");
    assert_eq!(file.payload, Some(vec![]));
}

// ---- errors: each names the file, line:col, the key path and what was expected ----

#[test]
fn error_malformed_yaml() {
    let all = error("kind: Model\ncontract:\n  tokenize:\n    inputs: [a, b\n    outputs: {}\n");
    let first = all.lines().next().unwrap();
    assert!(first.starts_with(&format!("{FILE}:")), "{all}");
    assert!(first.contains(": not valid YAML: "), "{all}");
    // yaml-rust2 points past the unclosed list; what matters is a real position.
    let position: Vec<usize> = first[FILE.len() + 1..]
        .split(':')
        .take(2)
        .map(|n| n.parse().unwrap())
        .collect();
    assert!(position[0] >= 4 && position[1] >= 1, "{all}");

    assert_first_error(
        "kind: Model\nname: a: b\n",
        2,
        8,
        "",
        "not valid YAML: mapping values are not allowed in this context",
    );
}

#[test]
fn error_empty_file() {
    let message = "the file is empty; a serving.yaml is a mapping such as `kind: Model`, `name: my-model`, `model-type: python:3.6`";
    assert_first_error("", 1, 1, "", message);
    assert_first_error("# nothing\n", 1, 1, "", message);
}

#[test]
fn error_top_level_not_a_mapping() {
    let all = error("- kind: Model\n");
    assert!(
        all.starts_with(&format!(
            "{FILE}:1:1: expected a mapping of keys (kind, name, "
        )),
        "{all}"
    );
    assert!(all.ends_with("at the top level, found a list"), "{all}");
}

#[test]
fn error_unknown_type_with_suggestion() {
    let text = SEED_TOKENIZER.replace(
        "        type: string\n        profile: text\n    outputs",
        "        type: flaot\n        profile: text\n    outputs",
    );
    assert_first_error(
        &text,
        14,
        15,
        "contract.tokenize.inputs.input_text.type",
        "unknown type 'flaot'; did you mean 'float'?",
    );
    assert_first_error(
        &with_field("type: DT_STIRNG"),
        7,
        15,
        "contract.sig.inputs.x.type",
        "unknown type 'DT_STIRNG'; did you mean 'string'?",
    );
    assert_first_error(
        &with_field("type: int"),
        7,
        15,
        "contract.sig.inputs.x.type",
        "unknown type 'int'; did you mean one of 'int8', 'int16', 'int32', 'int64'?",
    );
    let all = error(&with_field("type: tensor"));
    assert!(
        all.contains("unknown type 'tensor'; valid types are bool, string, half, float16, float"),
        "{all}"
    );
    assert!(all.ends_with("variant or map"), "{all}");
}

#[test]
fn error_shape_zero() {
    assert_first_error(
        &with_field("shape: [-1, 0]\ntype: float"),
        7,
        21,
        "contract.sig.inputs.x.shape[1]",
        "dimension 0 at shape[1]: sizes are -1 (unknown) or positive",
    );
    assert_first_error(
        &with_field("shape: [0]\ntype: float"),
        7,
        17,
        "contract.sig.inputs.x.shape[0]",
        "dimension 0 at shape[0]: sizes are -1 (unknown) or positive",
    );
}

#[test]
fn error_shape_minus_two() {
    assert_first_error(
        &with_field("shape: [-2]\ntype: float"),
        7,
        17,
        "contract.sig.inputs.x.shape[0]",
        "dimension -2 at shape[0]: sizes are -1 (unknown) or positive",
    );
}

#[test]
fn error_shape_not_integers() {
    assert_first_error(
        &with_field("shape: [\"a\"]\ntype: float"),
        7,
        17,
        "contract.sig.inputs.x.shape[0]",
        "dimension at shape[0] is the string \"a\"; sizes are integers, -1 (unknown) or positive",
    );
    assert_first_error(
        &with_field("shape: [1, \"1\"]\ntype: float"),
        7,
        20,
        "contract.sig.inputs.x.shape[1]",
        "dimension at shape[1] is the string \"1\"; write sizes as numbers, without quotes",
    );
    assert_first_error(
        &with_field("shape: [1.5]\ntype: float"),
        7,
        17,
        "contract.sig.inputs.x.shape[0]",
        "dimension at shape[0] is the number 1.5; sizes are integers, -1 (unknown) or positive",
    );
    assert_first_error(
        &with_field("shape: 1.5\ntype: float"),
        7,
        16,
        "contract.sig.inputs.x.shape",
        "expected \"scalar\" or a list of sizes like [-1, 1] (leave shape out for any shape), found the number 1.5",
    );
    assert_first_error(
        &with_field("shape: 3\ntype: float"),
        7,
        16,
        "contract.sig.inputs.x.shape",
        "expected \"scalar\" or a list of sizes like [-1, 1] (leave shape out for any shape), found the integer 3; a one-dimensional shape is written [3]",
    );
    assert_first_error(
        &with_field("shape: [[1]]\ntype: float"),
        7,
        17,
        "contract.sig.inputs.x.shape[0]",
        "dimension at shape[0] is a list; a shape is a flat list of integers",
    );
}

#[test]
fn error_unknown_profile() {
    assert_first_error(
        &with_field("type: string\nprofile: txt"),
        8,
        18,
        "contract.sig.inputs.x.profile",
        "unknown profile 'txt'; did you mean 'text'?",
    );
    let all = error(&with_field("type: string\nprofile: emoji"));
    assert!(
        all.ends_with("unknown profile 'emoji'; valid profiles are none, categorical, nominal, ordinal, numerical, numeric, continuous, interval, ratio, image, video, audio or text"),
        "{all}"
    );
}

#[test]
fn error_kind_application() {
    assert_first_error(
        "kind: Application\nname: app\n",
        1,
        7,
        "kind",
        "this is a 'Application' file; mlambda reads kind: Model",
    );
    assert_first_error(
        "kind: model\n",
        1,
        7,
        "kind",
        "unknown kind 'model'; did you mean 'Model'?",
    );
}

#[test]
fn error_duplicate_field() {
    assert_first_error(
        "contract:\n  sig:\n    inputs:\n      x: {type: float}\n      y: {type: float}\n      x: {type: int8}\n",
        6,
        7,
        "contract.sig.inputs.x",
        "duplicate field 'x' (first at line 4)",
    );
    assert_first_error(
        "contract:\n  sig:\n    outputs: {a: {type: bool}}\n  sig:\n    outputs: {b: {type: bool}}\n",
        4,
        3,
        "contract.sig",
        "duplicate signature 'sig' (first at line 2)",
    );
    assert_first_error(
        "name: a\nkind: Model\nname: b\n",
        3,
        1,
        "name",
        "duplicate key 'name' (first at line 1)",
    );
}

#[test]
fn error_unknown_top_level_key_with_suggestion() {
    assert_first_error(
        "kind: Model\nmodel_type: python:3.6\n",
        2,
        1,
        "model_type",
        "unknown key 'model_type'; did you mean 'model-type'?",
    );
    assert_first_error(
        "colour: red\n",
        1,
        1,
        "colour",
        "unknown key 'colour'; expected kind, name, model-type, runtime, payload, contract, description, install-command, training-data, metadata or monitoring",
    );
}

#[test]
fn error_metadata_not_a_map() {
    assert_first_error(
        "name: m\nmetadata: [a, b]\n",
        2,
        11,
        "metadata",
        "metadata must be a mapping of strings (key: value), found a list",
    );
    assert_first_error(
        "metadata:\n  team: ml\n  owners:\n    - alice\n",
        4,
        5,
        "metadata.owners",
        "metadata values are strings, numbers or booleans, found a list",
    );
}

#[test]
fn error_field_type_and_fields() {
    assert_first_error(
        &with_field("type: float\nfields:\n  a: {type: int8}"),
        8,
        9,
        "contract.sig.inputs.x.fields",
        "a field has a type or fields, not both (type at line 7)",
    );
    assert_first_error(
        &with_field("shape: [-1]\nprofile: text"),
        6,
        7,
        "contract.sig.inputs.x",
        "field 'x' needs a type or fields",
    );
    assert_first_error(
        "contract:\n  sig:\n    inputs:\n      x:\n",
        4,
        7,
        "contract.sig.inputs.x",
        "field 'x' needs a type or fields",
    );
    assert_first_error(
        &with_field("fields: {}"),
        7,
        9,
        "contract.sig.inputs.x.fields",
        "fields is empty; a nested field needs at least one sub-field",
    );
}

#[test]
fn error_unknown_keys_inside_the_contract() {
    assert_first_error(
        "contract:\n  sig:\n    input:\n      x: {type: float}\n",
        3,
        5,
        "contract.sig.input",
        "unknown key 'input' in signature 'sig'; did you mean 'inputs'?",
    );
    assert_first_error(
        &with_field("type: float\ndtype: float"),
        8,
        9,
        "contract.sig.inputs.x.dtype",
        "unknown key 'dtype' in field 'x'; did you mean 'type'?",
    );
}

#[test]
fn error_signature_without_fields() {
    assert_first_error(
        "contract:\n  sig:\n    inputs: {}\n",
        2,
        3,
        "contract.sig",
        "signature 'sig' has no inputs and no outputs",
    );
    assert_first_error(
        "contract:\n  sig:\n",
        2,
        3,
        "contract.sig",
        "signature 'sig' has no inputs and no outputs",
    );
    assert_first_error(
        "contract:\n",
        1,
        1,
        "contract",
        "the contract has no signatures; add one (name: {inputs: …, outputs: …}) or remove the key to use contract.prototxt or inference",
    );
}

#[test]
fn error_wrong_value_kinds() {
    assert_first_error(
        "payload: src/\n",
        1,
        10,
        "payload",
        "expected a list of paths, found the string \"src/\"; write it as a list: payload: [\"src/\"]",
    );
    assert_first_error(
        "payload:\n  - src/\n  - {a: b}\n",
        3,
        5,
        "payload[1]",
        "expected a path relative to the folder, found a mapping",
    );
    assert_first_error(
        "name:\n",
        1,
        1,
        "name",
        "expected the model name as a string, found nothing",
    );
    assert_first_error(
        "model:\n  name: m\n  type: tensorflow\n",
        1,
        1,
        "model",
        "'model:' is the 0.x layout; move its keys to the top level (name, payload; type becomes model-type; a contract file becomes contract.prototxt in the folder)",
    );
}

#[test]
fn several_problems_are_reported_in_file_order() {
    let all = error(
        "kind: Model\nname_: x\ncontract:\n  sig:\n    inputs:\n      a: {type: flaot}\n      b: {type: float, shape: [0]}\nmetadata: 3\n",
    );
    let lines: Vec<_> = all.lines().collect();
    assert_eq!(lines.len(), 4, "{all}");
    assert!(
        lines[0].starts_with(&format!("{FILE}:2:1: name_: unknown key 'name_'")),
        "{all}"
    );
    assert!(
        lines[1].starts_with(&format!("{FILE}:6:17: contract.sig.inputs.a.type:")),
        "{all}"
    );
    assert!(
        lines[2].starts_with(&format!("{FILE}:7:32: contract.sig.inputs.b.shape[0]:")),
        "{all}"
    );
    assert!(
        lines[3].starts_with(&format!("{FILE}:8:11: metadata:")),
        "{all}"
    );
}

#[test]
fn problems_are_available_as_values() {
    let err = parse_serving_str(Path::new(FILE), "kind: Application\n").unwrap_err();
    let problems = err.problems();
    assert_eq!(problems.len(), 1);
    assert_eq!((problems[0].line, problems[0].col), (1, 7));
    assert_eq!(problems[0].key_path, "kind");
}

#[test]
fn keys_with_dots_are_quoted_in_paths() {
    assert_first_error(
        "contract:\n  my.sig:\n    inputs:\n      \"a b\": {type: nope}\n",
        4,
        21,
        "contract.\"my.sig\".inputs.\"a b\".type",
        "unknown type 'nope'; valid types are bool, string, half, float16, float, float32, double, float64, bfloat16, uint8, uint16, uint32, uint64, int8, int16, int32, int64, qint8, quint8, qint16, quint16, qint32, complex64, complex128, resource, variant or map",
    );
}

#[test]
fn file_level_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("serving.yaml");
    let err = parse_serving_yaml(&missing).unwrap_err();
    assert!(matches!(err, ServingError::Io { .. }));
    assert!(
        err.to_string().starts_with(&missing.display().to_string()),
        "{err}"
    );

    let latin1 = dir.path().join("latin1.yaml");
    std::fs::write(&latin1, b"name: m\ndescription: caf\xe9\n").unwrap();
    let err = parse_serving_yaml(&latin1).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "{}:2:17: the file is not UTF-8 text; save it as UTF-8",
            latin1.display()
        )
    );
}

/// Garbage, hostile and half-written files give errors, never a panic or a hang.
#[test]
fn no_panics_on_garbage() {
    let mut inputs: Vec<String> = vec![
        "[".repeat(50_000),
        "{".repeat(50_000),
        "- ".repeat(5_000),
        (0..500).map(|i| format!("{}k:\n", " ".repeat(i))).collect(),
        "contract:\n  s:\n    inputs:\n      x:\n        fields:\n".to_string()
            + &(0..40)
                .map(|i| {
                    format!(
                        "{}y:\n{}  fields:\n",
                        " ".repeat(10 + 4 * i),
                        " ".repeat(10 + 4 * i)
                    )
                })
                .collect::<String>(),
        "a: &a [*a]\n".into(),
        "a: *nope\n".into(),
        "? - x\n: y\n".into(),
        "%YAML 1.2\n%YAML 1.2\n---\na: 1\n".into(),
        "a: !!binary aGVsbG8=\n".into(),
        "\u{0}\u{1}\u{2}".into(),
        "key: \"unterminated\n".into(),
        "a: 'x\n".into(),
        ": \n".into(),
        "---\n...\n---\n".into(),
        "contract: {s: {inputs: {x: {shape: [99999999999999999999999], type: float}}}}".into(),
        "contract: {s: {inputs: {x: {shape: [-9223372036854775808], type: float}}}}".into(),
        "contract: {s: {inputs: {x: {shape: .nan, type: [float]}}}}".into(),
        "metadata: {a: {b: {c: d}}}\n".into(),
        "<<: {kind: Model}\n".into(),
        "<<: 3\n".into(),
    ];
    // A small deterministic generator over YAML's punctuation, so failures reproduce.
    let alphabet: Vec<char> = "ab: -[]{},&*!|>'\"#%@`?\n\t 01.~<".chars().collect();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..3000 {
        let len = (next() % 60) as usize;
        let text: String = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        inputs.push(text);
    }
    for text in &inputs {
        let _ = parse_serving_str(Path::new(FILE), text);
    }
    let deep = &inputs[4];
    let err = error(deep);
    assert!(err.contains("nested deeper than 64 levels"), "{err}");
}

// ---- contract.prototxt / contract.protobin ----

fn tokenizer_contract() -> Contract {
    Contract {
        model_name: "ignored".into(),
        signatures: vec![Signature {
            name: "tokenize".into(),
            inputs: vec![text_field("input_text")],
            outputs: vec![text_field("output_text")],
        }],
    }
}

#[test]
fn reads_a_hand_written_prototxt() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("contract.prototxt"),
        r#"signatures {
  signature_name: "tokenize"
  inputs {
    name: "input_text"
    shape { dim { size: -1 } dim { size: 1 } }
    dtype: DT_STRING
    profile: TEXT
  }
  outputs {
    name: "output_text"
    shape { dim { size: -1 } dim { size: 1 } }
    dtype: DT_STRING
    profile: TEXT
  }
}
"#,
    )
    .unwrap();
    let (signatures, path) = read_contract_file(dir.path()).unwrap().unwrap();
    assert_eq!(path, dir.path().join("contract.prototxt"));
    assert_eq!(signatures, tokenizer_contract().signatures);
}

#[test]
fn reads_prototxt_and_protobin_as_written_by_mlambda() {
    let contract = tokenizer_contract();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contract.prototxt"), to_prototxt(&contract)).unwrap();
    assert_eq!(
        read_contract_file(dir.path()).unwrap().unwrap().0,
        contract.signatures
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contract.protobin"), to_protobin(&contract)).unwrap();
    let (signatures, path) = read_contract_file(dir.path()).unwrap().unwrap();
    assert_eq!(path, dir.path().join("contract.protobin"));
    assert_eq!(signatures, contract.signatures);
}

#[test]
fn no_contract_file_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_contract_file(dir.path()).unwrap().is_none());
}

#[test]
fn both_contract_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let contract = tokenizer_contract();
    std::fs::write(dir.path().join("contract.prototxt"), to_prototxt(&contract)).unwrap();
    std::fs::write(dir.path().join("contract.protobin"), to_protobin(&contract)).unwrap();
    let err = read_contract_file(dir.path()).unwrap_err().to_string();
    assert!(err.contains("contract.prototxt and "), "{err}");
    assert!(
        err.contains("contract.protobin are both present; keep one"),
        "{err}"
    );
}

#[test]
fn corrupt_contract_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let prototxt = dir.path().join("contract.prototxt");
    std::fs::write(
        &prototxt,
        "signatures { signature_name: \"x\" inputs { dtype: DT_FLAOT } }\n",
    )
    .unwrap();
    let err = read_contract_file(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: not a valid text-format ModelContract",
            prototxt.display()
        )),
        "{err}"
    );
    assert!(err.contains("DT_FLAOT"), "{err}");

    std::fs::write(&prototxt, b"\xff\xfe binary").unwrap();
    let err = read_contract_file(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("{}: not UTF-8 text", prototxt.display())),
        "{err}"
    );
    std::fs::remove_file(&prototxt).unwrap();

    let protobin = dir.path().join("contract.protobin");
    // Field 2 (signatures), length 5, but only one byte follows.
    std::fs::write(&protobin, [0x12, 0x05, 0x0a]).unwrap();
    let err = read_contract_file(dir.path()).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "{}: not a valid binary ModelContract",
            protobin.display()
        )),
        "{err}"
    );

    std::fs::write(&protobin, []).unwrap();
    let err = read_contract_file(dir.path()).unwrap_err().to_string();
    assert_eq!(
        err,
        format!("{}: the contract has no signatures", protobin.display())
    );
}
