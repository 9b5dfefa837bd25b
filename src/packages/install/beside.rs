//! A writer that works on a thread of its own: while a wheel's big entry is put into a layer
//! still deflated, the gzip workers have nothing to do and the layer's thread inflates and
//! hashes alone; RECORD's hash and the ELF copy of the same bytes go to a second core.

use std::io::{self, Write};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

/// Chunks on their way to the thread at most: a few hundred KiB each.
const QUEUED: usize = 4;

/// Sends what is written to `W` on its thread. Each write is copied into a buffer (one that
/// came back once written, when there is one); a write fails once the thread has stopped.
pub(super) struct Beside {
    chunks: SyncSender<Vec<u8>>,
    spare: Receiver<Vec<u8>>,
}

/// What the thread gives back when the [`Beside`] is dropped: its writer, and the first error
/// the writer returned (it wrote nothing after it).
pub(super) type Done<W> = (W, io::Result<()>);

impl Beside {
    pub(super) fn start<'scope, W: Write + Send + 'scope>(
        scope: &'scope Scope<'scope, '_>,
        mut inner: W,
    ) -> (Beside, ScopedJoinHandle<'scope, Done<W>>) {
        let (chunks, received) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (give_back, spare) = mpsc::channel();
        let thread = scope.spawn(move || {
            for chunk in received {
                if let Err(e) = inner.write_all(&chunk) {
                    return (inner, Err(e));
                }
                let _ = give_back.send(chunk);
            }
            (inner, Ok(()))
        });
        (Beside { chunks, spare }, thread)
    }
}

impl Write for Beside {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut chunk = self.spare.try_recv().unwrap_or_default();
        chunk.clear();
        chunk.extend_from_slice(buf);
        self.chunks
            .send(chunk)
            .map_err(|_| io::Error::other("the thread beside stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_written_arrives_in_order() {
        let (bytes, result) = std::thread::scope(|scope| {
            let (mut beside, thread) = Beside::start(scope, Vec::new());
            for i in 0..1000u32 {
                beside.write_all(&i.to_le_bytes()).unwrap();
            }
            drop(beside);
            thread.join().unwrap()
        });
        result.unwrap();
        let expected: Vec<u8> = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn the_first_error_stops_it_and_the_writes_after_fail() {
        /// Takes 10 bytes, then fails.
        struct Small(usize);
        impl Write for Small {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if self.0 + buf.len() > 10 {
                    return Err(io::Error::other("full"));
                }
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (written, result, later) = std::thread::scope(|scope| {
            let (mut beside, thread) = Beside::start(scope, Small(0));
            let mut later = Ok(());
            for _ in 0..100 {
                later = beside.write_all(&[0; 4]);
                if later.is_err() {
                    break;
                }
            }
            drop(beside);
            let (small, result) = thread.join().unwrap();
            (small.0, result, later)
        });
        assert_eq!(written, 8);
        assert_eq!(result.unwrap_err().to_string(), "full");
        assert!(later.is_err());
    }
}
