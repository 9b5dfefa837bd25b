//! TensorFlow Lite (`*.tflite`): a FlatBuffer (tensorflow/lite/schema/schema.fbs, file
//! identifier `TFL3`).
//!
//! Every entry of the model's `signature_defs` becomes a signature named by its
//! `signature_key`, its fields named by the SignatureDef's own names (as the TFLite signature
//! runner exposes them), with dtype and shape from the tensors of the subgraph it names. A
//! model without SignatureDefs (converters before TF 2.5, or `from_concrete_functions` without
//! signatures) gets one signature `serving_default` from subgraph 0's inputs and outputs,
//! named by tensor name, with a warning.
//!
//! Shapes: `shape_signature` (-1 for dynamic dimensions) when present, else `shape`. An empty
//! shape is a scalar when `has_rank` says so; otherwise the file cannot tell a scalar from an
//! unknown rank (older converters never wrote `has_rank`), so the field gets any shape and a
//! warning.
//!
//! Model-type: `tflite:<min_runtime_version>` from the model's metadata, the oldest TFLite
//! runtime able to run it. When the converter did not record it, `tflite:unknown` with a
//! warning: the schema `version` field is 3 for every model since 2018 and says nothing about
//! which runtime can run it, so it is only named in the warning.
//!
//! Only the parts above are read, by seeking: the weights in `buffers` are never loaded.

use super::flatbuf::{FlatError, FlatFile, Table};
use super::{Detector, Folder, InferError, Inferred, clean_version, file_name, quote};
use crate::contract::{DataType, Field, Shape, Signature};
use std::collections::BTreeMap;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

pub(crate) const DETECTOR: Detector = Detector {
    framework: "tflite",
    detect,
    infer: infer_file,
};

const FORMAT: &str = "TFLite model";
const FALLBACK_SIGNATURE: &str = "serving_default";
/// Bounds that no real model comes near; beyond them the file is treated as corrupt.
const MAX_SIGNATURES: u32 = 10_000;
const MAX_FIELDS: usize = 100_000;
const MAX_DIMS: u32 = 1024;
const MAX_NAME: u32 = 1 << 20;
const MAX_METADATA: u32 = 10_000;

// Field indices, in schema order.
mod model {
    pub const VERSION: u16 = 0;
    pub const SUBGRAPHS: u16 = 2;
    pub const BUFFERS: u16 = 4;
    pub const METADATA: u16 = 6;
    pub const SIGNATURE_DEFS: u16 = 7;
}
mod subgraph {
    pub const TENSORS: u16 = 0;
    pub const INPUTS: u16 = 1;
    pub const OUTPUTS: u16 = 2;
}
mod tensor {
    pub const SHAPE: u16 = 0;
    pub const TYPE: u16 = 1;
    pub const NAME: u16 = 3;
    pub const SHAPE_SIGNATURE: u16 = 7;
    pub const HAS_RANK: u16 = 8;
}
mod signature_def {
    pub const INPUTS: u16 = 0;
    pub const OUTPUTS: u16 = 1;
    pub const SIGNATURE_KEY: u16 = 2;
    pub const SUBGRAPH_INDEX: u16 = 4;
}
mod tensor_map {
    pub const NAME: u16 = 0;
    pub const TENSOR_INDEX: u16 = 1;
}
mod metadata {
    pub const NAME: u16 = 0;
    pub const BUFFER: u16 = 1;
}
mod buffer {
    pub const DATA: u16 = 0;
    pub const OFFSET: u16 = 1;
    pub const SIZE: u16 = 2;
}

fn detect(folder: &Folder) -> Vec<PathBuf> {
    folder.with_extension("tflite")
}

fn infer_file(path: &Path) -> Result<Inferred, InferError> {
    let file = super::open_model_file(path)?;
    infer_tflite_reader(file, path)
}

