//! The shipped runtimes: built from Debian packages without running any package script, then
//! used as the base of model images that really run (chroot, as root, as in CI).

use crate::common;

use crate::runtimes_spark::{
    Expected, assert_outputs_are, expected_outputs, json_answers_as_expected,
};
use common::http::free_port;
use common::rootfs::{
    can_chroot, chroot, mlambda_run, post_json, request, request_with, serve_python, unpacked,
    wait_ready,
};
use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn the_tokenizer_runs_on_the_python_runtime_built_on_first_upload() {
    let home = tempfile::tempdir().unwrap();
    let out = run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(example_dir()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime 'python-3.11', built now from Debian packages"),
        "{stderr}"
    );
    let uploaded = json_of(&out);
    assert_eq!(uploaded["base"], "runtime python-3.11");
    let log = version_log(home.path(), "example_tokenizer_model:1");
    assert!(
        log.contains("fetching 16 Debian packages with apt-get download"),
        "{log}"
    );
    assert!(log.contains("debian package python3.11-minimal_"), "{log}");

    // The model image starts with exactly the runtime's layers.
    let runtime = json_of(&run_ok(
        mlambda(home.path()).args(["base", "list", "--json"]),
    ));
    let python = runtime
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "python-3.11")
        .unwrap();
    assert_eq!(python["in_store"], true);
    let model_layers = layout_layers(&home.path().join("registry/example_tokenizer_model"), "1");
    let base_layers = layout_layers(&home.path().join("registry/base/python-3.11"), "latest");
    assert_eq!(model_layers[..base_layers.len()], base_layers[..]);
    assert_eq!(model_layers.len(), base_layers.len() + 2);

    // A second upload reuses the runtime: nothing is fetched again.
    let again = run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(example_dir()),
    );
    assert!(!String::from_utf8_lossy(&again.stderr).contains("built now"));

    if !can_chroot() {
        return;
    }
    let Some((_bundle, rootfs)) =
        unpacked(&home.path().join("registry/example_tokenizer_model"), "1")
    else {
        return;
    };
    let check = chroot(
        &rootfs,
        &["/usr/bin/python3", "/runtime/serve.py", "--check"],
    );
    let check: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(check["loaded"], true);
    assert_eq!(check["default"], "tokenize");
    assert_eq!(
        check["signatures"]["tokenize"]["inputs"],
        serde_json::json!([{"name": "input_text", "datatype": "BYTES", "shape": [-1, 1]}])
    );
    let imported = chroot(
        &rootfs,
        &[
            "/usr/bin/python3",
            "-c",
            "import sys; sys.path.insert(0, '/model/files/src'); import func_main; \
             print(func_main.tokenize([['Hello, ML Lambda']])['output_text'][0][0]); \
             print(open('/model/contract.protobin', 'rb').read()[:2].hex())",
        ],
    );
    // 0x0a = field 1 (model_name), length-delimited; 0x17 = 23 bytes of "example_tokenizer_model".
    assert_eq!(imported, "hello ml lambda\n0a17\n");

    // And the image's own entrypoint serves it over the Open Inference Protocol, with the
    // environment of the image's config.
    let port = free_port();
    let _server = serve_python(&rootfs, port);
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    wait_ready(port);
    let metadata = json(&request(port, "GET", "/v2/models/example_tokenizer_model", "").1);
    assert_eq!(
        metadata,
        serde_json::json!({
            "name": "example_tokenizer_model", "versions": ["1"], "platform": "python",
            "inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [-1, 1]}],
            "outputs": [{"name": "output_text", "datatype": "BYTES", "shape": [-1, 1]}],
        })
    );
    let answer = json(&post_json(
        port,
        "/v2/models/tokenize/versions/1/infer",
        r#"{"id": "r1", "inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [2, 1], "data": [["Tokenize THIS, please"], ["Hello, ML Lambda"]]}]}"#,
    ));
    assert_eq!(
        answer,
        serde_json::json!({
            "model_name": "tokenize", "model_version": "1", "id": "r1",
            "outputs": [{"name": "output_text", "datatype": "BYTES", "shape": [2, 1],
                         "data": ["tokenize this please", "hello ml lambda"]}],
        })
    );
    // Requests the contract refuses: 400 naming the field; other names and versions: 404.
    let refused = [
        (
            r#"{"inputs": [{"name": "input_text", "datatype": "FP32", "shape": [1, 1], "data": [1.5]}]}"#,
            "datatype FP32, but the contract says BYTES",
        ),
        (
            r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]}"#,
            "shape [1, 2] does not fit the contract's [-1, 1]",
        ),
        (
            r#"{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}]}"#,
            "unknown input 'text'",
        ),
        (r#"{"inputs": []}"#, "missing input 'input_text'"),
        (
            r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [2, 1], "data": ["a"]}]}"#,
            "needs 2 values, got 1",
        ),
        ("not json", "not JSON"),
    ];
    for (body, message) in refused {
        let (status, answer) = request(
            port,
            "POST",
            "/v2/models/example_tokenizer_model/infer",
            body,
        );
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            json(&answer)["error"].as_str().unwrap().contains(message),
            "{body}: {answer}"
        );
    }
    // Tensors in binary form (the binary-data extension) that do not add up: 400 saying how.
    let header = r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1, 1], "parameters": {"binary_data_size": 100}}]}"#;
    let element = b"\x02\x00\x00\x00hi";
    let binary_refused = [
        (
            header.len(),
            element.len(),
            "binary_data_size 100 runs past the 6 bytes after the JSON",
        ),
        (
            header.len() + 100,
            0,
            "is not a length within the request's",
        ),
    ];
    for (json_length, binary, message) in binary_refused {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(&element[..binary]);
        let (status, answer) = request_with(
            port,
            "POST",
            "/v2/models/example_tokenizer_model/infer",
            &format!("Inference-Header-Content-Length: {json_length}\r\n"),
            &body,
        );
        assert_eq!(status, 400, "{answer}");
        assert!(answer.contains(message), "{answer}");
    }
    let exact = header.replace("100", "6");
    let mut body = exact.as_bytes().to_vec();
    body.extend_from_slice(element);
    body.extend_from_slice(b"extra");
    let (status, answer) = request_with(
        port,
        "POST",
        "/v2/models/example_tokenizer_model/infer",
        &format!("Inference-Header-Content-Length: {}\r\n", exact.len()),
        &body,
    );
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer
            .contains("has 11 bytes after its JSON, but its inputs' binary_data_size add up to 6"),
        "{answer}"
    );
    for path in [
        "/v2/models/detokenize/infer",
        "/v2/models/tokenize/versions/2/infer",
    ] {
        assert_eq!(request(port, "POST", path, "{}").0, 404, "{path}");
    }
    assert_eq!(request(port, "GET", "/v2/health/ready", "").0, 200);
    drop(_server);

    // `mlambda run` serves the same version from the store, isolated, until it is stopped.
    if tool("bwrap").is_none() {
        return;
    }
    let port = free_port();
    let mut running = mlambda(home.path())
        .args(["run", "example_tokenizer_model", "--addr"])
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let answer = json(&post_json(
        port,
        "/v2/models/example_tokenizer_model/infer",
        r#"{"inputs": [{"name": "input_text", "datatype": "BYTES", "shape": [1, 1], "data": ["Run, Forest"]}]}"#,
    ));
    assert_eq!(answer["model_version"], "2", "the latest finished version");
    assert_eq!(
        answer["outputs"][0]["data"],
        serde_json::json!(["run forest"])
    );
    // A real client of the protocol: Triton's, from PyPI.
    if let Some(answer) = tritonclient(
        port,
        "import numpy as np, tritonclient.http as h\n\
         c = h.InferenceServerClient(url=ADDR)\n\
         assert c.is_server_live() and c.is_server_ready() and c.is_model_ready('example_tokenizer_model')\n\
         m = c.get_model_metadata('example_tokenizer_model')\n\
         i = h.InferInput('input_text', [2, 1], 'BYTES')\n\
         i.set_data_from_numpy(np.array([['Triton, meet mlambda'], ['Hello']], dtype=object), binary_data=False)\n\
         r = c.infer('example_tokenizer_model', [i], outputs=[h.InferRequestedOutput('output_text', binary_data=False)])\n\
         j = h.InferInput('input_text', [2, 1], 'BYTES')\n\
         j.set_data_from_numpy(np.array([['Triton, meet mlambda'], ['Hello']], dtype=object))\n\
         b = c.infer('example_tokenizer_model', [j]).as_numpy('output_text').tolist()\n\
         print(m['inputs'][0]['datatype'], r.as_numpy('output_text').tolist(), b)\n",
    ) {
        // JSON tensors, then tritonclient's default: tensors in binary form both ways.
        assert_eq!(
            answer,
            "BYTES [['triton meet mlambda'], ['hello']] [[b'triton meet mlambda'], [b'hello']]"
        );
    }
    running.kill().unwrap();
    running.wait().unwrap();
    let mut said = String::new();
    std::io::Read::read_to_string(&mut running.stderr.take().unwrap(), &mut said).unwrap();
    assert!(said.contains("isolated with bubblewrap"), "{said}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server stops with mlambda run"
    );
    // Only a finished version runs.
    let error = run_fail(mlambda(home.path()).args(["run", "example_tokenizer_model:9"]));
    assert!(
        error.contains("no version 'example_tokenizer_model:9'"),
        "{error}"
    );
}

