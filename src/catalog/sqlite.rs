//! The catalogue on SQLite (WAL, a busy timeout): one file in the home, shared by every
//! process on this host; the dead builds of a process that is gone are marked `Failed` on open.

use super::{
    BuildResult, Catalog, CatalogError, Location, ModelSummary, NewVersion, Status, VersionRecord,
    lease, liveness, now, unix_now,
};
use crate::model_image::layer::{CacheKey, CachedLayer, DigestCache};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct SqliteCatalog {
    conn: Connection,
    file: PathBuf,
    path: String,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    model_type TEXT NOT NULL,
    status TEXT NOT NULL,
    contract BLOB NOT NULL,
    contract_text TEXT NOT NULL,
    contract_source TEXT NOT NULL,
    base_image TEXT,
    base_digest TEXT,
    image TEXT,
    manifest_digest TEXT,
    config_digest TEXT,
    size INTEGER,
    created TEXT NOT NULL,
    finished TEXT,
    error TEXT,
    log TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (model, version)
);
";

impl SqliteCatalog {
    /// Opens (creating when missing) the catalogue, and marks builds whose process died `Failed`.
    pub fn open(path: &Path) -> Result<SqliteCatalog, CatalogError> {
        let display = path.display().to_string();
        let sql = sql_error(&display);
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
        // Two processes creating the same catalogue at once: switching it to WAL answers
        // "database is locked" at once, without waiting on the busy timeout; so does a schema
        // read whose snapshot another's change made stale. Both pass when tried again.
        let mut tries = 0;
        loop {
            let prepared = conn
                .pragma_update(None, "journal_mode", "WAL")
                .and_then(|_| conn.pragma_update(None, "synchronous", "NORMAL"))
                .and_then(|_| migrate(&mut conn));
            match prepared {
                Err(e) if is_busy(&e) && tries < 300 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
                other => break other.map_err(sql)?,
            }
        }
        let schema: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(sql)?;
        if schema > MIGRATIONS.len() as i64 {
            return Err(CatalogError::Invalid(format!(
                "catalogue {display}: its schema (version {schema}) is newer than this mlambda knows ({}); upgrade mlambda",
                MIGRATIONS.len()
            )));
        }
        let catalog = SqliteCatalog {
            conn,
            file: path.to_path_buf(),
            path: display,
        };
        catalog.fail_dead_builds()?;
        Ok(catalog)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> CatalogError + '_ {
        sql_error(&self.path)
    }

    /// Moves a build that is still open (`Pending` or `Running`) on; one that another process
    /// has closed meanwhile is [`CatalogError::Closed`].
    fn advance(&self, model: &str, version: u32, status: Status) -> Result<(), CatalogError> {
        let changed = self
            .conn
            .execute(
                "UPDATE versions SET status = ?3
                 WHERE model = ?1 AND version = ?2 AND status IN ('Pending', 'Running')",
                params![model, version, status.as_str()],
            )
            .map_err(self.sql())?;
        if changed == 1 {
            return Ok(());
        }
        let (status, reason) = self
            .conn
            .query_row(
                "SELECT status, error FROM versions WHERE model = ?1 AND version = ?2",
                params![model, version],
                |r| Ok((Status::parse(&r.get::<_, String>(0)?), r.get(1)?)),
            )
            .map_err(self.sql())?;
        Err(CatalogError::Closed {
            model: model.into(),
            version,
            status,
            reason,
        })
    }

    /// A build that is `Pending` or `Running` but whose process is gone, or whose lease ran
    /// out, will never finish.
    fn fail_dead_builds(&self) -> Result<(), CatalogError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT model, version, owner, lease_until, ?1 - lease_until FROM versions
                 WHERE status IN ('Pending', 'Running')",
            )
            .map_err(self.sql())?;
        type Open = (String, u32, String, Option<i64>, Option<i64>);
        let open: Vec<Open> = statement
            .query_map([unix_now()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(self.sql())?
            .collect::<Result<_, _>>()
            .map_err(self.sql())?;
        for (model, version, owner, lease_until, expired_for) in open {
            if let Some(reason) = super::dead_build_reason(&owner, expired_for) {
                // Only if nobody renewed the lease since it was read.
                self.conn
                    .execute(
                        "UPDATE versions SET status = 'Failed', error = ?3, finished = ?4
                         WHERE model = ?1 AND version = ?2 AND status IN ('Pending', 'Running')
                           AND owner = ?5 AND lease_until IS ?6",
                        params![model, version, reason, now(), owner, lease_until],
                    )
                    .map_err(self.sql())?;
            }
        }
        Ok(())
    }
}

