//! safetensors and GGUF: facts from their headers (compared with what the formats' own
//! readers report, `expected.json` beside each fixture of `scripts/fixtures/make_weights.py`),
//! no invented contract, and hostile headers refused with errors naming the file.

use crate::common;

use common::{json_of, mlambda, own_fixture as own, run_fail, run_ok};
use mlambda::infer::{InferError, infer, weight_facts};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn expected(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap()
}

fn facts(dir: &Path) -> BTreeMap<String, String> {
    weight_facts(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|(k, v)| (k.trim_start_matches("io.mlambda.weights.").to_string(), v))
        .collect()
}

/// "F16:1 F32:2" from the reader's `{"F16": 1, "F32": 2}`.
fn dtypes(answer: &Value) -> String {
    answer["dtypes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn check_common(dir: &Path, format: &str) -> BTreeMap<String, String> {
    let answer = expected(dir);
    let facts = facts(dir);
    assert_eq!(facts["format"], format);
    assert_eq!(facts["tensors"], answer["tensors"].to_string());
    assert_eq!(facts["parameters"], answer["parameters"].to_string());
    assert_eq!(facts["dtypes"], dtypes(&answer));
    facts
}

#[test]
fn safetensors_facts_match_the_safetensors_reader() {
    let dir = own("weights/safetensors_single");
    let facts = check_common(&dir, "safetensors");
    assert_eq!(facts["files"], "model.safetensors");
}

#[test]
fn sharded_safetensors_facts_add_up_over_the_shards() {
    let dir = own("weights/safetensors_sharded");
    let facts = check_common(&dir, "safetensors");
    assert_eq!(
        facts["files"],
        "model-00001-of-00002.safetensors model-00002-of-00002.safetensors"
    );
    // From the config.json transformers wrote beside the shards, as AutoConfig reads it.
    let answer = expected(&dir);
    assert_eq!(
        facts["architecture"],
        answer["architecture"].as_str().unwrap()
    );
    assert_eq!(
        facts["context-length"],
        answer["context_length"].to_string()
    );
    assert_eq!(facts["vocabulary"], answer["vocabulary"].to_string());
    assert!(!facts.contains_key("quantization"));
}

#[test]
fn transformers_quantization_and_foreign_config_files() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_tree(&own("weights/safetensors_single"), tmp.path());
    // The shape of a config saved after quantizing with bitsandbytes (crafted: that writer
    // needs torch and a GPU).
    let config = r#"{"model_type": "mistral", "architectures": ["MistralForCausalLM"],
        "max_position_embeddings": 32768, "vocab_size": 32000,
        "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true}}"#;
    std::fs::write(tmp.path().join("config.json"), config).unwrap();
    let facts = facts(tmp.path());
    assert_eq!(facts["architecture"], "MistralForCausalLM");
    assert_eq!(facts["context-length"], "32768");
    assert_eq!(facts["quantization"], "bitsandbytes");
    // Another framework's config.json, or a broken one, adds nothing and breaks nothing.
    for other in [r#"{"layers": []}"#, "{", "[1]"] {
        std::fs::write(tmp.path().join("config.json"), other).unwrap();
        let facts = weight_facts(tmp.path()).unwrap();
        assert!(
            !facts.contains_key("io.mlambda.weights.architecture"),
            "{other}"
        );
    }
}

#[test]
fn gguf_facts_match_the_gguf_reader() {
    let dir = own("weights/gguf_llama");
    let facts = check_common(&dir, "gguf");
    let answer = expected(&dir);
    assert_eq!(
        facts["architecture"],
        answer["architecture"].as_str().unwrap()
    );
    assert_eq!(facts["name"], answer["name"].as_str().unwrap());
    assert_eq!(
        facts["context-length"],
        answer["context_length"].to_string()
    );
    assert_eq!(facts["file-type"], answer["file_type"].as_str().unwrap());
    assert_eq!(facts["vocabulary"], answer["vocabulary"].to_string());
    assert_eq!(facts["gguf.version"], answer["version"].to_string());
}