#[test]
fn a_shell_model_runs_on_the_busybox_runtime() {
    let home = tempfile::tempdir().unwrap();
    let built = json_of(&run_ok(
        mlambda(home.path()).args(["base", "build", "busybox", "--json"]),
    ));
    assert_eq!(
        built["layers"], 2,
        "busybox-static and the runtime's own files"
    );
    let model = tempfile::tempdir().unwrap();
    std::fs::write(
        model.path().join("serving.yaml"),
        "name: greeter\nmodel-type: shell:1\ncontract:\n  greet:\n    inputs:\n      who: {type: string, shape: scalar}\n    outputs:\n      greeting: {type: string, shape: scalar}\n",
    )
    .unwrap();
    std::fs::write(
        model.path().join("greet.sh"),
        "#!/bin/sh\necho \"hello $1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(
        model.path().join("greet.sh"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(model.path()),
    ));
    assert_eq!(uploaded["base"], "runtime busybox");
    if !can_chroot() {
        return;
    }
    let Some((_bundle, rootfs)) = unpacked(&home.path().join("registry/greeter"), "1") else {
        return;
    };
    assert_eq!(
        chroot(&rootfs, &["/bin/sh", "/model/files/greet.sh", "world"]),
        "hello world\n"
    );
    let size = chroot(
        &rootfs,
        &[
            "/bin/busybox",
            "stat",
            "-c",
            "%s",
            "/model/contract.protobin",
        ],
    );
    assert_eq!(
        size.trim().parse::<usize>().unwrap(),
        std::fs::metadata(rootfs.join("model/contract.protobin"))
            .unwrap()
            .len() as usize
    );
}

