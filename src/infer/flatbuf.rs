//! A small FlatBuffers reader that trusts nothing in the file.
//!
//! FlatBuffers are random-access: tables point at vtables and at other tables anywhere in the
//! file. Instead of reading the whole file (a TFLite model can hold gigabytes of weights), the
//! reader seeks to the few places it is asked about and caches the 4 KiB pages it read, so
//! memory stays small whatever the file's size. Every offset is checked against the file's
//! length, every table field against its table's declared size, every string and vector
//! against the file, and the number of reads is capped, so a hostile file gives an error, never
//! a panic, a hang or a huge allocation.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};

const PAGE: u64 = 4096;
/// Pages kept before the cache is dropped and refilled: 16 MiB.
const MAX_PAGES: usize = 4096;
/// Reads allowed for one file; a sane model needs a few per tensor it describes.
const MAX_READS: u64 = 20_000_000;

#[derive(Debug)]
pub(crate) enum FlatError {
    Io(std::io::Error),
    Malformed(String),
}

impl From<std::io::Error> for FlatError {
    fn from(e: std::io::Error) -> Self {
        FlatError::Io(e)
    }
}

type Result<T> = std::result::Result<T, FlatError>;

fn malformed<T>(reason: String) -> Result<T> {
    Err(FlatError::Malformed(reason))
}

/// A table: where it starts, and its vtable's field slots.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Table {
    pos: u64,
    vtable: u64,
    /// Bytes in the vtable, header included.
    vtable_len: u16,
    /// Bytes in the table's inline part, the vtable offset included.
    table_len: u16,
}

/// A vector: where its first element is and how many there are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vector {
    start: u64,
    pub len: u32,
    elem_size: u64,
}

pub(crate) struct FlatFile<R> {
    reader: R,
    len: u64,
    pages: HashMap<u64, Vec<u8>>,
    reads: u64,
}

impl<R: Read + Seek> FlatFile<R> {
    pub fn new(mut reader: R) -> Result<Self> {
        let len = reader.seek(SeekFrom::End(0))?;
        Ok(FlatFile {
            reader,
            len,
            pages: HashMap::new(),
            reads: 0,
        })
    }

    /// `n` bytes at `at`, checked against the file's end.
    pub fn bytes(&mut self, at: u64, n: u64, what: &str) -> Result<Vec<u8>> {
        self.reads += 1;
        if self.reads > MAX_READS {
            return malformed(format!(
                "more than {MAX_READS} reads needed, the structure is unreasonably large"
            ));
        }
        let end = at.checked_add(n).filter(|&end| end <= self.len);
        let Some(end) = end else {
            return malformed(format!(
                "{what} at offset {at} ({n} bytes) runs past the end of the file ({} bytes)",
                self.len
            ));
        };
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut pos = at;
        while pos < end {
            let page = pos / PAGE;
            let data = self.page(page)?;
            let from = usize::try_from(pos - page * PAGE).unwrap_or(0);
            let take = usize::try_from((end - pos).min(PAGE)).unwrap_or(0);
            let to = (from + take).min(data.len());
            if from >= to {
                return malformed(format!("{what}: the file changed while being read"));
            }
            out.extend_from_slice(&data[from..to]);
            pos += (to - from) as u64;
        }
        Ok(out)
    }

    fn page(&mut self, page: u64) -> Result<&Vec<u8>> {
        if !self.pages.contains_key(&page) {
            if self.pages.len() >= MAX_PAGES {
                self.pages.clear();
            }
            let start = page * PAGE;
            let size = (self.len - start).min(PAGE);
            let mut data = vec![0; usize::try_from(size).unwrap_or(0)];
            self.reader.seek(SeekFrom::Start(start))?;
            self.reader.read_exact(&mut data)?;
            self.pages.insert(page, data);
        }
        match self.pages.get(&page) {
            Some(data) => Ok(data),
            None => malformed("page cache".into()),
        }
    }

    fn array<const N: usize>(&mut self, at: u64, what: &str) -> Result<[u8; N]> {
        let bytes = self.bytes(at, N as u64, what)?;
        let mut out = [0; N];
        out.copy_from_slice(&bytes);
        Ok(out)
    }

    pub fn u8(&mut self, at: u64, what: &str) -> Result<u8> {
        Ok(self.array::<1>(at, what)?[0])
    }

