//! Wheels onto this machine: a content-addressed cache under the home
//! (`wheels/sha256/<hex>/<file name>`), filled from a wheelhouse (a folder of wheels, pip's
//! `--find-links`) or downloaded, each file verified against its sha256 before it is renamed
//! into place. Written once, never changed: concurrent builds share it safely (each writes a
//! temporary file of its own; the rename is atomic, and both would write the same bytes).

use super::PackagesError;
use super::index::{self, IndexFile};
use super::lock::LockedWheel;
use super::requirements::Pinned;
use super::target::{PythonTarget, WheelName};
use crate::oci::digest::{Algorithm, Hasher};
use crate::remote::{RetryPolicy, error_chain, is_transient_error, is_transient_status};
use reqwest::blocking::Client;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where wheels come from, beyond the cache.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// Searched first (pip's `--find-links`).
    pub wheelhouse: Option<PathBuf>,
    /// Nothing from the network: the cache and the wheelhouse only.
    pub offline: bool,
    /// Simple-API roots, the first one first; empty: PyPI.
    pub indexes: Vec<String>,
}

impl Sources {
    /// `--index-url`, else `PIP_INDEX_URL` / `UV_INDEX_URL` / `UV_DEFAULT_INDEX`, else PyPI; plus
    /// the extra indexes of a requirements file.
    pub fn index_urls(&self) -> Vec<String> {
        if !self.indexes.is_empty() {
            return self.indexes.clone();
        }
        let from_env = ["PIP_INDEX_URL", "UV_INDEX_URL", "UV_DEFAULT_INDEX"]
            .iter()
            .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
        vec![from_env.unwrap_or_else(|| index::PYPI_SIMPLE.to_string())]
    }
}

pub struct WheelCache {
    root: PathBuf,
}

impl WheelCache {
    pub fn new(root: PathBuf) -> WheelCache {
        WheelCache { root }
    }

    fn entry(&self, sha256: &str, filename: &str) -> PathBuf {
        self.root.join("sha256").join(sha256).join(filename)
    }

    /// The cached wheel with this hash and name, if the cache has it.
    pub fn get(&self, sha256: &str, filename: &str) -> Option<PathBuf> {
        let path = self.entry(sha256, filename);
        path.is_file().then_some(path)
    }

    /// The wheels the cache holds under `sha256` (one, but any name a file had).
    pub fn by_hash(&self, sha256: &str) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(self.root.join("sha256").join(sha256)) else {
            return Vec::new();
        };
        dir.filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".whl"))
            .collect()
    }

    /// Copies `from` into the cache while hashing it; keeps it only if its sha256 is `sha256`.
    fn put(
        &self,
        mut from: impl Read,
        sha256: &str,
        filename: &str,
        place: &str,
    ) -> Result<PathBuf, PackagesError> {
        let tmp_dir = self.root.join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(|e| io_error(&tmp_dir, e))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).map_err(|e| io_error(&tmp_dir, e))?;
        let mut hasher = Hasher::new(Algorithm::Sha256);
        let mut buffer = vec![0; 1 << 20];
        loop {
            let n = match from.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(PackagesError::Download {
                        url: place.to_string(),
                        problem: e.to_string(),
                    });
                }
            };
            hasher.update(&buffer[..n]);
            tmp.write_all(&buffer[..n])
                .map_err(|e| io_error(tmp.path(), e))?;
        }
        let found = hasher.finish();
        let found = found.strip_prefix("sha256:").unwrap_or(&found);
        if found != sha256 {
            return Err(PackagesError::HashMismatch {
                wheel: filename.to_string(),
                place: place.to_string(),
                expected: sha256.to_string(),
                found: found.to_string(),
            });
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| io_error(tmp.path(), e))?;
        let path = self.entry(sha256, filename);
        let dir = path.parent().expect("a cache entry has a folder");
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        tmp.persist(&path).map_err(|e| io_error(&path, e.error))?;
        Ok(path)
    }
}

/// Gets wheels into the cache: from the wheelhouse, else the network.
pub struct Fetcher {
    pub cache: WheelCache,
    pub sources: Sources,
    client: Option<Client>,
    retry: RetryPolicy,
}

impl Fetcher {
    pub fn new(cache: WheelCache, sources: Sources) -> Fetcher {
        Fetcher {
            cache,
            sources,
            client: None,
            retry: RetryPolicy {
                attempts: 4,
                ..RetryPolicy::default()
            },
        }
    }

