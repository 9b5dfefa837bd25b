//! Keras (`*.keras`, a zip with `config.json` and `metadata.json`; `*.h5`/`*.hdf5`, an HDF5 file
//! whose root group has a `model_config` attribute): one signature `infer`, from the model's
//! config.
//!
//! Inputs: the model's input layers (`InputLayer`), named by layer name, shape from
//! `batch_shape` (Keras 3) or `batch_input_shape` (Keras 2), `None` → -1, dtype from the layer.
//! A Sequential model without an InputLayer is described by its first layer's
//! `batch_input_shape`, or by `build_input_shape`, and named `<first layer>_input` as Keras 2
//! named it. Outputs: the output layers, named by layer name, dtype from the layer's dtype
//! policy. The config does not record output shapes: for the layers with a rule (Dense,
//! shape-preserving layers, Flatten, Reshape, Conv, pooling, merges, Embedding, recurrent
//! layers, RepeatVector, Permute; see `rule`) whose input shape is known (Keras 3 records
//! it in `build_config` or the inbound node; in a Sequential model it follows from the
//! layers above), the shape is computed; otherwise it is left absent (any shape) with a
//! warning.
//! Only `config.json`/`metadata.json` or the root attributes are read, never the weights.

use super::capped::{MAX_METADATA, read_all, too_large, utf8};
use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Field, Shape, Signature, parse_dtype};
use serde_json::{Map, Value};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "keras",
    detect,
    infer: infer_file,
};

const KERAS_FORMAT: &str = "Keras model (.keras zip)";
const H5_FORMAT: &str = "Keras model (HDF5)";
const SIGNATURE: &str = "infer";

fn detect(folder: &Folder) -> Vec<PathBuf> {
    let mut found = folder.with_extension("keras");
    found.extend(folder.with_extension("h5"));
    found.extend(folder.with_extension("hdf5"));
    found.sort();
    found
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let file = super::open_model_file(path)?;
    let is_zip = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("keras"));
    if is_zip {
        infer_keras_reader(file, path)
    } else {
        infer_keras_h5_reader(file, path)
    }
}

/// Infers from a `.keras` zip read from `reader`; `path` names it in messages. Reads only
/// `config.json` and `metadata.json`.
pub fn infer_keras_reader<R: Read + Seek>(reader: R, path: &Path) -> Result<Inferred, InferError> {
    let corrupt = |reason: String| InferError::Corrupt {
        path: path.to_path_buf(),
        format: KERAS_FORMAT,
        reason,
    };
    let mut archive = zip::ZipArchive::new(reader).map_err(|e| corrupt(format!("{e}")))?;
    let mut member = |name: &str| -> Result<Option<Vec<u8>>, InferError> {
        let entry = match archive.by_name(name) {
            Ok(entry) => entry,
            Err(zip::result::ZipError::FileNotFound) => return Ok(None),
            Err(e) => return Err(corrupt(format!("{name}: {e}"))),
        };
        if entry.size() > MAX_METADATA {
            return Err(too_large(&path.join(name), KERAS_FORMAT));
        }
        read_all(entry, &path.join(name), KERAS_FORMAT).map(Some)
    };
    let config = member("config.json")?.ok_or_else(|| {
        corrupt("no config.json in the archive (a Keras 3 .keras file has one)".into())
    })?;
    let metadata = member("metadata.json")?;
    let mut warnings = Vec::new();
    let version = match metadata {
        Some(bytes) => {
            let value: Value = serde_json::from_slice(&bytes)
                .map_err(|e| corrupt(format!("metadata.json is not JSON: {e}")))?;
            value
                .get("keras_version")
                .and_then(Value::as_str)
                .map(str::to_string)
        }
        None => None,
    };
    let config: Value = serde_json::from_slice(&config)
        .map_err(|e| corrupt(format!("config.json is not JSON: {e}")))?;
    let signature = from_config(&config, &mut warnings)
        .map_err(|e| e.into_error(path, KERAS_FORMAT, "config.json"))?;
    Ok(finish(signature, version, path, KERAS_FORMAT, warnings))
}

