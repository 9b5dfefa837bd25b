//! Models whose runtime answers must be what the framework itself computes: the expected
//! outputs stored beside the fixtures by their generators (scripts/fixtures), compared with
//! what `mlambda run` serves. Here the Spark runtime and an MLflow folder; runtimes.rs uses
//! the same comparison for ONNX, TensorFlow, Keras and TFLite.

use crate::common;
use crate::runtimes::{HTTP_ONLY, assert_served_as_expected, served_through_tritonclient};

use common::http::free_port;
use common::rootfs::{mlambda_run, post_json, request};
use common::*;
use serde_json::{Map, Value, json};
use std::path::Path;

/// One stored case: the signature, the request body, the framework's outputs by name.
pub struct Expected {
    pub signature: String,
    pub request: String,
    pub outputs: Map<String, Value>,
}

/// The cases of a `<fixture>.expected_outputs.json` (see scripts/fixtures/make_expected.py).
pub fn expected_outputs(path: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/fixtures/make_expected.py writes it)",
            path.display()
        )
    });
    let doc: Value = serde_json::from_str(&text).unwrap();
    doc.as_object()
        .unwrap()
        .iter()
        .map(|(signature, case)| {
            let inputs: Vec<Value> = case["inputs"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(name, tensor)| {
                    let mut tensor = tensor.clone();
                    tensor["name"] = json!(name);
                    tensor
                })
                .collect();
            Expected {
                signature: signature.clone(),
                request: json!({ "inputs": inputs }).to_string(),
                outputs: case["outputs"].as_object().unwrap().clone(),
            }
        })
        .collect()
}

/// The served outputs are the framework's: the same names, datatypes and shapes, integers and
/// strings equal, floats equal up to rounding. The generator ran the runtime's pinned version
/// of the framework, but on another CPU the same version may pick other kernels (SIMD width,
/// summation order), which moves FP32 results in their last bits: 1e-5 relative (FP64: 1e-9).
pub fn assert_outputs_are(answer: &Value, expected: &Map<String, Value>, what: &str) {
    let outputs = answer["outputs"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: no outputs in {answer}"));
    let names: Vec<&str> = outputs.iter().filter_map(|o| o["name"].as_str()).collect();
    let mut wanted: Vec<&str> = expected.keys().map(String::as_str).collect();
    let mut served = names.clone();
    served.sort_unstable();
    wanted.sort_unstable();
    assert_eq!(served, wanted, "{what}: {answer}");
    for output in outputs {
        let name = output["name"].as_str().unwrap();
        let want = &expected[name];
        assert_eq!(output["datatype"], want["datatype"], "{what}: {name}");
        assert_eq!(output["shape"], want["shape"], "{what}: {name}");
        let tolerance = match want["datatype"].as_str() {
            Some("FP32") => 1e-5,
            Some("FP64") => 1e-9,
            _ => 0.0,
        };
        let got = output["data"].as_array().unwrap();
        let want = want["data"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{what}: {name}");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if tolerance == 0.0 {
                assert_eq!(g, w, "{what}: {name}[{i}]");
            } else {
                let (g, w) = (g.as_f64().unwrap(), w.as_f64().unwrap());
                assert!(
                    (g - w).abs() <= tolerance * w.abs().max(1.0),
                    "{what}: {name}[{i}] is {g}, the framework computed {w}"
                );
            }
        }
    }
}

/// Each case sent as plain JSON, as curl sends it, to `/v2/models/{model}/infer` (the case's
/// signature when `model` is `None`): the answers, each the framework's outputs.
pub fn json_answers_as_expected(port: u16, model: Option<&str>, cases: &[Expected]) -> Vec<Value> {
    cases
        .iter()
        .map(|case| {
            let model = model.unwrap_or(&case.signature);
            let path = format!("/v2/models/{model}/infer");
            let answer: Value =
                serde_json::from_str(&post_json(port, &path, &case.request)).unwrap();
            assert_outputs_are(&answer, &case.outputs, model);
            answer
        })
        .collect()
}

