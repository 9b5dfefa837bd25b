//! Facts about weight files that are not a serving contract: safetensors (one file, or shards
//! listed by `model.safetensors.index.json`) and GGUF.
//!
//! They say what tensors a model has, not what it takes and returns, so no signature is
//! invented from them (`nometa` refuses them with a skeleton when no contract is given). What
//! they do say — tensor count, dtypes, parameter count, architecture, context length,
//! quantization, the last three from transformers' `config.json` beside safetensors weights —
//! becomes the version's metadata (`io.mlambda.weights.*` keys), which the
//! image carries as annotations, whatever the contract came from.

use super::{Folder, InferError, gguf, safetensors};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

pub(crate) const INDEX: &str = "model.safetensors.index.json";
/// What transformers' `save_pretrained` writes beside safetensors weights.
const CONFIG: &str = "config.json";
const PREFIX: &str = "io.mlambda.weights";

/// The facts of the weight files at the top of `dir`, as metadata keys; empty when there are
/// none. A damaged header is an error naming the file.
pub fn weight_facts(dir: &Path) -> Result<BTreeMap<String, String>, InferError> {
    let folder = Folder::read(dir)?;
    let mut facts = BTreeMap::new();
    let mut put = |key: &str, value: String| {
        facts.insert(format!("{PREFIX}.{key}"), value);
    };
    let safetensors = folder.with_extension("safetensors");
    let ggufs = folder.with_extension("gguf");
    let mut formats = Vec::new();
    let mut files = Vec::new();
    let mut tensors = 0u64;
    let mut parameters = 0u64;
    let mut dtypes: BTreeMap<String, u64> = BTreeMap::new();
    if !safetensors.is_empty() {
        formats.push("safetensors");
        if folder.has(INDEX) {
            check_index(&folder.dir.join(INDEX), &folder)?;
        }
        for path in &safetensors {
            let header = safetensors::read_header(path)?;
            files.push(super::file_name(path));
            tensors += header.tensors;
            parameters = parameters.saturating_add(header.parameters);
            for (dtype, n) in header.dtypes {
                *dtypes.entry(dtype).or_default() += n;
            }
        }
    }
    let mut ggufs_read = Vec::new();
    for path in &ggufs {
        let header = gguf::read_header(path)?;
        files.push(super::file_name(path));
        tensors += header.tensors;
        parameters = parameters.saturating_add(header.parameters);
        for (dtype, n) in &header.tensor_types {
            *dtypes.entry(dtype.clone()).or_default() += n;
        }
        ggufs_read.push(header);
    }
    if !ggufs.is_empty() {
        formats.push("gguf");
    }
    if formats.is_empty() {
        return Ok(facts);
    }
    put("format", formats.join(" "));
    put("files", files.join(" "));
    put("tensors", tensors.to_string());
    put("parameters", parameters.to_string());
    put("dtypes", counts(&dtypes));
    if !safetensors.is_empty() && folder.has(CONFIG) {
        for (key, value) in transformers_config(&folder.dir.join(CONFIG)) {
            put(key, value);
        }
    }
    // Several GGUF files are shards of one model (or alternatives): the first one speaks.
    if let Some(header) = ggufs_read.first() {
        put("gguf.version", header.version.to_string());
        let text = |value: &Option<String>| value.as_deref().map(clean);
        if let Some(arch) = text(&header.architecture) {
            put("architecture", arch);
        }
        if let Some(name) = text(&header.name) {
            put("name", name);
        }
        if let Some(n) = header.context_length {
            put("context-length", n.to_string());
        }
        if let Some(file_type) = &header.file_type {
            put("file-type", file_type.clone());
        }
        if let Some(n) = header.vocabulary {
            put("vocabulary", n.to_string());
        }
    }
    Ok(facts)
}

/// What a transformers `config.json` says that the safetensors header does not: the model
/// class, context length, vocabulary and quantization method. Only a file with transformers'
/// `model_type` key counts; any other `config.json` (or an unreadable one) is not this
/// format's and gives nothing, as the weights' facts do not depend on it.
fn transformers_config(path: &Path) -> Vec<(&'static str, String)> {
    let Ok(bytes) = super::capped::read_file(path, "config.json") else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(config)) = serde_json::from_slice(&bytes) else {
        return Vec::new();
    };
    let Some(model_type) = config.get("model_type").and_then(|v| v.as_str()) else {
        return Vec::new();
    };
    let mut facts = Vec::new();
    let architecture = config
        .get("architectures")
        .and_then(|a| a.get(0))
        .and_then(|a| a.as_str())
        .unwrap_or(model_type);
    facts.push(("architecture", clean(architecture)));
    // The names differ by model family; the first present is the one the family uses.
    let context = [
        "max_position_embeddings",
        "n_positions",
        "max_sequence_length",
        "seq_length",
    ]
    .iter()
    .find_map(|key| config.get(*key).and_then(|v| v.as_u64()));
    if let Some(n) = context {
        facts.push(("context-length", n.to_string()));
    }
    if let Some(n) = config.get("vocab_size").and_then(|v| v.as_u64()) {
        facts.push(("vocabulary", n.to_string()));
    }
    let quantization = config
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(|m| m.as_str());
    if let Some(method) = quantization {
        facts.push(("quantization", clean(method)));
    }
    facts
}

/// One line for the user: "safetensors: 3 tensors, 1,234 parameters (F32:3)".
pub fn summary(facts: &BTreeMap<String, String>) -> Option<String> {
    let get = |key: &str| facts.get(&format!("{PREFIX}.{key}"));
    let mut line = format!(
        "{} weights ({}): {} tensors, {} parameters, dtypes {}",
        get("format")?,
        get("files")?,
        get("tensors")?,
        get("parameters")?,
        get("dtypes")?
    );
    for (key, label) in [
        ("architecture", "architecture"),
        ("context-length", "context length"),
        ("file-type", "file type"),
        ("quantization", "quantization"),
    ] {
        if let Some(value) = get(key) {
            let _ = write!(line, ", {label} {value}");
        }
    }
    Some(line)
}

/// "F16:2 F32:5".
fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, n)| format!("{}:{n}", clean(k)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Text from a file made fit for an annotation value: printable, one line, short.
fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(200).collect()
}

/// The index of a sharded checkpoint must name only shards that are in the folder.
fn check_index(path: &Path, folder: &Folder) -> Result<(), InferError> {
    let corrupt = |reason: String| InferError::CorruptWeights {
        path: path.to_path_buf(),
        format: "safetensors index",
        reason,
    };
    let bytes = super::capped::read_file(path, "safetensors index")?;
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("not JSON: {e}")))?;
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| corrupt("no \"weight_map\" object".into()))?;
    let mut shards: Vec<&str> = Vec::new();
    for (tensor, shard) in map {
        let shard = shard.as_str().ok_or_else(|| {
            corrupt(format!(
                "the shard of tensor {} is not a string",
                super::quote(tensor)
            ))
        })?;
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    for shard in shards {
        if !folder.has(shard) {
            return Err(corrupt(format!(
                "it names the shard {}, which is not in the folder; add the shard or remove \
                 the index",
                super::quote(shard)
            )));
        }
    }
    Ok(())
}

/// The file a refusal names: the index of a sharded checkpoint, else the first weight file.
pub(crate) fn representative(folder: &Folder, ext: &str) -> Vec<PathBuf> {
    let files = folder.with_extension(ext);
    if ext == "safetensors" && folder.has(INDEX) {
        return vec![folder.dir.join(INDEX)];
    }
    files.into_iter().take(1).collect()
}
