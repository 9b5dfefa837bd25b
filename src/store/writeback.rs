//! Starting the disk's work while a big blob is still being written.
//!
//! A blob is fsynced before it is published. Left to that fsync alone, a gigabyte leaves the
//! page cache only after its last byte was hashed and written, and the disk idles until then.
//! Asking the kernel every few MiB to start writing back what is dirty (`sync_file_range` with
//! `SYNC_FILE_RANGE_WRITE`: start, do not wait) keeps the disk busy while the data still
//! arrives, so the final fsync finds little left. It is only a hint: the fsync is still what
//! makes the blob durable, and where the call does not exist nothing is done.

use std::io::{self, Write};
use std::os::fd::AsRawFd;

/// How many bytes are written between two hints: a few requests' worth for the disk, few
/// enough syscalls to cost nothing.
const EVERY: u64 = 8 << 20;

/// Counts what is written to a file and starts its writeback every [`EVERY`] bytes.
#[derive(Debug, Default)]
pub struct Writeback {
    since_last: u64,
}

impl Writeback {
    /// `written` more bytes went to `file`.
    pub fn wrote(&mut self, file: &impl AsRawFd, written: usize) {
        self.since_last += written as u64;
        if self.since_last >= EVERY {
            self.since_last = 0;
            start_writeback(file);
        }
    }
}

/// A file whose writes start their own writeback (for a `BufWriter` to sit on).
pub struct WritingBack<F> {
    file: F,
    writeback: Writeback,
}

impl<F> WritingBack<F> {
    pub fn new(file: F) -> WritingBack<F> {
        WritingBack {
            file,
            writeback: Writeback::default(),
        }
    }

    pub fn into_inner(self) -> F {
        self.file
    }
}

impl<F: Write + AsRawFd> Write for WritingBack<F> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.writeback.wrote(&self.file, n);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(target_os = "linux")]
fn start_writeback(file: &impl AsRawFd) {
    // SAFETY: a syscall on a descriptor the caller holds open; offset 0 and length 0 mean the
    // whole file, and an error (a filesystem without writeback) only loses the hint.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &impl AsRawFd) {}
