//! A gzip encoder that deflates on several cores, the way pigz does: the uncompressed stream is
//! cut into pieces of a fixed size, each piece is deflated on a worker as raw deflate with the
//! previous piece's last 32 KiB as its preset dictionary (so the ratio stays gzip's), every
//! piece but the last ends with a sync flush (which ends on a byte boundary, so the pieces
//! concatenate into one valid deflate stream) and the last one finishes the stream. The writer
//! thread puts the pieces out in order, between a gzip header and the CRC-32 + length trailer.
//!
//! A file that comes deflated already (a wheel's zip entry) is put in as it is, between two
//! pieces ([`ParallelGzEncoder::write_deflated`]): deflating it again was most of the time of
//! installing Python packages as layers.
//!
//! The bytes depend only on the input (and where deflated files are put in), the level and the
//! piece size: never on the number of threads, on timing or on how the input was split into
//! writes. A stream of at most one piece is deflated on the calling thread and starts no thread.

use super::splice::splice;
use flate2::{Compress, Crc, FlushCompress, Status};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The uncompressed size of a piece: large enough that a piece's own block header and sync
/// marker cost nothing measurable (matches still reach into the piece before, through the
/// dictionary), small enough that the pieces in flight stay a few MiB when four layers are
/// written at once (pigz's pieces are 128 KiB). With 1 MiB pieces the peak RSS of installing
/// the TensorFlow packages went from 42 to 82 MiB.
pub const PIECE_SIZE: usize = 256 * 1024;

/// Deflate's window: what a piece may refer back to in the one before it.
const WINDOW: usize = 32 * 1024;

/// At most this many workers per stream: past it the writer thread (hashing, storing) is the
/// bound anyway.
const MAX_THREADS: usize = 8;

/// mtime 0, no name, no extra flags at level 6, OS "unknown": what flate2's `GzEncoder` writes.
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// The gzip stream of everything written, into `W`; [`ParallelGzEncoder::finish`] ends it.
pub struct ParallelGzEncoder<W: Write> {
    inner: W,
    level: u32,
    piece_size: usize,
    threads: usize,
    /// The piece being filled; sent off once full and more bytes come (a full piece may be the
    /// last one, which ends differently).
    pending: Vec<u8>,
    /// The last [`WINDOW`] bytes of the piece sent before `pending`.
    dictionary: Vec<u8>,
    /// The CRC-32 of the pieces put out so far, and their length.
    crc: Crc,
    total: u64,
    header_written: bool,
    /// Pieces on the workers, in stream order; at most `2 × threads`.
    in_flight: VecDeque<Receiver<io::Result<Deflated>>>,
    /// Started with the second piece.
    workers: Option<Workers>,
    /// Buffers of pieces put out, for the next ones: every piece's input, output and
    /// dictionary comes from here once the first few are back, so a gigabyte's stream
    /// allocates nothing more. Freed and allocated again on other threads, piece after piece,
    /// they made glibc's per-thread arenas grow: installing the TensorFlow packages peaked at
    /// 90–116 MiB of RSS.
    spare: Buffers,
    /// For the streams of one piece, and when only one thread is allowed.
    local: Option<Deflater>,
}

