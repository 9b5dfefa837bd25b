//! Python packages into images, with no Python and no container on the build host: a lock
//! (PEP 751 `pylock.toml`) is made for the image's interpreter from the model's requirements
//! (resolve.rs), its wheels are fetched into a content-addressed cache (fetch.rs), and each
//! installed distribution becomes a layer of its own (install.rs), so that two images sharing
//! numpy share numpy's layer. What the extension modules need from the system is checked
//! against the base's libraries (libs.rs, elf.rs).

pub mod elf;
pub mod fetch;
pub mod index;
pub mod install;
pub mod libs;
pub mod lock;
pub mod provided;
pub mod requirements;
pub mod resolve;
pub mod target;

use crate::model_image::BaseImage;
use crate::model_image::layer::{Layer, LayerError, LayerOptions};
use crate::oci::Descriptor;
use crate::store::Layout;
use fetch::{Fetcher, Sources, WheelCache};
use install::{ElfFile, InstallError, Installed, WheelFile};
use lock::LockedWheel;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use target::PythonTarget;

#[derive(Debug, thiserror::Error)]
pub enum PackagesError {
    #[error("{origin}: {problem}")]
    Requirements { origin: String, problem: String },
    #[error("{origin}: not a lock mlambda can use: {problem}")]
    Lock { origin: String, problem: String },
    #[error(
        "{package} has no wheel for {target}{}; mlambda installs wheels only (a source distribution would need building, which runs the package's code): pin a version that has one, or put a wheel built for {target} in a --wheelhouse",
        if *.source_only { " (only a source distribution)" } else { "" }
    )]
    NoWheel {
        package: String,
        target: String,
        source_only: bool,
    },
    #[error(
        "{origin} has requirements that need resolving (ranges or bare names), and uv is not installed: install uv (`pip install uv`, or set MLAMBDA_UV to its path), or pin every requirement with its hashes (`uv pip compile --generate-hashes`), or give a pylock.toml"
    )]
    NeedsUv { origin: String },
    #[error("uv could not resolve the requirements: {problem}")]
    Uv { problem: String },
    #[error(
        "{wheel} from {place}: sha256 {found}, but the lock says {expected}; the file is corrupt or not the one locked — nothing was installed"
    )]
    HashMismatch {
        wheel: String,
        place: String,
        expected: String,
        found: String,
    },
    #[error(
        "{package}: the index's wheel {wheel} has sha256 {found}, which is not allowed by the requirement's --hash; the requirements file was made for other files, or the index serves other bytes — pin the hashes again (`uv pip compile --generate-hashes`)"
    )]
    HashNotAllowed {
        package: String,
        wheel: String,
        found: String,
    },
    #[error("wheel {wheel} is not available: {why}")]
    NotAvailable { wheel: String, why: String },
    #[error("downloading {url}: {problem}")]
    Download { url: String, problem: String },
    #[error("package index {url}: {problem}")]
    Index { url: String, problem: String },
    #[error(transparent)]
    Install(#[from] InstallError),
    #[error(
        "{package} needs {library} (for {file}), which the base {base} does not have: choose a base that has it, or add the Debian package that provides it to the runtime"
    )]
    MissingLibrary {
        package: String,
        library: String,
        file: String,
        base: String,
    },
    #[error(
        "the model asks for Python packages ({file}), but the base {base} has no Python that mlambda knows of: build on a Python runtime (python-3.11), or on an image that says its Python (label {}, or PYTHON_VERSION in its environment)",
        target::LABEL_PYTHON
    )]
    NoPython { file: String, base: String },
    #[error("base {base}: {problem}")]
    Base { base: String, problem: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Layer(#[from] LayerError),
}

/// How packages are found, beyond the model folder (the command's flags).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub wheelhouse: Option<PathBuf>,
    pub offline: bool,
    pub index_url: Option<String>,
}

impl Settings {
    fn sources(&self) -> Sources {
        Sources {
            wheelhouse: self.wheelhouse.clone(),
            offline: self.offline,
            indexes: self.index_url.iter().cloned().collect(),
        }
    }
}

/// The packages of a model, locked and on this machine, ready to install.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub target: PythonTarget,
    /// The lock as recorded with the version and put into the image.
    pub lock_text: String,
    pub wheels: Vec<(LockedWheel, PathBuf)>,
}

