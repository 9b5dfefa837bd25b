//! The catalogue on PostgreSQL, for many build hosts and manager replicas sharing one model
//! history (`--catalog postgres://…`). Version numbers come from the table itself: the next
//! number is inserted under the primary key, and a host that lost the race to another takes
//! the next one. Leases are timed by the database's clock, so hosts' clocks need not agree.
//! What only this host can use (the digests of the files it read) stays in its own SQLite file.

use super::{
    BuildResult, Catalog, CatalogError, Location, ModelSummary, NewVersion, SqliteCatalog, Status,
    VersionRecord, lease, liveness, location::redact, now, postgres_tls,
};
use crate::model_image::layer::{CacheKey, CachedLayer, DigestCache};
use postgres::error::SqlState;
use postgres::{Client, NoTls, Row};
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

pub struct PostgresCatalog {
    client: RefCell<Session>,
    url: String,
    local: SqliteCatalog,
}

/// A connection that may be dropped anywhere. Closing a `postgres::Client` runs its own small
/// runtime, which cannot be done on a thread that drives async tasks (the manager's); there it
/// is closed on a thread of its own.
struct Session(Option<Client>);

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.0
            .as_ref()
            .expect("a session holds its client until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.0
            .as_mut()
            .expect("a session holds its client until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let Some(client) = self.0.take() else { return };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("catalogue-close".into())
                .spawn(move || drop(client));
        } // else it closes here
    }
}

/// The database's clock, in seconds, for leases.
const DB_NOW: &str = "EXTRACT(EPOCH FROM clock_timestamp())::bigint";

/// The schema's steps: entry `i` brings a catalogue from version `i` to `i + 1`; the table
/// `mlambda_schema` records where a database is.
const MIGRATIONS: &[&str] = &["
CREATE TABLE versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    model_type TEXT NOT NULL,
    status TEXT NOT NULL,
    contract BYTEA NOT NULL,
    contract_text TEXT NOT NULL,
    contract_source TEXT NOT NULL,
    base_image TEXT,
    base_digest TEXT,
    image TEXT,
    manifest_digest TEXT,
    config_digest TEXT,
    size BIGINT,
    created TEXT NOT NULL,
    finished TEXT,
    error TEXT,
    log TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    remote_image TEXT,
    pushed_digest TEXT,
    packages TEXT,
    lease_until BIGINT,
    PRIMARY KEY (model, version)
);
CREATE INDEX versions_open ON versions (status) WHERE status IN ('Pending', 'Running');
CREATE TABLE blob_locations (
    registry TEXT NOT NULL,
    digest TEXT NOT NULL,
    repository TEXT NOT NULL,
    pushed TEXT NOT NULL,
    PRIMARY KEY (registry, digest, repository)
);
"];

/// Any key: it only serialises the hosts that migrate the schema at once.
const MIGRATION_LOCK: i64 = 0x006d_6c61_6d62_6461;

impl PostgresCatalog {
    /// Connects (a few tries while the server starts or fails over), brings the schema up to
    /// date, and marks `Failed` the builds whose lease ran out.
    pub fn open(url: &str, local: &Path) -> Result<PostgresCatalog, CatalogError> {
        let mut client = connect(url)?;
        migrate(&mut client).map_err(|source| CatalogError::Postgres {
            url: redact(url),
            source,
        })?;
        let schema: i32 = client
            .query_one("SELECT COALESCE(MAX(version), 0) FROM mlambda_schema", &[])
            .map_err(|source| CatalogError::Postgres {
                url: redact(url),
                source,
            })?
            .get(0);
        if schema as usize > MIGRATIONS.len() {
            return Err(CatalogError::Invalid(format!(
                "catalogue {}: its schema (version {schema}) is newer than this mlambda knows ({}); upgrade mlambda",
                redact(url),
                MIGRATIONS.len()
            )));
        }
        let catalog = PostgresCatalog {
            client: RefCell::new(Session(Some(client))),
            url: url.to_string(),
            local: SqliteCatalog::open(local)?,
        };
        catalog.fail_dead_builds()?;
        Ok(catalog)
    }

