//! Just enough of HDF5 to read the string attributes of a file's root group, where Keras keeps
//! `model_config` and `keras_version` in its `.h5` files. Pure Rust, reading only the
//! superblock, the root group's object header and (for variable-length strings) one global
//! heap collection: the datasets (the weights) are never touched.
//!
//! Covers what h5py writes: superblock versions 0 to 3, object header versions 1 and 2,
//! attribute messages versions 1 to 3 in compact storage, fixed-length and variable-length
//! strings. Attributes in dense storage (a fractal heap, used with more than 8 attributes
//! under the newest file format) are reported as such, not read.
//!
//! Every offset and length comes from the file: each is checked against the bytes actually
//! read, and every read is capped, so a hostile file gives an error, not a panic or a huge
//! allocation.

use std::collections::HashSet;
use std::io::{Read, Seek, SeekFrom};

const SIGNATURE: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
/// An object header block or a global heap collection is kilobytes; a few MiB at most.
const MAX_BLOCK: u64 = 64 << 20;
const MAX_BLOCKS: usize = 1024;

/// The root group's attributes: name, and the value when it is a string.
pub(crate) struct RootAttributes {
    pub strings: Vec<(String, Vec<u8>)>,
    /// The root group keeps (some of) its attributes in dense storage, which is not read.
    pub dense: bool,
}

pub(crate) fn root_attributes<R: Read + Seek>(reader: R) -> Result<RootAttributes, String> {
    let mut file = File {
        reader,
        base: 0,
        offset_size: 8,
        length_size: 8,
    };
    let root = file.superblock()?;
    let messages = file.object_header(root)?;
    let mut attributes = RootAttributes {
        strings: Vec::new(),
        dense: false,
    };
    for (kind, data) in messages {
        match kind {
            0x000C => {
                if let Some(attribute) = file.attribute(&data)? {
                    attributes.strings.push(attribute);
                }
            }
            0x0015 => attributes.dense = true,
            _ => {}
        }
    }
    Ok(attributes)
}

struct File<R> {
    reader: R,
    /// Addresses in the file are relative to this.
    base: u64,
    offset_size: usize,
    length_size: usize,
}

