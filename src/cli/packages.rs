//! `mlambda packages fetch`: on a connected host, the wheels a model needs (and the lock that
//! names them) into a folder, for `upload --wheelhouse DIR --offline` on an air-gapped one.

use super::ModelArgs;
use super::output::print_json;
use crate::base::Runtime;
use crate::packages::fetch::{Fetcher, Sources, WheelCache};
use crate::packages::provided::Provided;
use crate::packages::target::PythonTarget;
use crate::packages::{lock, resolve};
use crate::pipeline::Home;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Resolve the model's requirements for its runtime's Python and put every wheel, and the
    /// lock as pylock.<model>.toml, into a folder
    Fetch {
        #[command(flatten)]
        model: ModelArgs,
        /// The wheelhouse to fill (created when missing; wheels already there are kept)
        #[arg(long, value_name = "DIR")]
        into: PathBuf,
        /// The platform of the image: OS/ARCH [default: the runtime's, linux/<this machine>]
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        /// The package index (simple API) [default: PIP_INDEX_URL, UV_INDEX_URL, else PyPI]
        #[arg(long, value_name = "URL")]
        index_url: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(home: &Home, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Fetch {
        model,
        into,
        platform,
        index_url,
        json,
    } = command;
    let spec = model.load()?;
    let runtime = python_runtime(&spec.model_type);
    let target = target_for(runtime.as_ref(), platform.as_deref())?;
    std::fs::create_dir_all(&into)
        .map_err(|e| anyhow::anyhow!("--into {}: {e}", into.display()))?;
    let sources = Sources {
        wheelhouse: Some(into.clone()),
        offline: false,
        indexes: index_url.into_iter().collect(),
    };
    let mut fetcher = Fetcher::new(WheelCache::new(home.wheel_cache()), sources);
    let mut log = |line: String| eprintln!("{line}");
    let provided = provided_by(runtime.as_ref(), &target)?;
    let Some(resolved) =
        resolve::lock_for(&spec.dir, &target, &provided, &mut fetcher, &[], &mut log)?
    else {
        anyhow::bail!(
            "{} asks for no Python package (no {} or {} with requirements)",
            spec.dir.display(),
            resolve::REQUIREMENTS,
            resolve::PYLOCK
        );
    };
    let mut wheels = Vec::new();
    for wheel in &resolved.lock.packages {
        let cached = fetcher.wheel(wheel, resolved.lock_dir.as_deref(), &mut log)?;
        let placed = into.join(&wheel.filename);
        if !placed.exists() {
            // A hard link when the cache is on the same file system, else a copy.
            std::fs::hard_link(&cached, &placed)
                .or_else(|_| std::fs::copy(&cached, &placed).map(|_| ()))
                .map_err(|e| anyhow::anyhow!("{}: {e}", placed.display()))?;
        }
        wheels.push(wheel);
    }
    let lock_file = into.join(format!("pylock.{}.toml", spec.name));
    std::fs::write(&lock_file, lock::write_pylock(&resolved.lock, &target))
        .map_err(|e| anyhow::anyhow!("{}: {e}", lock_file.display()))?;
    if json {
        print_json(&json!({
            "into": into,
            "lock": lock_file,
            "target": target.describe(),
            "packages": wheels.iter().map(|w| json!({"name": w.name, "version": w.version, "wheel": w.filename, "sha256": w.sha256})).collect::<Vec<_>>(),
        }));
    } else {
        println!(
            "{} wheels for {} in {}",
            wheels.len(),
            target.describe(),
            into.display()
        );
        println!("  lock      {}", lock_file.display());
        for wheel in wheels {
            println!("  {}", wheel.filename);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The model's runtime (base-images/catalog.yaml) when it has Python, else `python-3.11`.
fn python_runtime(model_type: &str) -> Option<Runtime> {
    crate::base::runtime_for(model_type)
        .filter(|r| r.python.is_some())
        .or_else(|| crate::base::runtime("python-3.11"))
}

/// The Python the runtime has, for `platform`.
fn target_for(runtime: Option<&Runtime>, platform: Option<&str>) -> anyhow::Result<PythonTarget> {
    let (python, glibc) = runtime
        .and_then(|r| Some((r.python.clone()?, r.glibc_version()?)))
        .unwrap_or_else(|| ("3.11".to_string(), (2, 36)));
    let architecture = match platform {
        Some(text) => {
            let wanted = crate::oci::WantedPlatform::parse(text)
                .map_err(|e| anyhow::anyhow!("--platform {text}: {e}"))?;
            wanted.architecture
        }
        None => crate::oci::host_architecture().to_string(),
    };
    PythonTarget::for_platform(&python, &architecture, glibc).map_err(anyhow::Error::msg)
}

/// The packages the runtime installs (its lock), which `upload` will not install again.
fn provided_by(runtime: Option<&Runtime>, target: &PythonTarget) -> anyhow::Result<Provided> {
    let Some(text) = runtime.and_then(|r| r.wheels.as_deref()) else {
        return Ok(Provided::default());
    };
    let lock = lock::read_pylock(text, "the runtime's lock", target)?;
    Ok(Provided::of_wheels(&lock.packages))
}