/// Infers from a Keras HDF5 file read from `reader`; `path` names it in messages. Reads only
/// the root group's attributes.
pub fn infer_keras_h5_reader<R: Read + Seek>(
    reader: R,
    path: &Path,
) -> Result<Inferred, InferError> {
    let corrupt = |reason: String| InferError::Corrupt {
        path: path.to_path_buf(),
        format: H5_FORMAT,
        reason,
    };
    let attributes = super::hdf5::root_attributes(reader).map_err(corrupt)?;
    let get = |name: &str| {
        attributes
            .strings
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    };
    let Some(config) = get("model_config") else {
        let reason = if attributes.dense {
            "its root attributes are in HDF5 dense storage, which mlambda does not read, so \
             the Keras model_config attribute could not be found"
        } else {
            "the HDF5 file has no model_config attribute: it holds weights only \
             (save_weights), or was not written by Keras"
        };
        return Err(InferError::NoContract {
            path: path.to_path_buf(),
            reason: reason.into(),
        });
    };
    let text = utf8(config, path, H5_FORMAT)?;
    let config: Value = serde_json::from_str(text)
        .map_err(|e| corrupt(format!("model_config is not JSON: {e}")))?;
    let version = get("keras_version").map(|v| String::from_utf8_lossy(v).into_owned());
    let mut warnings = Vec::new();
    let signature = from_config(&config, &mut warnings)
        .map_err(|e| e.into_error(path, H5_FORMAT, "model_config"))?;
    Ok(finish(signature, version, path, H5_FORMAT, warnings))
}

fn finish(
    signature: Signature,
    version: Option<String>,
    path: &Path,
    format: &str,
    mut warnings: Vec<String>,
) -> Inferred {
    let model_type = match version.as_deref().and_then(clean_version) {
        Some(version) => format!("keras:{version}"),
        None => {
            warnings.push(
                "the file does not say which Keras version wrote it; model-type is \
                 keras:unknown, set model-type in serving.yaml to choose the runtime"
                    .into(),
            );
            "keras:unknown".into()
        }
    };
    Inferred {
        signatures: vec![signature],
        model_type,
        source: format!("{format} ({})", file_name(path)),
        warnings,
    }
}

/// Why a config gives no contract.
enum ConfigError {
    Malformed(String),
    NoContract(String),
}

impl ConfigError {
    fn into_error(self, path: &Path, format: &'static str, part: &str) -> InferError {
        match self {
            ConfigError::Malformed(reason) => InferError::Corrupt {
                path: path.to_path_buf(),
                format,
                reason: format!("{part}: {reason}"),
            },
            ConfigError::NoContract(reason) => InferError::NoContract {
                path: path.to_path_buf(),
                reason,
            },
        }
    }
}

fn malformed(reason: impl Into<String>) -> ConfigError {
    ConfigError::Malformed(reason.into())
}

fn from_config(config: &Value, warnings: &mut Vec<String>) -> Result<Signature, ConfigError> {
    let class = config
        .get("class_name")
        .and_then(Value::as_str)
        .ok_or_else(|| malformed("no \"class_name\": not a Keras model config"))?;
    let body = config.get("config").unwrap_or(&Value::Null);
    let (mut inputs, mut outputs) = match class {
        "Functional" | "Model" => functional(body, warnings)?,
        "Sequential" => sequential(body, warnings)?,
        other => {
            return Err(ConfigError::NoContract(format!(
                "the Keras model is of class {}, a subclassed model: its config does not \
                 describe its inputs and outputs",
                quote(other)
            )));
        }
    };
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Signature {
        name: SIGNATURE.into(),
        inputs,
        outputs,
    })
}