/// An ONNX model with no serving.yaml: the onnx runtime (Debian's Python plus onnxruntime
/// from the runtime's pinned lock) is assembled on first use, and the image answers with
/// what onnxruntime computed on the same input (stored beside the fixtures).
#[test]
fn an_onnx_model_runs_on_the_onnx_runtime_assembled_on_first_use() {
    let Some(fixtures) = shared_fixtures() else {
        return;
    };
    let model = fixtures.join("onnx/onnx_pytorch_converted_test_Conv2d");
    let home = tempfile::tempdir().unwrap();
    let out = run_ok(mlambda(home.path()).args(["upload", "--json"]).arg(&model));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runs on runtime 'onnx', built now"),
        "{stderr}"
    );
    let uploaded = json_of(&out);
    assert_eq!(uploaded["base"], "runtime onnx");
    let runtime = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "onnx_pytorch_converted_test_conv2d:1",
        "--json",
    ])));
    assert!(
        runtime["log"]
            .as_str()
            .unwrap()
            .contains("python package onnxruntime ")
    );
    if !can_chroot() {
        return;
    }
    let Some((_bundle, rootfs)) = unpacked(
        &home
            .path()
            .join("registry/onnx_pytorch_converted_test_conv2d"),
        "1",
    ) else {
        return;
    };
    // What onnxruntime (the version the runtime pins) computed on a 2×3×7×5 input, stored by
    // scripts/fixtures/make_expected.py.
    let port = free_port();
    let _server = serve_python(&rootfs, port);
    let stored = own_fixture("expected/onnx_pytorch_converted_test_Conv2d.expected_outputs.json");
    let cases = expected_outputs(&stored);
    json_answers_as_expected(port, Some("onnx_pytorch_converted_test_conv2d"), &cases);
    // The same through tritonclient's HTTP client (the onnx runtime has no grpcio).
    if let Some(served) = served_through_tritonclient(port, &stored, HTTP_ONLY) {
        assert_served_as_expected(&served, &cases, HTTP_ONLY);
    }
    let (status, refused) = request(
        port,
        "POST",
        "/v2/models/infer/infer",
        r#"{"inputs": [{"name": "0", "datatype": "FP32", "shape": [2, 3, 7, 4], "data": []}]}"#,
    );
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused.contains("does not fit the contract's [2, 3, 7, 5]"),
        "{refused}"
    );
}

