//! From a model folder to a lock for the image's interpreter. A `pylock.toml` is taken as it
//! is; a `requirements.txt` pinned with hashes is one already; a loose one is resolved by uv
//! (`uv pip compile --format pylock.toml` for the target's Python and platform), unless a lock
//! made earlier from the same bytes for the same target is at hand: then nothing is resolved
//! again, so a rebuild gets the same packages and needs no network.

use super::PackagesError;
use super::fetch::{Fetcher, io_error};
use super::lock::{Lock, read_pylock};
use super::provided::Provided;
use super::requirements::{FileOptions, Requirements, read_requirements};
use super::target::PythonTarget;
use std::path::{Path, PathBuf};
use std::process::Command;

pub const REQUIREMENTS: &str = "requirements.txt";
pub const PYLOCK: &str = "pylock.toml";
/// The files of a model folder that say what packages it needs (a manager must get them even
/// when serving.yaml's payload leaves them out).
pub const PACKAGE_FILES: &[&str] = &[PYLOCK, REQUIREMENTS];

/// The lock and how it was come by, for the build log.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub lock: Lock,
    pub how: String,
    /// Where a lock's relative wheel paths start (a given `pylock.toml`'s folder).
    pub lock_dir: Option<PathBuf>,
}

/// The lock for the model in `folder`, or `None` when it asks for no package. `earlier` are
/// locks recorded before (newest first): one made from the same requirements for the same
/// target is reused. `provided`: what the base has already, which loose requirements do not
/// install again (see `provided.rs`).
pub fn lock_for(
    folder: &Path,
    target: &PythonTarget,
    provided: &Provided,
    fetcher: &mut Fetcher,
    earlier: &[String],
    log: &mut dyn FnMut(String),
) -> Result<Option<Resolved>, PackagesError> {
    let pylock = folder.join(PYLOCK);
    if pylock.is_file() {
        let text = read_text(&pylock)?;
        let lock = read_pylock(&text, &pylock.display().to_string(), target)?;
        return Ok(Some(Resolved {
            how: format!("{PYLOCK} as given: {} packages", lock.packages.len()),
            lock,
            lock_dir: Some(folder.to_path_buf()),
        }));
    }
    let path = folder.join(REQUIREMENTS);
    if !path.is_file() {
        return Ok(None);
    }
    let given = read_text(&path)?;
    let text = without_what_serving_has(folder, given.clone(), provided, log);
    let origin = path.display().to_string();
    let (requirements, options) = read_requirements(&text, &origin, target)?;
    let provenance = provenance(&text, target, provided);
    let reusable = |candidate: &str, origin: &str| {
        read_pylock(candidate, origin, target)
            .ok()
            .filter(|lock| lock.made_from.as_ref() == Some(&provenance))
    };
    let lock = match requirements {
        Requirements::Empty => return Ok(None),
        Requirements::Pinned(pinned) => {
            let mut packages = Vec::new();
            for requirement in &pinned {
                packages.push(fetcher.pick_pinned(requirement, target)?);
            }
            Resolved {
                how: format!(
                    "{REQUIREMENTS} pinned with hashes: {} packages",
                    packages.len()
                ),
                lock: Lock {
                    packages,
                    made_from: Some(provenance),
                },
                lock_dir: None,
            }
        }
        Requirements::Loose => {
            if let Some(lock) = earlier
                .iter()
                .find_map(|text| reusable(text, "recorded lock"))
            {
                Resolved {
                    how: format!(
                        "{REQUIREMENTS} unchanged since an earlier version: its lock of {} packages reused",
                        lock.packages.len()
                    ),
                    lock,
                    lock_dir: None,
                }
            } else if let Some((lock, file)) =
                wheelhouse_locks(fetcher)
                    .into_iter()
                    .find_map(|(text, file)| {
                        reusable(&text, &file.display().to_string()).map(|l| (l, file))
                    })
            {
                Resolved {
                    how: format!(
                        "{REQUIREMENTS}: the wheelhouse's lock {} ({} packages)",
                        file.display(),
                        lock.packages.len()
                    ),
                    lock,
                    lock_dir: None,
                }
            } else {
                // uv reads a file: the one given, or its text without what was left out.
                let edited;
                let file = if text == given {
                    path.clone()
                } else {
                    edited = temp_dir("mlambda-requirements-")?;
                    write_file(&edited.path().join(REQUIREMENTS), &text)?
                };
                let mut lock = uv_compile(&file, target, provided, fetcher, &options, log)?;
                let shared: Vec<String> = lock
                    .packages
                    .iter()
                    .filter(|wheel| provided.has(wheel))
                    .map(|wheel| format!("{} {}", wheel.name, wheel.version))
                    .collect();
                if !shared.is_empty() {
                    log(format!(
                        "packages: {} already in the base, not installed again",
                        shared.join(", ")
                    ));
                    lock.packages.retain(|wheel| !provided.has(wheel));
                }
                lock.made_from = Some(provenance);
                Resolved {
                    how: format!(
                        "{REQUIREMENTS} resolved by uv for {}: {} packages",
                        target.describe(),
                        lock.packages.len()
                    ),
                    lock,
                    lock_dir: None,
                }
            }
        }
    };
    Ok(Some(lock))
}