    fn client(&mut self) -> Result<&Client, PackagesError> {
        if self.client.is_none() {
            let tls = crate::remote::tls_config(None).map_err(|e| PackagesError::Download {
                url: "https".into(),
                problem: e.to_string(),
            })?;
            let client = Client::builder()
                .tls_backend_preconfigured(tls)
                .user_agent(concat!("mlambda/", env!("CARGO_PKG_VERSION")))
                .connect_timeout(Duration::from_secs(30))
                .timeout(None::<Duration>)
                .build()
                .map_err(|e| PackagesError::Download {
                    url: "https".into(),
                    problem: error_chain(&e),
                })?;
            self.client = Some(client);
        }
        Ok(self.client.as_ref().expect("set just above"))
    }

    /// The path of `wheel` in the cache, fetched there first when needed. `lock_dir` is where
    /// a lock's relative `path` entries start.
    pub fn wheel(
        &mut self,
        wheel: &LockedWheel,
        lock_dir: Option<&Path>,
        log: &mut dyn FnMut(String),
    ) -> Result<PathBuf, PackagesError> {
        if let Some(path) = self.cache.get(&wheel.sha256, &wheel.filename) {
            return Ok(path);
        }
        if let Some(house) = &self.sources.wheelhouse {
            let candidate = house.join(&wheel.filename);
            if candidate.is_file() {
                let file = File::open(&candidate).map_err(|e| io_error(&candidate, e))?;
                log(format!("wheel {} from the wheelhouse", wheel.filename));
                return self.cache.put(
                    file,
                    &wheel.sha256,
                    &wheel.filename,
                    &candidate.display().to_string(),
                );
            }
        }
        let local = wheel.url.as_deref().and_then(|u| local_path(u, lock_dir));
        if let Some(path) = local {
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            return self.cache.put(
                file,
                &wheel.sha256,
                &wheel.filename,
                &path.display().to_string(),
            );
        }
        if self.sources.offline {
            return Err(PackagesError::NotAvailable {
                wheel: wheel.filename.clone(),
                why: match &self.sources.wheelhouse {
                    Some(house) => format!(
                        "it is neither in the wheelhouse {} nor in the cache, and --offline forbids downloading it; on a connected host, `mlambda packages fetch MODEL_DIR --into {}` puts it there",
                        house.display(),
                        house.display()
                    ),
                    None => "it is not in the cache and --offline forbids downloading it; give a --wheelhouse filled by `mlambda packages fetch`".into(),
                },
            });
        }
        let url = match &wheel.url {
            Some(url) => url.clone(),
            None => self.find_url(wheel)?,
        };
        self.download(&url, wheel, log)
    }

    /// A wheel known by name and hash only (a hashed requirements file): its URL on the index.
    fn find_url(&mut self, wheel: &LockedWheel) -> Result<String, PackagesError> {
        for index in self.sources.index_urls() {
            let files = index::project_files(self.client()?, &index, &wheel.name)?;
            if let Some(file) = files.iter().find(|f| f.filename == wheel.filename) {
                return Ok(file.url.clone());
            }
        }
        Err(PackagesError::NotAvailable {
            wheel: wheel.filename.clone(),
            why: format!(
                "no index lists it ({})",
                self.sources.index_urls().join(", ")
            ),
        })
    }