    pub fn u16(&mut self, at: u64, what: &str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(at, what)?))
    }

    pub fn u32(&mut self, at: u64, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(at, what)?))
    }

    pub fn i32(&mut self, at: u64, what: &str) -> Result<i32> {
        Ok(i32::from_le_bytes(self.array(at, what)?))
    }

    pub fn u64(&mut self, at: u64, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(at, what)?))
    }

    /// The position an unsigned offset stored at `at` points to.
    fn follow(&mut self, at: u64, what: &str) -> Result<u64> {
        let offset = self.u32(at, what)?;
        let target = at + u64::from(offset);
        if offset == 0 || target >= self.len {
            return malformed(format!(
                "{what}: offset {offset} at {at} points outside the file ({} bytes)",
                self.len
            ));
        }
        Ok(target)
    }

    /// The root table, checking the 4-byte file identifier after the root offset.
    pub fn root(&mut self, identifier: &[u8; 4], what: &str) -> Result<Table> {
        if self.len < 8 {
            return malformed(format!("{} bytes is too short for a {what}", self.len));
        }
        let found = self.array::<4>(4, "file identifier")?;
        if &found != identifier {
            return malformed(format!(
                "the file identifier is {}, not {}",
                show(&found),
                show(identifier)
            ));
        }
        let pos = self.follow(0, "root table")?;
        self.table_at(pos, what)
    }

    fn table_at(&mut self, pos: u64, what: &str) -> Result<Table> {
        let soffset = self.i32(pos, what)?;
        let vtable = i64::try_from(pos)
            .ok()
            .and_then(|p| p.checked_sub(i64::from(soffset)))
            .and_then(|v| u64::try_from(v).ok())
            .filter(|&v| v < self.len);
        let Some(vtable) = vtable else {
            return malformed(format!(
                "{what} at {pos}: its vtable offset {soffset} points outside the file"
            ));
        };
        let vtable_len = self.u16(vtable, what)?;
        let table_len = self.u16(vtable + 2, what)?;
        if vtable_len < 4 || vtable_len % 2 != 0 || table_len < 4 {
            return malformed(format!(
                "{what} at {pos}: invalid vtable (size {vtable_len}, table size {table_len})"
            ));
        }
        // Both must lie inside the file; reads check it again field by field.
        self.bytes(vtable, u64::from(vtable_len), what)?;
        self.bytes(pos, u64::from(table_len), what)?;
        Ok(Table {
            pos,
            vtable,
            vtable_len,
            table_len,
        })
    }

    /// Where field `index` (0-based, in schema order) of `table` is, if present; `size` bytes
    /// must fit inside the table.
    fn field(&mut self, table: &Table, index: u16, size: u64, what: &str) -> Result<Option<u64>> {
        let slot = 4 + 2 * u64::from(index);
        if slot + 2 > u64::from(table.vtable_len) {
            return Ok(None);
        }
        let offset = self.u16(table.vtable + slot, what)?;
        if offset == 0 {
            return Ok(None);
        }
        if u64::from(offset) + size > u64::from(table.table_len) || offset < 4 {
            return malformed(format!(
                "{what}: field at {offset} lies outside its table ({} bytes)",
                table.table_len
            ));
        }
        Ok(Some(table.pos + u64::from(offset)))
    }

    pub fn field_u8(&mut self, table: &Table, index: u16, what: &str) -> Result<Option<u8>> {
        match self.field(table, index, 1, what)? {
            Some(at) => self.u8(at, what).map(Some),
            None => Ok(None),
        }
    }

    pub fn field_u32(&mut self, table: &Table, index: u16, what: &str) -> Result<Option<u32>> {
        match self.field(table, index, 4, what)? {
            Some(at) => self.u32(at, what).map(Some),
            None => Ok(None),
        }
    }

    pub fn field_u64(&mut self, table: &Table, index: u16, what: &str) -> Result<Option<u64>> {
        match self.field(table, index, 8, what)? {
            Some(at) => self.u64(at, what).map(Some),
            None => Ok(None),
        }
    }

    /// A vector field whose elements are `elem_size` bytes each (4 for offsets to tables).
    pub fn field_vector(
        &mut self,
        table: &Table,
        index: u16,
        elem_size: u64,
        what: &str,
    ) -> Result<Option<Vector>> {
        let Some(at) = self.field(table, index, 4, what)? else {
            return Ok(None);
        };
        let pos = self.follow(at, what)?;
        let len = self.u32(pos, what)?;
        let start = pos + 4;
        let fits = u64::from(len)
            .checked_mul(elem_size)
            .and_then(|size| size.checked_add(start))
            .is_some_and(|end| end <= self.len);
        if !fits {
            return malformed(format!(
                "{what}: a vector of {len} elements at {pos} runs past the end of the file ({} \
                 bytes)",
                self.len
            ));
        }
        Ok(Some(Vector {
            start,
            len,
            elem_size,
        }))
    }

    /// A string field, at most `max` bytes, which must be UTF-8.
    pub fn field_string(
        &mut self,
        table: &Table,
        index: u16,
        max: u32,
        what: &str,
    ) -> Result<Option<String>> {
        let Some(at) = self.field(table, index, 4, what)? else {
            return Ok(None);
        };
        let pos = self.follow(at, what)?;
        let len = self.u32(pos, what)?;
        if len > max {
            return malformed(format!("{what}: a string of {len} bytes (at most {max})"));
        }
        let bytes = self.bytes(pos + 4, u64::from(len), what)?;
        match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text)),
            Err(_) => malformed(format!("{what}: a string that is not UTF-8")),
        }
    }

    fn element(&mut self, vector: &Vector, i: u32, what: &str) -> Result<u64> {
        if i >= vector.len {
            return malformed(format!(
                "{what}: index {i} past the vector's {} elements",
                vector.len
            ));
        }
        Ok(vector.start + u64::from(i) * vector.elem_size)
    }

    pub fn table_in(&mut self, vector: &Vector, i: u32, what: &str) -> Result<Table> {
        let at = self.element(vector, i, what)?;
        let pos = self.follow(at, what)?;
        self.table_at(pos, what)
    }

    pub fn i32_in(&mut self, vector: &Vector, i: u32, what: &str) -> Result<i32> {
        let at = self.element(vector, i, what)?;
        self.i32(at, what)
    }

    /// The bytes of a `[ubyte]` vector, at most `max` of them.
    pub fn bytes_of(&mut self, vector: &Vector, max: u32, what: &str) -> Result<Vec<u8>> {
        let len = vector.len.min(max);
        self.bytes(vector.start, u64::from(len) * vector.elem_size, what)
    }
}

