//! The lock: which distribution, which version, which wheel and its sha256, in the form of
//! PEP 751 (`pylock.toml`), the standard file pip, uv and PDM read and write. A user's
//! `pylock.toml` is read here; the lock a version was built with is written here, with one
//! wheel per package (the one installed) and the hash of the requirements it was made from.

use super::PackagesError;
use super::target::{PythonTarget, WheelName, normalize};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// A lock as mlambda installs it: one wheel for each package, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lock {
    pub packages: Vec<LockedWheel>,
    /// What the lock was made from: the requirements' sha256 and the target (`None`: the
    /// lock was given as it is).
    pub made_from: Option<String>,
}

/// A package pinned to one wheel file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockedWheel {
    /// Normalised (PEP 503).
    pub name: String,
    pub version: String,
    /// The wheel's file name, which says its tags.
    pub filename: String,
    /// Where it can be downloaded from; `None` for a wheel known only by name and hash (a
    /// wheelhouse's, or a requirements file's with no index at hand).
    pub url: Option<String>,
    pub sha256: String,
    pub size: Option<u64>,
}

/// What PEP 751 says a file holds, as far as mlambda reads it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PylockFile {
    lock_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requires_python: Option<String>,
    #[serde(default)]
    packages: Vec<PylockPackage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tool: Option<PylockTool>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PylockTool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mlambda: Option<PylockMlambda>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PylockMlambda {
    made_from: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
struct PylockPackage {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    marker: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    wheels: Option<Vec<PylockWheel>>,
    #[serde(default, skip_serializing)]
    sdist: Option<toml::Value>,
    #[serde(default, skip_serializing)]
    vcs: Option<toml::Value>,
    #[serde(default, skip_serializing)]
    directory: Option<toml::Value>,
    #[serde(default, skip_serializing)]
    archive: Option<toml::Value>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PylockWheel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    size: Option<u64>,
    hashes: BTreeMap<String, String>,
}

impl PylockWheel {
    /// The file name: given, else the last segment of the URL or path.
    fn filename(&self) -> Option<String> {
        if let Some(name) = &self.name {
            return Some(name.clone());
        }
        let place = self.url.as_deref().or(self.path.as_deref())?;
        let place = place.split(['?', '#']).next().unwrap_or(place);
        place.rsplit('/').next().map(str::to_string)
    }
}

/// Reads a `pylock.toml` and picks, for each package whose marker holds on `target`, the best
/// wheel for it. `origin` names the file in errors.
pub fn read_pylock(text: &str, origin: &str, target: &PythonTarget) -> Result<Lock, PackagesError> {
    let invalid = |problem: String| PackagesError::Lock {
        origin: origin.to_string(),
        problem,
    };
    let file: PylockFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    if !file.lock_version.starts_with("1.") {
        return Err(invalid(format!(
            "lock-version {} is not one mlambda reads (1.x)",
            file.lock_version
        )));
    }
    let environment = target.markers();
    let ranking = target.ranking();
    let mut packages = Vec::new();
    for package in &file.packages {
        if let Some(marker) = &package.marker {
            let tree = pep508_rs::MarkerTree::from_str(marker)
                .map_err(|e| invalid(format!("package {}: marker: {e}", package.name)))?;
            if !tree.evaluate(&environment, &[]) {
                continue;
            }
        }
        let name = normalize(&package.name);
        let mut best: Option<(usize, LockedWheel)> = None;
        for wheel in package.wheels.iter().flatten() {
            let Some(filename) = wheel.filename() else {
                return Err(invalid(format!(
                    "package {name}: a wheel with neither name, url nor path"
                )));
            };
            let Some(parsed) = WheelName::parse(&filename) else {
                return Err(invalid(format!(
                    "package {name}: '{filename}' is not a wheel file name"
                )));
            };
            let Some(rank) = ranking.rank(&parsed) else {
                continue;
            };
            let Some(sha256) = wheel.hashes.get("sha256") else {
                return Err(invalid(format!(
                    "package {name}: wheel {filename} has no sha256 hash; mlambda installs only what it can verify"
                )));
            };
            let candidate = LockedWheel {
                name: name.clone(),
                version: package.version.clone().unwrap_or(parsed.version.clone()),
                filename,
                url: wheel.url.clone().or_else(|| wheel.path.clone()),
                sha256: sha256.to_ascii_lowercase(),
                size: wheel.size,
            };
            if best.as_ref().is_none_or(|(r, _)| rank < *r) {
                best = Some((rank, candidate));
            }
        }
        match best {
            Some((_, wheel)) => packages.push(wheel),
            None => return Err(no_wheel(&name, package, target)),
        }
    }
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Lock {
        packages,
        made_from: file.tool.and_then(|t| t.mlambda).map(|m| m.made_from),
    })
}

fn no_wheel(name: &str, package: &PylockPackage, target: &PythonTarget) -> PackagesError {
    let has_source = package.sdist.is_some()
        || package.vcs.is_some()
        || package.directory.is_some()
        || package.archive.is_some();
    PackagesError::NoWheel {
        package: format!(
            "{name}{}",
            package
                .version
                .as_ref()
                .map(|v| format!("=={v}"))
                .unwrap_or_default()
        ),
        target: target.describe(),
        source_only: has_source,
    }
}