    fn error(&self) -> impl Fn(postgres::Error) -> CatalogError + '_ {
        move |source| CatalogError::Postgres {
            url: redact(&self.url),
            source,
        }
    }

    fn execute(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<u64, CatalogError> {
        self.client
            .borrow_mut()
            .execute(sql, params)
            .map_err(self.error())
    }

    fn query(
        &self,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Row>, CatalogError> {
        self.client
            .borrow_mut()
            .query(sql, params)
            .map_err(self.error())
    }

    /// [`CatalogError::Closed`] for a build that `changed` no row of: another host closed it.
    fn closed_unless(&self, changed: u64, model: &str, version: u32) -> Result<(), CatalogError> {
        if changed == 1 {
            return Ok(());
        }
        let rows = self.query(
            "SELECT status, error FROM versions WHERE model = $1 AND version = $2",
            &[&model, &(version as i32)],
        )?;
        let (status, reason) = rows.first().map_or((Status::Failed, None), |r| {
            (Status::parse(r.get(0)), r.get(1))
        });
        Err(CatalogError::Closed {
            model: model.into(),
            version,
            status,
            reason,
        })
    }

    fn fail_dead_builds(&self) -> Result<(), CatalogError> {
        let open = self.query(
            &format!(
                "SELECT model, version, owner, lease_until, {DB_NOW} - lease_until FROM versions
                 WHERE status IN ('Pending', 'Running')"
            ),
            &[],
        )?;
        for row in open {
            let (model, version, owner): (String, i32, String) =
                (row.get(0), row.get(1), row.get(2));
            let lease_until: Option<i64> = row.get(3);
            if let Some(reason) = super::dead_build_reason(&owner, row.get(4)) {
                // Only if nobody renewed the lease since it was read.
                self.execute(
                    "UPDATE versions SET status = 'Failed', error = $3, finished = $4
                     WHERE model = $1 AND version = $2 AND status IN ('Pending', 'Running')
                       AND owner = $5 AND lease_until IS NOT DISTINCT FROM $6",
                    &[&model, &version, &reason, &now(), &owner, &lease_until],
                )?;
            }
        }
        Ok(())
    }
}

fn connect(url: &str) -> Result<Client, CatalogError> {
    let (mut config, tls) = postgres_tls::config(url)?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(10));
    }
    config.application_name("mlambda");
    // A server that is starting, restarting or failing over refuses for a moment; a
    // connection holds no state yet, so trying again is safe.
    let mut wait = Duration::from_millis(250);
    let mut tries = 0;
    loop {
        let connected = match &tls {
            Some(tls) => config.connect(tls.clone()),
            None => config.connect(NoTls),
        };
        match connected {
            Ok(client) => return Ok(client),
            Err(source) if tries < 4 && is_refused(&source) => {
                tries += 1;
                std::thread::sleep(wait);
                wait *= 2;
            }
            Err(source) => {
                return Err(CatalogError::Postgres {
                    url: redact(url),
                    source,
                });
            }
        }
    }
}

/// A server not (yet, or no longer) listening, as opposed to one that answered "no".
fn is_refused(error: &postgres::Error) -> bool {
    use std::io::ErrorKind::*;
    let mut cause = std::error::Error::source(error);
    while let Some(current) = cause {
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof
            );
        }
        cause = current.source();
    }
    false
}

/// Applies the steps the database has not had, in one transaction that other hosts doing the
/// same wait for.
fn migrate(client: &mut Client) -> Result<(), postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS mlambda_schema (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)",
    )?;
    let current: i32 = tx
        .query_one("SELECT COALESCE(MAX(version), 0) FROM mlambda_schema", &[])?
        .get(0);
    for (index, step) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(step)?;
        tx.execute(
            "INSERT INTO mlambda_schema (version, applied) VALUES ($1, $2)",
            &[&(index as i32 + 1), &now()],
        )?;
    }
    tx.commit()
}

/// The lease heartbeat's own connection, made again after it breaks.
pub(super) struct LeaseSession {
    url: String,
    client: Option<Client>,
}