/// The error of a statement on the catalogue at `path` (a transaction holds the connection,
/// so this borrows the path alone).
fn sql_error(path: &str) -> impl Fn(rusqlite::Error) -> CatalogError + Copy + '_ {
    move |source| CatalogError::Sql {
        path: path.to_string(),
        source,
    }
}

/// Renews the leases of `owner`'s open builds (the heartbeat of `lease.rs`).
pub(super) fn renew_leases(path: &Path, owner: &str, seconds: i64) -> Result<(), CatalogError> {
    let display = path.display().to_string();
    let sql = sql_error(&display);
    let conn = Connection::open(path).map_err(sql)?;
    conn.busy_timeout(Duration::from_secs(30)).map_err(sql)?;
    conn.execute(
        "UPDATE versions SET lease_until = ?2
         WHERE owner = ?1 AND status IN ('Pending', 'Running')",
        params![owner, unix_now() + seconds],
    )
    .map_err(sql)?;
    Ok(())
}

impl Catalog for SqliteCatalog {
    /// Takes the next version number of `model` and records it `Pending`, in one transaction,
    /// so concurrent builds of one model never share a number.
    fn start_version(&mut self, new: &NewVersion) -> Result<u32, CatalogError> {
        let path = self.path.clone();
        let sql = sql_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let version: u32 = tx
            .query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE model = ?1",
                [&new.model],
                |r| r.get(0),
            )
            .map_err(&sql)?;
        tx.execute(
            "INSERT INTO versions (model, version, model_type, status, contract, contract_text, contract_source, created, owner, lease_until)
             VALUES (?1, ?2, ?3, 'Pending', ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                new.model,
                version,
                new.model_type,
                new.contract,
                new.contract_text,
                new.contract_source,
                now(),
                liveness::current_owner(),
                unix_now() + lease::lease_seconds()
            ],
        )
        .map_err(&sql)?;
        tx.commit().map_err(&sql)?;
        lease::keep_alive(&Location::Sqlite(self.file.clone()));
        Ok(version)
    }

    fn set_running(&self, model: &str, version: u32) -> Result<(), CatalogError> {
        self.advance(model, version, Status::Running)
    }

    fn append_log(&self, model: &str, version: u32, line: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE versions SET log = log || ?3 || char(10) WHERE model = ?1 AND version = ?2",
                params![model, version, line],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    fn finish(&self, model: &str, version: u32, result: &BuildResult) -> Result<(), CatalogError> {
        // One transaction: a reader never sees `Finished` without the image.
        let tx = self.conn.unchecked_transaction().map_err(self.sql())?;
        self.advance(model, version, Status::Finished)?;
        self.record_build(model, version, result)?;
        tx.commit().map_err(self.sql())
    }

    /// What the build produced, status unchanged (a push is still to come).
    fn record_build(
        &self,
        model: &str,
        version: u32,
        result: &BuildResult,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE versions SET base_image = ?3, base_digest = ?4, image = ?5,
                 manifest_digest = ?6, config_digest = ?7, size = ?8, finished = ?9, packages = ?10
                 WHERE model = ?1 AND version = ?2",
                params![
                    model,
                    version,
                    result.base_image,
                    result.base_digest,
                    result.image,
                    result.manifest_digest,
                    result.config_digest,
                    result.size as i64,
                    now(),
                    result.packages
                ],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// A push confirmed by the registry: the version is `Finished` (also one whose earlier
    /// push failed) and its image is the remote reference.
    fn record_push(
        &self,
        model: &str,
        version: u32,
        remote_image: &str,
        pushed_digest: &str,
    ) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE versions SET status = 'Finished', remote_image = ?3, pushed_digest = ?4,
                 error = NULL, finished = ?5 WHERE model = ?1 AND version = ?2",
                params![model, version, remote_image, pushed_digest, now()],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// For each of `digests`, the repositories of `registry` it was pushed to (newest first):
    /// the sources of cross-repository mounts.
    fn blob_locations(
        &self,
        registry: &str,
        digests: &[String],
    ) -> Result<HashMap<String, Vec<String>>, CatalogError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT repository FROM blob_locations WHERE registry = ?1 AND digest = ?2
                 ORDER BY pushed DESC LIMIT 5",
            )
            .map_err(self.sql())?;
        let mut out = HashMap::new();
        for digest in digests {
            let repos: Vec<String> = statement
                .query_map(params![registry, digest], |r| r.get(0))
                .map_err(self.sql())?
                .collect::<Result<_, _>>()
                .map_err(self.sql())?;
            if !repos.is_empty() {
                out.insert(digest.clone(), repos);
            }
        }
        Ok(out)
    }

    /// Remembers that `registry`'s `repository` holds `digests`.
    fn add_blob_locations(
        &self,
        registry: &str,
        repository: &str,
        digests: &[String],
    ) -> Result<(), CatalogError> {
        let now = now();
        for digest in digests {
            self.conn
                .execute(
                    "INSERT INTO blob_locations (registry, digest, repository, pushed) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (registry, digest, repository) DO UPDATE SET pushed = excluded.pushed",
                    params![registry, digest, repository, now],
                )
                .map_err(self.sql())?;
        }
        Ok(())
    }

    fn fail(&self, model: &str, version: u32, error: &str) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE versions SET status = 'Failed', error = ?3, finished = ?4 WHERE model = ?1 AND version = ?2",
                params![model, version, error, now()],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    fn models(&self) -> Result<Vec<ModelSummary>, CatalogError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT v.model, c.n, v.version, v.status, v.model_type, v.created
                 FROM versions v JOIN (SELECT model, COUNT(*) AS n, MAX(version) AS latest FROM versions GROUP BY model) c
                 ON v.model = c.model AND v.version = c.latest ORDER BY v.model",
            )
            .map_err(self.sql())?;
        let rows = statement
            .query_map([], |r| {
                Ok(ModelSummary {
                    name: r.get(0)?,
                    versions: r.get(1)?,
                    latest_version: r.get(2)?,
                    latest_status: Status::parse(&r.get::<_, String>(3)?),
                    model_type: r.get(4)?,
                    updated: r.get(5)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    fn versions(&self, model: &str) -> Result<Vec<VersionRecord>, CatalogError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ?1 ORDER BY version"
            ))
            .map_err(self.sql())?;
        let rows = statement
            .query_map([model], version_from_row)
            .map_err(self.sql())?;
        rows.collect::<Result<_, _>>().map_err(self.sql())
    }

    fn package_locks(&self, model: &str) -> Result<Vec<String>, CatalogError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT packages FROM versions
                 WHERE model = ?1 AND status = 'Finished' AND packages IS NOT NULL
                 ORDER BY version DESC LIMIT 16",
            )
            .map_err(self.sql())?;
        let locks = statement
            .query_map(params![model], |r| r.get(0))
            .map_err(self.sql())?
            .collect::<Result<Vec<String>, _>>()
            .map_err(self.sql())?;
        Ok(locks)
    }

    fn import(&mut self, records: &[VersionRecord]) -> Result<usize, CatalogError> {
        let path = self.path.clone();
        let sql = sql_error(&path);
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(&sql)?;
        let mut copied = 0;
        for record in records {
            let here = tx
                .query_row(
                    "SELECT manifest_digest, status FROM versions WHERE model = ?1 AND version = ?2",
                    params![record.name, record.version],
                    |r| Ok((r.get(0)?, Status::parse(&r.get::<_, String>(1)?))),
                )
                .optional()
                .map_err(&sql)?;
            if !super::migrate::must_copy(record, here, &self.path)? {
                continue;
            }
            tx.execute(
                "INSERT INTO versions (model, version, model_type, status, contract, contract_text,
                    contract_source, base_image, base_digest, image, manifest_digest, config_digest,
                    size, created, finished, error, log, owner, remote_image, pushed_digest, packages)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, '', ?18, ?19, ?20)",
                params![
                    record.name,
                    record.version,
                    record.model_type,
                    record.status.as_str(),
                    record.contract,
                    record.contract_text,
                    record.contract_source,
                    record.base_image,
                    record.base_digest,
                    record.local_image,
                    record.digest,
                    record.config_digest,
                    record.size.map(|s| s as i64),
                    record.created,
                    record.finished,
                    record.error,
                    record.log,
                    record.remote_image(),
                    record.pushed_digest,
                    record.packages
                ],
            )
            .map_err(&sql)?;
            copied += 1;
        }
        tx.commit().map_err(&sql)?;
        Ok(copied)
    }

    fn version(&self, model: &str, version: u32) -> Result<Option<VersionRecord>, CatalogError> {
        self.conn
            .query_row(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM versions WHERE model = ?1 AND version = ?2"
                ),
                params![model, version],
                version_from_row,
            )
            .optional()
            .map_err(self.sql())
    }
}

