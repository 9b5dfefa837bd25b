//! Spark stages with multi-column params (`inputCols`/`outputCols`): pipelines written by
//! PySpark (`scripts/fixtures/make_spark_multicol.py`), compared with the schema of their own
//! `transform` output stored beside them. Each such stage also keeps a default single-column
//! `outputCol` it does not use; none of those may reach the contract.

use crate::common;

use common::own_fixture as own;
use mlambda::contract::{Field, FieldKind};
use mlambda::infer::infer;
use serde_json::Value;
use std::path::Path;

fn schema(path: &Path) -> Vec<(String, &'static str)> {
    let value: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    value["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let dtype = match &f["type"] {
                Value::String(s) if s == "double" => "DT_DOUBLE",
                Value::String(s) if s == "string" => "DT_STRING",
                t if t["type"] == "array" && t["elementType"] == "string" => "DT_STRING",
                // Spark ML vectors (a user-defined type) hold doubles.
                t if t["type"] == "udt" => "DT_DOUBLE",
                t => panic!("a type the test does not know: {t}"),
            };
            (f["name"].as_str().unwrap().to_string(), dtype)
        })
        .collect()
}

fn names_and_types(fields: &[Field]) -> Vec<(String, &'static str)> {
    fields
        .iter()
        .map(|f| {
            let FieldKind::Tensor(dtype) = &f.kind else {
                panic!("{}: nested", f.name)
            };
            let name = match dtype.as_str_name() {
                "DT_DOUBLE" => "DT_DOUBLE",
                "DT_STRING" => "DT_STRING",
                other => panic!("{}: {other}", f.name),
            };
            (f.name.clone(), name)
        })
        .collect()
}

fn check(major: &str) {
    let dir = own(&format!("spark/multicol_{major}"));
    if !dir.is_dir() {
        assert_eq!(major, "4", "the PySpark 3 fixture is committed");
        return;
    }
    let inferred = infer(&dir, None)
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("recognised");
    assert!(
        inferred.model_type.starts_with(&format!("spark:{major}.")),
        "{}",
        inferred.model_type
    );
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
    let signature = &inferred.signatures[0];
    let frame = schema(&dir.with_file_name(format!("multicol_{major}.input_columns.json")));
    let transformed =
        schema(&dir.with_file_name(format!("multicol_{major}.transform_schema.json")));

    // Inputs: the frame's columns but the label, which only training reads.
    let mut want_inputs: Vec<_> = frame
        .iter()
        .filter(|(n, _)| n != "label")
        .cloned()
        .collect();
    want_inputs.sort();
    assert_eq!(names_and_types(&signature.inputs), want_inputs);

    // Outputs: exactly the columns transform adds, with their types.
    let mut want_outputs: Vec<_> = transformed
        .iter()
        .filter(|c| !frame.contains(c))
        .cloned()
        .collect();
    want_outputs.sort();
    assert_eq!(names_and_types(&signature.outputs), want_outputs);
    for field in signature.inputs.iter().chain(&signature.outputs) {
        assert!(!field.name.contains("__output"), "{}", field.name);
    }
}

#[test]
fn spark_3_multi_column_stages_match_the_transform_schema() {
    check("3");
}

#[test]
fn spark_4_multi_column_stages_match_the_transform_schema() {
    check("4");
}