/// `upload --check` starts the image's runtime after the build: a model that does not load
/// fails the version with the runtime's own words; one that loads is Finished, as before.
#[test]
fn upload_check_fails_a_version_whose_model_does_not_load() {
    if tool("bwrap").is_none() && !can_chroot() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let good = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--check", "--json"])
            .arg(example_dir()),
    ));
    assert_eq!(good["status"], "Finished");
    let log = version_log(home.path(), "example_tokenizer_model:1");
    assert!(log.contains("check: the model loads in its image"), "{log}");

    let broken = tempfile::tempdir().unwrap();
    copy_tree(&example_dir(), broken.path());
    let source = broken.path().join("src/func_main.py");
    let text = std::fs::read_to_string(&source).unwrap();
    std::fs::write(&source, text.replace("def tokenize(", "def tokenise(")).unwrap();
    let error = run_fail(
        mlambda(home.path())
            .args(["upload", "--check"])
            .arg(broken.path()),
    );
    assert!(
        error.contains("the model does not load in its image")
            && error.contains("has no function 'tokenize'"),
        "{error}"
    );
    let record = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "example_tokenizer_model:2",
        "--json",
    ])));
    assert_eq!(record["status"], "Failed");
    // Without --check the same folder is built as it is.
    run_ok(mlambda(home.path()).arg("upload").arg(broken.path()));
}