/// The lock for the model in `folder` on `base`, its wheels fetched into the cache under
/// `cache_root`; `None` when the model asks for no package. `earlier`: locks recorded with
/// earlier versions of the model, newest first (one made from the same requirements is reused).
pub fn prepare(
    folder: &Path,
    base: &BaseImage,
    settings: &Settings,
    cache_root: &Path,
    earlier: &[String],
    log: &mut dyn FnMut(String),
) -> Result<Option<Prepared>, PackagesError> {
    let Some(asked) = requested(folder) else {
        return Ok(None);
    };
    let target = match PythonTarget::of_base(&base.config) {
        Some(target) => target,
        None => {
            return Err(PackagesError::NoPython {
                file: asked.display().to_string(),
                base: base.reference.clone(),
            });
        }
    };
    let mut fetcher = Fetcher::new(
        WheelCache::new(cache_root.to_path_buf()),
        settings.sources(),
    );
    let provided = provided::Provided::of_base(&base.config);
    let Some(resolved) = resolve::lock_for(folder, &target, &provided, &mut fetcher, earlier, log)?
    else {
        return Ok(None);
    };
    log(format!("packages: {}", resolved.how));
    let mut wheels = Vec::new();
    for wheel in &resolved.lock.packages {
        let path = fetcher.wheel(wheel, resolved.lock_dir.as_deref(), log)?;
        wheels.push((wheel.clone(), path));
    }
    Ok(Some(Prepared {
        lock_text: lock::write_pylock(&resolved.lock, &target),
        target,
        wheels,
    }))
}