/// Infers from a TFLite model read from `reader`; `path` names it in messages. Seeks to the
/// tables it needs; the weights are never read.
pub fn infer_tflite_reader<R: Read + Seek>(reader: R, path: &Path) -> Result<Inferred, InferError> {
    let error = |e: FlatError| match e {
        FlatError::Io(source) => InferError::Io {
            path: path.to_path_buf(),
            source,
        },
        FlatError::Malformed(reason) => InferError::Corrupt {
            path: path.to_path_buf(),
            format: FORMAT,
            reason,
        },
    };
    let mut file = FlatFile::new(reader).map_err(error)?;
    read_model(&mut file, path).map_err(error)?
}

struct Reader<'a, R> {
    file: &'a mut FlatFile<R>,
    warnings: Vec<String>,
    fields: usize,
}

/// The outer `Result` is about the file's structure; the inner one is a model that is well
/// formed but describes no contract.
fn read_model<R: Read + Seek>(
    file: &mut FlatFile<R>,
    path: &Path,
) -> Result<Result<Inferred, InferError>, FlatError> {
    let root = file.root(b"TFL3", "TFLite model")?;
    let version = file.field_u32(&root, model::VERSION, "Model.version")?;
    let mut reader = Reader {
        file,
        warnings: Vec::new(),
        fields: 0,
    };
    let meta = reader.metadata(&root)?;
    let model_type = match meta.min_runtime_version.as_deref().and_then(clean_version) {
        Some(v) => format!("tflite:{v}"),
        None => {
            reader.warnings.push(format!(
                "the model records no min_runtime_version (schema version {}); model-type is \
                 tflite:unknown, set model-type in serving.yaml to choose the runtime",
                version.unwrap_or(0)
            ));
            "tflite:unknown".into()
        }
    };
    let Some(subgraphs) = reader
        .file
        .field_vector(&root, model::SUBGRAPHS, 4, "Model.subgraphs")?
        .filter(|v| v.len > 0)
    else {
        return Ok(Err(InferError::NoContract {
            path: path.to_path_buf(),
            reason: "the TFLite model has no subgraph".into(),
        }));
    };

    let mut signatures = BTreeMap::new();
    let defs = reader
        .file
        .field_vector(&root, model::SIGNATURE_DEFS, 4, "Model.signature_defs")?;
    match defs.filter(|v| v.len > 0) {
        Some(defs) => {
            if defs.len > MAX_SIGNATURES {
                return Err(FlatError::Malformed(format!(
                    "{} SignatureDefs (at most {MAX_SIGNATURES})",
                    defs.len
                )));
            }
            for i in 0..defs.len {
                let def = reader.file.table_in(&defs, i, "SignatureDef")?;
                let key = reader
                    .file
                    .field_string(
                        &def,
                        signature_def::SIGNATURE_KEY,
                        MAX_NAME,
                        "signature_key",
                    )?
                    .unwrap_or_default();
                let key = if key.is_empty() {
                    reader.warnings.push(format!(
                        "SignatureDef #{i} has no signature_key; named {FALLBACK_SIGNATURE}"
                    ));
                    FALLBACK_SIGNATURE.to_string()
                } else {
                    key
                };
                if signatures.contains_key(&key) {
                    reader.warnings.push(format!(
                        "SignatureDef {} appears more than once; the first is kept",
                        quote(&key)
                    ));
                    continue;
                }
                let index = reader
                    .file
                    .field_u32(&def, signature_def::SUBGRAPH_INDEX, "subgraph_index")?
                    .unwrap_or(0);
                if index >= subgraphs.len {
                    return Err(FlatError::Malformed(format!(
                        "SignatureDef {} names subgraph {index}, the model has {}",
                        quote(&key),
                        subgraphs.len
                    )));
                }
                let graph = reader.file.table_in(&subgraphs, index, "SubGraph")?;
                let inputs = reader.mapped(&def, signature_def::INPUTS, &graph, &key, "input")?;
                let outputs =
                    reader.mapped(&def, signature_def::OUTPUTS, &graph, &key, "output")?;
                signatures.insert(key.clone(), signature(key, inputs, outputs));
            }
        }
        None => {
            let graph = reader.file.table_in(&subgraphs, 0, "SubGraph")?;
            let inputs = reader.listed(&graph, subgraph::INPUTS, "input")?;
            let outputs = reader.listed(&graph, subgraph::OUTPUTS, "output")?;
            let mut warning = format!(
                "the model has no SignatureDef; signature {FALLBACK_SIGNATURE} describes \
                 subgraph 0's inputs and outputs, named by tensor name"
            );
            if meta.serving_signatures {
                warning.push_str(
                    " (its signature_defs_metadata, written for TensorFlow Serving, is not read)",
                );
            }
            reader.warnings.push(warning);
            signatures.insert(
                FALLBACK_SIGNATURE.to_string(),
                signature(FALLBACK_SIGNATURE.into(), inputs, outputs),
            );
        }
    }

    Ok(Ok(Inferred {
        signatures: signatures.into_values().collect(),
        model_type,
        source: format!("{FORMAT} ({})", file_name(path)),
        warnings: reader.warnings,
    }))
}