/// The digest cache key's columns, in the order both of its statements name them.
fn cache_key_columns(key: &CacheKey) -> [Value; 10] {
    [
        Value::from(key.source.clone()),
        Value::from(key.rel.clone()),
        Value::from(key.executable),
        Value::from(key.build_mtime as i64),
        Value::from(key.format),
        Value::from(key.size as i64),
        Value::from(key.mtime_ns),
        Value::from(key.ctime_ns),
        Value::from(key.inode as i64),
        Value::from(key.dev as i64),
    ]
}

const VERSION_COLUMNS: &str = "model, version, model_type, status, contract, contract_text, contract_source,
    base_image, base_digest, COALESCE(remote_image, image), manifest_digest, config_digest, size, created, finished,
    error, log, image, pushed_digest, packages";

fn is_busy(error: &rusqlite::Error) -> bool {
    matches!(
        error.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// The schema's steps: entry `i` brings a catalogue from version `i` to `i + 1`;
/// `PRAGMA user_version` records where a file is.
const MIGRATIONS: &[fn(&Connection) -> rusqlite::Result<()>] = &[first_release, add_leases];

/// Applies the steps a catalogue has not had, in one transaction that other openers wait for.
fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let current: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for step in MIGRATIONS.iter().skip(current.max(0) as usize) {
        step(&tx)?;
    }
    if current < MIGRATIONS.len() as i64 {
        tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    }
    tx.commit()
}

fn add_column(conn: &Connection, column: &str, kind: &str) -> rusqlite::Result<()> {
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('versions')")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if columns.iter().any(|c| c == column) {
        return Ok(());
    }
    conn.execute_batch(&format!("ALTER TABLE versions ADD COLUMN {column} {kind}"))
}

