//! Builds are owned by a process through a lease: a time until which the catalogue holds the
//! build alive. The owning process renews it while it runs (one heartbeat thread per process
//! and catalogue, for every build it owns); once a lease has run out, any host that opens the
//! catalogue marks the build `Failed`. On one host a dead pid tells sooner (`liveness.rs`);
//! across hosts only the lease can.

use super::{Location, liveness, postgres, sqlite};
use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// How long a build stays alive without a heartbeat: `MLAMBDA_BUILD_LEASE` seconds, else 60.
pub fn lease_seconds() -> i64 {
    std::env::var("MLAMBDA_BUILD_LEASE")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
        .filter(|s| *s > 0)
        .unwrap_or(60)
}

/// Renews, several times within a lease, the leases of every build this process owns in
/// `location`, until the process ends. Started by the first build the process takes there.
pub fn keep_alive(location: &Location) {
    static RUNNING: OnceLock<Mutex<HashSet<Location>>> = OnceLock::new();
    let mut running = RUNNING
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if !running.insert(location.clone()) {
        return;
    }
    let location = location.clone();
    let owner = liveness::current_owner();
    let seconds = lease_seconds();
    let every = Duration::from_millis((seconds as u64 * 1000 / 4).max(200));
    let _ = std::thread::Builder::new()
        .name("lease".into())
        .spawn(move || {
            let mut renew = renewer(&location);
            loop {
                std::thread::sleep(every);
                if let Err(error) = renew(&owner, seconds) {
                    tracing::warn!(
                        "catalogue {}: cannot renew the build lease: {error}",
                        location.display()
                    );
                }
            }
        });
}

type Renew = Box<dyn FnMut(&str, i64) -> Result<(), super::CatalogError> + Send>;

fn renewer(location: &Location) -> Renew {
    match location {
        Location::Sqlite(path) => {
            let path = path.clone();
            Box::new(move |owner, seconds| sqlite::renew_leases(&path, owner, seconds))
        }
        Location::Postgres { url, .. } => {
            let mut session = postgres::LeaseSession::new(url);
            Box::new(move |owner, seconds| session.renew(owner, seconds))
        }
    }
}