/// A TensorFlow SavedModel with no serving.yaml runs on the tensorflow runtime (Debian's
/// Python plus tensorflow-cpu from the runtime's pinned lock), assembled on first use: every
/// signature reached by its name, the model's name the default one, and the answers what
/// TensorFlow computed on the same inputs (stored beside the fixtures).
#[test]
fn savedmodels_keras_files_and_mlflow_folders_run_on_the_tensorflow_runtime() {
    let Some(fixtures) = shared_fixtures() else {
        return;
    };
    let model = fixtures.join("tf_savedmodel/serving_saved_model_half_plus_two_cpu/00000123");
    let home = home_with_shared_wheels();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--check"])
            .arg(&model),
    ));
    assert_eq!(uploaded["base"], "runtime tensorflow");
    let name = "serving_saved_model_half_plus_two_cpu";
    if tool("bwrap").is_none() {
        return;
    }
    let port = free_port_pair();
    let running = mlambda_run(home.path(), name, port);
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    // Plain JSON, as curl sends it.
    let default = json(&post_json(
        port,
        &format!("/v2/models/{name}/infer"),
        r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 5]}]}"#,
    ));
    let metadata = json(&request(port, "GET", "/v2/models/serving_default", "").1);
    // What TensorFlow (the version the runtime pins) computed on the same inputs, stored by
    // scripts/fixtures/make_expected.py for every signature: three take serialized
    // tf.Example protos, BYTES that are not text, which go in binary form.
    let stored =
        own_fixture("expected/serving_saved_model_half_plus_two_cpu.expected_outputs.json");
    let cases = expected_outputs(&stored);
    let signatures: Vec<&str> = cases.iter().map(|c| c.signature.as_str()).collect();
    assert_eq!(
        signatures,
        [
            "classify_x_to_y",
            "regress_x2_to_y3",
            "regress_x_to_y",
            "regress_x_to_y2",
            "serving_default"
        ]
    );
    let served = served_through_tritonclient(port, &stored, HTTP_AND_GRPC);
    // tritonclient's gRPC client on the default signature, a refused request and metadata.
    let over_grpc = tritonclient(
        port + 1,
        &format!(
            "import json, numpy as np, tritonclient.grpc as g\n\
             c = g.InferenceServerClient(ADDR)\n\
             x = g.InferInput('x', [3, 1], 'FP32'); x.set_data_from_numpy(np.array([[1], [2], [5]], dtype=np.float32))\n\
             y = c.infer('{name}', [x]).as_numpy('y').reshape(-1).tolist()\n\
             bad = g.InferInput('x', [3, 1], 'INT32'); bad.set_data_from_numpy(np.array([[1], [2], [5]], dtype=np.int32))\n\
             try:\n    c.infer('{name}', [bad]); refused = None\n\
             except g.InferenceServerException as e:\n    refused = [str(e.status()), e.message()]\n\
             meta = c.get_model_metadata('{name}', as_json=True)\n\
             print(json.dumps({{'ready': c.is_server_ready(), 'inputs': meta['inputs'], 'y': y, 'refused': refused}}))"
        ),
    )
    .map(|text| json(text.lines().last().unwrap()));
    drop(running);
    assert_eq!(metadata["platform"], "tensorflow_savedmodel");
    assert_eq!(metadata["inputs"][0]["shape"], serde_json::json!([-1, 1]));
    assert_eq!(
        default["outputs"][0]["data"],
        serde_json::json!([2.5, 3.0, 4.5])
    );
    if let Some(served) = &served {
        assert_served_as_expected(served, &cases, HTTP_AND_GRPC);
    }
    if let Some(answer) = &over_grpc {
        assert_eq!(answer["ready"], true);
        assert_eq!(answer["inputs"][0]["name"], "x");
        assert_eq!(answer["y"], default["outputs"][0]["data"]);
        assert_eq!(answer["refused"][0], "StatusCode.INVALID_ARGUMENT");
        let message = answer["refused"][1].as_str().unwrap();
        assert!(message.contains("datatype INT32"), "{message}");
    }

    // A Keras model with two named inputs and two outputs, on the same runtime.
    let keras = own_fixture("keras/functional_two_inputs");
    run_ok(mlambda(home.path()).args(["upload", "--check"]).arg(&keras));
    let port = free_port();
    let running = mlambda_run(home.path(), "functional_two_inputs", port);
    // Keras itself (the pinned version, on TensorFlow) on two rows, stored beside the fixture.
    let cases = expected_outputs(&own_fixture(
        "keras/functional_two_inputs.expected_outputs.json",
    ));
    json_answers_as_expected(port, Some("functional_two_inputs"), &cases);
    drop(running);

    // MLflow folders of a Keras model, with no serving.yaml, on the same runtime: saved by
    // the tensorflow flavor (mlflow.tensorflow.save_model) and by the keras flavor
    // (mlflow.keras.save_model). Of the requirements MLflow wrote, mlflow is not needed to
    // serve and TensorFlow and Keras are the runtime's own (a second TensorFlow over it would
    // double the image); what is left (cloudpickle) is installed.
    if tool("uv").is_none() {
        assert!(std::env::var_os("CI").is_none(), "CI must have uv");
        eprintln!("SKIPPED: no uv to resolve the MLflow folders' requirements.txt");
        return;
    }
    for (folder, left_out, installed) in [
        (
            "keras_tensorflow",
            "tensorflow-cpu==2.21.0, tensorflow==2.21.0",
            Some("cloudpickle"),
        ),
        (
            "keras_flavor",
            "keras==3.15.1, tensorflow-cpu==2.21.0",
            None,
        ),
    ] {
        let uploaded = json_of(&run_ok(
            mlambda(home.path())
                .args(["upload", "--json", "--check"])
                .arg(own_fixture(&format!("mlflow/{folder}"))),
        ));
        assert_eq!(uploaded["base"], "runtime tensorflow", "{folder}");
        assert_eq!(uploaded["status"], "Finished", "{uploaded}");
        let log = version_log(home.path(), &format!("{folder}:1"));
        assert!(
            log.contains(&format!(
                "{left_out} left out of requirements.txt: the base has them"
            )),
            "{log}"
        );
        let model_part = log.split("the base has them").nth(1).unwrap();
        if let Some(package) = installed {
            assert!(
                model_part.contains(&format!("python package {package} ")),
                "{log}"
            );
        }
        assert!(!model_part.contains("python package tensorflow"), "{log}");
        assert!(!model_part.contains("python package keras"), "{log}");
        assert!(!model_part.contains("python package mlflow"), "{log}");
        let port = free_port_pair();
        let running = mlambda_run(home.path(), folder, port);
        let stored = own_fixture(&format!("mlflow/{folder}.expected_outputs.json"));
        let served = served_through_tritonclient(port, &stored, HTTP_AND_GRPC);
        drop(running);
        if let Some(served) = &served {
            assert_served_as_expected(served, &expected_outputs(&stored), HTTP_AND_GRPC);
        }
    }
}

