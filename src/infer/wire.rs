//! Reads a binary protobuf file through a (minimal) schema, keeping only the declared fields.
//!
//! Model files can be many gigabytes (ONNX initializers, TensorFlow constants), while the
//! contract needs a few hundred bytes of them. Instead of decoding the whole message, this walks
//! the wire format from a reader and, for every field, either keeps it (descending into it when
//! it is a message of the schema) or seeks past it without reading. The result is a small,
//! valid encoding of the same message restricted to the schema, which prost then decodes.
//!
//! Every length is checked against the end of the enclosing message (the file size at the top),
//! nesting is bounded and the kept output has a budget, so a hostile file gives an error instead
//! of a huge allocation, a deep recursion or a read past the end.

use prost_reflect::{Kind, MessageDescriptor};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// Deeper than any real ONNX type or TensorFlow signature; prost's own limit is 100.
pub(crate) const MAX_DEPTH: usize = 64;

/// The most bytes kept from one file: metadata only, so far above any real model's needs.
pub(crate) const MAX_KEPT: usize = 64 << 20;

#[derive(Debug)]
pub(crate) enum PruneError {
    Io(io::Error),
    /// The bytes are not a valid encoding of the schema; the text says where and why.
    Malformed(String),
}

impl From<io::Error> for PruneError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            // Lengths are checked against the file size first, so this means the file shrank
            // while being read, or a reader lied about its size: a truncated file either way.
            PruneError::Malformed("unexpected end of file".into())
        } else {
            PruneError::Io(e)
        }
    }
}

/// Returns the encoding of `reader`'s message restricted to the fields `schema` declares.
pub(crate) fn prune<R: Read + Seek>(
    mut reader: R,
    schema: &MessageDescriptor,
) -> Result<Vec<u8>, PruneError> {
    let end = reader.seek(SeekFrom::End(0))?;
    if end == 0 {
        // Valid protobuf (every field at its default), but never a file a framework wrote.
        return Err(PruneError::Malformed("the file is empty".into()));
    }
    reader.seek(SeekFrom::Start(0))?;
    let mut walker = Walker {
        reader: BufReader::with_capacity(64 << 10, reader),
        pos: 0,
        kept: 0,
    };
    let mut out = Vec::new();
    walker.message(schema, end, 0, &mut out)?;
    Ok(out)
}

struct Walker<R> {
    reader: BufReader<R>,
    /// Offset in the file, for bounds and for error messages.
    pos: u64,
    kept: usize,
}

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;
const START_GROUP: u64 = 3;
const END_GROUP: u64 = 4;
const FIXED32: u64 = 5;

