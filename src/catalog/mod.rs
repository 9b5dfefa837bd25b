//! The catalogue of models and versions: version numbers handed out atomically, build
//! status, and the record of what each build produced. The [`Catalog`] trait is what the
//! pipeline, the manager and the commands use; two engines implement it: SQLite, one file in
//! the home (the embedded default), and PostgreSQL, shared by any number of build hosts
//! (`--catalog postgres://…`). Where a catalogue is lives in [`Location`].

mod lease;
mod liveness;
mod location;
pub mod migrate;
mod postgres;
mod postgres_tls;
mod sqlite;

pub use lease::lease_seconds;
pub use location::Location;
pub use postgres::PostgresCatalog;
pub use sqlite::SqliteCatalog;

use crate::model_image::layer::DigestCache;
use serde::Serialize;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalogue {path}: {source}")]
    Sql {
        path: String,
        source: rusqlite::Error,
    },
    #[error(
        "catalogue {url}: {}{}",
        postgres::describe(source),
        postgres::hint(source)
    )]
    Postgres {
        /// The URL without its password.
        url: String,
        source: ::postgres::Error,
    },
    /// A build that is no longer open (a lease that expired, a server that stopped) cannot be
    /// finished: another host has already marked it `Failed`.
    #[error(
        "{model}:{version} is {status:?} in the catalogue, not being built: {}; nothing was recorded for it",
        reason.as_deref().unwrap_or("it was closed by another process")
    )]
    Closed {
        model: String,
        version: u32,
        status: Status,
        reason: Option<String>,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Pending,
    Running,
    Failed,
    Finished,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Running => "Running",
            Status::Failed => "Failed",
            Status::Finished => "Finished",
        }
    }

    pub fn parse(text: &str) -> Status {
        match text {
            "Pending" => Status::Pending,
            "Running" => Status::Running,
            "Finished" => Status::Finished,
            _ => Status::Failed,
        }
    }
}

/// What is known when a build starts.
#[derive(Debug, Clone, Default)]
pub struct NewVersion {
    pub model: String,
    pub model_type: String,
    pub contract: Vec<u8>,
    /// The readable contract (JSON).
    pub contract_text: String,
    pub contract_source: String,
}

/// What a finished build produced.
#[derive(Debug, Clone, Default)]
pub struct BuildResult {
    pub base_image: String,
    pub base_digest: Option<String>,
    pub image: String,
    pub manifest_digest: String,
    pub config_digest: String,
    pub size: u64,
    /// The lock of the Python packages installed (a `pylock.toml`), when there were any.
    pub packages: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VersionRecord {
    pub name: String,
    pub version: u32,
    pub model_type: String,
    pub status: Status,
    pub contract_source: String,
    #[serde(skip)]
    pub contract: Vec<u8>,
    #[serde(skip)]
    pub contract_text: String,
    pub base_image: Option<String>,
    pub base_digest: Option<String>,
    /// The remote reference once pushed, else the local store's `oci:` reference.
    pub image: Option<String>,
    /// The local store's `oci:DIR:TAG` (the image that can be pushed again).
    pub local_image: Option<String>,
    /// The manifest digest the remote registry confirmed.
    pub pushed_digest: Option<String>,
    pub digest: Option<String>,
    pub config_digest: Option<String>,
    pub size: Option<u64>,
    pub created: String,
    pub finished: Option<String>,
    pub error: Option<String>,
    #[serde(skip)]
    pub log: String,
    /// The lock of the Python packages installed (a `pylock.toml`).
    #[serde(skip)]
    pub packages: Option<String>,
}

impl VersionRecord {
    /// The registry reference it was pushed to, when it was.
    pub fn remote_image(&self) -> Option<&str> {
        self.pushed_digest.as_ref().and(self.image.as_deref())
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub versions: u32,
    pub latest_version: u32,
    pub latest_status: Status,
    pub model_type: String,
    pub updated: String,
}

/// Where the versions are recorded: SQLite on one host, PostgreSQL shared by several
/// ([`open`] chooses by [`Location`]).
pub trait Catalog: DigestCache + Send {
    /// Takes the next version number of `model` and records it `Pending`, in one transaction,
    /// so concurrent builds of one model never share a number.
    fn start_version(&mut self, new: &NewVersion) -> Result<u32, CatalogError>;

    fn set_running(&self, model: &str, version: u32) -> Result<(), CatalogError>;

    fn append_log(&self, model: &str, version: u32, line: &str) -> Result<(), CatalogError>;

    fn finish(&self, model: &str, version: u32, result: &BuildResult) -> Result<(), CatalogError>;

    /// What the build produced, status unchanged (a push is still to come).
    fn record_build(
        &self,
        model: &str,
        version: u32,
        result: &BuildResult,
    ) -> Result<(), CatalogError>;

    /// A push confirmed by the registry: the version is `Finished` (also one whose earlier
    /// push failed) and its image is the remote reference.
    fn record_push(
        &self,
        model: &str,
        version: u32,
        remote_image: &str,
        pushed_digest: &str,
    ) -> Result<(), CatalogError>;

    /// For each of `digests`, the repositories of `registry` it was pushed to (newest first):
    /// the sources of cross-repository mounts.
    fn blob_locations(
        &self,
        registry: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<String>>, CatalogError>;

    /// Remembers that `registry`'s `repository` holds `digests`.
    fn add_blob_locations(
        &self,
        registry: &str,
        repository: &str,
        digests: &[String],
    ) -> Result<(), CatalogError>;

    fn fail(&self, model: &str, version: u32, error: &str) -> Result<(), CatalogError>;

    fn models(&self) -> Result<Vec<ModelSummary>, CatalogError>;

    fn versions(&self, model: &str) -> Result<Vec<VersionRecord>, CatalogError>;

    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, CatalogError>;

    /// The package locks of the model's finished versions, newest first: a build whose
    /// requirements did not change reuses one instead of resolving again.
    fn package_locks(&self, model: &str) -> Result<Vec<String>, CatalogError>;

    /// Copies versions recorded elsewhere (`mlambda catalog migrate`), in one transaction: a
    /// version already here with the same digest and status is skipped, one that differs
    /// refuses the whole copy (a recorded version is never overwritten). Returns how many
    /// were copied.
    fn import(&mut self, records: &[VersionRecord]) -> Result<usize, CatalogError>;
}

/// Opens (creating when missing, migrating when older) the catalogue at `location`, and marks
/// `Failed` the builds whose owner is gone: its lease expired, or its process on this host died.
pub fn open(location: &Location) -> Result<Box<dyn Catalog>, CatalogError> {
    Ok(match location {
        Location::Sqlite(path) => Box::new(SqliteCatalog::open(path)?),
        Location::Postgres { url, local } => Box::new(PostgresCatalog::open(url, local)?),
    })
}

/// Why a version still `Pending` or `Running` will never finish, if it will not: its owner's
/// lease ran out (any host can tell), or its process on this host is gone.
fn dead_build_reason(owner: &str, lease_expired_for: Option<i64>) -> Option<String> {
    if let Some(seconds) = lease_expired_for.filter(|s| *s > 0) {
        let host = owner.split(' ').next().filter(|h| !h.is_empty());
        return Some(format!(
            "the build's owner ({}) stopped renewing its lease {seconds} s ago: its host or process died, or lost the catalogue",
            host.unwrap_or("an unknown host")
        ));
    }
    liveness::dead_owner_reason(owner)
}

/// Seconds since the epoch, for leases.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The time recorded for `created` and `finished`.
fn now() -> String {
    crate::oci::rfc3339(unix_now() as u64)
}