impl<W: Write> ParallelGzEncoder<W> {
    /// Deflates at `level` (0–9) on up to as many threads as the machine has cores.
    pub fn new(inner: W, level: u32) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_threads(inner, level, cores.min(MAX_THREADS), PIECE_SIZE)
    }

    /// `threads` 1 deflates every piece on the calling thread; the bytes are the same.
    pub fn with_threads(inner: W, level: u32, threads: usize, piece_size: usize) -> Self {
        let piece_size = piece_size.max(1);
        ParallelGzEncoder {
            inner,
            level: level.min(9),
            piece_size,
            threads: threads.max(1),
            pending: Vec::new(),
            dictionary: Vec::new(),
            crc: Crc::new(),
            total: 0,
            header_written: false,
            in_flight: VecDeque::new(),
            workers: None,
            local: None,
            spare: Buffers::default(),
        }
    }

    /// Ends the stream (the last piece, then the trailer) and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.send(true)?;
        while !self.in_flight.is_empty() {
            self.put_out_oldest()?;
        }
        self.write_header()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        // ISIZE is the length modulo 2^32.
        trailer[4..].copy_from_slice(&(self.total as u32).to_le_bytes());
        self.inner.write_all(&trailer)?;
        Ok(self.inner)
    }

    /// Sends `pending` to be deflated (on a worker, or here when no worker is needed).
    fn send(&mut self, last: bool) -> io::Result<()> {
        let next = if last {
            Vec::new()
        } else {
            self.spare.input(self.piece_size)
        };
        let input = std::mem::replace(&mut self.pending, next);
        let mut tail = self.spare.dictionary();
        tail.extend_from_slice(&input[input.len().saturating_sub(WINDOW)..]);
        let dictionary = std::mem::replace(&mut self.dictionary, tail);
        self.total += input.len() as u64;
        let piece = Piece {
            dictionary,
            input,
            output: self.spare.output(),
            last,
        };
        if self.workers.is_none() && (last || self.threads == 1) {
            let level = self.level;
            let deflated = self
                .local
                .get_or_insert_with(|| Deflater::new(level))
                .piece(piece)?;
            return self.put_out(deflated);
        }
        let workers = match self.workers.take() {
            Some(workers) => workers,
            None => Workers::start(self.threads, self.level)?,
        };
        let (done, result) = mpsc::sync_channel(1);
        let sent = workers.send(piece, done);
        self.workers = Some(workers);
        sent?;
        self.in_flight.push_back(result);
        // Put out what is ready, and wait for the oldest piece once enough are in flight: a
        // few pieces in memory, whatever the stream's length.
        while self.in_flight.len() >= 2 * self.threads {
            self.put_out_oldest()?;
        }
        while let Some(Ok(deflated)) = self.in_flight.front().map(Receiver::try_recv) {
            self.in_flight.pop_front();
            self.put_out(deflated?)?;
        }
        Ok(())
    }

    /// Puts a raw deflate stream (a wheel's zip entry) into the gzip stream as it is, rather
    /// than deflating its bytes again: the piece being filled is sent off (it ends with a sync
    /// flush, on a byte), the pieces in flight are put out, then the stream's own blocks, made
    /// to go on ([`splice`]). Its inflated bytes go to `inflated` and count in the CRC, the
    /// length and the next piece's dictionary. Returns how many there were.
    pub fn write_deflated(
        &mut self,
        raw: &mut impl Read,
        inflated: &mut impl Write,
    ) -> io::Result<u64> {
        if !self.pending.is_empty() {
            self.send(false)?;
        }
        while !self.in_flight.is_empty() {
            self.put_out_oldest()?;
        }
        self.write_header()?;
        let mut seen = Seen {
            inner: inflated,
            crc: Crc::new(),
            tail: std::mem::take(&mut self.dictionary),
        };
        let length = splice(raw, &mut self.inner, &mut seen)?;
        self.crc.combine(&seen.crc);
        self.total += length;
        self.dictionary = seen.tail;
        Ok(length)
    }

    fn put_out_oldest(&mut self) -> io::Result<()> {
        let Some(result) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let deflated = result
            .recv()
            .map_err(|_| io::Error::other("a gzip worker stopped before its piece was done"))??;
        self.put_out(deflated)
    }

    fn put_out(&mut self, deflated: Deflated) -> io::Result<()> {
        self.write_header()?;
        self.inner.write_all(&deflated.bytes)?;
        self.crc.combine(&deflated.crc);
        self.spare.keep(deflated);
        Ok(())
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.inner.write_all(&HEADER)?;
            self.header_written = true;
        }
        Ok(())
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.pending.len() == self.piece_size {
            self.send(false)?;
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(self.piece_size);
        }
        let n = buf.len().min(self.piece_size - self.pending.len());
        self.pending.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    /// Puts out the pieces in flight and flushes the writer. The piece being filled stays:
    /// cutting it here would make the bytes depend on when flushes come.
    fn flush(&mut self) -> io::Result<()> {
        while !self.in_flight.is_empty() {
            self.put_out_oldest()?;
        }
        self.inner.flush()
    }
}

