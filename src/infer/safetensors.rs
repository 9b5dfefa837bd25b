//! The header of a safetensors file: what tensors it holds, never the tensors themselves.
//!
//! The format is an 8-byte little-endian header length, a JSON header of that length
//! (`{"name": {"dtype", "shape", "data_offsets"}, "__metadata__": {..}}`), then the data.
//! Parsed here by hand rather than with the `safetensors` crate: its `read_metadata` wants the
//! whole file as one slice (read into memory or mapped, where a file truncated while mapped
//! kills the process with SIGBUS), while the header alone is all this needs. The checks are
//! the crate's: the header length is capped, every tensor lies within the data, and its byte
//! size agrees with its dtype and shape.

use super::InferError;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

const FORMAT: &str = "safetensors file";
/// The `safetensors` crate's own limit on the JSON header.
const MAX_HEADER: u64 = 100 << 20;

/// What one file's header says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub tensors: u64,
    pub parameters: u64,
    /// Tensor count per dtype ("F32" → 2).
    pub dtypes: BTreeMap<String, u64>,
    /// The free-form `__metadata__` strings (e.g. `format: pt`).
    pub metadata: BTreeMap<String, String>,
}

/// Reads and checks the header of the safetensors file at `path`.
pub(crate) fn read_header(path: &Path) -> Result<Header, InferError> {
    let file = super::open_model_file(path)?;
    let io = |source| InferError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_len = file.metadata().map_err(io)?.len();
    let corrupt = |reason: String| InferError::CorruptWeights {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    };
    let mut reader = std::io::BufReader::new(file);
    if file_len < 8 {
        return Err(corrupt(format!(
            "it is {file_len} bytes long, too short for the 8-byte header length"
        )));
    }
    let mut len_bytes = [0u8; 8];
    reader.read_exact(&mut len_bytes).map_err(io)?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER {
        return Err(corrupt(format!(
            "the header length is {header_len} bytes, more than the format's limit of {} MiB",
            MAX_HEADER >> 20
        )));
    }
    let data_len = (file_len - 8).checked_sub(header_len).ok_or_else(|| {
        corrupt(format!(
            "the header length ({header_len} bytes) runs past the end of the file \
             ({file_len} bytes): it is truncated"
        ))
    })?;
    // Bounded by MAX_HEADER and by the file's real length, both checked above.
    let mut json = Vec::new();
    (&mut reader)
        .take(header_len)
        .read_to_end(&mut json)
        .map_err(io)?;
    if (json.len() as u64) < header_len {
        return Err(corrupt("the file ended inside the header".into()));
    }
    parse_header(&json, data_len).map_err(corrupt)
}

/// The JSON header, checked against the `data_len` bytes that follow it.
fn parse_header(json: &[u8], data_len: u64) -> Result<Header, String> {
    let value: Value =
        serde_json::from_slice(json).map_err(|e| format!("the header is not JSON: {e}"))?;
    let Value::Object(entries) = value else {
        return Err("the header is not a JSON object".into());
    };
    let mut header = Header::default();
    let mut spans = Vec::with_capacity(entries.len());
    for (name, entry) in &entries {
        let named = |what: &str| format!("tensor {}: {what}", super::quote(name));
        if name == "__metadata__" {
            header.metadata = metadata_strings(entry)?;
            continue;
        }
        let dtype = entry
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| named("no \"dtype\" string"))?;
        let shape = entry
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| named("no \"shape\" array"))?;
        let mut elements: u64 = 1;
        for dim in shape {
            let dim = dim
                .as_u64()
                .ok_or_else(|| named("a dimension of \"shape\" is not a non-negative integer"))?;
            elements = elements
                .checked_mul(dim)
                .ok_or_else(|| named("the shape's element count overflows 64 bits"))?;
        }
        let offsets = entry
            .get("data_offsets")
            .and_then(Value::as_array)
            .and_then(|o| match o.as_slice() {
                [begin, end] => Some((begin.as_u64()?, end.as_u64()?)),
                _ => None,
            })
            .ok_or_else(|| named("\"data_offsets\" is not a pair of integers"))?;
        let (begin, end) = offsets;
        if begin > end || end > data_len {
            return Err(named(&format!(
                "its data [{begin}, {end}) lies outside the {data_len} bytes of data: the \
                 file is truncated or the header is wrong"
            )));
        }
        if let Some(bits) = dtype_bits(dtype) {
            let expected = elements
                .checked_mul(bits)
                .map(|b| b.div_ceil(8))
                .ok_or_else(|| named("the tensor's byte size overflows 64 bits"))?;
            if expected != end - begin {
                return Err(named(&format!(
                    "{dtype} {:?} takes {expected} bytes but its data_offsets span {}",
                    shape,
                    end - begin
                )));
            }
        }
        spans.push((begin, end));
        header.tensors += 1;
        header.parameters = header
            .parameters
            .checked_add(elements)
            .ok_or_else(|| "the parameter count overflows 64 bits".to_string())?;
        *header.dtypes.entry(dtype.to_string()).or_default() += 1;
    }
    // The crate refuses tensors that overlap or leave holes; so does this.
    spans.sort_unstable();
    let mut next = 0;
    for (begin, end) in spans {
        if begin != next {
            return Err(format!(
                "the tensors' data overlap or leave a hole at byte {next}: the header is wrong"
            ));
        }
        next = end;
    }
    if next != data_len {
        return Err(format!(
            "the tensors take {next} bytes but {data_len} bytes of data follow the header"
        ));
    }
    Ok(header)
}

/// `__metadata__` is a map of strings to strings in the format.
fn metadata_strings(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err("\"__metadata__\" is not a JSON object".into());
    };
    map.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            _ => Err(format!(
                "\"__metadata__\" value {} is not a string",
                super::quote(k)
            )),
        })
        .collect()
}

/// Bits per element of the dtypes the format defines; `None` for names it may add later,
/// whose sizes are then not checked.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_counts_and_checks() {
        let json = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"F16","shape":[],"data_offsets":[24,26]},"__metadata__":{"format":"pt"}}"#;
        let header = parse_header(json, 26).unwrap();
        assert_eq!(header.tensors, 2);
        assert_eq!(header.parameters, 7);
        assert_eq!(header.dtypes["F32"], 1);
        assert_eq!(header.metadata["format"], "pt");
        assert!(parse_header(json, 25).unwrap_err().contains("outside"));
        assert!(parse_header(json, 30).unwrap_err().contains("follow"));
        let wrong_size = br#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
        assert!(
            parse_header(wrong_size, 20)
                .unwrap_err()
                .contains("24 bytes")
        );
        let overflow =
            br#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,0]}}"#;
        assert!(parse_header(overflow, 0).unwrap_err().contains("overflows"));
    }
}