/// tritonclient's HTTP and gRPC clients, for runtimes with grpcio (the tensorflow runtime).
pub const HTTP_AND_GRPC: &[&str] = &["tritonclient.http", "tritonclient.grpc"];
/// tritonclient's HTTP client alone, for runtimes without grpcio.
pub const HTTP_ONLY: &[&str] = &["tritonclient.http"];

/// Every case stored in `stored` (scripts/fixtures/make_expected.py) sent to the model named
/// by its signature, by each of `clients`: tritonclient's HTTP client (tensors in binary form,
/// its default), its gRPC client (on `port + 1`). `{signature: {"tritonclient.http":
/// {"outputs": […]}, …}}`, or `None` when skipped (never under CI). BYTES inputs that are not
/// text are stored in base64 (`data_base64`).
pub fn served_through_tritonclient(
    port: u16,
    stored: &Path,
    clients: &[&str],
) -> Option<serde_json::Value> {
    wait_ready(port);
    let script = format!(
        "import base64, json, numpy as np, tritonclient.http as h, tritonclient.grpc as g\n\
         cases = json.load(open({stored:?}))\n\
         types = {{'FP32': np.float32, 'FP64': np.float64, 'INT32': np.int32, 'INT64': np.int64, 'BOOL': bool}}\n\
         grpc_addr = '127.0.0.1:%d' % (int(ADDR.split(':')[1]) + 1)\n\
         served = {{}}\n\
         wanted = {clients:?}\n\
         for module, client in ((h, lambda: h.InferenceServerClient(ADDR)), (g, lambda: g.InferenceServerClient(grpc_addr))):\n\
         \x20   if module.__name__ not in wanted: continue\n\
         \x20   client = client()\n\
         \x20   for signature, case in cases.items():\n\
         \x20       inputs = []\n\
         \x20       for name, t in case['inputs'].items():\n\
         \x20           if 'data_base64' in t:\n\
         \x20               data = np.array([base64.b64decode(v) for v in t['data_base64']], dtype=object)\n\
         \x20           else:\n\
         \x20               data = np.array(t['data'], dtype=types.get(t['datatype'], object))\n\
         \x20           i = module.InferInput(name, t['shape'], t['datatype']); i.set_data_from_numpy(data.reshape(t['shape'])); inputs.append(i)\n\
         \x20       result = client.infer(signature, inputs)\n\
         \x20       outputs = []\n\
         \x20       for n in case['outputs']:\n\
         \x20           o = result.get_output(n); array = result.as_numpy(n)\n\
         \x20           outputs.append({{'name': n, 'datatype': o['datatype'] if isinstance(o, dict) else o.datatype, 'shape': list(array.shape), 'data': [v.decode() if isinstance(v, bytes) else v for v in array.reshape(-1).tolist()]}})\n\
         \x20       served.setdefault(signature, {{}})[module.__name__] = {{'outputs': outputs}}\n\
         print(json.dumps(served))"
    );
    tritonclient(port, &script)
        .map(|text| serde_json::from_str(text.lines().last().unwrap()).unwrap())
}

/// What [`served_through_tritonclient`] got is what the framework computed, through each of
/// `clients`.
pub fn assert_served_as_expected(served: &serde_json::Value, cases: &[Expected], clients: &[&str]) {
    for case in cases {
        for client in clients {
            let what = format!("{} through {client}", case.signature);
            assert_outputs_are(&served[&case.signature][client], &case.outputs, &what);
        }
    }
}

