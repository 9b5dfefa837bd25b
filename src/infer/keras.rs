//! Keras (`*.keras`, a zip with `config.json` and `metadata.json`; `*.h5`/`*.hdf5`, an HDF5 file
//! whose root group has a `model_config` attribute): one signature `infer`, from the model's
//! config.
//!
//! Inputs: the model's input layers (`InputLayer`), named by layer name, shape from
//! `batch_shape` (Keras 3) or `batch_input_shape` (Keras 2), `None` → -1, dtype from the layer.
//! A Sequential model without an InputLayer is described by its first layer's
//! `batch_input_shape`, or by `build_input_shape`, and named `<first layer>_input` as Keras 2
//! named it. Outputs: the output layers, named by layer name, dtype from the layer's dtype
//! policy. The config does not record output shapes: they are propagated from the inputs,
//! down a Sequential model's stack, or along a functional model's graph (each layer's
//! `inbound_nodes`: Keras 3 `args` tensors, or Keras 1/2 `[layer, node, tensor, kwargs]`
//! lists; a node's position is the node index others name, so a shared layer's calls differ),
//! through the layers with a rule (Dense, shape-preserving layers, Flatten, Reshape, Conv,
//! pooling, merges, Embedding, recurrent layers with their states, Bidirectional,
//! TimeDistributed, RepeatVector, Permute, and models used as layers; see `call` and `rule`).
//! Where Keras 3 recorded a shape (`build_config`, its inbound tensors) the top-level model
//! takes it. After a layer without a rule (Lambda, custom layers) the shapes are unknown: the
//! output is left absent (any shape), with a warning naming the layer.
//! Only `config.json`/`metadata.json` or the root attributes are read, never the weights.