impl<R: Read + Seek> Walker<R> {
    fn message(
        &mut self,
        schema: &MessageDescriptor,
        end: u64,
        depth: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), PruneError> {
        if depth > MAX_DEPTH {
            return Err(self.malformed(format!(
                "messages nested more than {MAX_DEPTH} deep in {}",
                schema.full_name()
            )));
        }
        while self.pos < end {
            let key_at = self.pos;
            let key = self.varint(end)?;
            let number = key >> 3;
            let wire_type = key & 7;
            if number == 0 || number > u64::from(u32::MAX >> 3) {
                return Err(malformed_at(
                    key_at,
                    format!("invalid field number {number} in {}", schema.full_name()),
                ));
            }
            let field = u32::try_from(number).ok().and_then(|n| schema.get_field(n));
            let what = || match &field {
                Some(f) => format!("field {} ({number}) of {}", f.name(), schema.full_name()),
                None => format!("field {number} of {}", schema.full_name()),
            };
            let message_field = field
                .as_ref()
                .is_some_and(|f| matches!(f.kind(), Kind::Message(_)));
            if message_field && wire_type != LEN {
                return Err(malformed_at(
                    key_at,
                    format!(
                        "{} should be a message but has wire type {wire_type}",
                        what()
                    ),
                ));
            }
            match wire_type {
                VARINT => {
                    let value = self.varint(end)?;
                    if field.is_some() {
                        self.keep_varint(key, out)?;
                        self.keep_varint(value, out)?;
                    }
                }
                FIXED64 | FIXED32 => {
                    let size = if wire_type == FIXED64 { 8 } else { 4 };
                    match field {
                        Some(_) => {
                            self.keep_varint(key, out)?;
                            self.copy(size, end, out)?;
                        }
                        None => self.skip(size, end)?,
                    }
                }
                LEN => {
                    let len_at = self.pos;
                    let len = self.varint(end)?;
                    if len > end - self.pos {
                        return Err(malformed_at(
                            len_at,
                            format!(
                                "{} declares {len} bytes but only {} remain in the enclosing \
                                 message",
                                what(),
                                end - self.pos
                            ),
                        ));
                    }
                    match field.as_ref().map(|f| f.kind()) {
                        None => self.skip(len, end)?,
                        Some(Kind::Message(inner)) => {
                            let mut nested = Vec::new();
                            let inner_end = self.pos + len;
                            self.message(&inner, inner_end, depth + 1, &mut nested)?;
                            self.keep_varint(key, out)?;
                            self.keep_varint(nested.len() as u64, out)?;
                            out.extend_from_slice(&nested);
                        }
                        // Strings, bytes and packed scalars: copied for prost to check.
                        Some(_) => {
                            self.keep_varint(key, out)?;
                            self.keep_varint(len, out)?;
                            self.copy(len, end, out)?;
                        }
                    }
                }
                START_GROUP | END_GROUP => {
                    // Groups exist only in proto2 files of other schemas; neither TensorFlow
                    // nor ONNX has ever written one.
                    return Err(malformed_at(
                        key_at,
                        format!("{} uses the deprecated group encoding", what()),
                    ));
                }
                _ => {
                    return Err(malformed_at(
                        key_at,
                        format!("{} has invalid wire type {wire_type}", what()),
                    ));
                }
            }
        }
        Ok(())
    }

    fn varint(&mut self, end: u64) -> Result<u64, PruneError> {
        let start = self.pos;
        let mut value: u64 = 0;
        for i in 0..10 {
            if self.pos >= end {
                return Err(malformed_at(
                    start,
                    "a number runs past the end of its message".into(),
                ));
            }
            let byte = self.byte()?;
            // The tenth byte may only contribute the top bit of a u64.
            if i == 9 && byte > 1 {
                return Err(malformed_at(
                    start,
                    "a number is longer than 64 bits".into(),
                ));
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed_at(
            start,
            "a number is longer than 64 bits".into(),
        ))
    }

    fn byte(&mut self) -> Result<u8, PruneError> {
        let buf = self.reader.fill_buf()?;
        let Some(&byte) = buf.first() else {
            return Err(self.malformed("unexpected end of file".into()));
        };
        self.reader.consume(1);
        self.pos += 1;
        Ok(byte)
    }

    fn skip(&mut self, len: u64, end: u64) -> Result<(), PruneError> {
        self.check_room(len, end)?;
        let offset = i64::try_from(len)
            .map_err(|_| self.malformed(format!("a field of {len} bytes is too large")))?;
        // seek_relative keeps the buffer when the target is already in it.
        self.reader.seek_relative(offset)?;
        self.pos += len;
        Ok(())
    }

    fn copy(&mut self, len: u64, end: u64, out: &mut Vec<u8>) -> Result<(), PruneError> {
        self.check_room(len, end)?;
        let len = self.charge(len)?;
        let start = out.len();
        out.resize(start + len, 0);
        self.reader.read_exact(&mut out[start..])?;
        self.pos += len as u64;
        Ok(())
    }

    fn keep_varint(&mut self, mut value: u64, out: &mut Vec<u8>) -> Result<(), PruneError> {
        self.charge(10)?;
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return Ok(());
            }
            out.push(byte | 0x80);
        }
    }

    fn check_room(&self, len: u64, end: u64) -> Result<(), PruneError> {
        if len > end.saturating_sub(self.pos) {
            return Err(self.malformed(format!(
                "a field of {len} bytes runs past the end of its message ({} bytes left)",
                end.saturating_sub(self.pos)
            )));
        }
        Ok(())
    }

    fn charge(&mut self, len: u64) -> Result<usize, PruneError> {
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        self.kept = self.kept.saturating_add(len);
        if self.kept > MAX_KEPT {
            return Err(self.malformed(format!(
                "more than {} MiB of metadata to read; this is not a model file of the \
                 expected kind",
                MAX_KEPT >> 20
            )));
        }
        Ok(len)
    }

    fn malformed(&self, reason: String) -> PruneError {
        malformed_at(self.pos, reason)
    }
}

