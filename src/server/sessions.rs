//! The running digests of upload sessions, kept in memory beside their files in
//! `ROOT/_uploads`. An entry goes with its session: when the upload completes or is
//! cancelled, and, for sessions a client abandoned, once the session's files are gone (expired
//! by the server or a `registry gc`) or it has not been touched for as long as an upload is
//! kept on disk.

use super::uploads::Progress;
use crate::store::Uploads;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

type Shared = Arc<tokio::sync::Mutex<Progress>>;

struct Entry {
    progress: Shared,
    touched: Instant,
}

#[derive(Default)]
pub(crate) struct Sessions {
    table: Mutex<HashMap<String, Entry>>,
}

impl Sessions {
    fn table(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        match self.table.lock() {
            Ok(table) => table,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// The session's progress, created by `new` when the table has none (a new session, or
    /// one from before a restart); touches it.
    pub fn get_or_insert(&self, id: &str, new: impl FnOnce() -> Progress) -> Shared {
        let mut table = self.table();
        let entry = table.entry(id.to_string()).or_insert_with(|| Entry {
            progress: Arc::new(tokio::sync::Mutex::new(new())),
            touched: Instant::now(),
        });
        entry.touched = Instant::now();
        entry.progress.clone()
    }

    pub fn forget(&self, id: &str) {
        self.table().remove(id);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.table().len()
    }

    /// Drops the entries of sessions whose files are gone, and of those untouched for longer
    /// than `max_age`; how many went.
    pub fn prune(&self, uploads: &Uploads, max_age: Duration) -> usize {
        let mut table = self.table();
        let before = table.len();
        table.retain(|id, entry| {
            entry.touched.elapsed() <= max_age && uploads.data_path(id).is_some()
        });
        before - table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn abandoned_and_vanished_sessions_leave_the_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let uploads = store.uploads();
        let sessions = Sessions::default();
        let ids: Vec<String> = (0..50).map(|_| uploads.create("a").unwrap()).collect();
        for id in &ids {
            sessions.get_or_insert(id, Progress::new);
        }
        assert_eq!(sessions.len(), 50);
        // Live and recent: kept.
        assert_eq!(sessions.prune(&uploads, Duration::from_secs(3600)), 0);
        // Gone from disk (a gc, a cancel by another server): dropped.
        for id in &ids[..20] {
            uploads.remove(id).unwrap();
        }
        assert_eq!(sessions.prune(&uploads, Duration::from_secs(3600)), 20);
        assert_eq!(sessions.len(), 30);
        // Untouched for longer than an upload is kept: dropped.
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(sessions.prune(&uploads, Duration::from_millis(1)), 30);
        assert_eq!(sessions.len(), 0);
    }
}
