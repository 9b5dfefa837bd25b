//! The header of a GGUF file (llama.cpp's format): its metadata and tensor list, never the
//! tensors themselves.
//!
//! Parsed by hand: the Rust GGUF readers (candle's, the `gguf*` crates) allocate strings and
//! arrays by the counts the file gives, and read every value, where this keeps only the few
//! facts it reports and steps over the rest (a tokenizer's 150,000 strings) without holding
//! them. Every count and length is checked against the bytes left in the file before use, and
//! the walk stops after [`MAX_HEADER`] bytes.
//!
//! Layout (GGUF v2 and v3, little-endian): magic `GGUF`, u32 version, u64 tensor count, u64
//! key/value count; each key a string (u64 length + UTF-8), a u32 value type and the value;
//! then per tensor a name, u32 dimension count, u64 dimensions, u32 ggml type, u64 offset.

use super::InferError;
use std::collections::BTreeMap;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

const FORMAT: &str = "GGUF file";
/// Larger than any real header: a 256k-token vocabulary with scores and merges is ~20 MiB.
const MAX_HEADER: u64 = 512 << 20;
/// Longer values (chat templates, licences) are stepped over, not kept.
const MAX_KEPT_STRING: u64 = 4 << 10;
/// GGUF writers refuse longer keys.
const MAX_KEY: u64 = 64 << 10;
/// ggml tensors have at most 4 dimensions; a little room for later versions.
const MAX_DIMS: u32 = 8;
/// Arrays of arrays are legal; deeper nesting than this is not written by anyone.
const MAX_NESTING: u32 = 4;

/// What the header says.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub tensors: u64,
    pub parameters: u64,
    /// Tensor count per ggml type name ("Q4_K" → 120).
    pub tensor_types: BTreeMap<String, u64>,
    pub architecture: Option<String>,
    pub name: Option<String>,
    pub context_length: Option<u64>,
    /// `general.file_type` as llama.cpp names it ("MOSTLY_Q4_K_M"), or the number.
    pub file_type: Option<String>,
    /// Entries of `tokenizer.ggml.tokens`.
    pub vocabulary: Option<u64>,
}

/// A value kept from the metadata.
enum Kept {
    Int(u64),
    Text(String),
    Skipped,
}

struct Walker<R> {
    reader: R,
    pos: u64,
    len: u64,
}

impl<R: Read + Seek> Walker<R> {
    fn left(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Fails unless `n` more bytes are in the file and within the header cap.
    fn need(&self, n: u64, what: &str) -> Result<(), String> {
        if n > self.left() {
            return Err(format!(
                "{what} needs {n} bytes at offset {} but the file ends at {}: it is truncated \
                 or the header is wrong",
                self.pos, self.len
            ));
        }
        if self.pos.saturating_add(n) > MAX_HEADER {
            return Err(format!(
                "the header goes on past {} MiB, more than any real model's",
                MAX_HEADER >> 20
            ));
        }
        Ok(())
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        self.need(N as u64, what)?;
        let mut buf = [0u8; N];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what} at offset {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        self.bytes::<4>(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        self.bytes::<8>(what).map(u64::from_le_bytes)
    }

    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        self.need(n, what)?;
        let step = i64::try_from(n).map_err(|_| format!("{what}: length {n} is too large"))?;
        self.reader
            .seek_relative(step)
            .map_err(|e| format!("skipping {what} at offset {}: {e}", self.pos))?;
        self.pos += n;
        Ok(())
    }

    /// A string no longer than `max`, or `None` (stepped over) when longer.
    fn string(&mut self, max: u64, what: &str) -> Result<Option<String>, String> {
        let n = self.u64(what)?;
        self.need(n, what)?;
        if n > max {
            self.skip(n, what)?;
            return Ok(None);
        }
        // Bounded by `max`, a few KiB.
        let mut buf = vec![0u8; n as usize];
        self.reader
            .read_exact(&mut buf)
            .map_err(|e| format!("reading {what} at offset {}: {e}", self.pos))?;
        self.pos += n;
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| format!("{what} at offset {} is not UTF-8", self.pos - n))
    }