/// The layers of a model config, as objects.
fn layers(body: &Value) -> Result<Vec<&Map<String, Value>>, ConfigError> {
    // Keras before 2.2.3 wrote a Sequential config as the bare list of layers.
    let list = match body {
        Value::Array(list) => list,
        _ => match body.get("layers") {
            Some(Value::Array(list)) => list,
            _ => return Err(malformed("no \"layers\" list")),
        },
    };
    list.iter()
        .map(|l| {
            l.as_object()
                .ok_or_else(|| malformed("a layer is not an object"))
        })
        .collect()
}

fn layer_name(layer: &Map<String, Value>) -> Option<&str> {
    layer
        .get("name")
        .or_else(|| layer.get("config")?.get("name"))
        .and_then(Value::as_str)
}

fn layer_config(layer: &Map<String, Value>) -> &Value {
    layer.get("config").unwrap_or(&Value::Null)
}

fn functional(
    body: &Value,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Field>, Vec<Field>), ConfigError> {
    let layers = layers(body)?;
    let find = |name: &str| {
        layers
            .iter()
            .copied()
            .find(|l| layer_name(l) == Some(name))
            .ok_or_else(|| malformed(format!("no layer named {}", quote(name))))
    };
    let mut inputs = Vec::new();
    for name in endpoints(body.get("input_layers"))? {
        let layer = find(&name)?;
        let config = layer_config(layer);
        inputs.push(Field::tensor(
            &name,
            dtype(config.get("dtype"), &name, warnings),
            input_shape(config, &name, warnings),
        ));
    }
    let mut outputs: Vec<Field> = Vec::new();
    for name in endpoints(body.get("output_layers"))? {
        let layer = find(&name)?;
        let field_name = if outputs.iter().any(|f| f.name == name) {
            format!("{name}_{}", outputs.len())
        } else {
            name.clone()
        };
        outputs.push(output(
            layer,
            &field_name,
            output_shape(layer, None),
            warnings,
        ));
    }
    if inputs.is_empty() {
        return Err(malformed("no input layers"));
    }
    Ok((inputs, outputs))
}

/// The layer names in `input_layers`/`output_layers`: `[name, node, tensor]` triples, as a
/// list of them, a single one (Keras 3 with one input), or a dict of them (Keras 3 dict inputs).
fn endpoints(value: Option<&Value>) -> Result<Vec<String>, ConfigError> {
    fn walk(value: &Value, out: &mut Vec<String>, depth: usize) -> Result<(), ConfigError> {
        if depth > 16 {
            return Err(malformed("input or output layers nested too deep"));
        }
        match value {
            Value::Array(items) => {
                if let [Value::String(name), node, tensor] = items.as_slice()
                    && node.is_number()
                    && tensor.is_number()
                {
                    out.push(name.clone());
                    return Ok(());
                }
                items.iter().try_for_each(|v| walk(v, out, depth + 1))
            }
            Value::Object(map) => map.values().try_for_each(|v| walk(v, out, depth + 1)),
            _ => Err(malformed(
                "input or output layers are not [name, node, tensor]",
            )),
        }
    }
    let mut out = Vec::new();
    if let Some(value) = value {
        walk(value, &mut out, 0)?;
    }
    Ok(out)
}

