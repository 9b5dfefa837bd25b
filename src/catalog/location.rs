//! Where a catalogue is: `--catalog` / `MLAMBDA_CATALOG`, else the SQLite file in the home.

use super::CatalogError;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// One file, shared by the processes of one host.
    Sqlite(PathBuf),
    /// A PostgreSQL database shared by many hosts. `local` is this host's SQLite file, which
    /// keeps what only this host can use: the digests of the files it read.
    Postgres { url: String, local: PathBuf },
}

impl Location {
    /// `postgres://…` / `postgresql://…`, `sqlite:PATH`, or a plain path (SQLite). A leading
    /// `~/` is the user's home. `home_db` is this host's SQLite file.
    pub fn parse(text: &str, home_db: &Path) -> Result<Location, CatalogError> {
        let text = text.trim();
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            url::Url::parse(text).map_err(|e| {
                CatalogError::Invalid(format!(
                    "--catalog {}: not a PostgreSQL URL ({e}); write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
                    redact(text)
                ))
            })?;
            return Ok(Location::Postgres {
                url: text.to_string(),
                local: home_db.to_path_buf(),
            });
        }
        let path = text.strip_prefix("sqlite:").unwrap_or(text);
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() || path.contains("://") {
            return Err(CatalogError::Invalid(format!(
                "--catalog {}: unknown catalogue; use postgres://USER@HOST[:PORT]/DATABASE, sqlite:PATH or a file path",
                redact(text)
            )));
        }
        Ok(Location::Sqlite(expand_home(path)))
    }

    /// For messages: the URL with its password hidden, or the file.
    pub fn display(&self) -> String {
        match self {
            Location::Sqlite(path) => path.display().to_string(),
            Location::Postgres { url, .. } => redact(url),
        }
    }
}

fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// The URL with any password replaced, so that it can be printed and logged (the one rule,
/// shared with package indexes).
pub use crate::packages::index::redact;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        let db = Path::new("/h/catalog.db");
        assert_eq!(
            Location::parse("sqlite:/a/c.db", db).unwrap(),
            Location::Sqlite("/a/c.db".into())
        );
        assert_eq!(
            Location::parse("rel/c.db", db).unwrap(),
            Location::Sqlite("rel/c.db".into())
        );
        let pg = Location::parse("postgres://ci:secret@db:5433/mlambda", db).unwrap();
        assert_eq!(
            pg,
            Location::Postgres {
                url: "postgres://ci:secret@db:5433/mlambda".into(),
                local: db.into()
            }
        );
        assert_eq!(pg.display(), "postgres://ci:***@db:5433/mlambda");
        assert!(Location::parse("mysql://x/y", db).is_err());
        assert!(Location::parse("", db).is_err());
    }
}