use super::capped::{MAX_METADATA, read_all, too_large, utf8};
use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Field, Shape, Signature, parse_dtype};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
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
    let mut propagation = Propagation::new(warnings);
    let (mut inputs, mut outputs) = match class {
        "Functional" | "Model" => functional(body, &mut propagation)?,
        "Sequential" => sequential(body, &mut propagation)?,
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

fn layer_class(layer: &Map<String, Value>) -> &str {
    layer
        .get("class_name")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

fn layer_config(layer: &Map<String, Value>) -> &Value {
    layer.get("config").unwrap_or(&Value::Null)
}

fn functional(
    body: &Value,
    propagation: &mut Propagation,
) -> Result<(Vec<Field>, Vec<Field>), ConfigError> {
    let layers = layers(body)?;
    let mut inputs = Vec::new();
    for (name, _, _) in endpoints(body.get("input_layers"))? {
        let layer = layers
            .iter()
            .find(|l| layer_name(l) == Some(name.as_str()))
            .ok_or_else(|| malformed(format!("no layer named {}", quote(&name))))?;
        let config = layer_config(layer);
        let warnings = &mut *propagation.warnings;
        inputs.push(Field::tensor(
            &name,
            dtype(config.get("dtype"), &name, warnings),
            input_shape(config, &name, warnings),
        ));
    }
    if inputs.is_empty() {
        return Err(malformed("no input layers"));
    }
    let mut outputs: Vec<Field> = Vec::new();
    for (name, layer, shape) in graph(body, None, propagation)? {
        let field_name = if outputs.iter().any(|f| f.name == name) {
            format!("{name}_{}", outputs.len())
        } else {
            name
        };
        let shape = shape.map(|s| Shape::from_sizes(&s));
        outputs.push(output(layer, &field_name, shape, propagation.warnings));
    }
    Ok((inputs, outputs))
}

/// A `[name, node, tensor]` triple of `input_layers`/`output_layers`; a node or tensor index
/// that is not a non-negative int becomes `usize::MAX`, which names nothing.
type Endpoint = (String, usize, usize);

fn position(value: &Value) -> usize {
    value
        .as_u64()
        .and_then(|i| usize::try_from(i).ok())
        .unwrap_or(usize::MAX)
}

/// The entries of `input_layers`/`output_layers`: `[name, node, tensor]` triples, as a list of
/// them, a single one (Keras 3 with one input), or a dict of them (Keras 3 dict inputs).
fn endpoints(value: Option<&Value>) -> Result<Vec<Endpoint>, ConfigError> {
    fn walk(value: &Value, out: &mut Vec<Endpoint>, depth: usize) -> Result<(), ConfigError> {
        if depth > 16 {
            return Err(malformed("input or output layers nested too deep"));
        }
        match value {
            Value::Array(items) => {
                if let [Value::String(name), node, tensor] = items.as_slice()
                    && node.is_number()
                    && tensor.is_number()
                {
                    out.push((name.clone(), position(node), position(tensor)));
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
    propagation: &mut Propagation,
) -> Result<(Vec<Field>, Vec<Field>), ConfigError> {
    let layers = layers(body)?;
    let Some(first) = layers.first() else {
        return Err(ConfigError::NoContract(
            "the Keras Sequential model has no layers".into(),
        ));
    };
    let warnings = &mut *propagation.warnings;
    let first_name = layer_name(first).unwrap_or("sequential");
    let config = layer_config(first);
    let is_input = layer_class(first) == "InputLayer";
    let input = if is_input {
        Field::tensor(
            first_name,
            dtype(config.get("dtype"), first_name, warnings),
            input_shape(config, first_name, warnings),
        )
    } else {
        let name = format!("{first_name}_input");
        let Some(shape) = sequential_input(body, first) else {
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
    let sizes = input.shape.as_ref().and_then(sizes_of_shape);
    let shape = stack(&layers[usize::from(is_input)..], sizes, propagation);
    let name = layer_name(last).unwrap_or("output").to_string();
    let shape = shape.map(|s| Shape::from_sizes(&s));
    let output = output(last, &name, shape, propagation.warnings);
    Ok((vec![input], vec![output]))
}

/// The input shape of a Sequential model without an InputLayer: its first layer's
/// `batch_input_shape` (Keras 2), or the model's `build_input_shape`.
fn sequential_input<'a>(body: &'a Value, first: &'a Map<String, Value>) -> Option<&'a Value> {
    let config = layer_config(first);
    config
        .get("batch_input_shape")
        .or_else(|| config.get("batch_shape"))
        .or_else(|| body.get("build_input_shape"))
        .filter(|v| !v.is_null())
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

// ---------------------------------------------------------------------------------------------
// Shape propagation

/// A tensor's sizes, the first the batch; -1 for an unknown size.
type Sizes = Vec<i64>;

/// What one call of a layer returns: one entry per output tensor, `None` where unknown.
type Outputs = Vec<Option<Sizes>>;

/// Models and wrappers nested deeper than this give no shape.
const MAX_DEPTH: usize = 32;

/// Steps (layer calls, nodes read) taken for one config, at most: a model called many times
/// inside a model called many times, and so on, must not take exponential time.
const MAX_WORK: usize = 200_000;

/// The state of one config's shape propagation.
struct Propagation<'w> {
    warnings: &'w mut Vec<String>,
    /// The layers already named in a warning.
    warned: HashSet<String>,
    /// The names of the nested models and wrappers being worked through, outermost first.
    path: Vec<String>,
    work: usize,
}

impl<'w> Propagation<'w> {
    fn new(warnings: &'w mut Vec<String>) -> Self {
        Propagation {
            warnings,
            warned: HashSet::new(),
            path: Vec::new(),
            work: 0,
        }
    }

    /// Counts `work` steps (layer calls, nodes read) against [`MAX_WORK`]; false, with a
    /// warning the first time, once it is spent.
    fn spend(&mut self, work: usize) -> bool {
        let spent = self.work > MAX_WORK;
        self.work = self.work.saturating_add(work);
        if !spent && self.work > MAX_WORK {
            self.warnings.push(format!(
                "the Keras config takes more than {MAX_WORK} steps to follow (nested models \
                 called many times); the shapes past that are unknown"
            ));
        }
        self.work <= MAX_WORK
    }

    /// Keras records the shapes a model was built with (`build_config`, the shapes in Keras
    /// 3's inbound nodes): they are its own answer for the model as saved, but not for a
    /// nested model called on other shapes, where the rules decide.
    fn trust_recorded(&self) -> bool {
        self.path.is_empty()
    }

    /// Warns, once per layer, that a layer's output shape is unknown.
    fn no_rule(&mut self, layer: &Map<String, Value>, why: &str) {
        let mut name = self.path.join("/");
        if !name.is_empty() {
            name.push('/');
        }
        name.push_str(layer_name(layer).unwrap_or("?"));
        if self.warned.contains(&name) {
            return;
        }
        self.warnings.push(format!(
            "layer {} ({}): {why}, so the shapes after it are unknown",
            quote(&name),
            layer_class(layer)
        ));
        self.warned.insert(name);
    }

    /// Runs `f` inside the nested model or wrapper `layer`, or gives up past [`MAX_DEPTH`].
    fn inside<T>(
        &mut self,
        layer: &Map<String, Value>,
        unknown: T,
        f: impl FnOnce(&mut Self) -> T,
    ) -> T {
        if self.path.len() >= MAX_DEPTH {
            self.no_rule(layer, "nested too deep");
            return unknown;
        }
        self.path.push(layer_name(layer).unwrap_or("?").to_string());
        let out = f(self);
        self.path.pop();
        out
    }
}

fn sizes_of_shape(shape: &Shape) -> Option<Sizes> {
    (!shape.unknown_rank).then(|| shape.dims.iter().map(|d| d.size).collect())
}

fn sizes_of(value: &Value) -> Option<Sizes> {
    sizes_of_shape(&shape_of(value).ok()?)
}

/// The batch shape an InputLayer declares.
fn declared_shape(config: &Value) -> Option<Sizes> {
    config
        .get("batch_shape")
        .or_else(|| config.get("batch_input_shape"))
        .and_then(sizes_of)
}

/// The input shape recorded in a layer's `build_config` (Keras 3, and tf.keras 2.13+ in a
/// nested model).
fn built_shape(layer: &Map<String, Value>) -> Option<Sizes> {
    sizes_of(layer.get("build_config")?.get("input_shape")?)
}

/// A Sequential stack: each layer called on what the layer above returned.
fn stack(
    layers: &[&Map<String, Value>],
    input: Option<Sizes>,
    p: &mut Propagation,
) -> Option<Sizes> {
    if !p.spend(layers.len()) {
        return None;
    }
    let mut shape = input;
    for layer in layers {
        let built = built_shape(layer);
        let input = if p.trust_recorded() {
            built.or(shape)
        } else {
            shape.or(built)
        };
        shape = match call(layer, &[input], p).as_mut_slice() {
            [one] => one.take(),
            _ => None,
        };
    }
    shape
}

/// One tensor a layer call takes: the layer, node and tensor that made it (when they are a
/// layer of this graph), and the shape Keras 3 recorded for it.
struct Ref {
    producer: Option<(usize, usize)>,
    tensor: usize,
    recorded: Option<Sizes>,
}

/// The tensors of a layer call's first argument, in order. A Keras 3 node is `{"args":
/// [first, ...], "kwargs": {...}}` with `__keras_tensor__` objects, which carry
/// `keras_history` `[layer, node, tensor]` and the shape; a Keras 1/2 node is a nested list
/// whose leaves are `[layer, node, tensor, kwargs]`.
fn node_refs(node: &Value, names: &HashMap<&str, usize>) -> Vec<Ref> {
    fn leaf(name: &Value, node: &Value, tensor: &Value, names: &HashMap<&str, usize>) -> Ref {
        let layer = name.as_str().and_then(|n| names.get(n)).copied();
        Ref {
            producer: layer.map(|l| (l, position(node))),
            tensor: position(tensor),
            recorded: None,
        }
    }
    fn walk(value: &Value, names: &HashMap<&str, usize>, out: &mut Vec<Ref>, depth: usize) {
        if depth > 16 {
            return;
        }
        match value {
            Value::Object(map)
                if map.get("class_name").and_then(Value::as_str) == Some("__keras_tensor__") =>
            {
                let config = map.get("config").unwrap_or(&Value::Null);
                let history = config.get("keras_history").and_then(Value::as_array);
                let mut r = match history.map(Vec::as_slice) {
                    Some([name, node, tensor, ..]) => leaf(name, node, tensor, names),
                    _ => Ref {
                        producer: None,
                        tensor: 0,
                        recorded: None,
                    },
                };
                r.recorded = config.get("shape").and_then(sizes_of);
                out.push(r);
            }
            Value::Array(items) => match items.as_slice() {
                [name @ Value::String(_), node, tensor, rest @ ..]
                    if node.is_number() && tensor.is_number() && rest.len() <= 1 =>
                {
                    out.push(leaf(name, node, tensor, names));
                }
                _ => items.iter().for_each(|v| walk(v, names, out, depth + 1)),
            },
            Value::Object(map) => map.values().for_each(|v| walk(v, names, out, depth + 1)),
            _ => {}
        }
    }
    let first = match node {
        Value::Object(map) if map.contains_key("args") => match map.get("args") {
            Some(Value::Array(args)) => args.first(),
            _ => None,
        },
        other => Some(other),
    };
    let mut out = Vec::new();
    if let Some(first) = first {
        walk(first, names, &mut out, 0);
    }
    out
}

/// An output of a functional model: the layer name, the layer, the shape.
type GraphOutput<'a> = (String, &'a Map<String, Value>, Option<Sizes>);

/// A functional model's outputs, `(layer name, layer, shape)` in the order of
/// `output_layers`, found by following its graph from its inputs (their declared shapes, or
/// `given`, the shapes a nested model is called with) through each layer's inbound nodes.
/// A node's position in its layer's `inbound_nodes` is the node index that other layers
/// name, so a shared layer's calls are told apart.
fn graph<'a>(
    body: &'a Value,
    given: Option<&[Option<Sizes>]>,
    p: &mut Propagation,
) -> Result<Vec<GraphOutput<'a>>, ConfigError> {
    let layers = layers(body)?;
    let mut names: HashMap<&str, usize> = HashMap::new();
    for (i, layer) in layers.iter().enumerate() {
        if let Some(name) = layer_name(layer) {
            names.entry(name).or_insert(i);
        }
    }
    let find = |name: &str| {
        names
            .get(name)
            .copied()
            .ok_or_else(|| malformed(format!("no layer named {}", quote(name))))
    };
    let mut results: HashMap<(usize, usize), Outputs> = HashMap::new();
    let inputs = endpoints(body.get("input_layers"))?;
    let given = given.filter(|g| g.len() == inputs.len());
    for (i, (name, _, _)) in inputs.iter().enumerate() {
        let layer = find(name)?;
        let declared = declared_shape(layer_config(layers[layer]));
        let shape = given.and_then(|g| g[i].clone()).or(declared);
        results.insert((layer, 0), vec![shape]);
    }
    // Every call of every layer, with the calls it waits for.
    struct Call {
        layer: usize,
        node: usize,
        refs: Vec<Ref>,
        waiting: usize,
    }
    let mut calls = Vec::new();
    for (l, layer) in layers.iter().enumerate() {
        if layer_class(layer) == "InputLayer" {
            results
                .entry((l, 0))
                .or_insert_with(|| vec![declared_shape(layer_config(layer))]);
            continue;
        }
        let Some(Value::Array(nodes)) = layer.get("inbound_nodes") else {
            continue;
        };
        for (n, node) in nodes.iter().enumerate() {
            calls.push(Call {
                layer: l,
                node: n,
                refs: node_refs(node, &names),
                waiting: 0,
            });
        }
    }
    let outputs = endpoints(body.get("output_layers"))?;
    // Keras 1/2 number a nested model's calls from 1 where the model has a node of its own
    // (linking its inputs to its outputs, never saved): those whose first layer is an
    // InputLayer (tf.keras), or every nested model (Keras 2.2), which shows as a reference
    // one past its saved calls. Keras 3 numbers the saved calls only.
    let mut last_named: HashMap<usize, usize> = HashMap::new();
    let named = calls
        .iter()
        .flat_map(|c| &c.refs)
        .filter_map(|r| r.producer);
    let named_out = outputs
        .iter()
        .filter_map(|(name, node, _)| Some((*names.get(name.as_str())?, *node)));
    for (producer, node) in named.chain(named_out) {
        let last = last_named.entry(producer).or_insert(node);
        *last = (*last).max(node);
    }
    let mut skips_first = HashSet::new();
    for (l, layer) in layers.iter().enumerate() {
        let config = layer_config(layer);
        let Some(Value::Array(nodes)) = layer.get("inbound_nodes") else {
            continue;
        };
        let keras_2 = nodes.first().is_some_and(Value::is_array);
        if !keras_2
            || !matches!(layer_class(layer), "Sequential" | "Functional" | "Model")
            || config.get("layers").is_none()
        {
            continue;
        }
        let starts_with_input = self::layers(config)
            .ok()
            .and_then(|inner| inner.first().map(|f| layer_class(f) == "InputLayer"))
            .unwrap_or(false);
        let past_the_end = last_named.get(&l).is_some_and(|&node| node >= nodes.len());
        if starts_with_input || past_the_end {
            skips_first.insert(l);
        }
    }
    for call in &mut calls {
        if skips_first.contains(&call.layer) {
            call.node += 1;
        }
    }
    if !p.spend(layers.len() + calls.len()) {
        return outputs
            .into_iter()
            .map(|(name, _, _)| Ok((name.clone(), layers[find(&name)?], None)))
            .collect();
    }
    let is_call: HashSet<(usize, usize)> = calls.iter().map(|c| (c.layer, c.node)).collect();
    let mut consumers: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    let mut ready = VecDeque::new();
    for (c, call) in calls.iter_mut().enumerate() {
        for producer in call.refs.iter().filter_map(|r| r.producer) {
            if is_call.contains(&producer) && !results.contains_key(&producer) {
                call.waiting += 1;
                consumers.entry(producer).or_default().push(c);
            }
        }
        if call.waiting == 0 {
            ready.push_back(c);
        }
    }
    // In the order the graph allows; calls in a cycle are never ready, and stay unknown.
    while let Some(c) = ready.pop_front() {
        let call_inputs: Vec<Option<Sizes>> = calls[c]
            .refs
            .iter()
            .map(|r| {
                let propagated = r
                    .producer
                    .and_then(|key| results.get(&key))
                    .and_then(|outputs| outputs.get(r.tensor).cloned().flatten());
                if p.trust_recorded() {
                    r.recorded.clone().or(propagated)
                } else {
                    propagated.or_else(|| r.recorded.clone())
                }
            })
            .collect();
        let key = (calls[c].layer, calls[c].node);
        let outputs = call(layers[key.0], &call_inputs, p);
        results.insert(key, outputs);
        for consumer in consumers.remove(&key).unwrap_or_default() {
            calls[consumer].waiting -= 1;
            if calls[consumer].waiting == 0 {
                ready.push_back(consumer);
            }
        }
    }
    outputs
        .into_iter()
        .map(|(name, node, tensor)| {
            let layer = find(&name)?;
            let shape = results
                .get(&(layer, node))
                .and_then(|outputs| outputs.get(tensor).cloned().flatten());
            Ok((name, layers[layer], shape))
        })
        .collect()
}

/// The outputs of one call of `layer` on `inputs` (the tensors of its first argument).
fn call(layer: &Map<String, Value>, inputs: &[Option<Sizes>], p: &mut Propagation) -> Outputs {
    if !p.spend(1) {
        return vec![None];
    }
    let class = layer_class(layer);
    let config = layer_config(layer);
    let known: Option<Vec<&Sizes>> = inputs.iter().map(Option::as_ref).collect();
    let known = known.filter(|k| !k.is_empty());
    if MERGE.contains(&class) {
        let Some(known) = known else {
            return vec![None];
        };
        let shapes: Vec<Sizes> = known.into_iter().cloned().collect();
        let out = merge(class, config, &shapes);
        if out.is_none() {
            p.no_rule(layer, "its inputs' shapes do not give one shape");
        }
        return vec![out];
    }
    if matches!(class, "Sequential" | "Functional" | "Model") && config.get("layers").is_some() {
        return p.inside(layer, vec![None], |p| nested(class, config, inputs, p));
    }
    let Some(known) = known else {
        return vec![None];
    };
    let [sizes] = known.as_slice() else {
        p.no_rule(layer, "no shape rule for it on several inputs");
        return vec![None];
    };
    match class {
        "InputLayer" => vec![Some(sizes.to_vec())],
        "Bidirectional" => p.inside(layer, vec![None], |p| bidirectional(config, sizes, p)),
        "TimeDistributed" => p.inside(layer, vec![None], |p| time_distributed(config, sizes, p)),
        "LSTM" | "GRU" | "SimpleRNN" => recurrent(class, config, sizes),
        _ => {
            let out = rule(class, config, sizes.to_vec());
            if out.is_none() {
                p.no_rule(layer, "no shape rule for it");
            }
            vec![out]
        }
    }
}

/// A model used as a layer: its own graph, called on `inputs`.
fn nested(class: &str, body: &Value, inputs: &[Option<Sizes>], p: &mut Propagation) -> Outputs {
    if class != "Sequential" {
        return match graph(body, Some(inputs), p) {
            Ok(outputs) => outputs.into_iter().map(|(_, _, shape)| shape).collect(),
            Err(_) => vec![None],
        };
    }
    let Ok(layers) = layers(body) else {
        return vec![None];
    };
    let Some(first) = layers.first() else {
        return vec![None];
    };
    let is_input = layer_class(first) == "InputLayer";
    let declared = if is_input {
        declared_shape(layer_config(first))
    } else {
        sequential_input(body, first).and_then(sizes_of)
    };
    let input = match inputs {
        [Some(given)] => Some(given.clone()),
        _ => declared,
    };
    vec![stack(&layers[usize::from(is_input)..], input, p)]
}

/// TimeDistributed: its layer on each step, `[batch, time, rest...]` → `[batch, time, out...]`.
fn time_distributed(config: &Value, sizes: &[i64], p: &mut Propagation) -> Outputs {
    let (Some(inner), [batch, time, rest @ ..]) =
        (config.get("layer").and_then(Value::as_object), sizes)
    else {
        return vec![None];
    };
    if rest.is_empty() {
        return vec![None];
    }
    let step: Sizes = std::iter::once(*batch)
        .chain(rest.iter().copied())
        .collect();
    call(inner, &[Some(step)], p)
        .into_iter()
        .map(|out| {
            let (first, rest) = out?.split_first().map(|(f, r)| (*f, r.to_vec()))?;
            Some([first, *time].into_iter().chain(rest).collect())
        })
        .collect()
}

/// Bidirectional: its forward and backward layers on the same input, merged by `merge_mode`
/// (`concat`, the default, joins the last sizes; `sum`/`mul`/`ave` keep a shared shape; `null`
/// returns both), then the forward and the backward states with `return_state`.
fn bidirectional(config: &Value, sizes: &[i64], p: &mut Propagation) -> Outputs {
    let Some(forward) = config.get("layer").and_then(Value::as_object) else {
        return vec![None];
    };
    let backward = config
        .get("backward_layer")
        .and_then(Value::as_object)
        .unwrap_or(forward);
    let mut forward = call(forward, &[Some(sizes.to_vec())], p).into_iter();
    let mut backward = call(backward, &[Some(sizes.to_vec())], p).into_iter();
    let (f, b) = (forward.next().flatten(), backward.next().flatten());
    let mut out = match config.get("merge_mode").unwrap_or(&Value::from("concat")) {
        Value::Null => vec![f, b],
        Value::String(mode) => vec![match (mode.as_str(), f, b) {
            ("concat", Some(mut f), Some(b)) if f.len() == b.len() && !f.is_empty() => {
                let (last, other) = (f.len() - 1, b[b.len() - 1]);
                f[last] = if f[last] < 0 || other < 0 {
                    -1
                } else {
                    f[last].checked_add(other).unwrap_or(-1)
                };
                f[..last].eq(&b[..last]).then_some(f)
            }
            ("sum" | "mul" | "ave", Some(f), Some(b)) if f == b => Some(f),
            _ => None,
        }],
        _ => vec![None],
    };
    out.extend(forward);
    out.extend(backward);
    out
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
/// `return_sequences`; with `return_state`, then the states, `[batch, units]` each (two for
/// an LSTM, one for the others).
fn recurrent(class: &str, config: &Value, sizes: &[i64]) -> Outputs {
    let (Some(units), [batch, time, _]) = (positive(config.get("units")), sizes) else {
        return vec![None];
    };
    let flag = |name: &str| config.get(name).and_then(Value::as_bool) == Some(true);
    let mut out = vec![Some(if flag("return_sequences") {
        vec![*batch, *time, units]
    } else {
        vec![*batch, units]
    })];
    if flag("return_state") {
        let states = if class == "LSTM" { 2 } else { 1 };
        out.extend(std::iter::repeat_n(Some(vec![*batch, units]), states));
    }
    out
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