    fn download(
        &mut self,
        url: &str,
        wheel: &LockedWheel,
        log: &mut dyn FnMut(String),
    ) -> Result<PathBuf, PackagesError> {
        let shown = index::redact(url);
        log(match wheel.size {
            Some(size) => format!(
                "downloading {} ({:.1} MB)",
                wheel.filename,
                size as f64 / 1e6
            ),
            None => format!("downloading {}", wheel.filename),
        });
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let outcome = self.client()?.get(url).send();
            let retry_after = match outcome {
                Ok(response) if response.status().is_success() => {
                    match self
                        .cache
                        .put(response, &wheel.sha256, &wheel.filename, &shown)
                    {
                        Ok(path) => {
                            log(format!(
                                "downloaded {} in {:.1} s",
                                wheel.filename,
                                started.elapsed().as_secs_f64()
                            ));
                            return Ok(path);
                        }
                        // A connection broken mid-body: try again; a wrong hash never passes.
                        Err(PackagesError::Download { problem, .. })
                            if attempt < self.retry.attempts =>
                        {
                            log(format!(
                                "download of {} broke ({problem}); trying again",
                                wheel.filename
                            ));
                            None
                        }
                        Err(error) => return Err(error),
                    }
                }
                Ok(response)
                    if is_transient_status(response.status()) && attempt < self.retry.attempts =>
                {
                    crate::remote::retry_after(response.headers())
                }
                Ok(response) => {
                    return Err(PackagesError::Download {
                        url: shown,
                        problem: format!("the server answered {}", response.status()),
                    });
                }
                Err(error) if is_transient_error(&error) && attempt < self.retry.attempts => None,
                Err(error) => {
                    return Err(PackagesError::Download {
                        url: shown,
                        problem: error_chain(&error),
                    });
                }
            };
            std::thread::sleep(self.retry.delay(attempt, retry_after));
            attempt += 1;
        }
    }

    /// The best wheel for `target` of a pinned requirement among those it allows by hash:
    /// the cache's and the wheelhouse's first, the index's when neither has one.
    pub fn pick_pinned(
        &mut self,
        pinned: &Pinned,
        target: &PythonTarget,
    ) -> Result<LockedWheel, PackagesError> {
        let ranking = target.ranking();
        let fits = |filename: &str| {
            WheelName::parse(filename).and_then(|w| {
                (w.name == pinned.name && same_version(&w.version, &pinned.version))
                    .then(|| ranking.rank(&w))
                    .flatten()
            })
        };
        let mut best: Option<(usize, LockedWheel)> = None;
        let locked = |filename: &str, url: Option<String>, sha256: &str| LockedWheel {
            name: pinned.name.clone(),
            version: pinned.version.clone(),
            filename: filename.to_string(),
            url,
            sha256: sha256.to_string(),
            size: None,
        };
        for sha256 in &pinned.sha256 {
            for filename in self.cache.by_hash(sha256) {
                if let Some(rank) = fits(&filename) {
                    consider(&mut best, rank, locked(&filename, None, sha256));
                }
            }
        }
        if let Some(house) = &self.sources.wheelhouse
            && let Ok(entries) = std::fs::read_dir(house)
        {
            for entry in entries.filter_map(Result::ok) {
                let filename = entry.file_name().to_string_lossy().into_owned();
                if let Some(rank) = fits(&filename) {
                    // Its hash is checked when it is copied into the cache: it must be one
                    // of those the requirement allows.
                    let sha256 = hash_file(&entry.path())?;
                    if pinned.sha256.contains(&sha256) {
                        consider(&mut best, rank, locked(&filename, None, &sha256));
                    }
                }
            }
        }
        // What the index has of this version that the requirement cannot take: said in
        // the error, since "no wheel" alone would hide a wrong hash or a source-only release.
        let mut refused: Option<(String, String)> = None;
        let mut source_only = false;
        if best.is_none() && !self.sources.offline {
            for index in self.sources.index_urls() {
                let files: Vec<IndexFile> =
                    index::project_files(self.client()?, &index, &pinned.name)?;
                for file in files {
                    let Some(rank) = fits(&file.filename) else {
                        source_only |= is_sdist_of(&file.filename, pinned);
                        continue;
                    };
                    match &file.sha256 {
                        Some(sha256) if pinned.sha256.contains(sha256) => consider(
                            &mut best,
                            rank,
                            locked(&file.filename, Some(file.url.clone()), sha256),
                        ),
                        Some(sha256) => refused = Some((file.filename.clone(), sha256.clone())),
                        None => {}
                    }
                }
                if best.is_some() {
                    break;
                }
            }
        }
        match (best, refused) {
            (Some((_, wheel)), _) => Ok(wheel),
            (None, Some((wheel, found))) => Err(PackagesError::HashNotAllowed {
                package: format!("{}=={}", pinned.name, pinned.version),
                wheel,
                found,
            }),
            (None, None) => Err(PackagesError::NoWheel {
                package: format!("{}=={}", pinned.name, pinned.version),
                target: target.describe(),
                source_only,
            }),
        }
    }
}

/// `name-version.tar.gz` (or `.zip`): the source distribution of the pinned version.
fn is_sdist_of(filename: &str, pinned: &Pinned) -> bool {
    let Some(stem) = filename
        .strip_suffix(".tar.gz")
        .or_else(|| filename.strip_suffix(".zip"))
    else {
        return false;
    };
    stem.rsplit_once('-').is_some_and(|(name, version)| {
        super::target::normalize(name) == pinned.name && same_version(version, &pinned.version)
    })
}

/// Keeps the better of `best` and a candidate: the lower rank, then the lower file name, so
/// the choice does not depend on the order files are listed in.
fn consider(best: &mut Option<(usize, LockedWheel)>, rank: usize, wheel: LockedWheel) {
    if best
        .as_ref()
        .is_none_or(|(r, b)| (rank, &wheel.filename) < (*r, &b.filename))
    {
        *best = Some((rank, wheel));
    }
}