/// Waits for `/v2/health/ready`: Spark's JVM and the pipeline take a minute to load on a
/// busy machine, longer than other runtimes.
fn wait_ready_for(port: u16, seconds: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(seconds);
    while request(port, "GET", "/v2/health/ready", "").0 != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the runtime on {port} was not ready in {seconds} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

/// A PySpark 4 PipelineModel with no serving.yaml runs on the spark runtime (Debian's JRE,
/// pyspark's pinned source distribution copied as laid out, a local Spark session), and
/// answers what PySpark computed on the same row.
#[test]
fn a_spark_pipeline_runs_on_the_spark_runtime() {
    if tool("bwrap").is_none() {
        eprintln!("SKIPPED: no bwrap");
        return;
    }
    let home = home_with_shared_wheels();
    let out = run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--check"])
            .arg(own_fixture("spark/serving_4")),
    );
    let uploaded = json_of(&out);
    assert_eq!(uploaded["base"], "runtime spark");
    assert_eq!(uploaded["status"], "Finished", "{uploaded}");
    let log = version_log(home.path(), "serving_4:1");
    assert!(
        log.contains("debian package openjdk-17-jre-headless_"),
        "{log}"
    );
    assert!(
        log.contains(
            "python package pyspark 4.3.0 from its source distribution pyspark-4.3.0.tar.gz"
        ),
        "{log}"
    );
    assert!(log.contains("check: the model loads in its image"), "{log}");

    let port = free_port();
    let running = mlambda_run(home.path(), "serving_4", port);
    wait_ready_for(port, 400);
    let metadata: Value =
        serde_json::from_str(&request(port, "GET", "/v2/models/serving_4", "").1).unwrap();
    assert_eq!(metadata["platform"], "spark");
    let stored = own_fixture("spark/serving_4.expected_outputs.json");
    let cases = expected_outputs(&stored);
    assert_eq!(cases.len(), 1);
    // Through tritonclient's HTTP client (tensors in binary form; the runtime has no grpcio).
    if let Some(served) = served_through_tritonclient(port, &stored, HTTP_ONLY) {
        assert_served_as_expected(&served, &cases, HTTP_ONLY);
    }
    // By the model's name and by the signature's.
    json_answers_as_expected(port, Some("serving_4"), &cases);
    json_answers_as_expected(port, None, &cases);
    // One request is one row: a scalar column given two values is refused by the contract.
    let (status, refused) = request(
        port,
        "POST",
        "/v2/models/serving_4/infer",
        r#"{"inputs": [{"name": "colour", "datatype": "BYTES", "shape": [2], "data": ["red", "blue"]}]}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert!(refused.contains("'colour'"), "{refused}");
    drop(running);
}

/// An MLflow folder of the sklearn flavor, with no serving.yaml, runs on the scikit-learn
/// runtime: the flavor's pickled model is loaded as it is, the folder's requirements are
/// installed but mlflow itself (not needed to serve) and what the runtime has are left out,
/// and the answers are what the estimator computed on the same columns.
#[test]
fn an_mlflow_sklearn_folder_runs_on_the_scikit_learn_runtime() {
    if tool("bwrap").is_none() {
        eprintln!("SKIPPED: no bwrap");
        return;
    }
    // MLflow writes `==` pins without hashes: uv resolves them.
    if tool("uv").is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have uv");
        eprintln!("SKIPPED: no uv to resolve the folder's requirements.txt");
        return;
    }
    let home = home_with_shared_wheels();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--check"])
            .arg(own_fixture("mlflow/sklearn_columns")),
    ));
    assert_eq!(uploaded["base"], "runtime scikit-learn");
    assert_eq!(uploaded["status"], "Finished", "{uploaded}");
    let log = version_log(home.path(), "sklearn_columns:1");
    assert!(
        log.contains("mlflow==3.17.2 left out of the MLflow folder's requirements.txt"),
        "{log}"
    );
    // The runtime has scikit-learn, pandas and cloudpickle: what it has is not installed
    // again, and rich (which it has not) is, with its dependencies.
    assert!(
        log.contains("pandas==3.1.1")
            && log.contains("left out of requirements.txt: the base has them"),
        "{log}"
    );
    // The model's own package layers, after the runtime's (assembled first, in the same log).
    let model_part = log.split("the base has them").nth(1).unwrap();
    assert!(!model_part.contains("python package mlflow "), "{log}");
    assert!(!model_part.contains("python package pandas "), "{log}");
    assert!(
        !model_part.contains("python package scikit-learn "),
        "{log}"
    );
    assert!(model_part.contains("python package rich "), "{log}");
    // What the image has, as skopeo reads its config: the runtime's packages and the model's.
    if tool("skopeo").is_some() {
        let image = format!(
            "oci:{}:1",
            home.path().join("registry/sklearn_columns").display()
        );
        let config = json_of(&run_ok(
            std::process::Command::new("skopeo").args(["inspect", "--config", &image]),
        ));
        let label = config["config"]["Labels"]["io.mlambda.python.packages"]
            .as_str()
            .unwrap_or_default();
        for pin in ["scikit-learn==1.9.1", "pandas==3.1.1", "rich==15.0.0"] {
            assert!(label.split(' ').any(|p| p == pin), "{pin} not in {label}");
        }
    }
    let port = free_port();
    let running = mlambda_run(home.path(), "sklearn_columns", port);
    let stored = own_fixture("mlflow/sklearn_columns.expected_outputs.json");
    let cases = expected_outputs(&stored);
    json_answers_as_expected(port, Some("sklearn_columns"), &cases);
    if let Some(served) = served_through_tritonclient(port, &stored, HTTP_ONLY) {
        assert_served_as_expected(&served, &cases, HTTP_ONLY);
    }
    drop(running);
}