fn add_leases(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "lease_until", "INTEGER")
}

/// The schema up to the build leases. Catalogues of that time had no `user_version` and some of
/// these columns, so each step is idempotent.
fn first_release(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for (column, kind) in [
        ("remote_image", "TEXT"),
        ("pushed_digest", "TEXT"),
        ("packages", "TEXT"),
    ] {
        add_column(conn, column, kind)?;
    }
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS blob_locations (
            registry TEXT NOT NULL,
            digest TEXT NOT NULL,
            repository TEXT NOT NULL,
            pushed TEXT NOT NULL,
            PRIMARY KEY (registry, digest, repository)
        );
        CREATE TABLE IF NOT EXISTS digest_cache (
            source TEXT NOT NULL,
            rel TEXT NOT NULL,
            executable INTEGER NOT NULL,
            build_mtime INTEGER NOT NULL,
            format INTEGER NOT NULL,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            ctime_ns INTEGER NOT NULL,
            inode INTEGER NOT NULL,
            dev INTEGER NOT NULL,
            digest TEXT NOT NULL,
            diff_id TEXT NOT NULL,
            blob_size INTEGER NOT NULL,
            recorded TEXT NOT NULL,
            PRIMARY KEY (source, rel, executable, build_mtime, format)
        );",
    )
}