/// Runs `script` (with `ADDR` set to the server's) in a Python that has tritonclient: its
/// output, or `None` when skipped (never under CI).
fn tritonclient(port: u16, script: &str) -> Option<String> {
    let probe = Command::new("python3")
        .args(["-c", "import tritonclient.http, tritonclient.grpc"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have tritonclient[http,grpc] in its python3 (.ci/run installs it)"
        );
        eprintln!("SKIPPED: python3 has no tritonclient (pip install 'tritonclient[http,grpc]')");
        return None;
    }
    let out = run_ok(
        Command::new("python3")
            .arg("-c")
            .arg(format!("ADDR = '127.0.0.1:{port}'\n{script}")),
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A pickled scikit-learn estimator with a serving.yaml contract runs on the scikit-learn
/// runtime: each signature calls the estimator's method of its name, the contract's inputs
/// are the columns (by the names it was fitted with), and the answers are the estimator's.
#[test]
fn a_pickled_estimator_runs_on_the_scikit_learn_runtime() {
    if tool("bwrap").is_none() {
        return;
    }
    let home = home_with_shared_wheels();
    run_ok(mlambda(home.path()).args(["base", "build", "scikit-learn"]));
    // The estimator, fitted and pickled by the runtime's own scikit-learn.
    let bundle = tempfile::tempdir().unwrap();
    let runtime = format!(
        "{}:latest",
        home.path().join("registry/base/scikit-learn").display()
    );
    let Some(rootfs) = umoci_unpack(&runtime, &bundle.path().join("b")) else {
        return;
    };
    let model = tempfile::tempdir().unwrap();
    let fit = "import joblib, pandas\n\
               from sklearn.datasets import load_iris\n\
               from sklearn.linear_model import LogisticRegression\n\
               x, y = load_iris(return_X_y=True, as_frame=True)\n\
               x.columns = ['sepal_length', 'sepal_width', 'petal_length', 'petal_width']\n\
               joblib.dump(LogisticRegression(max_iter=1000).fit(x, y), '/out/model.joblib')\n";
    run_ok(
        Command::new("bwrap")
            .arg("--bind")
            .arg(&rootfs)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "--bind"])
            .arg(model.path())
            .args(["/out", "/usr/bin/python3", "-c", fit]),
    );
    let field = "{type: double, shape: [-1]}";
    std::fs::write(
        model.path().join("serving.yaml"),
        format!(
            "name: iris_estimator\nmodel-type: scikit-learn:1.9\npayload: [model.joblib]\ncontract:\n  \
             predict:\n    inputs:\n      sepal_length: {field}\n      sepal_width: {field}\n      \
             petal_length: {field}\n      petal_width: {field}\n    outputs:\n      species: {{type: int64, shape: [-1]}}\n  \
             predict_proba:\n    inputs:\n      sepal_length: {field}\n      sepal_width: {field}\n      \
             petal_length: {field}\n      petal_width: {field}\n    outputs:\n      probabilities: {{type: double, shape: [-1, 3]}}\n"
        ),
    )
    .unwrap();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--check"])
            .arg(model.path()),
    ));
    assert_eq!(uploaded["base"], "runtime scikit-learn");
    let port = free_port();
    let running = mlambda_run(home.path(), "iris_estimator", port);
    let body = |columns: [[f64; 2]; 4]| {
        let names = ["sepal_length", "sepal_width", "petal_length", "petal_width"];
        let inputs: Vec<serde_json::Value> = names
            .iter()
            .zip(columns)
            .map(|(name, data)| serde_json::json!({"name": name, "datatype": "FP64", "shape": [2], "data": data}))
            .collect();
        serde_json::json!({ "inputs": inputs }).to_string()
    };
    let rows = [[5.1, 6.7], [3.5, 3.0], [1.4, 5.2], [0.2, 2.3]];
    let json = |text: &str| -> serde_json::Value { serde_json::from_str(text).unwrap() };
    let species = json(&post_json(port, "/v2/models/predict/infer", &body(rows)));
    let probabilities = json(&post_json(
        port,
        "/v2/models/predict_proba/infer",
        &body(rows),
    ));
    drop(running);
    assert_eq!(species["outputs"][0]["datatype"], "INT64");
    assert_eq!(species["outputs"][0]["data"], serde_json::json!([0, 2]));
    assert_eq!(
        probabilities["outputs"][0]["shape"],
        serde_json::json!([2, 3])
    );
    // The estimator itself, in the runtime, on the same rows.
    let direct = run_ok(
        Command::new("bwrap")
            .arg("--ro-bind")
            .arg(&rootfs)
            .args(["/", "--proc", "/proc", "--dev", "/dev", "--ro-bind"])
            .arg(model.path())
            .args([
                "/out",
                "/usr/bin/python3",
                "-c",
                "import joblib, json, pandas\n\
                 m = joblib.load('/out/model.joblib')\n\
                 x = pandas.DataFrame({'sepal_length': [5.1, 6.7], 'sepal_width': [3.5, 3.0], \
                 'petal_length': [1.4, 5.2], 'petal_width': [0.2, 2.3]})\n\
                 print(json.dumps(m.predict_proba(x).reshape(-1).tolist()))\n",
            ]),
    );
    let direct: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&direct.stdout).trim()).unwrap();
    assert_eq!(probabilities["outputs"][0]["data"], direct);
}