impl LeaseSession {
    pub fn new(url: &str) -> LeaseSession {
        LeaseSession {
            url: url.to_string(),
            client: None,
        }
    }

    pub fn renew(&mut self, owner: &str, seconds: i64) -> Result<(), CatalogError> {
        let client = match &mut self.client {
            Some(client) => client,
            None => self.client.insert(connect(&self.url)?),
        };
        let renewed = client.execute(
            &format!(
                "UPDATE versions SET lease_until = {DB_NOW} + $2
                 WHERE owner = $1 AND status IN ('Pending', 'Running')"
            ),
            &[&owner, &seconds],
        );
        renewed.map(drop).map_err(|source| {
            self.client = None;
            CatalogError::Postgres {
                url: redact(&self.url),
                source,
            }
        })
    }
}

impl Catalog for PostgresCatalog {
    fn start_version(&mut self, new: &NewVersion) -> Result<u32, CatalogError> {
        let owner = liveness::current_owner();
        let seconds = lease::lease_seconds();
        let created = now();
        let insert = format!(
            "INSERT INTO versions (model, version, model_type, status, contract, contract_text,
                contract_source, created, owner, lease_until)
             SELECT $1, COALESCE(MAX(version), 0) + 1, $2, 'Pending', $3, $4, $5, $6, $7, {DB_NOW} + $8
             FROM versions WHERE model = $1
             RETURNING version"
        );
        // Two hosts that read the same highest number both try to insert the next one; the
        // primary key lets one through and the other takes the number after.
        let mut tries = 0;
        let version: i32 = loop {
            let inserted = self.client.borrow_mut().query_one(
                &insert,
                &[
                    &new.model,
                    &new.model_type,
                    &new.contract,
                    &new.contract_text,
                    &new.contract_source,
                    &created,
                    &owner,
                    &seconds,
                ],
            );
            match inserted {
                Ok(row) => break row.get(0),
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) && tries < 1000 => {
                    tries += 1;
                }
                Err(e) => return Err(self.error()(e)),
            }
        };
        lease::keep_alive(&Location::Postgres {
            url: self.url.clone(),
            local: self.local.file().to_path_buf(),
        });
        Ok(version as u32)
    }

    fn set_running(&self, model: &str, version: u32) -> Result<(), CatalogError> {
        let changed = self.execute(
            "UPDATE versions SET status = 'Running'
             WHERE model = $1 AND version = $2 AND status IN ('Pending', 'Running')",
            &[&model, &(version as i32)],
        )?;
        self.closed_unless(changed, model, version)
    }

    fn append_log(&self, model: &str, version: u32, line: &str) -> Result<(), CatalogError> {
        self.execute(
            "UPDATE versions SET log = log || $3 || E'\\n' WHERE model = $1 AND version = $2",
            &[&model, &(version as i32), &line],
        )?;
        Ok(())
    }

    fn finish(&self, model: &str, version: u32, result: &BuildResult) -> Result<(), CatalogError> {
        let changed = self.execute(
            &format!("{RECORD_BUILD}, status = 'Finished' {WHERE_VERSION} AND status IN ('Pending', 'Running')"),
            &build_params(model, version, result).as_params(),
        )?;
        self.closed_unless(changed, model, version)
    }

    fn record_build(
        &self,
        model: &str,
        version: u32,
        result: &BuildResult,
    ) -> Result<(), CatalogError> {
        self.execute(
            &format!("{RECORD_BUILD} {WHERE_VERSION}"),
            &build_params(model, version, result).as_params(),
        )?;
        Ok(())
    }

    fn record_push(
        &self,
        model: &str,
        version: u32,
        remote_image: &str,
        pushed_digest: &str,
    ) -> Result<(), CatalogError> {
        self.execute(
            "UPDATE versions SET status = 'Finished', remote_image = $3, pushed_digest = $4,
             error = NULL, finished = $5 WHERE model = $1 AND version = $2",
            &[
                &model,
                &(version as i32),
                &remote_image,
                &pushed_digest,
                &now(),
            ],
        )?;
        Ok(())
    }

    fn blob_locations(
        &self,
        registry: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<String>>, CatalogError> {
        let rows = self.query(
            "SELECT digest, repository FROM (
                SELECT digest, repository, pushed,
                       row_number() OVER (PARTITION BY digest ORDER BY pushed DESC) AS n
                FROM blob_locations WHERE registry = $1 AND digest = ANY($2)
             ) newest WHERE n <= 5 ORDER BY digest, pushed DESC",
            &[&registry, &digests],
        )?;
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for row in rows {
            out.entry(row.get(0)).or_default().push(row.get(1));
        }
        Ok(out)
    }

    fn add_blob_locations(
        &self,
        registry: &str,
        repository: &str,
        digests: &[String],
    ) -> Result<(), CatalogError> {
        self.execute(
            "INSERT INTO blob_locations (registry, digest, repository, pushed)
             SELECT $1, digest, $2, $4 FROM unnest($3::text[]) AS digest
             ON CONFLICT (registry, digest, repository) DO UPDATE SET pushed = excluded.pushed",
            &[&registry, &repository, &digests, &now()],
        )?;
        Ok(())
    }

    fn fail(&self, model: &str, version: u32, error: &str) -> Result<(), CatalogError> {
        self.execute(
            "UPDATE versions SET status = 'Failed', error = $3, finished = $4
             WHERE model = $1 AND version = $2",
            &[&model, &(version as i32), &error, &now()],
        )?;
        Ok(())
    }

    fn models(&self) -> Result<Vec<ModelSummary>, CatalogError> {
        let rows = self.query(
            "SELECT v.model, c.n, v.version, v.status, v.model_type, v.created
             FROM versions v JOIN (SELECT model, COUNT(*) AS n, MAX(version) AS latest FROM versions GROUP BY model) c
             ON v.model = c.model AND v.version = c.latest ORDER BY v.model",
            &[],
        )?;
        Ok(rows
            .iter()
            .map(|r| ModelSummary {
                name: r.get(0),
                versions: r.get::<_, i64>(1) as u32,
                latest_version: r.get::<_, i32>(2) as u32,
                latest_status: Status::parse(r.get(3)),
                model_type: r.get(4),
                updated: r.get(5),
            })
            .collect())
    }

    fn versions(&self, model: &str) -> Result<Vec<VersionRecord>, CatalogError> {
        let rows = self.query(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = $1 ORDER BY version"),
            &[&model],
        )?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, CatalogError> {
        let rows = self.query(
            &format!("SELECT {VERSION_COLUMNS} FROM versions WHERE model = $1 AND version = $2"),
            &[&model, &(version as i32)],
        )?;
        Ok(rows.first().map(version_from_row))
    }

    fn package_locks(&self, model: &str) -> Result<Vec<String>, CatalogError> {
        let rows = self.query(
            "SELECT packages FROM versions
             WHERE model = $1 AND status = 'Finished' AND packages IS NOT NULL
             ORDER BY version DESC LIMIT 16",
            &[&model],
        )?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    fn import(&mut self, records: &[VersionRecord]) -> Result<usize, CatalogError> {
        let url = redact(&self.url);
        let error = |source| CatalogError::Postgres {
            url: url.clone(),
            source,
        };
        let mut client = self.client.borrow_mut();
        let mut tx = client.transaction().map_err(error)?;
        let mut copied = 0;
        for record in records {
            let here = tx
                .query_opt(
                    "SELECT manifest_digest, status FROM versions WHERE model = $1 AND version = $2",
                    &[&record.name, &(record.version as i32)],
                )
                .map_err(error)?
                .map(|r| (r.get(0), Status::parse(r.get(1))));
            if !super::migrate::must_copy(record, here, &url)? {
                continue;
            }
            tx.execute(
                "INSERT INTO versions (model, version, model_type, status, contract, contract_text,
                    contract_source, base_image, base_digest, image, manifest_digest, config_digest,
                    size, created, finished, error, log, owner, remote_image, pushed_digest, packages)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, '', $18, $19, $20)",
                &[
                    &record.name,
                    &(record.version as i32),
                    &record.model_type,
                    &record.status.as_str(),
                    &record.contract,
                    &record.contract_text,
                    &record.contract_source,
                    &record.base_image,
                    &record.base_digest,
                    &record.local_image,
                    &record.digest,
                    &record.config_digest,
                    &record.size.map(|s| s as i64),
                    &record.created,
                    &record.finished,
                    &record.error,
                    &record.log,
                    &record.remote_image(),
                    &record.pushed_digest,
                    &record.packages,
                ],
            )
            .map_err(error)?;
            copied += 1;
        }
        tx.commit().map_err(error)?;
        Ok(copied)
    }
}