fn sequential(
    body: &Value,
    warnings: &mut Vec<String>,
) -> Result<(Vec<Field>, Vec<Field>), ConfigError> {
    let layers = layers(body)?;
    let Some(first) = layers.first() else {
        return Err(ConfigError::NoContract(
            "the Keras Sequential model has no layers".into(),
        ));
    };
    let first_name = layer_name(first).unwrap_or("sequential");
    let config = layer_config(first);
    let is_input = first.get("class_name").and_then(Value::as_str) == Some("InputLayer");
    let input = if is_input {
        Field::tensor(
            first_name,
            dtype(config.get("dtype"), first_name, warnings),
            input_shape(config, first_name, warnings),
        )
    } else {
        let name = format!("{first_name}_input");
        let shape = config
            .get("batch_input_shape")
            .or_else(|| config.get("batch_shape"))
            .or_else(|| body.get("build_input_shape"))
            .filter(|v| !v.is_null());
        let Some(shape) = shape else {
            return Err(ConfigError::NoContract(
                "the Keras Sequential model was saved before it was built: its config has no \
                 input shape (add a keras.Input first, or call the model once before saving)"
                    .into(),
            ));
        };
        Field::tensor(
            &name,
            dtype(config.get("dtype"), &name, warnings),
            Some(shape_of(shape)?),
        )
    };
    let last = layers.last().copied().unwrap_or(first);
    if is_input && layers.len() == 1 {
        // Only an InputLayer: the model returns its input.
        let output = input.clone();
        return Ok((vec![input], vec![output]));
    }
    // Follow the shape down the stack while every layer's rule is known.
    let mut shape = input.shape.clone();
    for layer in layers.iter().skip(usize::from(is_input)) {
        let known = shape.is_some();
        shape = output_shape(layer, shape);
        if known && shape.is_none() {
            // Name the layer that stopped the propagation, so the user knows what to write.
            let class = layer
                .get("class_name")
                .and_then(Value::as_str)
                .unwrap_or("?");
            warnings.push(format!(
                "layer {} ({class}): no shape rule for it, so the shapes after it are unknown",
                quote(layer_name(layer).unwrap_or("?"))
            ));
        }
    }
    let name = layer_name(last).unwrap_or("output").to_string();
    Ok((vec![input], vec![output(last, &name, shape, warnings)]))
}

/// An output layer's field: dtype from its policy, shape when it can be computed.
fn output(
    layer: &Map<String, Value>,
    name: &str,
    shape: Option<Shape>,
    warnings: &mut Vec<String>,
) -> Field {
    let config = layer_config(layer);
    let dtype = dtype(config.get("dtype"), name, warnings);
    if shape.is_none() {
        warnings.push(format!(
            "output '{name}': the Keras config does not record its shape; recorded with any \
             shape (write it in serving.yaml to be exact)"
        ));
    }
    Field::tensor(name, dtype, shape)
}

/// Layers whose output has the shape of their input.
const SAME_SHAPE: &[&str] = &[
    "Activation",
    "Softmax",
    "ReLU",
    "LeakyReLU",
    "PReLU",
    "ELU",
    "Dropout",
    "GaussianNoise",
    "GaussianDropout",
    "BatchNormalization",
    "LayerNormalization",
    "UnitNormalization",
    "Rescaling",
    "Identity",
];

/// The shape a layer was called with, where Keras 3 records it: `build_config`, or the first
/// tensor of its first inbound node.
fn recorded_input_shape(layer: &Map<String, Value>) -> Option<Shape> {
    let built = layer.get("build_config").and_then(|b| b.get("input_shape"));
    let inbound = || {
        let node = layer.get("inbound_nodes")?.get(0)?;
        node.get("args")?.get(0)?.get("config")?.get("shape")
    };
    let shape = built.filter(|v| !v.is_null()).or_else(inbound)?;
    shape_of(shape).ok()
}

/// A layer's output shape, from the shape of its input, for the layers whose rule is known.
/// Any other layer (Lambda, custom layers) gets no shape: better none than a wrong one.
fn output_shape(layer: &Map<String, Value>, input: Option<Shape>) -> Option<Shape> {
    let class = layer.get("class_name")?.as_str()?;
    if MERGE.contains(&class) {
        return merge(class, layer_config(layer), &merge_inputs(layer)?)
            .map(|s| Shape::from_sizes(&s));
    }
    let shape = recorded_input_shape(layer).or(input)?;
    if shape.unknown_rank {
        return None;
    }
    let sizes: Vec<i64> = shape.dims.iter().map(|d| d.size).collect();
    let out = rule(class, layer_config(layer), sizes)?;
    Some(Shape::from_sizes(&out))
}