/// What a lock made from requirements is a function of: their bytes, the target and what the
/// base has.
fn provenance(requirements: &str, target: &PythonTarget, provided: &Provided) -> String {
    let digest = crate::oci::digest::sha256_of(requirements.as_bytes());
    if provided.is_empty() {
        return format!("{} for {}", digest, target.describe());
    }
    let base = crate::oci::digest::sha256_of(provided.label().as_bytes());
    format!("{} for {} on {}", digest, target.describe(), base)
}

/// The `pylock.toml` and `pylock.*.toml` files of the wheelhouse (`packages fetch` writes one).
fn wheelhouse_locks(fetcher: &Fetcher) -> Vec<(String, PathBuf)> {
    let Some(house) = &fetcher.sources.wheelhouse else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(house) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .map(|n| n.to_string_lossy())
                .is_some_and(|n| n.starts_with("pylock.") && n.ends_with(".toml"))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| Some((std::fs::read_to_string(&p).ok()?, p)))
        .collect()
}

/// uv: `MLAMBDA_UV`, else `uv` on the PATH.
fn uv_program() -> Option<PathBuf> {
    if let Some(given) = std::env::var_os("MLAMBDA_UV").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(given)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("uv"))
        .find(|candidate| candidate.is_file())
}

/// `uv pip compile` for the target, never the host: its Python version and platform, wheels
/// only (`--no-build`: a source distribution would need building, which runs its code).
fn uv_compile(
    requirements: &Path,
    target: &PythonTarget,
    provided: &Provided,
    fetcher: &Fetcher,
    file_options: &FileOptions,
    log: &mut dyn FnMut(String),
) -> Result<Lock, PackagesError> {
    let uv = uv_program().ok_or_else(|| PackagesError::NeedsUv {
        origin: requirements.display().to_string(),
    })?;
    let out = temp_dir("mlambda-lock-")?;
    let lock_path = out.path().join(PYLOCK);
    let mut command = Command::new(&uv);
    command
        .args(["pip", "compile", "--quiet", "--no-header", "--no-build"])
        .args(["--format", "pylock.toml"])
        .arg("--python-version")
        .arg(target.python_version())
        .arg("--python-platform")
        .arg(target.uv_platform())
        .arg("--output-file")
        .arg(&lock_path)
        .arg(requirements);
    if !provided.is_empty() {
        // The base's versions, so that what the model needs beside them fits what is there.
        let constraints = write_file(
            &out.path().join("base-constraints.txt"),
            &provided.constraints(),
        )?;
        command.arg("--constraint").arg(&constraints);
    }
    let sources = &fetcher.sources;
    if let Some(house) = &sources.wheelhouse {
        command.arg("--find-links").arg(house);
    }
    if sources.offline {
        command.args(["--offline", "--no-index"]);
    } else if !sources.indexes.is_empty() {
        command.arg("--index-url").arg(&sources.indexes[0]);
    } else if file_options.index_url.is_none()
        && std::env::var_os("UV_INDEX_URL").is_none()
        && std::env::var_os("UV_DEFAULT_INDEX").is_none()
        && let Ok(pip_index) = std::env::var("PIP_INDEX_URL")
    {
        // uv reads its own variables only; pip's is honoured as pip would.
        command.arg("--index-url").arg(pip_index);
    }
    log(format!(
        "resolving {} with uv for {}",
        requirements.display(),
        target.describe()
    ));
    let output = command.output().map_err(|e| PackagesError::Uv {
        problem: format!("cannot run {}: {e}", uv.display()),
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(PackagesError::Uv {
            problem: stderr.trim().to_string(),
        });
    }
    let text = read_text(&lock_path)?;
    read_pylock(&text, "uv's lock", target)
}

fn read_text(path: &Path) -> Result<String, PackagesError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

/// Writes `text` to `path` and returns the path.
fn write_file(path: &Path, text: &str) -> Result<PathBuf, PackagesError> {
    std::fs::write(path, text).map_err(|e| io_error(path, e))?;
    Ok(path.to_path_buf())
}

fn temp_dir(prefix: &str) -> Result<tempfile::TempDir, PackagesError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .map_err(|e| io_error(&std::env::temp_dir(), e))
}

