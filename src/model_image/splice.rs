//! A raw deflate stream (a wheel's zip entry) put inside a longer deflate stream without being
//! deflated again, the way zlib's `examples/gzjoin.c` joins gzip files: its bytes are passed on
//! as they are but for two changes. The BFINAL bit of its last block is cleared, so that a
//! decoder goes on after it; and when that block ends inside a byte, the byte's unused bits are
//! zeroed and an empty stored block follows (its 3-bit header, then padding to the byte, then
//! LEN 0 and NLEN 0xffff), so that what comes next starts on a byte boundary. Back-references
//! in the stream only reach into its own bytes (it was written from nothing), so they mean the
//! same inside the longer stream.
//!
//! Written here because no crate does it: where a block starts and ends is only known by
//! decoding the stream, and flate2 does not stop there. zlib's C API does: `inflate` with
//! `Z_BLOCK` returns at every block boundary, whose bit position `data_type` gives. It is
//! called through libz-rs-sys, the C API of the same zlib-rs that flate2 uses; its calls are
//! the only unsafe code, in [`BlockInflater`].

use libz_rs_sys::{
    Z_BLOCK, Z_BUF_ERROR, Z_OK, Z_STREAM_END, inflate, inflateEnd, inflateInit2_, z_stream,
    zlibVersion,
};
use std::io::{self, Read, Write};

/// Raw bytes read at a time.
const READ_SIZE: usize = 256 * 1024;

/// Inflated bytes produced at a time.
const OUTPUT_SIZE: usize = 256 * 1024;

/// zlib-rs keeps up to 63 bits it has read but not used; a boundary's bit, and the last
/// byte's unused bits, are in the last 8 bytes read, which are only passed on once known.
const HELD: u64 = 8;

/// An empty stored block once the 3 bits of its header fit in what is left of the last byte
/// (all zero: BFINAL 0, BTYPE 00, then padding), and once they do not.
const EMPTY_STORED: [u8; 4] = [0x00, 0x00, 0xff, 0xff];
const EMPTY_STORED_NEXT_BYTE: [u8; 5] = [0x00, 0x00, 0x00, 0xff, 0xff];

/// Copies the raw deflate stream `raw` into `out` made to go on (see the module head) and
/// writes its inflated bytes to `inflated`; returns how many there were. A stream that does
/// not decode or ends early is an `InvalidData` error; bytes after its last block are left
/// out; whatever `inflated` fails with is returned as it is.
pub fn splice(
    raw: &mut impl Read,
    out: &mut impl Write,
    inflated: &mut impl Write,
) -> io::Result<u64> {
    let mut inflater = BlockInflater::new()?;
    let mut input = Held::default();
    let mut output = vec![0u8; OUTPUT_SIZE];
    let mut length = 0u64;
    // The first block's header is at bit 0: known before decoding starts.
    if !input.fill(raw, 1)? {
        return Err(invalid("it is empty"));
    }
    let mut last_block_start = input.bit(0).then_some(0);
    // zlib may report a boundary where the stream starts; no block is empty, so a boundary at
    // the position of the one before is that one again.
    let mut boundary_at = 0;
    let end = loop {
        if input.unread() == 0 {
            input.pass_on(out, last_block_start)?;
            if !input.fill(raw, input.read + 1)? {
                return Err(invalid("it ends before its last block does"));
            }
        }
        let step = inflater.step(input.unread_bytes(), &mut output)?;
        input.read += step.read as u64;
        inflated.write_all(&output[..step.written])?;
        length += step.written as u64;
        let Some(boundary) = step.boundary else {
            if step.read == 0 && step.written == 0 {
                return Err(invalid("it stopped decoding"));
            }
            continue;
        };
        let position = input.read * 8 - u64::from(boundary.unused_bits);
        if boundary.after_last {
            break position;
        }
        if position == boundary_at {
            continue;
        }
        boundary_at = position;
        if last_block_start.is_some() {
            return Err(invalid("a block follows its last one"));
        }
        // The next block's header starts here: is its BFINAL bit set?
        if !input.fill(raw, position / 8 + 1)? {
            return Err(invalid("it ends between two blocks"));
        }
        if input.bit(position) {
            last_block_start = Some(position);
        }
    };
    // Bytes after the last block are left out, as zlib, Python's zipfile (so pip) and the zip
    // crate leave them: a wheel they install is installed.
    input.finish(out, last_block_start, end)?;
    Ok(length)
}

fn invalid(problem: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("not a valid deflate stream: {problem}"),
    )
}

/// The raw bytes read and not passed on yet, from byte `start` of the stream; `read` counts
/// those the inflater has taken.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    start: u64,
    read: u64,
}

impl Held {
    fn unread(&self) -> u64 {
        self.start + self.bytes.len() as u64 - self.read
    }

    fn unread_bytes(&self) -> &[u8] {
        &self.bytes[(self.read - self.start) as usize..]
    }