/// A cursor over bytes read from the file, failing instead of reading past the end.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    fn new(data: &'a [u8]) -> Self {
        Bytes { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.data.len())
            .ok_or_else(|| "a structure runs past the end of its block".to_string())?;
        let slice = &self.data[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    /// A little-endian unsigned integer of `n` bytes (1 to 8).
    fn uint(&mut self, n: usize) -> Result<u64, String> {
        let bytes = self.take(n)?;
        Ok(bytes
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

fn to_usize(value: u64, what: &str) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("{what} {value} is too large"))
}

/// Rounds up to a multiple of 8, as version 1 structures pad their parts.
fn pad8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl<R: Read + Seek> File<R> {
    fn read_at(&mut self, address: u64, len: u64) -> Result<Vec<u8>, String> {
        if len > MAX_BLOCK {
            return Err(format!(
                "a block of {len} bytes, more than such metadata ever is"
            ));
        }
        let at = self
            .base
            .checked_add(address)
            .ok_or("an address past any file")?;
        self.reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| e.to_string())?;
        let mut data = Vec::new();
        (&mut self.reader)
            .take(len)
            .read_to_end(&mut data)
            .map_err(|e| e.to_string())?;
        if (data.len() as u64) < len {
            return Err(format!(
                "truncated: {len} bytes expected at offset {at}, the file ends first"
            ));
        }
        Ok(data)
    }

    /// Finds the superblock (at 0, 512, 1024, 2048...) and returns the root group's object
    /// header address.
    fn superblock(&mut self) -> Result<u64, String> {
        let mut at = 0u64;
        loop {
            let mut sig = [0u8; 8];
            self.reader
                .seek(SeekFrom::Start(at))
                .map_err(|e| e.to_string())?;
            let found = match self.reader.read_exact(&mut sig) {
                Ok(()) => &sig == SIGNATURE,
                Err(_) => return Err("no HDF5 signature: not an HDF5 file".into()),
            };
            if found {
                break;
            }
            at = if at == 0 { 512 } else { at * 2 };
            if at > 1 << 40 {
                return Err("no HDF5 signature: not an HDF5 file".into());
            }
        }
        // Read generously (the largest superblock is about 100 bytes), then parse.
        let mut head = Vec::new();
        self.reader
            .seek(SeekFrom::Start(at))
            .map_err(|e| e.to_string())?;
        (&mut self.reader)
            .take(256)
            .read_to_end(&mut head)
            .map_err(|e| e.to_string())?;
        let mut b = Bytes::new(&head);
        b.skip(8)?;
        let version = b.u8()?;
        let (offset_size, length_size) = match version {
            0 | 1 => {
                b.skip(4)?; // free-space, root symbol table, reserved, shared header versions
                let sizes = (b.u8()?, b.u8()?);
                b.skip(1 + 2 + 2 + 4)?; // reserved, leaf K, internal K, flags
                if version == 1 {
                    b.skip(4)?; // indexed storage K, reserved
                }
                sizes
            }
            2 | 3 => {
                let sizes = (b.u8()?, b.u8()?);
                b.skip(1)?; // flags
                sizes
            }
            v => return Err(format!("superblock version {v} is not known")),
        };
        for size in [offset_size, length_size] {
            if !matches!(size, 2 | 4 | 8) {
                return Err(format!("offsets or lengths of {size} bytes"));
            }
        }
        self.offset_size = usize::from(offset_size);
        self.length_size = usize::from(length_size);
        let o = self.offset_size;
        self.base = b.uint(o)?;
        match version {
            0 | 1 => {
                b.skip(3 * o)?; // free-space info, end of file, driver info addresses
                b.skip(o)?; // root symbol table entry: link name offset
                b.uint(o)
            }
            _ => {
                b.skip(2 * o)?; // superblock extension, end of file addresses
                b.uint(o)
            }
        }
    }

    /// The messages of the object header at `address`, continuations followed:
    /// (message type, message data).
    fn object_header(&mut self, address: u64) -> Result<Vec<(u16, Vec<u8>)>, String> {
        let mut messages = Vec::new();
        let first = self.read_at(address, 16)?;
        let v2 = first.starts_with(b"OHDR");
        // (address, length) of blocks still to read
        let mut pending: Vec<(u64, u64)> = Vec::new();
        let mut seen = HashSet::new();
        if v2 {
            let mut b = Bytes::new(&first);
            b.skip(4)?;
            let version = b.u8()?;
            if version != 2 {
                return Err(format!("object header version {version} is not known"));
            }
            let flags = b.u8()?;
            let mut prefix = 6usize;
            if flags & 0x20 != 0 {
                prefix += 16;
            }
            if flags & 0x10 != 0 {
                prefix += 4;
            }
            let size_bytes = 1usize << (flags & 3);
            let head = self.read_at(address, (prefix + size_bytes) as u64)?;
            let mut b = Bytes::new(&head);
            b.skip(prefix)?;
            let chunk = b.uint(size_bytes)?;
            let start = address + (prefix + size_bytes) as u64;
            let data = self.read_at(start, chunk)?;
            v2_messages(&data, flags, &mut messages)?;
        } else {
            let mut b = Bytes::new(&first);
            let version = b.u8()?;
            if version != 1 {
                return Err(format!("object header version {version} is not known"));
            }
            b.skip(1 + 2 + 4)?; // reserved, message count, reference count
            let size = b.uint(4)?;
            pending.push((address + 16, size));
        }
        let mut blocks = 0;
        loop {
            // Continuations found so far (in messages) become pending blocks.
            for (kind, data) in &messages {
                if *kind == 0x0010 {
                    let mut b = Bytes::new(data);
                    let at = b.uint(self.offset_size)?;
                    let len = b.uint(self.length_size)?;
                    if seen.insert(at) {
                        pending.push((at, len));
                    }
                }
            }
            let Some((at, len)) = pending.pop() else {
                break;
            };
            blocks += 1;
            if blocks > MAX_BLOCKS {
                return Err("too many object header continuation blocks".into());
            }
            let data = self.read_at(at, len)?;
            messages.retain(|(kind, _)| *kind != 0x0010);
            let mut found = Vec::new();
            if v2 {
                if !data.starts_with(b"OCHK") || data.len() < 8 {
                    return Err("a continuation block without its OCHK signature".into());
                }
                let flags = first[5];
                v2_messages(&data[4..data.len() - 4], flags, &mut found)?;
            } else {
                v1_messages(&data, &mut found)?;
            }
            // Keep every non-continuation message, and the new continuations for the next round.
            messages.extend(found);
        }
        messages.retain(|(kind, _)| *kind != 0x0010);
        Ok(messages)
    }

    /// An attribute message: its name and, when it is a string, its first value.
    fn attribute(&mut self, data: &[u8]) -> Result<Option<(String, Vec<u8>)>, String> {
        let mut b = Bytes::new(data);
        let version = b.u8()?;
        let flags = b.u8()?;
        let name_size = to_usize(b.uint(2)?, "name size")?;
        let type_size = to_usize(b.uint(2)?, "datatype size")?;
        let space_size = to_usize(b.uint(2)?, "dataspace size")?;
        let pad = |n: usize| if version == 1 { pad8(n) } else { n };
        match version {
            1 | 2 => {}
            3 => b.skip(1)?, // name character set
            v => return Err(format!("attribute message version {v} is not known")),
        }
        let name = b.take(pad(name_size))?;
        let name = &name[..name_size];
        let name = name.split(|&c| c == 0).next().unwrap_or_default();
        let name = String::from_utf8_lossy(name).into_owned();
        let datatype = b.take(pad(type_size))?;
        let dataspace = b.take(pad(space_size))?;
        let value = &data[b.pos..];
        if version >= 2 && flags & 0x03 != 0 {
            return Ok(None); // a shared datatype or dataspace: not a plain string
        }
        if element_count(dataspace, self.length_size)? == 0 {
            return Ok(None);
        }
        let mut t = Bytes::new(datatype);
        let class_version = t.u8()?;
        let bits = t.take(3)?;
        let size = to_usize(t.uint(4)?, "datatype size")?;
        match class_version & 0x0f {
            // Fixed-length string: the value itself, padded with NULs or spaces.
            3 => {
                let raw = value
                    .get(..size)
                    .ok_or("a string attribute shorter than its datatype says")?;
                let text = match raw.iter().position(|&c| c == 0) {
                    Some(end) => &raw[..end],
                    None => raw,
                };
                let text = if bits[0] & 0x0f == 2 {
                    text.trim_ascii_end()
                } else {
                    text
                };
                Ok(Some((name, text.to_vec())))
            }
            // Variable-length string: length, then a global heap ID.
            9 if bits[0] & 0x0f == 1 => {
                let mut v = Bytes::new(value);
                let len = v.uint(4)?;
                let collection = v.uint(self.offset_size)?;
                let index = v.uint(4)?;
                let text = self.global_heap_object(collection, index)?;
                let len = to_usize(len, "string length")?.min(text.len());
                Ok(Some((name, text[..len].to_vec())))
            }
            _ => Ok(None),
        }
    }

    fn global_heap_object(&mut self, address: u64, index: u64) -> Result<Vec<u8>, String> {
        let l = self.length_size;
        let head = self.read_at(address, 8 + l as u64)?;
        let mut b = Bytes::new(&head);
        if b.take(4)? != b"GCOL" {
            return Err("a global heap collection without its GCOL signature".into());
        }
        b.skip(4)?; // version, reserved
        let size = b.uint(l)?;
        let data = self.read_at(address, size)?;
        let mut b = Bytes::new(&data);
        b.skip(8 + l)?;
        while b.remaining() >= 8 + l {
            let id = b.uint(2)?;
            b.skip(6)?; // reference count, reserved
            let len = to_usize(b.uint(l)?, "heap object size")?;
            if id == 0 {
                break; // free space: the rest of the collection
            }
            let object = b.take(len)?;
            if id == index {
                return Ok(object.to_vec());
            }
            b.skip(pad8(len) - len).or_else(|_| b.skip(b.remaining()))?;
        }
        Err(format!("global heap object {index} not found"))
    }
}