/// The requirements without what serving has already (lines blanked, so that line numbers in
/// errors stay right; the log says what was left out and why): in an MLflow folder, mlflow
/// itself (the runtime of the flavor loads the flavor's file; mlflow is large and not needed
/// to serve); and any requirement the base's packages serve (see `provided.rs`), whose pin, when
/// another version, is said — the base's is the one the model runs on.
fn without_what_serving_has(
    folder: &Path,
    text: String,
    provided: &Provided,
    log: &mut dyn FnMut(String),
) -> String {
    use pep508_rs::pep440_rs::Version;
    use pep508_rs::{Requirement, VersionOrUrl};
    use std::str::FromStr;
    let mlflow_folder = folder.join("MLmodel").is_file();
    // A requirement line (options, URLs and what does not parse are uv's to read).
    let requirement = |line: &str| {
        let spec = line.split(" #").next().unwrap_or("").trim();
        let requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(spec).ok()?;
        let name = super::target::normalize(requirement.name.as_ref());
        match requirement.version_or_url {
            None => Some((name, None)),
            Some(VersionOrUrl::VersionSpecifier(specifiers)) => Some((name, Some(specifiers))),
            Some(VersionOrUrl::Url(_)) => None,
        }
    };
    let (mut mlflow, mut served, mut other_version) = (Vec::new(), Vec::new(), Vec::new());
    let kept: Vec<&str> = text
        .lines()
        .map(|line| {
            let Some((name, specifiers)) = requirement(line) else {
                return line;
            };
            if mlflow_folder && matches!(name.as_str(), "mlflow" | "mlflow-skinny") {
                mlflow.push(line.trim().to_string());
                return "";
            }
            let Some((has, version)) = provided.serving(&name) else {
                return line;
            };
            served.push(line.trim().to_string());
            let fits = |specifiers: &pep508_rs::pep440_rs::VersionSpecifiers| {
                Version::from_str(version).is_ok_and(|v| specifiers.contains(&v))
            };
            if let Some(specifiers) = specifiers.filter(|s| !fits(s)) {
                other_version.push(format!("{name}{specifiers} (the base has {has} {version})"));
            }
            ""
        })
        .collect();
    if !mlflow.is_empty() {
        log(format!(
            "packages: {} left out of the MLflow folder's requirements.txt: the runtime loads the flavor's model file itself, mlflow is not needed to serve",
            mlflow.join(", ")
        ));
    }
    if !served.is_empty() {
        log(format!(
            "packages: {} left out of requirements.txt: the base has them",
            served.join(", ")
        ));
    }
    if !other_version.is_empty() {
        log(format!(
            "warning: the model asks for {}: it runs on the base's version; give it a base with the version it needs (--base) if that matters",
            other_version.join(", ")
        ));
    }
    if mlflow.is_empty() && served.is_empty() {
        return text;
    }
    kept.join("\n")
}