#[test]
fn weights_without_a_contract_are_refused_with_a_skeleton() {
    for (fixture, named, format) in [
        (
            "weights/safetensors_single",
            "model.safetensors",
            "safetensors",
        ),
        (
            "weights/safetensors_sharded",
            "model.safetensors.index.json",
            "safetensors",
        ),
        ("weights/gguf_llama", "tiny.gguf", "GGUF"),
    ] {
        let err = infer(&own(fixture), None).expect_err(fixture);
        let InferError::NoMetadata { path, skeleton, .. } = &err else {
            panic!("{fixture}: {err}")
        };
        assert!(path.ends_with(named), "{}", path.display());
        assert!(skeleton.starts_with("contract:\n  infer:\n"), "{skeleton}");
        let message = err.to_string();
        assert!(message.contains(format), "{message}");
        assert!(message.contains("tensors"), "{message}");
        assert!(message.contains("FILL_IN"), "{message}");
    }
}

// ---------------------------------------------------------------------------------------------
// Hostile headers

/// A folder holding only `name` with `bytes`.
fn folder_with(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (tmp, path)
}

/// The facts of a folder holding only `name`: an error naming the file, with `reason`.
fn refused(name: &str, bytes: &[u8], reason: &str) {
    let (tmp, path) = folder_with(name, bytes);
    let err = weight_facts(tmp.path()).expect_err(reason);
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "{reason}: {message}"
    );
    assert!(message.contains(reason), "{reason}: {message}");
    // Inference without a contract reports the same damage, not a skeleton.
    let err = infer(tmp.path(), None).expect_err(reason);
    assert!(
        matches!(err, InferError::CorruptWeights { .. }),
        "{reason}: {err}"
    );
    assert!(
        err.to_string()
            .contains("save or download the weights again")
    );
}

fn safetensors_file(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend(vec![0u8; data]);
    bytes
}

#[test]
fn hostile_safetensors_headers_are_clear_errors() {
    let real = std::fs::read(own("weights/safetensors_single/model.safetensors")).unwrap();
    let name = "model.safetensors";
    refused(name, &real[..5], "too short for the 8-byte header length");
    // Truncated inside the header, and inside the data.
    refused(name, &real[..40], "runs past the end of the file");
    refused(name, &real[..real.len() - 3], "outside");
    // A header length of 2^64 - 1 and one just under the cap but past the end.
    let mut huge = real.clone();
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    refused(name, &huge, "more than the format's limit");
    let mut past = real.clone();
    past[..8].copy_from_slice(&(90u64 << 20).to_le_bytes());
    refused(name, &past, "runs past the end of the file");
    // Not JSON, not an object, wrong entries.
    refused(name, &safetensors_file("{\"a\": ", 0), "not JSON");
    refused(name, &safetensors_file("[1, 2]", 0), "not a JSON object");
    refused(name, &safetensors_file(&"[".repeat(100_000), 0), "not JSON");
    refused(
        name,
        &safetensors_file(r#"{"a":{"shape":[1],"data_offsets":[0,4]}}"#, 4),
        "no \"dtype\"",
    );
    refused(
        name,
        &safetensors_file(
            r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#,
            4,
        ),
        "not a non-negative integer",
    );
    refused(
        name,
        &safetensors_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}"#,
            4,
        ),
        "outside",
    );
    refused(
        name,
        &safetensors_file(
            r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,2],"data_offsets":[0,4]}}"#,
            4,
        ),
        "overflows",
    );
    refused(
        name,
        &safetensors_file(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            8,
        ),
        "overlap",
    );
    // Every single-byte mutation of the real header: an error or facts, never a panic.
    let header_end = 8 + u64::from_le_bytes(real[..8].try_into().unwrap()) as usize;
    for i in 0..header_end {
        for byte in [0u8, b'9', b'"', 0xff] {
            let mut bytes = real.clone();
            bytes[i] = byte;
            let (tmp, _) = folder_with(name, &bytes);
            let _ = weight_facts(tmp.path());
        }
    }
}