/// A spliced stream's inflated bytes on their way: into its CRC, and its last [`WINDOW`]
/// bytes (after those before it) kept as the next piece's dictionary.
struct Seen<'a, W> {
    inner: &'a mut W,
    crc: Crc,
    tail: Vec<u8>,
}

impl<W: Write> Write for Seen<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let buf = &buf[..n];
        self.crc.update(buf);
        let keep = buf.len().min(WINDOW);
        let drop = (self.tail.len() + keep).saturating_sub(WINDOW);
        self.tail.drain(..drop);
        self.tail.extend_from_slice(&buf[buf.len() - keep..]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A piece to deflate, with the buffer its output goes into.
struct Piece {
    dictionary: Vec<u8>,
    input: Vec<u8>,
    output: Vec<u8>,
    last: bool,
}

/// A deflated piece, with the buffers it came in (to be used again).
struct Deflated {
    bytes: Vec<u8>,
    /// The CRC-32 of the piece's input.
    crc: Crc,
    input: Vec<u8>,
    dictionary: Vec<u8>,
}

/// The buffers of pieces already put out.
#[derive(Default)]
struct Buffers {
    inputs: Vec<Vec<u8>>,
    outputs: Vec<Vec<u8>>,
    dictionaries: Vec<Vec<u8>>,
}

impl Buffers {
    fn input(&mut self, capacity: usize) -> Vec<u8> {
        self.inputs
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(capacity))
    }

    fn output(&mut self) -> Vec<u8> {
        self.outputs.pop().unwrap_or_default()
    }

    fn dictionary(&mut self) -> Vec<u8> {
        self.dictionaries
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WINDOW))
    }

    fn keep(&mut self, deflated: Deflated) {
        let Deflated {
            mut bytes,
            mut input,
            mut dictionary,
            ..
        } = deflated;
        input.clear();
        self.inputs.push(input);
        bytes.clear();
        self.outputs.push(bytes);
        dictionary.clear();
        self.dictionaries.push(dictionary);
    }
}

/// Deflates pieces at one level.
struct Deflater {
    level: u32,
    compress: Compress,
}

impl Deflater {
    fn new(level: u32) -> Self {
        Deflater {
            level,
            compress: Compress::new(flate2::Compression::new(level), false),
        }
    }

    /// `input` deflated after `dictionary`, ending with a sync flush, or the stream's end when
    /// `last`. Each piece gets a deflate state of its own: a state reset after a piece that
    /// ended with a sync flush deflated the next one differently (3 bytes off in a numpy
    /// layer, depending on which worker had which piece before), and the bytes must depend on
    /// the input alone.
    fn piece(&mut self, piece: Piece) -> io::Result<Deflated> {
        let Piece {
            dictionary,
            input,
            output: mut bytes,
            last,
        } = piece;
        self.compress = Compress::new(flate2::Compression::new(self.level), false);
        if !dictionary.is_empty() {
            self.compress
                .set_dictionary(&dictionary)
                .map_err(io::Error::other)?;
        }
        let flush = if last {
            FlushCompress::Finish
        } else {
            FlushCompress::Sync
        };
        // zlib's deflateBound, plus the sync marker and the final block.
        bytes.clear();
        bytes.reserve(input.len() + (input.len() >> 12) + 64);
        let start = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start) as usize;
            let status = self
                .compress
                .compress_vec(&input[consumed..], &mut bytes, flush)
                .map_err(io::Error::other)?;
            let consumed = (self.compress.total_in() - start) as usize;
            // A flush is complete once it returns with room left in the output.
            let done = match status {
                Status::StreamEnd => true,
                Status::Ok | Status::BufError => {
                    !last && consumed == input.len() && bytes.len() < bytes.capacity()
                }
            };
            if done {
                break;
            }
            bytes.reserve(64 * 1024);
        }
        let mut crc = Crc::new();
        crc.update(&input);
        Ok(Deflated {
            bytes,
            crc,
            input,
            dictionary,
        })
    }
}