/// The layers of big files, one row per file and layer inputs: a file that changes replaces
/// its row, so the table grows with the files seen, not with their edits.
impl DigestCache for SqliteCatalog {
    fn lookup(&self, key: &CacheKey) -> Option<CachedLayer> {
        self.conn
            .query_row(
                "SELECT digest, diff_id, blob_size FROM digest_cache
                 WHERE source = ?1 AND rel = ?2 AND executable = ?3 AND build_mtime = ?4
                   AND format = ?5 AND size = ?6 AND mtime_ns = ?7 AND ctime_ns = ?8
                   AND inode = ?9 AND dev = ?10",
                rusqlite::params_from_iter(cache_key_columns(key)),
                |r| {
                    Ok(CachedLayer {
                        digest: r.get(0)?,
                        diff_id: r.get(1)?,
                        size: r.get::<_, i64>(2)? as u64,
                    })
                },
            )
            .ok()
    }

    fn record(&self, key: &CacheKey, layer: &CachedLayer) {
        let _ = self.conn.execute(
            "INSERT OR REPLACE INTO digest_cache (source, rel, executable, build_mtime, format,
                size, mtime_ns, ctime_ns, inode, dev, digest, diff_id, blob_size, recorded)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            rusqlite::params_from_iter(cache_key_columns(key).into_iter().chain([
                Value::from(layer.digest.clone()),
                Value::from(layer.diff_id.clone()),
                Value::from(layer.size as i64),
                Value::from(now()),
            ])),
        );
    }
}