/// A TFLite model runs on the tflite runtime (LiteRT's interpreter from the runtime's pinned
/// lock), and answers what the interpreter computed on the same input (stored beside the
/// fixtures).
#[test]
fn a_tflite_model_runs_on_the_tflite_runtime() {
    let Some(fixtures) = shared_fixtures() else {
        return;
    };
    if tool("bwrap").is_none() {
        return;
    }
    let model =
        fixtures.join("tflite/serving_saved_model_half_plus_two_tflite_with_sigdef/00000123");
    let home = home_with_shared_wheels();
    let uploaded = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--check"])
            .arg(&model),
    ));
    assert_eq!(uploaded["base"], "runtime tflite");
    let port = free_port();
    let running = mlambda_run(
        home.path(),
        "serving_saved_model_half_plus_two_tflite_with_sigdef",
        port,
    );
    // What LiteRT (the version the runtime pins) computed, stored by make_expected.py.
    let stored = own_fixture(
        "expected/serving_saved_model_half_plus_two_tflite_with_sigdef.expected_outputs.json",
    );
    let cases = expected_outputs(&stored);
    if let Some(served) = served_through_tritonclient(port, &stored, HTTP_ONLY) {
        assert_served_as_expected(&served, &cases, HTTP_ONLY);
    }
    for answer in json_answers_as_expected(port, None, &cases) {
        assert_eq!(answer["outputs"][0]["data"], serde_json::json!([4.5]));
    }
    drop(running);
}

/// A runtime in the store that another definition assembled (an older mlambda's packages,
/// server or settings) is assembled again before a model is built on it.
#[test]
fn a_runtime_from_another_definition_is_assembled_again() {
    let Some(debs) = downloaded_deb("busybox-static") else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let store = mlambda::store::Store::open(&home.path().join("registry")).unwrap();
    let older = mlambda::base::Runtime {
        debian: vec!["busybox-static".into()],
        ..mlambda::base::runtime("python-3.11").unwrap()
    };
    let settings = mlambda::packages::Settings::default();
    let wheel_cache = home.path().join("wheels");
    let assembly = mlambda::base::Assembly {
        debs: Some(debs.path()),
        created: 0,
        packages: &settings,
        wheel_cache: &wheel_cache,
    };
    mlambda::base::build_runtime(&store, &older, &assembly, &mut |_| {}).unwrap();
    let out = run_ok(
        mlambda(home.path())
            .args(["upload", "--json"])
            .arg(example_dir()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("runtime 'python-3.11', built now from Debian packages"),
        "{stderr}"
    );
    let log = version_log(home.path(), "example_tokenizer_model:1");
    assert!(log.contains("assembled from another definition"), "{log}");
    assert!(log.contains("debian package python3.11-minimal_"), "{log}");
}

/// A free port whose next one is free too: HTTP and gRPC of `mlambda run`.
fn free_port_pair() -> u16 {
    loop {
        let port = free_port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}
