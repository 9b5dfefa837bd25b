//! The home: the folder that holds one installation's catalogue and local store.

use crate::catalog::{Catalog, CatalogError, Location};
use crate::store::{Store, StoreError};
use std::path::PathBuf;

/// Where mlambda keeps its state: `$MLAMBDA_HOME`, else `$XDG_DATA_HOME/mlambda`, else
/// `~/.local/share/mlambda`.
pub fn default_home() -> PathBuf {
    let env = |key| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("MLAMBDA_HOME")
        .or_else(|| env("XDG_DATA_HOME").map(|d| d.join("mlambda")))
        .or_else(|| env("HOME").map(|h| h.join(".local/share/mlambda")))
        .unwrap_or_else(|| PathBuf::from(".mlambda"))
}

#[derive(Debug, Clone)]
pub struct Home {
    pub dir: PathBuf,
    /// Where versions are recorded: the SQLite file in the home unless `--catalog` says.
    pub catalog: Location,
}

impl Home {
    /// The home at `dir`, made absolute: paths under it are recorded in the catalogue, and a
    /// relative one would mean something else from another working directory.
    pub fn new(dir: PathBuf) -> Home {
        // Only an unreadable working directory fails; the path is then kept as given.
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        let catalog = Location::Sqlite(dir.join("catalog.db"));
        Home { dir, catalog }
    }

    /// The home with its catalogue elsewhere (`--catalog` / `MLAMBDA_CATALOG`).
    pub fn with_catalog(mut self, url: &str) -> Result<Home, CatalogError> {
        self.catalog = Location::parse(url, &self.dir.join("catalog.db"))?;
        Ok(self)
    }

    /// Opens the catalogue (see [`crate::catalog::open`]).
    pub fn open_catalog(&self) -> Result<Box<dyn Catalog>, CatalogError> {
        crate::catalog::open(&self.catalog)
    }

    pub fn store(&self) -> Result<Store, StoreError> {
        Store::open(&self.dir.join("registry"))
    }
    /// Images unpacked for `mlambda run`, one folder per manifest digest.
    pub fn run_cache(&self) -> PathBuf {
        self.dir.join("run")
    }
    /// Wheels by sha256, and the package layers built from them.
    pub fn wheel_cache(&self) -> PathBuf {
        self.dir.join("wheels")
    }
}