const RECORD_BUILD: &str = "UPDATE versions SET base_image = $3, base_digest = $4, image = $5,
    manifest_digest = $6, config_digest = $7, size = $8, finished = $9, packages = $10";
const WHERE_VERSION: &str = "WHERE model = $1 AND version = $2";

/// The parameters of [`RECORD_BUILD`], owned so that they outlive the call that borrows them.
struct BuildParams {
    model: String,
    version: i32,
    result: BuildResult,
    size: i64,
    finished: String,
}

impl BuildParams {
    fn as_params(&self) -> [&(dyn postgres::types::ToSql + Sync); 10] {
        [
            &self.model,
            &self.version,
            &self.result.base_image,
            &self.result.base_digest,
            &self.result.image,
            &self.result.manifest_digest,
            &self.result.config_digest,
            &self.size,
            &self.finished,
            &self.result.packages,
        ]
    }
}

fn build_params(model: &str, version: u32, result: &BuildResult) -> BuildParams {
    BuildParams {
        model: model.to_string(),
        version: version as i32,
        result: result.clone(),
        size: result.size as i64,
        finished: now(),
    }
}

const VERSION_COLUMNS: &str = "model, version, model_type, status, contract, contract_text, contract_source,
    base_image, base_digest, COALESCE(remote_image, image), manifest_digest, config_digest, size, created, finished,
    error, log, image, pushed_digest, packages";