/// The packages of a lock mlambda wrote (one wheel each), for `mlambda show`.
pub fn recorded_packages(text: &str) -> Result<Vec<LockedWheel>, PackagesError> {
    let file: PylockFile = toml::from_str(text).map_err(|e| PackagesError::Lock {
        origin: "recorded lock".into(),
        problem: e.to_string(),
    })?;
    Ok(file
        .packages
        .iter()
        .filter_map(|p| {
            let wheel = p.wheels.as_ref()?.first()?;
            Some(LockedWheel {
                name: p.name.clone(),
                version: p.version.clone().unwrap_or_default(),
                filename: wheel.filename()?,
                url: wheel.url.clone(),
                sha256: wheel.hashes.get("sha256").cloned().unwrap_or_default(),
                size: wheel.size,
            })
        })
        .collect())
}

/// The lock a version was built with, as a `pylock.toml`.
pub fn write_pylock(lock: &Lock, target: &PythonTarget) -> String {
    let file = PylockFile {
        lock_version: "1.0".into(),
        created_by: Some("mlambda".into()),
        requires_python: Some(format!("=={}.*", target.python_version())),
        packages: lock
            .packages
            .iter()
            .map(|p| PylockPackage {
                name: p.name.clone(),
                version: Some(p.version.clone()),
                marker: None,
                wheels: Some(vec![PylockWheel {
                    name: Some(p.filename.clone()),
                    url: p.url.clone(),
                    path: None,
                    size: p.size,
                    hashes: BTreeMap::from([("sha256".to_string(), p.sha256.clone())]),
                }]),
                sdist: None,
                vcs: None,
                directory: None,
                archive: None,
            })
            .collect(),
        tool: lock.made_from.as_ref().map(|made_from| PylockTool {
            mlambda: Some(PylockMlambda {
                made_from: made_from.clone(),
            }),
        }),
    };
    let body = toml::to_string(&file).expect("a lock always serialises");
    format!(
        "# The Python packages of this image, as mlambda installed them (PEP 751).\n# For {}.\n{body}",
        target.describe()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const UV_LOCK: &str = r#"
lock-version = "1.0"
created-by = "uv"
requires-python = ">=3.11"

[[packages]]
name = "numpy"
version = "2.4.6"
sdist = { url = "https://files.example/numpy-2.4.6.tar.gz", size = 20735807, hashes = { sha256 = "f3a3" } }
wheels = [
  { url = "https://files.example/numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl", size = 16918164, hashes = { sha256 = "89CD" } },
  { url = "https://files.example/numpy-2.4.6-cp311-cp311-manylinux_2_28_aarch64.whl", size = 1, hashes = { sha256 = "aaaa" } },
  { url = "https://files.example/numpy-2.4.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", size = 1, hashes = { sha256 = "bbbb" } },
]

[[packages]]
name = "colorama"
version = "0.4.6"
marker = "sys_platform == 'win32'"
wheels = [{ url = "https://files.example/colorama-0.4.6-py2.py3-none-any.whl", hashes = { sha256 = "cccc" } }]

[[packages]]
name = "Joblib"
version = "1.6.0"
wheels = [{ name = "joblib-1.6.0-py3-none-any.whl", path = "wheels/joblib-1.6.0-py3-none-any.whl", hashes = { sha256 = "dddd" } }]
"#;

    fn target() -> PythonTarget {
        PythonTarget::for_platform("3.11", "amd64", (2, 36)).unwrap()
    }

    #[test]
    fn a_pylock_gives_the_best_wheel_of_each_package_the_target_needs() {
        let lock = read_pylock(UV_LOCK, "pylock.toml", &target()).unwrap();
        let names: Vec<&str> = lock.packages.iter().map(|p| p.filename.as_str()).collect();
        assert_eq!(
            names,
            [
                "joblib-1.6.0-py3-none-any.whl",
                "numpy-2.4.6-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl"
            ],
            "colorama is for Windows only; numpy's best wheel for x86_64"
        );
        assert_eq!(lock.packages[1].sha256, "89cd");
        assert_eq!(lock.packages[0].name, "joblib");
    }

    #[test]
    fn the_lock_written_reads_back_the_same() {
        let mut lock = read_pylock(UV_LOCK, "pylock.toml", &target()).unwrap();
        lock.made_from = Some("sha256:0123 for cp311 manylinux_2_36_x86_64".into());
        let text = write_pylock(&lock, &target());
        assert_eq!(read_pylock(&text, "again", &target()).unwrap(), lock);
    }

    #[test]
    fn a_package_with_no_wheel_for_the_target_is_named() {
        let only_arm = r#"
lock-version = "1.0"
[[packages]]
name = "tokenizers-src"
version = "0.1"
sdist = { url = "https://files.example/tokenizers-src-0.1.tar.gz", hashes = { sha256 = "ee" } }
"#;
        let error = read_pylock(only_arm, "pylock.toml", &target())
            .unwrap_err()
            .to_string();
        assert!(error.contains("tokenizers-src==0.1"), "{error}");
        assert!(error.contains("source distribution"), "{error}");
        let bad = read_pylock("lock-version = \"2.0\"\n", "x/pylock.toml", &target())
            .unwrap_err()
            .to_string();
        assert!(
            bad.contains("x/pylock.toml") && bad.contains("2.0"),
            "{bad}"
        );
    }
}