fn show(bytes: &[u8]) -> String {
    format!("\"{}\"", bytes.escape_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// root offset 12, identifier "TEST", vtable at 8 (4 bytes header + one slot), table at 12
    /// with soffset 4 and a u32 field of 7 at offset 4.
    fn tiny() -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(12u32.to_le_bytes());
        b.extend(b"TEST");
        b.extend(6u16.to_le_bytes()); // vtable size
        b.extend(8u16.to_le_bytes()); // table size
        b.extend(4i32.to_le_bytes()); // soffset: vtable at 12 - 4 = 8
        b.extend(7u32.to_le_bytes());
        b
    }

    #[test]
    fn reads_a_field_through_its_vtable() {
        // vtable at 8 is [6, 8] and the slot for field 0 would be at 12: the table itself.
        // Build a layout where the slot is inside the vtable instead.
        let mut b = Vec::new();
        b.extend(16u32.to_le_bytes());
        b.extend(b"TEST");
        b.extend(6u16.to_le_bytes());
        b.extend(8u16.to_le_bytes());
        b.extend(4u16.to_le_bytes()); // field 0 at table + 4
        b.extend([0, 0]);
        b.extend(8i32.to_le_bytes()); // table at 16, vtable at 8
        b.extend(7u32.to_le_bytes());
        let mut file = FlatFile::new(Cursor::new(b)).unwrap();
        let root = file.root(b"TEST", "test").unwrap();
        assert_eq!(file.field_u32(&root, 0, "f").unwrap(), Some(7));
        assert_eq!(file.field_u32(&root, 1, "f").unwrap(), None);
    }

    #[test]
    fn bad_identifiers_and_offsets_are_errors() {
        let mut file = FlatFile::new(Cursor::new(tiny())).unwrap();
        assert!(matches!(
            file.root(b"TFL3", "t"),
            Err(FlatError::Malformed(_))
        ));
        let mut b = tiny();
        b[0] = 0xff;
        let mut file = FlatFile::new(Cursor::new(b)).unwrap();
        assert!(matches!(
            file.root(b"TEST", "t"),
            Err(FlatError::Malformed(_))
        ));
        let mut file = FlatFile::new(Cursor::new(vec![0u8; 3])).unwrap();
        assert!(matches!(
            file.root(b"TEST", "t"),
            Err(FlatError::Malformed(_))
        ));
    }

    #[test]
    fn reads_across_pages() {
        let data: Vec<u8> = (0..3 * PAGE as usize).map(|i| i as u8).collect();
        let mut file = FlatFile::new(Cursor::new(data.clone())).unwrap();
        let got = file.bytes(PAGE - 3, PAGE + 6, "x").unwrap();
        assert_eq!(got, data[PAGE as usize - 3..2 * PAGE as usize + 3]);
        assert!(file.bytes(3 * PAGE - 1, 2, "x").is_err());
        assert!(file.bytes(u64::MAX, 2, "x").is_err());
    }
}