/// Threads that deflate pieces as they come; they stop when the stream is dropped.
/// A piece for a worker, and where its result goes.
type Job = (Piece, SyncSender<io::Result<Deflated>>);

struct Workers {
    pieces: Option<Sender<Job>>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(threads: usize, level: u32) -> io::Result<Self> {
        let (pieces, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        let mut workers = Workers {
            pieces: Some(pieces),
            handles: Vec::with_capacity(threads),
        };
        for _ in 0..threads {
            let queue = Arc::clone(&queue);
            let handle = std::thread::Builder::new()
                .name("gzip".into())
                .spawn(move || deflate_pieces(&queue, level))?;
            workers.handles.push(handle);
        }
        Ok(workers)
    }

    fn send(&self, piece: Piece, done: SyncSender<io::Result<Deflated>>) -> io::Result<()> {
        self.pieces
            .as_ref()
            .and_then(|pieces| pieces.send((piece, done)).ok())
            .ok_or_else(|| io::Error::other("the gzip workers stopped"))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        // Closing the queue ends every worker once the pieces already queued are done.
        self.pieces = None;
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

fn deflate_pieces(queue: &Mutex<Receiver<Job>>, level: u32) {
    let mut deflater = Deflater::new(level);
    loop {
        let piece = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok((piece, done)) = piece else { return };
        let result = deflater.piece(piece);
        // The stream may have been dropped after an error: nobody waits for this piece.
        let _ = done.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::process::{Command, Stdio};

    /// Bytes that compress some but not all: text lines with counters, and noise.
    fn sample(len: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(len);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut line = 0u64;
        while bytes.len() < len {
            line += 1;
            bytes.extend_from_slice(format!("line {line}: the model's weights, ").as_bytes());
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                bytes.push(b'a' + (state % 26) as u8);
            }
            bytes.push(b'\n');
        }
        bytes.truncate(len);
        bytes
    }

    fn gzip(input: &[u8], threads: usize, piece_size: usize, write_size: usize) -> Vec<u8> {
        let mut encoder = ParallelGzEncoder::with_threads(Vec::new(), 6, threads, piece_size);
        for chunk in input.chunks(write_size.max(1)) {
            encoder.write_all(chunk).unwrap();
        }
        encoder.finish().unwrap()
    }

    fn gunzip_with_flate2(gz: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        GzDecoder::new(gz).read_to_end(&mut out).unwrap();
        out
    }

    /// `program args…` with `input` on stdin; its stdout, or None when it is not installed.
    fn pipe(program: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .ok()?;
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "{program} {args:?} failed");
        Some(output.stdout)
    }

    #[test]
    fn real_gzip_reads_the_stream_back() {
        let piece = 64 * 1024;
        for len in [0, 1, piece - 1, piece, piece + 1, 5 * piece + 123] {
            let input = sample(len);
            let gz = gzip(&input, 3, piece, 10_000);
            assert_eq!(gunzip_with_flate2(&gz), input, "flate2, {len} bytes");
            if let Some(out) = pipe("gzip", &["-dc"], &gz) {
                assert_eq!(out, input, "gzip -dc, {len} bytes");
            }
            let python = "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
            if let Some(out) = pipe("python3", &["-c", python], &gz) {
                assert_eq!(out, input, "python's gzip, {len} bytes");
            }
        }
    }

    #[test]
    fn the_bytes_do_not_depend_on_threads_or_writes() {
        let piece = 64 * 1024;
        let input = sample(7 * piece + 999);
        let one = gzip(&input, 1, piece, piece);
        for (threads, write_size) in [(2, 4096), (4, 3 * piece + 7), (8, 1)] {
            assert_eq!(
                gzip(&input, threads, piece, write_size),
                one,
                "{threads} threads"
            );
        }
        // Another piece size is another stream, equally valid.
        let other = gzip(&input, 2, 2 * piece, piece);
        assert_ne!(other, one);
        assert_eq!(gunzip_with_flate2(&other), input);
    }

    #[test]
    fn empty_and_exactly_one_piece() {
        let piece = 64 * 1024;
        for len in [0, piece, piece + 1] {
            let input = sample(len);
            assert_eq!(gzip(&input, 1, piece, 777), gzip(&input, 4, piece, 777));
        }
        let empty = gzip(&[], 4, piece, 1);
        assert_eq!(&empty[..10], &HEADER);
        // The CRC and the length of nothing.
        assert_eq!(&empty[empty.len() - 8..], &[0u8; 8]);
    }

    #[test]
    fn compresses_about_as_well_as_one_stream() {
        let piece = 64 * 1024;
        let input = sample(16 * piece);
        let parallel = gzip(&input, 2, piece, piece).len();
        let mut single = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
        single.write_all(&input).unwrap();
        let single = single.finish().unwrap().len();
        assert!(parallel < single + single / 50, "{parallel} vs {single}");
    }

    /// Plain stretches and deflated files in turns, as a package layer has them.
    fn gzip_with_deflated(parts: &[(bool, Vec<u8>)], threads: usize, piece: usize) -> Vec<u8> {
        let mut encoder = ParallelGzEncoder::with_threads(Vec::new(), 6, threads, piece);
        for (deflated, bytes) in parts {
            if *deflated {
                let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
                raw.write_all(bytes).unwrap();
                let raw = raw.finish().unwrap();
                let mut inflated = Vec::new();
                let length = encoder
                    .write_deflated(&mut &raw[..], &mut inflated)
                    .unwrap();
                assert_eq!((length, &inflated), (bytes.len() as u64, bytes));
            } else {
                encoder.write_all(bytes).unwrap();
            }
        }
        encoder.finish().unwrap()
    }

    #[test]
    fn deflated_files_are_put_in_as_they_are() {
        let piece = 64 * 1024;
        let parts = [
            (true, sample(100_000)),
            (false, sample(3 * piece + 5)),
            (true, sample(10)),
            (true, sample(40_000)),
            (false, sample(700)),
            (true, sample(2 * piece)),
        ];
        let input: Vec<u8> = parts.iter().flat_map(|(_, b)| b.clone()).collect();
        let one = gzip_with_deflated(&parts, 1, piece);
        assert_eq!(gzip_with_deflated(&parts, 4, piece), one, "4 threads");
        assert_eq!(gunzip_with_flate2(&one), input, "flate2");
        if let Some(out) = pipe("gzip", &["-dc"], &one) {
            assert_eq!(out, input, "gzip -dc");
        }
        let python =
            "import gzip, sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
        if let Some(out) = pipe("python3", &["-c", python], &one) {
            assert_eq!(out, input, "python's gzip");
        }
        // Ending with a deflated file: the last piece is empty and ends the stream.
        let last = gzip_with_deflated(&parts[..1], 2, piece);
        assert_eq!(gunzip_with_flate2(&last), parts[0].1);
    }

    #[test]
    fn a_tar_layer_lists_with_tar() {
        let mut builder =
            tar::Builder::new(ParallelGzEncoder::with_threads(Vec::new(), 6, 2, 4096));
        for i in 0..20 {
            let data = sample(1000 * i + 1);
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder
                .append_data(&mut header, format!("file{i}.txt"), &data[..])
                .unwrap();
        }
        let gz = builder.into_inner().unwrap().finish().unwrap();
        let Some(listing) = pipe("tar", &["-tzf", "-"], &gz) else {
            return;
        };
        let names: Vec<String> = (0..20).map(|i| format!("file{i}.txt")).collect();
        assert_eq!(
            String::from_utf8(listing)
                .unwrap()
                .lines()
                .collect::<Vec<_>>(),
            names
        );
        assert!(pipe("gzip", &["-t"], &gz).is_some());
    }
}