#[test]
fn a_shard_index_naming_a_missing_shard_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    common::copy_tree(&own("weights/safetensors_sharded"), tmp.path());
    std::fs::remove_file(tmp.path().join("model-00002-of-00002.safetensors")).unwrap();
    let message = weight_facts(tmp.path()).unwrap_err().to_string();
    assert!(
        message.contains("model.safetensors.index.json"),
        "{message}"
    );
    assert!(
        message.contains("model-00002-of-00002.safetensors"),
        "{message}"
    );
    std::fs::write(tmp.path().join("model.safetensors.index.json"), "{").unwrap();
    let message = weight_facts(tmp.path()).unwrap_err().to_string();
    assert!(message.contains("not JSON"), "{message}");
}

/// GGUF bytes: header, then `kv` (already encoded), then nothing.
fn gguf(version: u32, tensors: u64, pairs: u64, rest: &[u8]) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(version.to_le_bytes());
    bytes.extend(tensors.to_le_bytes());
    bytes.extend(pairs.to_le_bytes());
    bytes.extend(rest);
    bytes
}

fn gguf_string(s: &[u8]) -> Vec<u8> {
    let mut bytes = (s.len() as u64).to_le_bytes().to_vec();
    bytes.extend(s);
    bytes
}

#[test]
fn hostile_gguf_headers_are_clear_errors() {
    let real = std::fs::read(own("weights/gguf_llama/tiny.gguf")).unwrap();
    let name = "model.gguf";
    refused(name, b"GGU", "truncated");
    refused(name, &real[..200], "truncated");
    let mut magic = real.clone();
    magic[..4].copy_from_slice(b"GGML");
    refused(name, &magic, "does not start with \"GGUF\"");
    refused(name, &gguf(1, 0, 0, &[]), "GGUF version 1");
    refused(name, &gguf(3u32.swap_bytes(), 0, 0, &[]), "big-endian");
    refused(name, &gguf(3, u64::MAX, 0, &[]), "more than its");
    refused(name, &gguf(3, 0, u64::MAX, &[]), "more than its");
    // A key of 2^64 - 1 bytes; a string value of 2^63 bytes.
    refused(name, &gguf(3, 0, 1, &u64::MAX.to_le_bytes()), "truncated");
    let mut value = gguf_string(b"general.name");
    value.extend(8u32.to_le_bytes());
    value.extend((1u64 << 63).to_le_bytes());
    refused(name, &gguf(3, 0, 1, &value), "truncated");
    // Arrays with huge counts, of strings and of numbers, and nested deeply.
    for item in [8u32, 0, 12] {
        let mut array = gguf_string(b"tokenizer.ggml.tokens");
        array.extend(9u32.to_le_bytes());
        array.extend(item.to_le_bytes());
        array.extend(u64::MAX.to_le_bytes());
        refused(name, &gguf(3, 0, 1, &array), "cannot fit");
    }
    // An array of one array of one array…: each level is an item type and a count.
    let mut nested = gguf_string(b"x");
    nested.extend(9u32.to_le_bytes());
    for _ in 0..10 {
        nested.extend(9u32.to_le_bytes());
        nested.extend(1u64.to_le_bytes());
    }
    nested.extend(vec![0u8; 64]);
    refused(name, &gguf(3, 0, 1, &nested), "nested");
    let mut unknown = gguf_string(b"x");
    unknown.extend(77u32.to_le_bytes());
    refused(name, &gguf(3, 0, 1, &unknown), "unknown value type 77");
    // A tensor with 2^32 - 1 dimensions, and one with dimensions whose product overflows.
    let mut tensor = gguf_string(b"t");
    tensor.extend(u32::MAX.to_le_bytes());
    tensor.extend(vec![0u8; 64]);
    refused(name, &gguf(3, 1, 0, &tensor), "dimensions");
    let mut tensor = gguf_string(b"t");
    tensor.extend(3u32.to_le_bytes());
    for _ in 0..3 {
        tensor.extend((1u64 << 32).to_le_bytes());
    }
    tensor.extend(vec![0u8; 64]);
    refused(name, &gguf(3, 1, 0, &tensor), "overflows");
    // Every single-byte mutation of the metadata: an error or facts, never a panic.
    for i in 0..real.len().min(1200) {
        for byte in [0u8, 0x7f, 0xff] {
            let mut bytes = real.clone();
            bytes[i] = byte;
            let (tmp, _) = folder_with(name, &bytes);
            let _ = weight_facts(tmp.path());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Through a build: metadata and annotations

const CONTRACT: &str = "name: tiny\ncontract:\n  generate:\n    inputs:\n      prompt:\n        shape: scalar\n        type: string\n    outputs:\n      text:\n        shape: scalar\n        type: string\n";

#[test]
fn weight_facts_become_image_annotations_when_a_contract_is_given() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("tiny");
    common::copy_tree(&own("weights/gguf_llama"), &model);
    std::fs::write(
        model.join("serving.yaml"),
        format!("{CONTRACT}metadata:\n  owner: lab\n"),
    )
    .unwrap();
    let layout = work.path().join("layout");
    let out = run_ok(
        mlambda(home.path())
            .args(["build", "--json", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", layout.display()))
            .arg(&model),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("gguf weights (tiny.gguf): 4 tensors"),
        "{stderr}"
    );
    let digest = json_of(&out)["digest"].as_str().unwrap().to_string();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(
            layout
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["owner"], "lab");
    assert_eq!(annotations["io.mlambda.weights.format"], "gguf");
    assert_eq!(annotations["io.mlambda.weights.architecture"], "llama");
    assert_eq!(annotations["io.mlambda.weights.context-length"], "256");
    assert_eq!(annotations["io.mlambda.weights.file-type"], "MOSTLY_Q8_0");
    assert_eq!(annotations["io.mlambda.weights.tensors"], "4");

    // Without the contract, the build is refused with the skeleton.
    std::fs::write(model.join("serving.yaml"), "name: tiny\n").unwrap();
    let message = run_fail(
        mlambda(home.path())
            .args(["build", "--base", "scratch", "--output"])
            .arg(format!("oci:{}", layout.display()))
            .arg(&model),
    );
    assert!(message.contains("tiny.gguf"), "{message}");
    assert!(message.contains("contract:\n  infer:"), "{message}");
}

#[test]
fn show_reports_the_weight_facts_of_a_version() {
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let model = work.path().join("sharded");
    common::copy_tree(&own("weights/safetensors_sharded"), &model);
    std::fs::write(model.join("serving.yaml"), CONTRACT).unwrap();
    run_ok(
        mlambda(home.path())
            .args(["upload", "--json", "--base", "scratch"])
            .arg(&model),
    );
    let shown = json_of(&run_ok(
        mlambda(home.path()).args(["show", "tiny:1", "--json"]),
    ));
    let metadata = &shown["metadata"];
    assert_eq!(metadata["io.mlambda.weights.format"], "safetensors");
    assert_eq!(metadata["io.mlambda.weights.tensors"], "3");
    assert_eq!(metadata["io.mlambda.weights.parameters"], "88");
    let text = run_ok(mlambda(home.path()).args(["show", "tiny:1"]));
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("metadata:\n  io.mlambda.weights."), "{text}");
    assert!(
        text.contains("\n  io.mlambda.weights.dtypes: F16:1 F32:2\n"),
        "{text}"
    );
    assert!(
        text.contains("\n  io.mlambda.weights.architecture: LlamaForCausalLM\n"),
        "{text}"
    );
}