fn version_from_row(r: &Row) -> rusqlite::Result<VersionRecord> {
    Ok(VersionRecord {
        name: r.get(0)?,
        version: r.get(1)?,
        model_type: r.get(2)?,
        status: Status::parse(&r.get::<_, String>(3)?),
        contract: r.get(4)?,
        contract_text: r.get(5)?,
        contract_source: r.get(6)?,
        base_image: r.get(7)?,
        base_digest: r.get(8)?,
        image: r.get(9)?,
        digest: r.get(10)?,
        config_digest: r.get(11)?,
        size: r.get::<_, Option<i64>>(12)?.map(|s| s as u64),
        created: r.get(13)?,
        finished: r.get(14)?,
        error: r.get(15)?,
        log: r.get(16)?,
        local_image: r.get(17)?,
        pushed_digest: r.get(18)?,
        packages: r.get(19)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_version(model: &str) -> NewVersion {
        NewVersion {
            model: model.into(),
            model_type: "python:3.6".into(),
            ..NewVersion::default()
        }
    }

    #[test]
    fn versions_count_per_model_and_finish() {
        let dir = tempfile::tempdir().unwrap();
        let mut catalog = SqliteCatalog::open(&dir.path().join("catalog.db")).unwrap();
        assert_eq!(catalog.start_version(&new_version("a")).unwrap(), 1);
        assert_eq!(catalog.start_version(&new_version("a")).unwrap(), 2);
        assert_eq!(catalog.start_version(&new_version("b")).unwrap(), 1);
        catalog.set_running("a", 1).unwrap();
        catalog.append_log("a", 1, "step one").unwrap();
        catalog
            .finish(
                "a",
                1,
                &BuildResult {
                    manifest_digest: "sha256:x".into(),
                    ..BuildResult::default()
                },
            )
            .unwrap();
        catalog.fail("a", 2, "boom").unwrap();
        let versions = catalog.versions("a").unwrap();
        assert_eq!(versions[0].status, Status::Finished);
        assert_eq!(versions[0].log, "step one\n");
        assert_eq!(versions[1].status, Status::Failed);
        assert_eq!(versions[1].error.as_deref(), Some("boom"));
        let models = catalog.models().unwrap();
        assert_eq!(models.len(), 2);
        assert_eq!(models[0].versions, 2);
    }

    #[test]
    fn pushes_and_blob_locations_are_recorded_and_old_catalogues_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        {
            // A catalogue from before pushes: no remote columns.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(SCHEMA).unwrap();
        }
        let mut catalog = SqliteCatalog::open(&path).unwrap();
        drop(SqliteCatalog::open(&path).unwrap());
        catalog.start_version(&new_version("a")).unwrap();
        let build = BuildResult {
            image: "oci:/s/a:1".into(),
            manifest_digest: "sha256:m".into(),
            ..BuildResult::default()
        };
        catalog.record_build("a", 1, &build).unwrap();
        catalog.fail("a", 1, "push failed").unwrap();
        let record = catalog.version("a", 1).unwrap().unwrap();
        assert_eq!(record.status, Status::Failed);
        assert_eq!(record.image.as_deref(), Some("oci:/s/a:1"));
        catalog
            .record_push("a", 1, "r.example.com/a:1", "sha256:m")
            .unwrap();
        let record = catalog.version("a", 1).unwrap().unwrap();
        assert_eq!(record.status, Status::Finished);
        assert_eq!(record.error, None);
        assert_eq!(record.image.as_deref(), Some("r.example.com/a:1"));
        assert_eq!(record.local_image.as_deref(), Some("oci:/s/a:1"));
        assert_eq!(record.pushed_digest.as_deref(), Some("sha256:m"));

        let digests = vec!["sha256:l".to_string(), "sha256:z".to_string()];
        catalog
            .add_blob_locations("r:1", "t/a", &digests[..1])
            .unwrap();
        catalog
            .add_blob_locations("r:1", "t/a", &digests[..1])
            .unwrap();
        let found = catalog.blob_locations("r:1", &digests).unwrap();
        assert_eq!(found.get("sha256:l"), Some(&vec!["t/a".to_string()]));
        assert!(!found.contains_key("sha256:z"));
        assert!(
            catalog
                .blob_locations("other", &digests)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_dead_owner_fails_its_build_on_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let mut catalog = SqliteCatalog::open(&path).unwrap();
        catalog.start_version(&new_version("a")).unwrap();
        catalog
            .conn
            .execute(
                "UPDATE versions SET status = 'Running', owner = ?1",
                [liveness::owner_for_dead_process()],
            )
            .unwrap();
        drop(catalog);
        let catalog = SqliteCatalog::open(&path).unwrap();
        let record = catalog.version("a", 1).unwrap().unwrap();
        assert_eq!(record.status, Status::Failed);
        assert!(
            record
                .error
                .unwrap()
                .contains("ended before the build finished")
        );
    }

    #[test]
    fn another_hosts_expired_lease_fails_its_build_which_then_cannot_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        let mut catalog = SqliteCatalog::open(&path).unwrap();
        catalog.start_version(&new_version("a")).unwrap();
        catalog.start_version(&new_version("a")).unwrap();
        let other_host = |version: u32, lease_until: i64| {
            catalog
                .conn
                .execute(
                    "UPDATE versions SET status = 'Running', owner = 'elsewhere b 1 1',
                     lease_until = ?2 WHERE version = ?1",
                    params![version, lease_until],
                )
                .unwrap();
        };
        other_host(1, unix_now() - 5);
        other_host(2, unix_now() + 60);
        let reopened = SqliteCatalog::open(&path).unwrap();
        let expired = reopened.version("a", 1).unwrap().unwrap();
        assert_eq!(expired.status, Status::Failed);
        let reason = expired.error.unwrap();
        assert!(reason.contains("stopped renewing its lease"), "{reason}");
        assert!(reason.contains("elsewhere"), "{reason}");
        let alive = reopened.version("a", 2).unwrap().unwrap();
        assert_eq!(alive.status, Status::Running, "a live lease is left alone");
        let late = catalog.finish("a", 1, &BuildResult::default());
        assert!(matches!(late, Err(CatalogError::Closed { .. })), "{late:?}");
        let kept = reopened.version("a", 1).unwrap().unwrap();
        assert_eq!((kept.status, kept.digest), (Status::Failed, None));
    }

    #[test]
    fn a_catalogue_from_a_newer_mlambda_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog.db");
        drop(SqliteCatalog::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let refused = SqliteCatalog::open(&path).err().unwrap().to_string();
        assert!(refused.contains("newer than this mlambda"), "{refused}");
    }
}