/// A lock given as text (a runtime's), its wheels fetched into the cache under `cache_root`.
pub fn prepare_lock(
    text: &str,
    origin: &str,
    target: PythonTarget,
    settings: &Settings,
    cache_root: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Prepared, PackagesError> {
    let lock = lock::read_pylock(text, origin, &target)?;
    let mut fetcher = Fetcher::new(
        WheelCache::new(cache_root.to_path_buf()),
        settings.sources(),
    );
    let mut wheels = Vec::new();
    for wheel in &lock.packages {
        let path = fetcher.wheel(wheel, None, log)?;
        wheels.push((wheel.clone(), path));
    }
    Ok(Prepared {
        lock_text: lock::write_pylock(&lock, &target),
        target,
        wheels,
    })
}

/// The file of `folder` that asks for packages: its `pylock.toml`, else a `requirements.txt`
/// with requirements (one with only comments asks for nothing, whatever the base).
pub fn requested(folder: &Path) -> Option<PathBuf> {
    let pylock = folder.join(resolve::PYLOCK);
    if pylock.is_file() {
        return Some(pylock);
    }
    let file = folder.join(resolve::REQUIREMENTS);
    let text = std::fs::read_to_string(&file).ok()?;
    let any_python = PythonTarget::for_platform("3.11", "amd64", (2, 36)).expect("a valid target");
    let empty = matches!(
        requirements::read_requirements(&text, "", &any_python),
        Ok((requirements::Requirements::Empty, _))
    );
    (!empty).then_some(file)
}

/// The most layers an image should have: registries and engines handle more, but old
/// overlay drivers stop at 128 and pulls slow down long before.
pub const MAX_LAYERS: usize = 100;

/// Distributions installed at once, each by a thread of its own.
const INSTALLS_AT_ONCE: usize = 4;

/// One layer per distribution, in name order, into `layout`; when there are more than `room`,
/// the smallest wheels share one layer (as nix2container and nixery group store paths), chosen
/// by size then name so that the same lock gives the same layers. A layer built before from
/// the same wheels (remembered under `cache_root`) is reused when the store still has it.
/// Every library the extension modules need must come from a wheel or the base.
pub fn install(
    prepared: &Prepared,
    base: &BaseImage,
    layout: &Layout,
    options: &LayerOptions,
    room: usize,
    cache_root: &Path,
    log: &mut dyn FnMut(String),
) -> Result<Vec<Layer>, PackagesError> {
    let groups = group(&prepared.wheels, room.max(1));
    let outcomes = std::sync::Mutex::new(BTreeMap::new());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let scheme = &prepared.target.scheme;
    std::thread::scope(|scope| {
        for _ in 0..INSTALLS_AT_ONCE.min(groups.len()) {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(group) = groups.get(index) else {
                        break;
                    };
                    let outcome = install_group(group, scheme, layout, options, cache_root);
                    let failed = outcome.is_err();
                    outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(index, outcome);
                    if failed {
                        // The others stop at their next group: the build fails anyway.
                        next.store(groups.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let outcomes = outcomes.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut installed = Vec::new();
    for (index, outcome) in outcomes {
        let (record, cached) = outcome?;
        log(format!(
            "layer {} ({} bytes): {}{}",
            record.digest,
            record.size,
            record.comment,
            if cached { " (cached)" } else { "" }
        ));
        installed.push((index, record));
    }
    check_libraries(&groups, &installed, base, cache_root)?;
    Ok(installed.into_iter().map(|(_, r)| r.layer()).collect())
}

/// The wheels of each layer, in layer order.
fn group(wheels: &[(LockedWheel, PathBuf)], room: usize) -> Vec<Vec<&(LockedWheel, PathBuf)>> {
    let mut sorted: Vec<&(LockedWheel, PathBuf)> = wheels.iter().collect();
    sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    if sorted.len() <= room {
        return sorted.into_iter().map(|w| vec![w]).collect();
    }
    let size = |w: &(LockedWheel, PathBuf)| std::fs::metadata(&w.1).map_or(0, |m| m.len());
    let mut by_size = sorted.clone();
    by_size.sort_by(|a, b| size(a).cmp(&size(b)).then(a.0.name.cmp(&b.0.name)));
    let shared: BTreeSet<&str> = by_size[..sorted.len() - room + 1]
        .iter()
        .map(|w| w.0.name.as_str())
        .collect();
    let mut groups: Vec<Vec<&(LockedWheel, PathBuf)>> = Vec::new();
    let mut small = Vec::new();
    for wheel in sorted {
        if shared.contains(wheel.0.name.as_str()) {
            small.push(wheel);
        } else {
            groups.push(vec![wheel]);
        }
    }
    groups.insert(0, small);
    groups
}

/// A package layer as it is remembered between builds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LayerRecord {
    media_type: String,
    digest: String,
    size: u64,
    diff_id: String,
    comment: String,
    libraries: Vec<ElfFile>,
    provides: BTreeSet<String>,
}

impl LayerRecord {
    fn layer(&self) -> Layer {
        Layer {
            descriptor: Descriptor::new(&self.media_type, self.digest.clone(), self.size),
            diff_id: self.diff_id.clone(),
            comment: self.comment.clone(),
        }
    }
}

/// Bumped whenever the bytes of a package layer change for the same wheels and scheme.
const INSTALL_FORMAT: u32 = 3;

fn install_group(
    group: &[&(LockedWheel, PathBuf)],
    scheme: &install::Scheme,
    layout: &Layout,
    options: &LayerOptions,
    cache_root: &Path,
) -> Result<(LayerRecord, bool), PackagesError> {
    let key = format!(
        "{INSTALL_FORMAT}\n{scheme:?}\n{}\n{:?}\n{}",
        options.mtime,
        options.compression,
        group
            .iter()
            .map(|w| w.0.sha256.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let key = crate::oci::digest::sha256_of(key.as_bytes()).replace(':', "-");
    let remembered = cache_root.join("layers").join(format!("{key}.json"));
    if let Some(record) = std::fs::read(&remembered)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<LayerRecord>(&bytes).ok())
        && layout.has_or_link_pooled(&record.digest)
    {
        return Ok((record, true));
    }
    let comment = match group {
        [one] => format!("python package {} {}", one.0.name, one.0.version),
        many => format!(
            "python packages {}",
            many.iter()
                .map(|w| format!("{} {}", w.0.name, w.0.version))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let files: Vec<WheelFile> = group
        .iter()
        .map(|w| WheelFile {
            path: w.1.clone(),
            filename: w.0.filename.clone(),
        })
        .collect();
    let Installed {
        layer,
        libraries,
        provides,
        ..
    } = install::install_wheels(&files, scheme, layout, options, comment)?;
    let record = LayerRecord {
        media_type: layer.descriptor.media_type.clone(),
        digest: layer.descriptor.digest.clone(),
        size: layer.descriptor.size,
        diff_id: layer.diff_id.clone(),
        comment: layer.comment.clone(),
        libraries,
        provides,
    };
    // Best effort: a record that cannot be written means the layer is built again next time.
    if let Some(dir) = remembered.parent()
        && std::fs::create_dir_all(dir).is_ok()
    {
        let tmp = remembered.with_extension(format!("{}.tmp", std::process::id()));
        let bytes = serde_json::to_vec(&record).expect("a record serialises");
        if std::fs::write(&tmp, bytes).is_ok() {
            let _ = std::fs::rename(&tmp, &remembered);
        }
    }
    Ok((record, false))
}

/// Every library the dynamic loader will look for when Python imports an extension module
/// is in some package or in the base: from each extension module, through the libraries the
/// packages bring (`numpy.libs/…`, `libtensorflow_cc.so.2`), as ld.so follows them. A library
/// no extension module reaches (a vendor plugin loaded by hand, if at all) is not checked.
fn check_libraries(
    groups: &[Vec<&(LockedWheel, PathBuf)>],
    installed: &[(usize, LayerRecord)],
    base: &BaseImage,
    cache_root: &Path,
) -> Result<(), PackagesError> {
    let files: Vec<(usize, &ElfFile)> = installed
        .iter()
        .flat_map(|(index, r)| r.libraries.iter().map(move |l| (*index, l)))
        .collect();
    let basename = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    // Which file a needed name loads: by soname, else by file name.
    let mut by_name: BTreeMap<String, usize> = BTreeMap::new();
    for (at, (_, file)) in files.iter().enumerate() {
        by_name.entry(basename(&file.path)).or_insert(at);
        if let Some(soname) = &file.soname {
            by_name.entry(soname.clone()).or_insert(at);
        }
    }
    let provided: BTreeSet<&String> = installed.iter().flat_map(|(_, r)| &r.provides).collect();
    let mut todo: Vec<usize> = (0..files.len())
        .filter(|&at| is_extension_module(&basename(&files[at].1.path)))
        .collect();
    let mut seen: BTreeSet<usize> = todo.iter().copied().collect();
    let mut missing = Vec::new();
    while let Some(at) = todo.pop() {
        let (index, file) = files[at];
        for library in &file.needed {
            match by_name.get(library) {
                Some(&next) => {
                    if seen.insert(next) {
                        todo.push(next);
                    }
                }
                None if provided.contains(library) => {}
                None => missing.push((index, library, &file.path)),
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    let base_libraries = libs::base_libraries(base, &cache_root.join("base-libraries"))?;
    match missing
        .into_iter()
        .find(|(_, library, _)| !base_libraries.contains(*library))
    {
        None => Ok(()),
        Some((index, library, file)) => Err(PackagesError::MissingLibrary {
            package: groups[index]
                .iter()
                .map(|w| format!("{}=={}", w.0.name, w.0.version))
                .collect::<Vec<_>>()
                .join(" or "),
            library: library.clone(),
            file: file.clone(),
            base: base.reference.clone(),
        }),
    }
}

/// What Python imports as an extension module: `name.so`, `name.cpython-311-x86_64-linux-gnu.so`,
/// `name.abi3.so` (a `lib…` name is a library those load, not a module).
fn is_extension_module(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".so") else {
        return false;
    };
    let module = stem.split('.').next().unwrap_or(stem);
    !module.starts_with("lib")
        && !module.is_empty()
        && module
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wheel(dir: &Path, name: &str, size: usize) -> (LockedWheel, PathBuf) {
        let path = dir.join(format!("{name}-1.0-py3-none-any.whl"));
        std::fs::write(&path, vec![0u8; size]).unwrap();
        let locked = LockedWheel {
            name: name.into(),
            version: "1.0".into(),
            filename: format!("{name}-1.0-py3-none-any.whl"),
            url: None,
            sha256: "00".into(),
            size: None,
        };
        (locked, path)
    }

    #[test]
    fn past_the_room_the_smallest_distributions_share_the_first_layer() {
        let dir = tempfile::tempdir().unwrap();
        let wheels: Vec<_> = [
            ("alpha", 50),
            ("beta", 10),
            ("gamma", 300),
            ("delta", 20),
            ("eps", 400),
        ]
        .into_iter()
        .map(|(name, size)| wheel(dir.path(), name, size))
        .collect();
        let names = |groups: Vec<Vec<&(LockedWheel, PathBuf)>>| -> Vec<Vec<String>> {
            groups
                .into_iter()
                .map(|g| g.into_iter().map(|w| w.0.name.clone()).collect())
                .collect()
        };
        assert_eq!(
            names(group(&wheels, 10)),
            [["alpha"], ["beta"], ["delta"], ["eps"], ["gamma"]],
            "one layer each, in name order, when there is room"
        );
        assert_eq!(
            names(group(&wheels, 3)),
            [vec!["alpha", "beta", "delta"], vec!["eps"], vec!["gamma"]],
            "three layers: the two biggest alone, the three smallest together"
        );
        let mut reversed = wheels.clone();
        reversed.reverse();
        assert_eq!(names(group(&reversed, 3)), names(group(&wheels, 3)));
        assert_eq!(group(&wheels, 1).len(), 1);
    }
}