    /// A value of `ty`, kept when it is an integer or a short string.
    fn value(&mut self, ty: u32, depth: u32, what: &str) -> Result<Kept, String> {
        if let Some(size) = fixed_size(ty) {
            return Ok(match size {
                1 => Kept::Int(u64::from(self.bytes::<1>(what)?[0])),
                2 => Kept::Int(u64::from(u16::from_le_bytes(self.bytes::<2>(what)?))),
                // Floats are read as integers and never used as numbers.
                4 => Kept::Int(u64::from(self.u32(what)?)),
                _ => Kept::Int(self.u64(what)?),
            });
        }
        match ty {
            8 => Ok(self
                .string(MAX_KEPT_STRING, what)?
                .map_or(Kept::Skipped, Kept::Text)),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(format!(
                        "{what}: arrays nested more than {MAX_NESTING} deep"
                    ));
                }
                let item = self.u32(what)?;
                let count = self.u64(what)?;
                // Every item takes at least a byte (a string at least its 8-byte length):
                // a count the rest of the file cannot hold is refused before any work.
                let least = fixed_size(item).unwrap_or(8);
                if count.saturating_mul(least) > self.left() {
                    return Err(format!(
                        "{what}: an array of {count} items cannot fit in the {} bytes left",
                        self.left()
                    ));
                }
                match fixed_size(item) {
                    Some(size) => self.skip(count * size, what)?,
                    // A vocabulary's strings are stepped over, not read.
                    None if item == 8 => {
                        for _ in 0..count {
                            let n = self.u64(what)?;
                            self.skip(n, what)?;
                        }
                    }
                    None => {
                        for _ in 0..count {
                            self.value(item, depth + 1, what)?;
                        }
                    }
                }
                // The item count is what is kept of an array.
                Ok(Kept::Int(count))
            }
            _ => Err(format!("{what}: unknown value type {ty}")),
        }
    }
}

/// Bytes of the fixed-size value types; `None` for strings, arrays and unknown types.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Reads the header of the GGUF file at `path`.
pub(crate) fn read_header(path: &Path) -> Result<Header, InferError> {
    let file = super::open_model_file(path)?;
    let len = file
        .metadata()
        .map_err(|source| InferError::Io {
            path: path.to_path_buf(),
            source,
        })?
        .len();
    parse(BufReader::new(file), len).map_err(|reason| InferError::CorruptWeights {
        path: path.to_path_buf(),
        format: FORMAT,
        reason,
    })
}

fn parse<R: Read + Seek>(reader: R, len: u64) -> Result<Header, String> {
    let mut walker = Walker {
        reader,
        pos: 0,
        len,
    };
    let magic = walker.bytes::<4>("the magic number")?;
    if &magic != b"GGUF" {
        return Err(format!(
            "it does not start with \"GGUF\" (found {})",
            super::quote(&String::from_utf8_lossy(&magic))
        ));
    }
    let version = walker.u32("the version")?;
    if matches!(version.swap_bytes(), 2 | 3) {
        return Err(
            "a big-endian GGUF file (made for s390x); mlambda reads little-endian ones, \
             convert it with llama.cpp's gguf tools"
                .into(),
        );
    }
    if !matches!(version, 2 | 3) {
        return Err(format!(
            "GGUF version {version}; mlambda reads versions 2 and 3 (convert older files with \
             llama.cpp)"
        ));
    }
    let tensors = walker.u64("the tensor count")?;
    let pairs = walker.u64("the metadata count")?;
    // A key/value pair takes at least 8 + 4 + 1 bytes, a tensor entry 8 + 4 + 4 + 8.
    if pairs.saturating_mul(13) > walker.left() || tensors.saturating_mul(24) > walker.left() {
        return Err(format!(
            "it claims {pairs} metadata entries and {tensors} tensors, more than its {len} \
             bytes can hold"
        ));
    }
    let mut header = Header {
        version,
        tensors,
        ..Header::default()
    };
    let mut ints: BTreeMap<String, u64> = BTreeMap::new();
    let mut alignment = 32;
    for i in 0..pairs {
        let key = walker
            .string(MAX_KEY, &format!("metadata key {i}"))?
            .ok_or_else(|| format!("metadata key {i} is longer than {MAX_KEY} bytes"))?;
        let what = format!("metadata {}", super::quote(&key));
        let ty = walker.u32(&what)?;
        match walker.value(ty, 0, &what)? {
            Kept::Text(text) => match key.as_str() {
                "general.architecture" => header.architecture = Some(text),
                "general.name" => header.name = Some(text),
                _ => {}
            },
            Kept::Int(n) => {
                if key == "tokenizer.ggml.tokens" && ty == 9 {
                    header.vocabulary = Some(n);
                } else if key == "general.alignment" && ty != 9 {
                    alignment = n;
                } else if ty != 9
                    && (key.ends_with(".context_length") || key.starts_with("general."))
                {
                    ints.insert(key, n);
                }
            }
            Kept::Skipped => {}
        }
    }
    if let Some(arch) = &header.architecture {
        header.context_length = ints.get(&format!("{arch}.context_length")).copied();
    }
    header.file_type = ints
        .get("general.file_type")
        .map(|&n| file_type_name(n).map_or_else(|| n.to_string(), str::to_string));
    for i in 0..tensors {
        let what = format!("tensor {i}");
        walker.string(MAX_KEY, &what)?;
        let dims = walker.u32(&what)?;
        if dims > MAX_DIMS {
            return Err(format!("{what}: {dims} dimensions, ggml has at most 4"));
        }
        let mut elements: u64 = 1;
        for _ in 0..dims {
            elements = elements
                .checked_mul(walker.u64(&what)?)
                .ok_or_else(|| format!("{what}: the element count overflows 64 bits"))?;
        }
        let ty = walker.u32(&what)?;
        let offset = walker.u64(&what)?;
        if offset > len {
            return Err(format!(
                "{what}: its data offset {offset} lies past the end of the file ({len} bytes)"
            ));
        }
        header.parameters = header
            .parameters
            .checked_add(elements)
            .ok_or_else(|| "the parameter count overflows 64 bits".to_string())?;
        let name = tensor_type_name(ty).map_or_else(|| format!("type{ty}"), str::to_string);
        *header.tensor_types.entry(name).or_default() += 1;
    }
    if alignment == 0 || alignment > 1 << 20 {
        return Err(format!("general.alignment is {alignment}"));
    }
    if tensors > 0 && walker.pos.next_multiple_of(alignment) > len {
        return Err(format!(
            "the tensor data would start past the end of the file ({len} bytes): it is truncated"
        ));
    }
    Ok(header)
}

