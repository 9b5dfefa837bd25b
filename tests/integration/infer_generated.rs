//! Contract inference from model files the project generates itself with the real framework:
//! a TensorFlow SavedModel written by `tf.saved_model.save` (`scripts/fixtures/make_savedmodel.py`)
//! and an ONNX model written with `onnx.helper` (`scripts/fixtures/make_onnx.py`). The expected
//! contracts are what `saved_model_cli show --all` and `onnx.load` reported for them. Then the
//! SavedModel end to end: `mlambda upload` with no serving.yaml, and the image's bytes.

use crate::common;

use common::*;
use mlambda::infer::{Inferred, infer};
use std::path::Path;

fn infer_dir(dir: &Path) -> Inferred {
    infer(dir, None)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .unwrap_or_else(|| panic!("{}: not recognised", dir.display()))
}

const SAVEDMODEL: &str = "tf_savedmodel/two_signatures";

#[test]
fn generated_savedmodel_gives_both_signatures() {
    // saved_model_cli show --all: classify(features DT_FLOAT (-1, 3), tag DT_STRING (-1)) ->
    // (scores DT_FLOAT (-1, 2), tag_length DT_INT32 (-1)); count(n DT_INT64 ()) ->
    // (doubled DT_INT64 (), is_positive DT_BOOL ()); plus __saved_model_init_op.
    let inferred = infer_dir(&own_fixture(SAVEDMODEL));
    assert_eq!(inferred.model_type, "tensorflow:2.21.0");
    assert_eq!(inferred.source, "TensorFlow SavedModel (saved_model.pb)");
    assert!(inferred.warnings.is_empty(), "{:?}", inferred.warnings);
    let names: Vec<&str> = inferred
        .signatures
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(names, ["classify", "count"], "no __saved_model_init_op");
    let classify = &inferred.signatures[0];
    assert_eq!(
        lines(&classify.inputs),
        ["features DtFloat [-1,3]", "tag DtString [-1]"]
    );
    assert_eq!(
        lines(&classify.outputs),
        ["scores DtFloat [-1,2]", "tag_length DtInt32 [-1]"]
    );
    let count = &inferred.signatures[1];
    assert_eq!(lines(&count.inputs), ["n DtInt64 []"]);
    assert_eq!(
        lines(&count.outputs),
        ["doubled DtInt64 []", "is_positive DtBool []"]
    );
}

#[test]
fn generated_savedmodel_stays_small() {
    fn size(path: &Path) -> u64 {
        if path.is_dir() {
            std::fs::read_dir(path)
                .unwrap()
                .map(|e| size(&e.unwrap().path()))
                .sum()
        } else {
            std::fs::metadata(path).unwrap().len()
        }
    }
    let dir = own_fixture(SAVEDMODEL);
    assert!(size(&dir) < 200 * 1024, "{} bytes", size(&dir));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["saved_model.pb", "variables"]);
}

#[test]
fn generated_onnx_gives_the_exact_contract() {
    // onnx.load: opset ("", 17); inputs x FLOAT16 batch x 4, text STRING batch, weight FLOAT16
    // 4x2 (also the initializer); outputs y FLOAT16 batch x 2, seq sequence(tensor(float16)).
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        own_fixture("onnx/generated.onnx"),
        tmp.path().join("generated.onnx"),
    )
    .unwrap();
    let inferred = infer_dir(tmp.path());
    assert_eq!(inferred.model_type, "onnx:17");
    assert_eq!(inferred.source, "ONNX model (generated.onnx)");
    assert_eq!(inferred.signatures.len(), 1);
    let signature = &inferred.signatures[0];
    assert_eq!(signature.name, "infer");
    // `weight` is an initializer: a weight, not an input, though listed as one.
    assert_eq!(
        lines(&signature.inputs),
        ["text DtString [-1] (batch)", "x DtHalf [-1,4] (batch,)"]
    );
    assert_eq!(
        lines(&signature.outputs),
        ["seq DtVariant any", "y DtHalf [-1,2] (batch,)"]
    );
    assert_eq!(inferred.warnings.len(), 1, "{:?}", inferred.warnings);
    let warning = &inferred.warnings[0];
    assert!(
        warning.contains("output 'seq'") && warning.contains("DT_VARIANT"),
        "{warning}"
    );
}

#[test]
fn generated_savedmodel_uploads_with_its_inferred_contract() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("two_signatures");
    copy_tree(&own_fixture(SAVEDMODEL), &dir);
    assert!(!dir.join("serving.yaml").exists());

    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--base", "scratch", "--json"])
            .arg(&dir),
    ));
    assert_eq!(uploaded["name"], "two_signatures");
    assert_eq!(uploaded["version"], 1);
    assert_eq!(uploaded["status"], "Finished");
    let source = uploaded["contract_source"].as_str().unwrap();
    assert!(
        source.contains("TensorFlow SavedModel") && source.contains("saved_model.pb"),
        "{source}"
    );

    let show = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "two_signatures:1",
        "--json",
    ])));
    assert_eq!(show["version"], 1);
    assert_eq!(show["status"], "Finished");
    assert_eq!(show["model_type"], "tensorflow:2.21.0");
    assert_eq!(show["error"], serde_json::Value::Null);

    let store = home.path().join("registry/two_signatures");
    let bundle = tempfile::tempdir().unwrap();
    if let Some(rootfs) = umoci_unpack(&format!("{}:1", store.display()), &bundle.path().join("b"))
    {
        assert_eq!(
            std::fs::read(rootfs.join("model/files/saved_model.pb")).unwrap(),
            std::fs::read(dir.join("saved_model.pb")).unwrap()
        );
        let protobin = std::fs::read(rootfs.join("model/contract.protobin")).unwrap();
        let (model_name, fields) = decode_contract(&protobin);
        assert_eq!(model_name, "two_signatures");
        // DT_FLOAT 1, DT_INT32 3, DT_STRING 7, DT_INT64 9, DT_BOOL 10.
        assert_eq!(
            fields,
            [
                "classify/inputs/features dtype=1 profile=0 shape=[-1,3]",
                "classify/inputs/tag dtype=7 profile=0 shape=[-1]",
                "classify/outputs/scores dtype=1 profile=0 shape=[-1,2]",
                "classify/outputs/tag_length dtype=3 profile=0 shape=[-1]",
                "count/inputs/n dtype=9 profile=0 shape=[]",
                "count/outputs/doubled dtype=9 profile=0 shape=[]",
                "count/outputs/is_positive dtype=10 profile=0 shape=[]",
            ]
        );
    }
}
