//! Who is writing into the store, as the garbage collector needs to know.
//!
//! Every writer (a build, a push, a request of the registry server) holds a shared `flock`
//! on `ROOT/_locks/writers.lock` from its first write until it is done, and the garbage
//! collector takes it exclusively. So gc never removes the temporary files or the not yet
//! tagged blobs of a writer at work, whatever its grace period; and since the kernel drops
//! the lock of a process that dies, what a killed build left behind becomes collectable.

use super::layout::{StoreError, io_err};
use std::fs::File;
use std::path::Path;

fn open(path: &Path) -> Result<File, StoreError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io_err(parent, "cannot create"))?;
    }
    let created = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path);
    // flock needs no write access: a store shared by several users works with a lock file
    // that another user created.
    created
        .or_else(|_| File::open(path))
        .map_err(io_err(path, "cannot open the lock file"))
}

/// A writer's share of the lock, held as long as the file is open.
pub(crate) fn share(path: &Path) -> Result<File, StoreError> {
    let file = open(path)?;
    file.lock_shared()
        .map_err(io_err(path, "cannot lock the store for writing"))?;
    Ok(file)
}

/// The whole lock, for the garbage collector: waits until no writer is at work, telling
/// `waiting` once when it has to.
pub(crate) fn exclusive(path: &Path, waiting: impl FnOnce()) -> Result<File, StoreError> {
    let file = open(path)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => waiting(),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(io_err(path, "cannot lock the store")(e));
        }
    }
    file.lock().map_err(io_err(path, "cannot lock the store"))?;
    Ok(file)
}