/// The shape rule of one layer class, on sizes (-1 unknown, the first is the batch).
fn rule(class: &str, config: &Value, mut sizes: Vec<i64>) -> Option<Vec<i64>> {
    match class {
        "Dense" => {
            let units = config.get("units")?.as_i64()?;
            *sizes.last_mut()? = if units > 0 { units } else { -1 };
            Some(sizes)
        }
        c if SAME_SHAPE.contains(&c) => Some(sizes),
        "Flatten" => {
            let batch = *sizes.first()?;
            Some(vec![batch, product(&sizes[1..])])
        }
        "Reshape" => reshape(config, &sizes),
        "Conv1D" | "Conv2D" | "Conv3D" => conv(config, sizes),
        "MaxPooling1D" | "MaxPooling2D" | "MaxPooling3D" | "AveragePooling1D"
        | "AveragePooling2D" | "AveragePooling3D" | "MaxPool1D" | "MaxPool2D" | "MaxPool3D"
        | "AvgPool1D" | "AvgPool2D" | "AvgPool3D" => pool(config, sizes),
        c if c.starts_with("Global") && c.contains("Pool") => global_pool(config, &sizes),
        "LSTM" | "GRU" | "SimpleRNN" => recurrent(config, &sizes),
        "Embedding" => {
            sizes.push(positive(config.get("output_dim"))?);
            Some(sizes)
        }
        "RepeatVector" => {
            let [batch, features] = sizes[..] else {
                return None;
            };
            Some(vec![batch, positive(config.get("n"))?, features])
        }
        "Permute" => permute(config, &sizes),
        _ => None,
    }
}

/// Layers that combine several inputs.
const MERGE: &[&str] = &[
    "Concatenate",
    "Add",
    "Subtract",
    "Multiply",
    "Average",
    "Maximum",
    "Minimum",
];

/// The shapes a merge layer was called with, where Keras 3 records them: the list of
/// tensors that is the first argument of its first inbound node.
fn merge_inputs(layer: &Map<String, Value>) -> Option<Vec<Vec<i64>>> {
    let node = layer.get("inbound_nodes")?.get(0)?;
    let tensors = node.get("args")?.get(0)?.as_array()?;
    tensors
        .iter()
        .map(|t| {
            let shape = shape_of(t.get("config")?.get("shape")?).ok()?;
            Some(shape.dims.iter().map(|d| d.size).collect())
        })
        .collect()
}

/// Concatenate sums the sizes along its axis; the element-wise merges keep a shape all
/// inputs share (broadcasting between different shapes is left unknown).
fn merge(class: &str, config: &Value, inputs: &[Vec<i64>]) -> Option<Vec<i64>> {
    let first = inputs.first()?;
    if inputs.iter().any(|s| s.len() != first.len()) {
        return None;
    }
    if class != "Concatenate" {
        return inputs.iter().all(|s| s == first).then(|| first.clone());
    }
    let rank = i64::try_from(first.len()).ok()?;
    let axis = config.get("axis").and_then(Value::as_i64).unwrap_or(-1);
    let axis = usize::try_from(if axis < 0 { axis + rank } else { axis }).ok()?;
    if axis == 0 || axis >= first.len() {
        return None;
    }
    let mut out = first.clone();
    let sizes: Vec<i64> = inputs.iter().map(|s| s[axis]).collect();
    out[axis] = if sizes.iter().any(|&s| s < 0) {
        -1
    } else {
        sizes.iter().try_fold(0i64, |a, &s| a.checked_add(s))?
    };
    Some(out)
}

/// A positive int in a layer config.
fn positive(value: Option<&Value>) -> Option<i64> {
    value?.as_i64().filter(|&n| n > 0)
}

/// LSTM/GRU/SimpleRNN on `[batch, time, features]`: the last step, or every step with
/// `return_sequences`. With `return_state` the layer returns a list: no single shape.
fn recurrent(config: &Value, sizes: &[i64]) -> Option<Vec<i64>> {
    let [batch, time, _] = sizes[..] else {
        return None;
    };
    if config.get("return_state").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let units = positive(config.get("units"))?;
    if config.get("return_sequences").and_then(Value::as_bool) == Some(true) {
        Some(vec![batch, time, units])
    } else {
        Some(vec![batch, units])
    }
}