/// ggml's tensor types (`GGMLQuantizationType` in the gguf Python package).
fn tensor_type_name(ty: u32) -> Option<&'static str> {
    const NAMES: &[(u32, &str)] = &[
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (30, "BF16"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
        (40, "NVFP4"),
        (41, "Q1_0"),
    ];
    NAMES.iter().find(|(n, _)| *n == ty).map(|(_, name)| *name)
}

/// llama.cpp's file types (`LlamaFileType` in the gguf Python package).
fn file_type_name(ty: u64) -> Option<&'static str> {
    const NAMES: &[(u64, &str)] = &[
        (0, "ALL_F32"),
        (1, "MOSTLY_F16"),
        (2, "MOSTLY_Q4_0"),
        (3, "MOSTLY_Q4_1"),
        (7, "MOSTLY_Q8_0"),
        (8, "MOSTLY_Q5_0"),
        (9, "MOSTLY_Q5_1"),
        (10, "MOSTLY_Q2_K"),
        (11, "MOSTLY_Q3_K_S"),
        (12, "MOSTLY_Q3_K_M"),
        (13, "MOSTLY_Q3_K_L"),
        (14, "MOSTLY_Q4_K_S"),
        (15, "MOSTLY_Q4_K_M"),
        (16, "MOSTLY_Q5_K_S"),
        (17, "MOSTLY_Q5_K_M"),
        (18, "MOSTLY_Q6_K"),
        (19, "MOSTLY_IQ2_XXS"),
        (20, "MOSTLY_IQ2_XS"),
        (21, "MOSTLY_Q2_K_S"),
        (22, "MOSTLY_IQ3_XS"),
        (23, "MOSTLY_IQ3_XXS"),
        (24, "MOSTLY_IQ1_S"),
        (25, "MOSTLY_IQ4_NL"),
        (26, "MOSTLY_IQ3_S"),
        (27, "MOSTLY_IQ3_M"),
        (28, "MOSTLY_IQ2_S"),
        (29, "MOSTLY_IQ2_M"),
        (30, "MOSTLY_IQ4_XS"),
        (31, "MOSTLY_IQ1_M"),
        (32, "MOSTLY_BF16"),
        (36, "MOSTLY_TQ1_0"),
        (37, "MOSTLY_TQ2_0"),
        (38, "MOSTLY_MXFP4_MOE"),
        (39, "MOSTLY_NVFP4"),
        (40, "MOSTLY_Q1_0"),
        (1024, "GUESSED"),
    ];
    NAMES.iter().find(|(n, _)| *n == ty).map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    #[test]
    fn huge_counts_are_refused_before_any_work() {
        let mut file = b"GGUF".to_vec();
        file.extend(3u32.to_le_bytes());
        file.extend(0u64.to_le_bytes());
        file.extend(1u64.to_le_bytes());
        string(&mut file, "tokenizer.ggml.tokens");
        file.extend(9u32.to_le_bytes());
        file.extend(8u32.to_le_bytes());
        file.extend(u64::MAX.to_le_bytes());
        let len = file.len() as u64;
        let err = parse(Cursor::new(file), len).unwrap_err();
        assert!(err.contains("cannot fit"), "{err}");
    }
}
