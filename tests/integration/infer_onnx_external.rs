//! ONNX models with external data (`model.onnx` + `model.onnx.data`, written by onnx's
//! `save_as_external_data`, `scripts/fixtures/make_onnx_external.py`): the contract is inferred
//! as from any ONNX model, the data file must be in the folder, and a big one travels as its
//! own layer.

use crate::common;

use common::{json_of, lines, mlambda, own_fixture as own, run_ok};
use mlambda::infer::{InferError, infer};
use serde_json::Value;

fn copy() -> (tempfile::TempDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("external");
    common::copy_tree(&own("onnx/external"), &dir);
    (tmp, dir)
}

#[test]
fn onnx_with_external_data_is_inferred_as_onnx_reports_it() {
    let dir = own("onnx/external");
    let answer: Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let inferred = infer(&dir, None).unwrap().expect("recognised");
    assert_eq!(inferred.model_type, format!("onnx:{}", answer["opset"]));
    let signature = &inferred.signatures[0];
    let dims = |v: &Value| -> String {
        let sizes: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_i64().unwrap_or(-1).to_string())
            .collect();
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap_or(""))
            .collect();
        format!("[{}] ({})", sizes.join(","), names.join(","))
    };
    let want = |side: &str| -> Vec<String> {
        answer[side]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, d)| format!("{name} DtFloat {}", dims(d)))
            .collect()
    };
    assert_eq!(lines(&signature.inputs), want("inputs"));
    assert_eq!(lines(&signature.outputs), want("outputs"));
    assert_eq!(answer["external_data"][0], "model.onnx.data");
}

#[test]
fn a_missing_or_escaping_data_file_is_an_error_naming_both() {
    let (_tmp, dir) = copy();
    std::fs::remove_file(dir.join("model.onnx.data")).unwrap();
    let err = infer(&dir, None).unwrap_err();
    assert!(matches!(err, InferError::MissingFile { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("model.onnx:"), "{message}");
    assert!(message.contains("\"model.onnx.data\""), "{message}");
    assert!(message.contains("not in the model folder"), "{message}");

    // The location rewritten (same length, so the protobuf stays valid) to leave the folder.
    let (_tmp, dir) = copy();
    let bytes = std::fs::read(dir.join("model.onnx")).unwrap();
    let text = bytes
        .windows(15)
        .position(|w| w == b"model.onnx.data")
        .expect("the location is in the file");
    let mut escaping = bytes.clone();
    escaping[text..text + 15].copy_from_slice(b"../el.onnx.data");
    std::fs::write(dir.join("model.onnx"), &escaping).unwrap();
    let message = infer(&dir, None).unwrap_err().to_string();
    assert!(
        message.contains("not a path inside the model folder"),
        "{message}"
    );
}

#[test]
fn a_big_external_data_file_is_its_own_layer() {
    let (tmp, dir) = copy();
    // Zeros after the tensors' bytes change nothing for ONNX (each tensor has offset and
    // length); 64 MiB makes it a big file. Sparse, so cheap.
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("model.onnx.data"))
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    std::fs::remove_file(dir.join("expected.json")).unwrap();
    let layout = tmp.path().join("layout");
    let out = run_ok(
        mlambda(&tmp.path().join("home"))
            .args(["build", "--json", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", layout.display()))
            .arg(&dir),
    );
    let digest = json_of(&out)["digest"].as_str().unwrap().to_string();
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(&digest)).unwrap()).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let contents: Vec<Vec<String>> = layers
        .iter()
        .map(|layer| {
            let path = blob(layer["digest"].as_str().unwrap());
            if layer["mediaType"] != "application/vnd.oci.image.layer.v1.tar" {
                return Vec::new();
            }
            let mut archive = tar::Archive::new(std::fs::File::open(&path).unwrap());
            archive
                .entries()
                .unwrap()
                .map(|e| e.unwrap().path().unwrap().display().to_string())
                .collect()
        })
        .collect();
    // A layer of its own, holding only the data file.
    assert!(
        contents.contains(&vec!["model/files/model.onnx.data".to_string()]),
        "{contents:?}"
    );
}

#[test]
fn a_missing_data_file_fails_the_build_even_with_a_written_contract() {
    let (tmp, dir) = copy();
    std::fs::remove_file(dir.join("model.onnx.data")).unwrap();
    std::fs::write(
        dir.join("serving.yaml"),
        "name: external\ncontract:\n  infer:\n    inputs:\n      x: {shape: [-1, 8], type: float32}\n    outputs:\n      y: {shape: [-1, 4], type: float32}\n",
    )
    .unwrap();
    let message = common::run_fail(
        mlambda(&tmp.path().join("home"))
            .args(["build", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", tmp.path().join("layout").display()))
            .arg(&dir),
    );
    assert!(message.contains("model.onnx.data"), "{message}");
    assert!(message.contains("not in the model folder"), "{message}");
}

#[test]
fn an_unreadable_onnx_file_with_a_written_contract_still_builds() {
    let (tmp, dir) = copy();
    std::fs::write(dir.join("model.onnx"), b"\xff\xff\xff not protobuf").unwrap();
    std::fs::write(
        dir.join("serving.yaml"),
        "name: external\ncontract:\n  infer:\n    inputs:\n      x: {shape: [-1, 8], type: float32}\n    outputs:\n      y: {shape: [-1, 4], type: float32}\n",
    )
    .unwrap();
    run_ok(
        mlambda(&tmp.path().join("home"))
            .args(["build", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", tmp.path().join("layout").display()))
            .arg(&dir),
    );
}