/// Permute: `dims` are 1-based positions of the input's non-batch sizes.
fn permute(config: &Value, sizes: &[i64]) -> Option<Vec<i64>> {
    let dims = config.get("dims")?.as_array()?;
    if dims.len() + 1 != sizes.len() {
        return None;
    }
    let mut out = vec![sizes[0]];
    for d in dims {
        let d = usize::try_from(d.as_u64()?).ok()?;
        out.push(*sizes.get(d).filter(|_| d > 0)?);
    }
    Some(out)
}

/// The product of sizes, -1 if any is unknown (or it overflows: a hostile config).
fn product(sizes: &[i64]) -> i64 {
    sizes
        .iter()
        .try_fold(
            1i64,
            |acc, &s| if s < 0 { None } else { acc.checked_mul(s) },
        )
        .unwrap_or(-1)
}

/// Reshape: the target shape (without the batch), with its one -1 worked out when it can be.
fn reshape(config: &Value, sizes: &[i64]) -> Option<Vec<i64>> {
    let target = config
        .get("target_shape")?
        .as_array()?
        .iter()
        .map(|v| v.as_i64().map(|s| if s > 0 { s } else { -1 }))
        .collect::<Option<Vec<i64>>>()?;
    let mut out = vec![*sizes.first()?];
    let total = product(&sizes[1..]);
    let known = product(
        &target
            .iter()
            .copied()
            .filter(|&s| s > 0)
            .collect::<Vec<_>>(),
    );
    let missing = target.iter().filter(|&&s| s < 0).count();
    for &s in &target {
        out.push(if s > 0 {
            s
        } else if missing == 1 && total > 0 && known > 0 && total % known == 0 {
            total / known
        } else {
            -1
        });
    }
    Some(out)
}

/// An int or a list of ints in a layer config (`kernel_size`, `strides`, ...), as `rank` ints.
fn ints(value: Option<&Value>, rank: usize) -> Option<Vec<i64>> {
    let out = match value? {
        Value::Array(list) => list.iter().map(Value::as_i64).collect::<Option<Vec<_>>>()?,
        v => vec![v.as_i64()?; rank],
    };
    (out.len() == rank && out.iter().all(|&s| s > 0)).then_some(out)
}

/// Whether the channels come first (`channels_first`); Keras' default is channels last.
fn channels_first(config: &Value) -> bool {
    config.get("data_format").and_then(Value::as_str) == Some("channels_first")
}

/// The spatial sizes' positions: after the batch, before or after the channels.
fn spatial(config: &Value, len: usize) -> Option<std::ops::Range<usize>> {
    let rank = len.checked_sub(2).filter(|&r| r > 0)?;
    Some(if channels_first(config) {
        2..2 + rank
    } else {
        1..1 + rank
    })
}

/// One spatial size through a window: `valid` keeps whole windows, `same`/`causal` pad to
/// ceil(size / stride), as Keras' conv_output_length does.
fn window(size: i64, kernel: i64, stride: i64, dilation: i64, padding: &str) -> Option<i64> {
    if size < 0 {
        return Some(-1);
    }
    let span = dilation.checked_mul(kernel - 1)?.checked_add(1)?;
    match padding {
        "valid" => Some(if size >= span {
            (size - span) / stride + 1
        } else {
            0
        }),
        "same" | "causal" => Some((size + stride - 1) / stride),
        _ => None,
    }
}