/// Version 2 object header messages: type, size, flags, [creation order], data.
fn v2_messages(data: &[u8], flags: u8, out: &mut Vec<(u16, Vec<u8>)>) -> Result<(), String> {
    let header = if flags & 0x04 != 0 { 6 } else { 4 };
    let mut b = Bytes::new(data);
    while b.remaining() >= header {
        let kind = u16::from(b.u8()?);
        let size = to_usize(b.uint(2)?, "message size")?;
        b.skip(header - 3)?;
        let body = b.take(size)?;
        out.push((kind, body.to_vec()));
    }
    Ok(())
}

/// Version 1 object header messages: type, size, flags, reserved, data padded to 8.
fn v1_messages(data: &[u8], out: &mut Vec<(u16, Vec<u8>)>) -> Result<(), String> {
    let mut b = Bytes::new(data);
    while b.remaining() >= 8 {
        let kind = b.uint(2)? as u16;
        let size = to_usize(b.uint(2)?, "message size")?;
        b.skip(4)?; // flags, reserved
        let body = b.take(size)?;
        out.push((kind, body.to_vec()));
    }
    Ok(())
}

/// The number of elements a dataspace message describes (1 for a scalar, 0 for null).
fn element_count(space: &[u8], length_size: usize) -> Result<u64, String> {
    let mut b = Bytes::new(space);
    let version = b.u8()?;
    let rank = usize::from(b.u8()?);
    b.u8()?; // flags
    match version {
        1 => b.skip(5)?,
        2 => {
            if b.u8()? == 2 {
                return Ok(0); // null dataspace
            }
        }
        v => return Err(format!("dataspace version {v} is not known")),
    }
    let mut count = 1u64;
    for _ in 0..rank {
        count = count.saturating_mul(b.uint(length_size)?);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn not_hdf5() {
        let err = root_attributes(Cursor::new(b"hello world".to_vec()))
            .err()
            .unwrap();
        assert!(err.contains("not an HDF5 file"), "{err}");
        assert!(root_attributes(Cursor::new(Vec::new())).is_err());
    }

    #[test]
    fn truncated_superblock() {
        let mut bytes = SIGNATURE.to_vec();
        bytes.extend([0, 0, 0, 0, 0, 8, 8]);
        assert!(root_attributes(Cursor::new(bytes)).is_err());
    }
}