/// Versions as PEP 440 compares them (`1.0` is `1.0.0`); the text when either does not parse.
fn same_version(a: &str, b: &str) -> bool {
    use pep508_rs::pep440_rs::Version;
    use std::str::FromStr;
    match (Version::from_str(a), Version::from_str(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// A lock's `path`, or a `file:` URL: a wheel on this machine.
fn local_path(url: &str, lock_dir: Option<&Path>) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.contains("://") {
        return None;
    }
    let path = Path::new(url);
    Some(match lock_dir {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    })
}

pub fn hash_file(path: &Path) -> Result<String, PackagesError> {
    let mut file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut hasher = Hasher::new(Algorithm::Sha256);
    let mut buffer = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    let digest = hasher.finish();
    Ok(digest.trim_start_matches("sha256:").to_string())
}

pub(super) fn io_error(path: &Path, source: io::Error) -> PackagesError {
    PackagesError::Io {
        path: path.display().to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn locked(filename: &str, sha256: &str) -> LockedWheel {
        LockedWheel {
            name: "demo".into(),
            version: "1.0".into(),
            filename: filename.into(),
            url: None,
            sha256: sha256.into(),
            size: None,
        }
    }

    #[test]
    fn a_wheelhouse_wheel_enters_the_cache_only_with_the_right_hash() {
        let home = tempfile::tempdir().unwrap();
        let house = tempfile::tempdir().unwrap();
        let name = "demo-1.0-py3-none-any.whl";
        std::fs::write(house.path().join(name), b"wheel bytes").unwrap();
        let good = crate::oci::digest::sha256_of(b"wheel bytes");
        let good = good.trim_start_matches("sha256:");
        let sources = Sources {
            wheelhouse: Some(house.path().to_path_buf()),
            offline: true,
            indexes: Vec::new(),
        };
        let mut fetcher = Fetcher::new(WheelCache::new(home.path().join("wheels")), sources);
        let error = fetcher
            .wheel(&locked(name, &"0".repeat(64)), None, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(error.contains(name) && error.contains("sha256"), "{error}");
        let path = fetcher
            .wheel(&locked(name, good), None, &mut |_| {})
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"wheel bytes");
        assert!(path.starts_with(home.path().join("wheels/sha256").join(good)));
        // Gone from the wheelhouse, still in the cache, offline.
        std::fs::remove_file(house.path().join(name)).unwrap();
        assert_eq!(
            fetcher
                .wheel(&locked(name, good), None, &mut |_| {})
                .unwrap(),
            path
        );
        let missing = fetcher
            .wheel(
                &locked("other-1.0-py3-none-any.whl", good),
                None,
                &mut |_| {},
            )
            .unwrap_err()
            .to_string();
        assert!(missing.contains("--offline"), "{missing}");
    }

    #[test]
    fn a_pinned_requirement_takes_the_best_allowed_wheel_of_the_wheelhouse() {
        let home = tempfile::tempdir().unwrap();
        let house = tempfile::tempdir().unwrap();
        let files = [
            ("demo-1.0-py3-none-any.whl", b"pure".as_slice()),
            ("demo-1.0-cp311-cp311-manylinux_2_28_x86_64.whl", b"native"),
            (
                "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl",
                b"not allowed",
            ),
            (
                "demo-2.0-cp311-cp311-manylinux_2_28_x86_64.whl",
                b"other version",
            ),
        ];
        for (name, bytes) in files {
            std::fs::write(house.path().join(name), bytes).unwrap();
        }
        let hash = |b: &[u8]| {
            crate::oci::digest::sha256_of(b)
                .trim_start_matches("sha256:")
                .to_string()
        };
        let pinned = Pinned {
            name: "demo".into(),
            version: "1.0.0".into(),
            sha256: vec![hash(b"pure"), hash(b"native"), hash(b"other version")],
        };
        let target = PythonTarget::for_platform("3.11", "amd64", (2, 36)).unwrap();
        let sources = Sources {
            wheelhouse: Some(house.path().to_path_buf()),
            offline: true,
            indexes: Vec::new(),
        };
        let mut fetcher = Fetcher::new(WheelCache::new(home.path().to_path_buf()), sources);
        let wheel = fetcher.pick_pinned(&pinned, &target).unwrap();
        assert_eq!(
            wheel.filename,
            "demo-1.0-cp311-cp311-manylinux_2_28_x86_64.whl"
        );
        assert_eq!(wheel.sha256, hash(b"native"));
    }
}