fn conv(config: &Value, mut sizes: Vec<i64>) -> Option<Vec<i64>> {
    let range = spatial(config, sizes.len())?;
    let rank = range.len();
    let kernel = ints(config.get("kernel_size"), rank)?;
    let strides = ints(config.get("strides").or(Some(&Value::from(1))), rank)?;
    let dilation = ints(config.get("dilation_rate").or(Some(&Value::from(1))), rank)?;
    let padding = config
        .get("padding")
        .and_then(Value::as_str)
        .unwrap_or("valid");
    let filters = config.get("filters")?.as_i64().filter(|&f| f > 0)?;
    for (i, pos) in range.enumerate() {
        sizes[pos] = window(sizes[pos], kernel[i], strides[i], dilation[i], padding)?;
    }
    let channels = if channels_first(config) {
        1
    } else {
        sizes.len() - 1
    };
    sizes[channels] = filters;
    Some(sizes)
}

fn pool(config: &Value, mut sizes: Vec<i64>) -> Option<Vec<i64>> {
    let range = spatial(config, sizes.len())?;
    let rank = range.len();
    let pool_size = ints(config.get("pool_size"), rank)?;
    // `strides: null` means strides of the pool size.
    let strides = match config.get("strides") {
        None | Some(Value::Null) => pool_size.clone(),
        v => ints(v, rank)?,
    };
    let padding = config
        .get("padding")
        .and_then(Value::as_str)
        .unwrap_or("valid");
    for (i, pos) in range.enumerate() {
        sizes[pos] = window(sizes[pos], pool_size[i], strides[i], 1, padding)?;
    }
    Some(sizes)
}

/// Global pooling: `[batch, channels]`, or with `keepdims` every spatial size becomes 1.
fn global_pool(config: &Value, sizes: &[i64]) -> Option<Vec<i64>> {
    let range = spatial(config, sizes.len())?;
    if config.get("keepdims").and_then(Value::as_bool) == Some(true) {
        let mut out = sizes.to_vec();
        range.for_each(|pos| out[pos] = 1);
        return Some(out);
    }
    let channels = if channels_first(config) {
        1
    } else {
        sizes.len() - 1
    };
    Some(vec![sizes[0], sizes[channels]])
}

/// An input layer's shape: `batch_shape` (Keras 3) or `batch_input_shape` (Keras 2).
fn input_shape(config: &Value, name: &str, warnings: &mut Vec<String>) -> Option<Shape> {
    let shape = config
        .get("batch_shape")
        .or_else(|| config.get("batch_input_shape"))
        .filter(|v| !v.is_null());
    match shape.map(shape_of) {
        Some(Ok(shape)) => Some(shape),
        _ => {
            warnings.push(format!(
                "input '{name}': the Keras config has no usable batch shape; recorded with any \
                 shape"
            ));
            None
        }
    }
}

fn shape_of(value: &Value) -> Result<Shape, ConfigError> {
    let Value::Array(dims) = value else {
        return Err(malformed(format!("shape {value} is not a list")));
    };
    let sizes = dims
        .iter()
        .map(|d| match d {
            Value::Null => Ok(-1),
            d => d
                .as_i64()
                .map(|s| if s > 0 { s } else { -1 })
                .ok_or_else(|| malformed(format!("dimension {d} is not a number or null"))),
        })
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(Shape::from_sizes(&sizes))
}

/// A layer's dtype: a name (`"float32"`), or a Keras 3 DTypePolicy (`{"config": {"name":
/// "mixed_float16"}}`), whose computations (and so outputs) use the second half of the name.
fn dtype(value: Option<&Value>, name: &str, warnings: &mut Vec<String>) -> DataType {
    let policy = match value {
        None | Some(Value::Null) => return DataType::DtFloat, // Keras' default floatx
        Some(Value::String(s)) => s.as_str(),
        Some(v) => v
            .get("config")
            .and_then(|c| c.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default(),
    };
    let compute = policy.strip_prefix("mixed_").unwrap_or(policy);
    match parse_dtype(compute) {
        Some(dtype) if !matches!(dtype, DataType::DtResource | DataType::DtVariant) => dtype,
        _ => {
            warnings.push(format!(
                "'{name}': Keras dtype {} is not known; recorded as DT_INVALID",
                quote(policy)
            ));
            DataType::DtInvalid
        }
    }
}