    fn bit(&self, position: u64) -> bool {
        self.bytes[(position / 8 - self.start) as usize] & (1 << (position % 8)) != 0
    }

    /// Reads until the bytes before byte `until` of the stream are held; false when it ends
    /// first.
    fn fill(&mut self, raw: &mut impl Read, until: u64) -> io::Result<bool> {
        while self.start + (self.bytes.len() as u64) < until {
            let had = self.bytes.len();
            self.bytes.resize(had + READ_SIZE, 0);
            let got = loop {
                match raw.read(&mut self.bytes[had..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => break other,
                }
            };
            self.bytes.truncate(had + got.as_ref().map_or(0, |n| *n));
            if got? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Passes on the bytes the inflater has taken but the last [`HELD`].
    fn pass_on(&mut self, out: &mut impl Write, clear: Option<u64>) -> io::Result<()> {
        let until = self.read.saturating_sub(HELD).max(self.start);
        self.write(out, until, clear)?;
        self.bytes.drain(..(until - self.start) as usize);
        self.start = until;
        Ok(())
    }

    /// Passes on the rest, up to bit `end`, then the empty block that ends it on a byte.
    fn finish(&mut self, out: &mut impl Write, clear: Option<u64>, end: u64) -> io::Result<()> {
        let used = end.div_ceil(8);
        let used_bits = (end % 8) as u8;
        if used_bits != 0 {
            self.bytes[(used - 1 - self.start) as usize] &= (1u8 << used_bits) - 1;
        }
        self.write(out, used, clear)?;
        match used_bits {
            0 => Ok(()),
            1..=5 => out.write_all(&EMPTY_STORED),
            _ => out.write_all(&EMPTY_STORED_NEXT_BYTE),
        }
    }

    /// Writes the held bytes before byte `until`, the one holding bit `clear` with it cleared.
    fn write(&self, out: &mut impl Write, until: u64, clear: Option<u64>) -> io::Result<()> {
        let bytes = &self.bytes[..(until - self.start) as usize];
        match clear.map(|bit| (bit / 8, bit % 8)) {
            Some((byte, bit)) if (self.start..until).contains(&byte) => {
                let at = (byte - self.start) as usize;
                out.write_all(&bytes[..at])?;
                out.write_all(&[bytes[at] & !(1u8 << bit)])?;
                out.write_all(&bytes[at + 1..])
            }
            _ => out.write_all(bytes),
        }
    }
}

/// What one call of [`BlockInflater::step`] did.
struct Step {
    read: usize,
    written: usize,
    /// Set when it stopped at the end of a block.
    boundary: Option<Boundary>,
}

struct Boundary {
    /// Bits of the bytes read that come after the boundary.
    unused_bits: u32,
    /// The block that just ended was the stream's last.
    after_last: bool,
}

/// A raw inflate stream of zlib's C API that stops at block boundaries.
struct BlockInflater {
    // Boxed: the stream's state is allocated by zlib and the stream must not move under it.
    stream: Box<z_stream>,
}

// zlib's `data_type` after `inflate(Z_BLOCK)`: the unused bits, then flags.
const DATA_TYPE_BITS: i32 = 63;
const DATA_TYPE_LAST_BLOCK: i32 = 64;
const DATA_TYPE_AT_BOUNDARY: i32 = 128;

impl BlockInflater {
    fn new() -> io::Result<Self> {
        let mut stream = Box::new(z_stream::default());
        let size = std::mem::size_of::<z_stream>() as i32;
        // SAFETY: a default stream (zlib-rs's allocator set), the library's own version string,
        // the struct's size; window bits -15 is a raw deflate stream with a 32 KiB window.
        let code = unsafe { inflateInit2_(&mut *stream, -15, zlibVersion(), size) };
        if code != Z_OK {
            return Err(io::Error::other(format!(
                "zlib could not start an inflate stream (code {code})"
            )));
        }
        Ok(BlockInflater { stream })
    }

    /// Inflates `input` into `output` until a block ends, the input is used up or the output
    /// is full, whichever comes first.
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> io::Result<Step> {
        let input = &input[..input.len().min(u32::MAX as usize)];
        let output_len = output.len().min(u32::MAX as usize);
        let stream = &mut *self.stream;
        stream.next_in = input.as_ptr().cast_mut();
        stream.avail_in = input.len() as u32;
        stream.next_out = output.as_mut_ptr();
        stream.avail_out = output_len as u32;
        // SAFETY: the stream was initialised by `new`; next_in/avail_in and next_out/avail_out
        // describe the two slices, which outlive the call. zlib keeps its own window, so
        // neither slice is looked at again after it returns.
        let code = unsafe { inflate(stream, Z_BLOCK) };
        let read = input.len() - stream.avail_in as usize;
        let written = output_len - stream.avail_out as usize;
        stream.next_in = std::ptr::null_mut();
        stream.next_out = std::ptr::null_mut();
        match code {
            Z_OK | Z_BUF_ERROR => {}
            // A raw stream only ends after its last block's boundary, where this stops first.
            Z_STREAM_END => return Err(invalid("it ended without a block boundary")),
            _ => return Err(invalid(&self.message(code))),
        }
        let data_type = stream.data_type;
        let boundary = (data_type & DATA_TYPE_AT_BOUNDARY != 0).then_some(Boundary {
            unused_bits: (data_type & DATA_TYPE_BITS) as u32,
            after_last: data_type & DATA_TYPE_LAST_BLOCK != 0,
        });
        Ok(Step {
            read,
            written,
            boundary,
        })
    }

    fn message(&self, code: i32) -> String {
        if self.stream.msg.is_null() {
            return format!("zlib error {code}");
        }
        // SAFETY: zlib sets msg to a NUL-terminated static string.
        unsafe { std::ffi::CStr::from_ptr(self.stream.msg) }
            .to_string_lossy()
            .into_owned()
    }
}

impl Drop for BlockInflater {
    fn drop(&mut self) {
        // SAFETY: the stream was initialised by `new` and is ended once.
        unsafe { inflateEnd(&mut *self.stream) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::DeflateDecoder;
    use flate2::write::DeflateEncoder;
    use std::collections::BTreeSet;

    /// Bytes that compress some: words from a small alphabet, with noise.
    fn sample(len: usize, noise: u64) -> Vec<u8> {
        let mut state = noise | 1;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                if i % 7 == 0 {
                    b' '
                } else {
                    b'a' + (state % 5) as u8
                }
            })
            .collect()
    }

    fn deflate(bytes: &[u8], level: u32) -> Vec<u8> {
        let mut encoder = DeflateEncoder::new(Vec::new(), flate2::Compression::new(level));
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    /// A stream of `before` ended by a sync flush, as a gzip piece is.
    fn synced(before: &[u8]) -> Vec<u8> {
        let mut compress = flate2::Compress::new(flate2::Compression::new(6), false);
        let mut out = Vec::with_capacity(before.len() + 1024);
        compress
            .compress_vec(before, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out
    }

    fn inflate_all(stream: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        DeflateDecoder::new(stream).read_to_end(&mut out).unwrap();
        out
    }

    /// Splices `content` deflated at `level` between two stretches of a longer stream and
    /// checks what that stream inflates to; returns the bytes the splice added.
    fn round_trip(content: &[u8], level: u32) -> usize {
        let raw = deflate(content, level);
        let before = sample(1000, 7);
        let mut joined = synced(&before);
        let start = joined.len();
        let mut inflated = Vec::new();
        let length = splice(&mut &raw[..], &mut joined, &mut inflated).unwrap();
        assert_eq!(length, content.len() as u64);
        assert_eq!(inflated, content);
        let added = joined.len() - start - raw.len();
        // What follows: a final block deflated on its own, from a byte boundary.
        let after = sample(500, 9);
        joined.extend_from_slice(&deflate(&after, 6));
        let whole = [&before[..], content, &after[..]].concat();
        let len = content.len();
        assert_eq!(inflate_all(&joined), whole, "{len} bytes at level {level}");
        added
    }

    #[test]
    fn spliced_streams_decode_inside_a_longer_one() {
        let mut added = BTreeSet::new();
        for level in [0, 1, 6, 9] {
            for (len, noise) in [
                (100, 2),
                (5000, 3),
                (70_000, 4),
                (300_000, 5),
                (1_000_003, 6),
            ] {
                added.insert(round_trip(&sample(len, noise), level));
            }
        }
        for len in 1..300 {
            added.insert(round_trip(&sample(len, len as u64), 6));
        }
        // Streams that ended on a byte, with room for a stored block's header in their last
        // byte, and without it: the three ways of ending were all taken.
        assert_eq!(added, BTreeSet::from([0, 4, 5]));
    }

    #[test]
    fn bytes_after_the_last_block_are_left_out() {
        let content = sample(100_000, 3);
        let raw = deflate(&content, 6);
        let (mut alone, mut trailed) = (Vec::new(), Vec::new());
        splice(&mut &raw[..], &mut alone, &mut io::sink()).unwrap();
        let with_extra = [&raw[..], b"extra bytes a zip writer left"].concat();
        let mut inflated = Vec::new();
        splice(&mut &with_extra[..], &mut trailed, &mut inflated).unwrap();
        assert_eq!(trailed, alone);
        assert_eq!(inflated, content);
    }

    #[test]
    fn bad_streams_are_refused() {
        let raw = deflate(&sample(100_000, 3), 6);
        let cases: [(&str, Vec<u8>); 3] = [
            ("empty", Vec::new()),
            ("cut short", raw[..raw.len() / 2].to_vec()),
            ("not deflate", vec![0xff; 64]),
        ];
        for (what, bytes) in cases {
            let error = splice(&mut &bytes[..], &mut Vec::new(), &mut Vec::new()).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{what}: {error}");
            assert!(
                error.to_string().starts_with("not a valid deflate stream"),
                "{what}: {error}"
            );
        }
    }
}
