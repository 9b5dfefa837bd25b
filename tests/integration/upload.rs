//! `mlambda upload` end to end: versions in the catalogue, images in the local store that
//! skopeo and umoci read with no server, and the exact bytes inside.

use crate::common;

use common::*;
use std::process::Command;

const TOKENIZER_CONTRACT: [&str; 2] = [
    "tokenize/inputs/input_text dtype=7 profile=6 shape=[-1,1]",
    "tokenize/outputs/output_text dtype=7 profile=6 shape=[-1,1]",
];

#[test]
fn two_uploads_give_versions_one_and_two_that_third_party_tools_read() {
    let home = tempfile::tempdir().unwrap();
    let first = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--base", "scratch"])
            .arg(example_dir()),
    ));
    let second = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--base", "scratch"])
            .arg(example_dir()),
    ));
    assert_eq!(first["name"], "example_tokenizer_model");
    assert_eq!(first["version"], 1);
    assert_eq!(second["version"], 2);
    assert_eq!(first["status"], "Finished");
    assert_eq!(first["contract_source"], "serving.yaml");
    let store = home.path().join("registry/example_tokenizer_model");
    assert_eq!(first["image"], format!("oci:{}:1", store.display()));

    let versions = json_of(&run_ok(mlambda(home.path()).args([
        "versions",
        "example_tokenizer_model",
        "--json",
    ])));
    let versions = versions.as_array().unwrap();
    assert_eq!(versions.len(), 2);
    for (record, uploaded) in versions.iter().zip([&first, &second]) {
        assert_eq!(record["status"], "Finished");
        assert_eq!(record["digest"], uploaded["digest"]);
        assert_eq!(record["image"], uploaded["image"]);
        assert_eq!(record["model_type"], "python:3.6");
        assert!(record["created"].as_str().unwrap().ends_with('Z'));
    }

    let show = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "example_tokenizer_model:1",
        "--json",
    ])));
    assert_eq!(show["version"], 1);
    assert_eq!(show["contract"]["signatures"][0]["name"], "tokenize");
    assert_eq!(show["error"], serde_json::Value::Null);

    if let Some(skopeo) = tool("skopeo") {
        for (tag, uploaded) in [("1", &first), ("2", &second)] {
            let out = run_ok(
                Command::new(&skopeo)
                    .arg("inspect")
                    .arg(format!("oci:{}:{tag}", store.display())),
            );
            let inspected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(inspected["Digest"], uploaded["digest"]);
            assert_eq!(inspected["Labels"]["MODEL_NAME"], "example_tokenizer_model");
            assert_eq!(inspected["Labels"]["MODEL_VERSION"], tag);
            assert_eq!(inspected["Labels"]["MODEL_TYPE"], "python:3.6");
        }
    }

    let bundle = tempfile::tempdir().unwrap();
    if let Some(rootfs) = umoci_unpack(&format!("{}:1", store.display()), &bundle.path().join("b"))
    {
        let example = example_dir();
        for file in ["src/func_main.py", "requirements.txt"] {
            assert_eq!(
                std::fs::read(rootfs.join("model/files").join(file)).unwrap(),
                std::fs::read(example.join(file)).unwrap(),
                "{file}"
            );
        }
        assert!(
            !rootfs.join("model/files/serving.yaml").exists(),
            "serving.yaml is not payload"
        );
        let protobin = std::fs::read(rootfs.join("model/contract.protobin")).unwrap();
        let (model_name, fields) = decode_contract(&protobin);
        assert_eq!(model_name, "example_tokenizer_model");
        assert_eq!(fields, TOKENIZER_CONTRACT);

        let exported = run_ok(
            mlambda(home.path())
                .args(["contract", "--format", "protobin"])
                .arg(example_dir()),
        );
        assert_eq!(
            exported.stdout, protobin,
            "`contract --format protobin` prints the image's bytes"
        );
    }
}

#[test]
fn contract_command_prints_every_format() {
    let home = tempfile::tempdir().unwrap();
    let yaml = run_ok(mlambda(home.path()).arg("contract").arg(example_dir()));
    let text = String::from_utf8(yaml.stdout).unwrap();
    assert!(text.contains("  tokenize:\n    inputs:\n      input_text:\n        shape: [-1, 1]\n        type: string\n        profile: text\n"), "{text}");
    assert!(String::from_utf8_lossy(&yaml.stderr).contains("contract: serving.yaml"));

    let json = json_of(&run_ok(
        mlambda(home.path())
            .args(["contract", "--format", "json"])
            .arg(example_dir()),
    ));
    assert_eq!(json["signatures"][0]["outputs"][0]["name"], "output_text");
    assert_eq!(json["model_type"], "python:3.6");

    let prototxt = run_ok(
        mlambda(home.path())
            .args(["contract", "--format", "prototxt"])
            .arg(example_dir()),
    );
    let text = String::from_utf8(prototxt.stdout).unwrap();
    assert!(
        text.contains("signature_name: \"tokenize\"") && text.contains("DT_STRING"),
        "{text}"
    );

    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("contract.protobin");
    run_ok(
        mlambda(home.path())
            .args(["contract", "--format", "protobin", "-o"])
            .arg(&file)
            .arg(example_dir()),
    );
    assert_eq!(
        decode_contract(&std::fs::read(&file).unwrap()).1,
        TOKENIZER_CONTRACT
    );
}

#[test]
fn the_yaml_contract_is_a_valid_serving_yaml_again() {
    let home = tempfile::tempdir().unwrap();
    let folder = tempfile::tempdir().unwrap();
    let yaml = run_ok(mlambda(home.path()).arg("contract").arg(example_dir())).stdout;
    std::fs::write(folder.path().join("serving.yaml"), &yaml).unwrap();
    std::fs::write(folder.path().join("model.bin"), b"weights").unwrap();
    let again = run_ok(
        mlambda(home.path())
            .args(["contract", "--format", "protobin"])
            .arg(folder.path()),
    )
    .stdout;
    assert_eq!(decode_contract(&again).1, TOKENIZER_CONTRACT);
}

#[test]
fn a_registry_file_url_writes_to_that_folder() {
    let home = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let url = format!("file:{}", target.path().display());
    let out = json_of(&run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--base", "scratch", "--registry", &url])
            .arg(example_dir()),
    ));
    assert_eq!(
        out["image"],
        format!("oci:{}/example_tokenizer_model:1", target.path().display())
    );
    assert!(
        target
            .path()
            .join("example_tokenizer_model/index.json")
            .is_file()
    );
    assert!(
        !home
            .path()
            .join("registry/example_tokenizer_model")
            .exists()
    );
}

#[test]
fn the_base_image_is_chosen_plainly() {
    let home = tempfile::tempdir().unwrap();
    let out = run_ok(
        mlambda(home.path())
            .args(["upload", "--model-type", "cobol:85"])
            .arg(example_dir()),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no runtime in base-images/ serves model-type 'cobol:85'")
            && stderr.contains("building on scratch"),
        "{stderr}"
    );
    let show = json_of(&run_ok(mlambda(home.path()).args([
        "show",
        "example_tokenizer_model",
        "--json",
    ])));
    assert!(
        show["log"]
            .as_str()
            .unwrap()
            .contains("building on scratch")
    );
}