fn version_from_row(r: &Row) -> VersionRecord {
    VersionRecord {
        name: r.get(0),
        version: r.get::<_, i32>(1) as u32,
        model_type: r.get(2),
        status: Status::parse(r.get(3)),
        contract: r.get(4),
        contract_text: r.get(5),
        contract_source: r.get(6),
        base_image: r.get(7),
        base_digest: r.get(8),
        image: r.get(9),
        digest: r.get(10),
        config_digest: r.get(11),
        size: r.get::<_, Option<i64>>(12).map(|s| s as u64),
        created: r.get(13),
        finished: r.get(14),
        error: r.get(15),
        log: r.get(16),
        local_image: r.get(17),
        pushed_digest: r.get(18),
        packages: r.get(19),
    }
}

/// The digests of files read on this host are only good on this host.
impl DigestCache for PostgresCatalog {
    fn lookup(&self, key: &CacheKey) -> Option<CachedLayer> {
        self.local.lookup(key)
    }

    fn record(&self, key: &CacheKey, layer: &CachedLayer) {
        self.local.record(key, layer)
    }
}

/// What a PostgreSQL error says, with the server's own message when it sent one.
pub(super) fn describe(error: &postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut text = error.to_string();
            let mut source = std::error::Error::source(error);
            while let Some(cause) = source {
                let cause = cause.to_string();
                if !text.contains(&cause) {
                    text = format!("{text}: {cause}");
                }
                source = cause_of(source);
            }
            text
        }
    }
}

fn cause_of<'a>(
    error: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    error.and_then(|e| e.source())
}

/// What to do about it, when the error says the server is out of reach.
pub(super) fn hint(error: &postgres::Error) -> &'static str {
    if error.as_db_error().is_some() {
        ""
    } else {
        " (is the PostgreSQL server running and reachable? check --catalog / MLAMBDA_CATALOG; nothing was recorded by the failed step)"
    }
}