fn malformed_at(offset: u64, reason: String) -> PruneError {
    PruneError::Malformed(format!("at byte {offset}: {reason}"))
}

/// Decodes message `message` of `reader`, reading only the fields its schema declares;
/// errors name `path` and `format`.
pub(crate) fn decode_pruned<M: prost::Message + Default, R: Read + Seek>(
    reader: R,
    message: &str,
    path: &std::path::Path,
    format: &'static str,
) -> Result<M, super::InferError> {
    let corrupt = |reason: String| super::InferError::Corrupt {
        path: path.to_path_buf(),
        format,
        reason,
    };
    let schema = super::proto::message(message);
    let kept = prune(reader, &schema).map_err(|e| match e {
        PruneError::Io(source) => super::InferError::Io {
            path: path.to_path_buf(),
            source,
        },
        PruneError::Malformed(reason) => corrupt(reason),
    })?;
    M::decode(kept.as_slice()).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn schema(name: &str) -> MessageDescriptor {
        super::super::proto::message(name)
    }

    #[test]
    fn keeps_declared_fields_and_skips_the_rest() {
        // TensorProto: dims (1, unknown here) = 7, name (8) = "w", raw_data (9) = 3 bytes.
        let bytes = [0x08, 0x07, 0x42, 0x01, b'w', 0x4a, 0x03, 1, 2, 3];
        let kept = prune(Cursor::new(bytes), &schema("onnx.TensorProto")).unwrap();
        assert_eq!(kept, vec![0x42, 0x01, b'w']);
    }

    #[test]
    fn a_length_past_the_end_is_an_error() {
        // name (8) declaring 200 bytes in a 4-byte file.
        let bytes = [0x42, 0xc8, 0x01, b'w'];
        let err = prune(Cursor::new(bytes), &schema("onnx.TensorProto")).unwrap_err();
        assert!(
            matches!(&err, PruneError::Malformed(m) if m.contains("200 bytes")),
            "{err:?}"
        );
    }

    #[test]
    fn a_huge_length_is_an_error_not_an_allocation() {
        // raw_data (9) declaring 2^62 bytes.
        let mut bytes = vec![0x4a];
        bytes.extend([0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40]);
        assert!(prune(Cursor::new(bytes), &schema("onnx.TensorProto")).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error() {
        // TypeProto.sequence_type (4) { elem_type (1) { sequence_type ... } }, 200 levels.
        let mut inner: Vec<u8> = Vec::new();
        for level in 0..200 {
            let field = if level % 2 == 0 { 0x0a } else { 0x22 };
            let mut outer = vec![field];
            let mut len = inner.len();
            loop {
                let byte = (len & 0x7f) as u8;
                len >>= 7;
                if len == 0 {
                    outer.push(byte);
                    break;
                }
                outer.push(byte | 0x80);
            }
            outer.extend_from_slice(&inner);
            inner = outer;
        }
        let err = prune(Cursor::new(inner), &schema("onnx.TypeProto")).unwrap_err();
        assert!(
            matches!(&err, PruneError::Malformed(m) if m.contains("nested")),
            "{err:?}"
        );
    }
}