fn signature(name: String, mut inputs: Vec<Field>, mut outputs: Vec<Field>) -> Signature {
    inputs.sort_by(|a, b| a.name.cmp(&b.name));
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    Signature {
        name,
        inputs,
        outputs,
    }
}

struct Metadata {
    min_runtime_version: Option<String>,
    /// TensorFlow Serving's own `signature_defs_metadata` entry is present.
    serving_signatures: bool,
}

impl<R: Read + Seek> Reader<'_, R> {
    fn metadata(&mut self, root: &Table) -> Result<Metadata, FlatError> {
        let mut meta = Metadata {
            min_runtime_version: None,
            serving_signatures: false,
        };
        let Some(entries) = self
            .file
            .field_vector(root, model::METADATA, 4, "Model.metadata")?
        else {
            return Ok(meta);
        };
        for i in 0..entries.len.min(MAX_METADATA) {
            let entry = self.file.table_in(&entries, i, "Metadata")?;
            let name = self
                .file
                .field_string(&entry, metadata::NAME, MAX_NAME, "Metadata.name")?;
            match name.as_deref() {
                Some("min_runtime_version") => {
                    let index = self
                        .file
                        .field_u32(&entry, metadata::BUFFER, "Metadata.buffer")?
                        .unwrap_or(0);
                    let bytes = self.buffer(root, index)?;
                    let text = String::from_utf8_lossy(&bytes);
                    let text = text.trim_end_matches('\0').trim();
                    if !text.is_empty() {
                        meta.min_runtime_version = Some(text.to_string());
                    }
                }
                Some("signature_defs_metadata") => meta.serving_signatures = true,
                _ => {}
            }
        }
        Ok(meta)
    }

    /// The first bytes (at most 64: enough for a version string) of buffer `index`, inside the
    /// FlatBuffer or, for models over 2 GiB, at `offset` in the file.
    fn buffer(&mut self, root: &Table, index: u32) -> Result<Vec<u8>, FlatError> {
        const MAX: u32 = 64;
        let Some(buffers) = self
            .file
            .field_vector(root, model::BUFFERS, 4, "Model.buffers")?
        else {
            return Err(FlatError::Malformed(format!(
                "metadata names buffer {index}, the model has no buffers"
            )));
        };
        if index >= buffers.len {
            return Err(FlatError::Malformed(format!(
                "metadata names buffer {index}, the model has {}",
                buffers.len
            )));
        }
        let buffer = self.file.table_in(&buffers, index, "Buffer")?;
        if let Some(data) = self
            .file
            .field_vector(&buffer, buffer::DATA, 1, "Buffer.data")?
        {
            return self.file.bytes_of(&data, MAX, "Buffer.data");
        }
        let offset = self
            .file
            .field_u64(&buffer, buffer::OFFSET, "Buffer.offset")?
            .unwrap_or(0);
        let size = self
            .file
            .field_u64(&buffer, buffer::SIZE, "Buffer.size")?
            .unwrap_or(0);
        if offset > 1 {
            return self.file.bytes(
                offset,
                size.min(u64::from(MAX)),
                "Buffer (outside the FlatBuffer)",
            );
        }
        Ok(Vec::new())
    }

    /// The fields of a SignatureDef's `inputs` or `outputs`, named by the TensorMap names.
    fn mapped(
        &mut self,
        def: &Table,
        index: u16,
        graph: &Table,
        key: &str,
        direction: &str,
    ) -> Result<Vec<Field>, FlatError> {
        let what = format!("SignatureDef {} {direction}s", quote(key));
        let Some(maps) = self.file.field_vector(def, index, 4, &what)? else {
            return Ok(Vec::new());
        };
        self.count(maps.len)?;
        let tensors = self.tensors(graph)?;
        let mut fields: Vec<Field> = Vec::new();
        for i in 0..maps.len {
            let map = self.file.table_in(&maps, i, &what)?;
            let name = self
                .file
                .field_string(&map, tensor_map::NAME, MAX_NAME, "TensorMap.name")?
                .unwrap_or_default();
            let tensor_index = self
                .file
                .field_u32(&map, tensor_map::TENSOR_INDEX, "TensorMap.tensor_index")?
                .unwrap_or(0);
            let field = self.tensor_field(&tensors, i64::from(tensor_index), Some(name), &what)?;
            if fields.iter().any(|f| f.name == field.name) {
                self.warnings.push(format!(
                    "{what}: {} appears more than once; the first is kept",
                    quote(&field.name)
                ));
                continue;
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// The fields of a subgraph's `inputs` or `outputs` tensor index list, named by tensor name.
    fn listed(
        &mut self,
        graph: &Table,
        index: u16,
        direction: &str,
    ) -> Result<Vec<Field>, FlatError> {
        let what = format!("subgraph 0 {direction}s");
        let Some(list) = self.file.field_vector(graph, index, 4, &what)? else {
            return Ok(Vec::new());
        };
        self.count(list.len)?;
        let tensors = self.tensors(graph)?;
        let mut fields: Vec<Field> = Vec::new();
        for i in 0..list.len {
            let tensor_index = self.file.i32_in(&list, i, &what)?;
            let field = self.tensor_field(&tensors, i64::from(tensor_index), None, &what)?;
            if fields.iter().any(|f| f.name == field.name) {
                self.warnings.push(format!(
                    "{what}: two tensors are named {}; the first is kept",
                    quote(&field.name)
                ));
                continue;
            }
            fields.push(field);
        }
        Ok(fields)
    }

    fn count(&mut self, more: u32) -> Result<(), FlatError> {
        self.fields = self.fields.saturating_add(more as usize);
        if self.fields > MAX_FIELDS {
            return Err(FlatError::Malformed(format!(
                "more than {MAX_FIELDS} inputs and outputs"
            )));
        }
        Ok(())
    }

    fn tensors(&mut self, graph: &Table) -> Result<super::flatbuf::Vector, FlatError> {
        match self
            .file
            .field_vector(graph, subgraph::TENSORS, 4, "SubGraph.tensors")?
        {
            Some(tensors) => Ok(tensors),
            None => Err(FlatError::Malformed(
                "a subgraph with inputs or outputs has no tensors".into(),
            )),
        }
    }

    /// Tensor `index` as a field, named `name` (else by the tensor's own name).
    fn tensor_field(
        &mut self,
        tensors: &super::flatbuf::Vector,
        index: i64,
        name: Option<String>,
        what: &str,
    ) -> Result<Field, FlatError> {
        let Some(i) = u32::try_from(index).ok().filter(|&i| i < tensors.len) else {
            return Err(FlatError::Malformed(format!(
                "{what}: tensor index {index}, the subgraph has {} tensors",
                tensors.len
            )));
        };
        let t = self.file.table_in(tensors, i, "Tensor")?;
        let tensor_name = self
            .file
            .field_string(&t, tensor::NAME, MAX_NAME, "Tensor.name")?
            .unwrap_or_default();
        let name = match name.filter(|n| !n.is_empty()) {
            Some(name) => name,
            None if !tensor_name.is_empty() => tensor_name,
            None => format!("tensor_{i}"),
        };
        let field_what = format!("{} {}", what.trim_end_matches('s'), quote(&name));
        let type_code = self
            .file
            .field_u8(&t, tensor::TYPE, "Tensor.type")?
            .unwrap_or(0) as i8;
        let dtype = match data_type(type_code) {
            Some(dtype) => dtype,
            None => {
                // A wrong type would let a runtime misread the bytes; DT_INVALID makes it refuse.
                self.warnings.push(format!(
                    "{field_what} has TFLite type {}, which the contract has no type for; \
                     recorded as DT_INVALID",
                    type_name(type_code)
                ));
                DataType::DtInvalid
            }
        };
        let dims = match self.file.field_vector(
            &t,
            tensor::SHAPE_SIGNATURE,
            4,
            "Tensor.shape_signature",
        )? {
            Some(v) => Some(v),
            None => self
                .file
                .field_vector(&t, tensor::SHAPE, 4, "Tensor.shape")?,
        };
        let mut sizes = Vec::new();
        if let Some(dims) = dims {
            if dims.len > MAX_DIMS {
                return Err(FlatError::Malformed(format!(
                    "{field_what} has {} dimensions (at most {MAX_DIMS})",
                    dims.len
                )));
            }
            for d in 0..dims.len {
                // Anything below -1 is invalid; unknown is the honest reading.
                sizes.push(i64::from(self.file.i32_in(&dims, d, "Tensor.shape")?).max(-1));
            }
        }
        let has_rank = self
            .file
            .field_u8(&t, tensor::HAS_RANK, "Tensor.has_rank")?
            == Some(1);
        let shape = if sizes.is_empty() && !has_rank {
            self.warnings.push(format!(
                "{field_what} has no dimensions and the model does not say whether it is a \
                 scalar or of unknown rank; recorded with any shape"
            ));
            None
        } else {
            Some(Shape::from_sizes(&sizes))
        };
        Ok(Field::tensor(&name, dtype, shape))
    }
}

/// TFLite TensorType to the contract's DataType; `None` for types the contract lacks.
fn data_type(code: i8) -> Option<DataType> {
    Some(match code {
        0 => DataType::DtFloat,
        1 => DataType::DtHalf,
        2 => DataType::DtInt32,
        3 => DataType::DtUint8,
        4 => DataType::DtInt64,
        5 => DataType::DtString,
        6 => DataType::DtBool,
        7 => DataType::DtInt16,
        8 => DataType::DtComplex64,
        9 => DataType::DtInt8,
        10 => DataType::DtDouble,
        11 => DataType::DtComplex128,
        12 => DataType::DtUint64,
        13 => DataType::DtResource,
        14 => DataType::DtVariant,
        15 => DataType::DtUint32,
        16 => DataType::DtUint16,
        18 => DataType::DtBfloat16,
        _ => return None,
    })
}

const TYPE_NAMES: [&str; 19] = [
    "FLOAT32",
    "FLOAT16",
    "INT32",
    "UINT8",
    "INT64",
    "STRING",
    "BOOL",
    "INT16",
    "COMPLEX64",
    "INT8",
    "FLOAT64",
    "COMPLEX128",
    "UINT64",
    "RESOURCE",
    "VARIANT",
    "UINT32",
    "UINT16",
    "INT4",
    "BFLOAT16",
];

fn type_name(code: i8) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| TYPE_NAMES.get(i))
        .map_or_else(|| format!("#{code}"), |n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_types() {
        assert_eq!(data_type(0), Some(DataType::DtFloat));
        assert_eq!(data_type(1), Some(DataType::DtHalf));
        assert_eq!(data_type(10), Some(DataType::DtDouble));
        assert_eq!(data_type(17), None);
        assert_eq!(data_type(18), Some(DataType::DtBfloat16));
        assert_eq!(data_type(-3), None);
        assert_eq!(type_name(17), "INT4");
        assert_eq!(type_name(40), "#40");
    }
}
