//! `mlambda models`, `versions` and `show`: what the catalogue knows.

use super::output::{print_json, print_table};
use crate::catalog::VersionRecord;
use crate::contract;
use crate::oci::Location;
use crate::pipeline::Home;
use crate::store::Layout;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct ModelsArgs {
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VersionsArgs {
    /// The model name
    name: String,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// NAME or NAME:VERSION
    reference: String,
    #[arg(long)]
    json: bool,
}

pub fn models(home: &Home, args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let catalog = home.open_catalog()?;
    let models = catalog.models()?;
    if args.json {
        print_json(&serde_json::to_value(&models)?);
    } else if models.is_empty() {
        eprintln!("no models yet: `mlambda upload DIR` builds the first version");
    } else {
        let rows: Vec<Vec<String>> = models
            .iter()
            .map(|m| {
                vec![
                    m.name.clone(),
                    m.versions.to_string(),
                    m.latest_version.to_string(),
                    format!("{:?}", m.latest_status),
                    m.model_type.clone(),
                    m.updated.clone(),
                ]
            })
            .collect();
        print_table(
            &[
                "NAME",
                "VERSIONS",
                "LATEST",
                "STATUS",
                "MODEL TYPE",
                "UPDATED",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn versions(home: &Home, args: VersionsArgs) -> anyhow::Result<ExitCode> {
    let catalog = home.open_catalog()?;
    let versions = catalog.versions(&args.name)?;
    if versions.is_empty() {
        anyhow::bail!(
            "no model named '{}' in the catalogue (`mlambda models` lists them)",
            args.name
        );
    }
    if args.json {
        print_json(&Value::Array(versions.iter().map(version_json).collect()));
    } else {
        let rows: Vec<Vec<String>> = versions
            .iter()
            .map(|v| {
                vec![
                    v.version.to_string(),
                    format!("{:?}", v.status),
                    v.created.clone(),
                    v.model_type.clone(),
                    v.digest.clone().unwrap_or_else(|| "-".into()),
                    v.image
                        .clone()
                        .unwrap_or_else(|| v.error.clone().unwrap_or_default()),
                ]
            })
            .collect();
        print_table(
            &[
                "VERSION",
                "STATUS",
                "CREATED",
                "MODEL TYPE",
                "DIGEST",
                "IMAGE / ERROR",
            ],
            &rows,
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn show(home: &Home, args: ShowArgs) -> anyhow::Result<ExitCode> {
    let catalog = home.open_catalog()?;
    let (name, version) = match args.reference.rsplit_once(':') {
        Some((name, version)) => {
            let number = version.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "'{}': the version after ':' must be a number",
                    args.reference
                )
            })?;
            (name, Some(number))
        }
        None => (args.reference.as_str(), None),
    };
    let record = match version {
        Some(v) => catalog.version(name, v)?,
        None => catalog.versions(name)?.pop(),
    };
    let Some(record) = record else {
        anyhow::bail!(
            "no version '{}' in the catalogue (`mlambda versions {name}` lists them)",
            args.reference
        );
    };
    let contract = contract::from_protobin(&record.contract).ok();
    if args.json {
        let mut value = version_json(&record);
        value["contract"] = contract.as_ref().map_or(Value::Null, contract::to_json);
        value["log"] = json!(record.log);
        value["metadata"] = json!(image_metadata(&record));
        if let Some(lock) = &record.packages {
            let packages = crate::packages::lock::recorded_packages(lock).unwrap_or_default();
            value["packages"] = packages
                .iter()
                .map(|p| json!({"name": p.name, "version": p.version, "wheel": p.filename, "sha256": p.sha256}))
                .collect();
            value["lock"] = json!(lock);
        }
        print_json(&value);
    } else {
        println!("{}:{}", record.name, record.version);
        let line =
            |key: &str, value: Option<&str>| println!("  {key:<15} {}", value.unwrap_or("-"));
        line("status", Some(&format!("{:?}", record.status)));
        line("model type", Some(&record.model_type));
        line("created", Some(&record.created));
        line("finished", record.finished.as_deref());
        line("image", record.image.as_deref());
        line("digest", record.digest.as_deref());
        line("config digest", record.config_digest.as_deref());
        line("size", record.size.map(|s| s.to_string()).as_deref());
        line("base", record.base_image.as_deref());
        line("contract from", Some(&record.contract_source));
        if let Some(error) = &record.error {
            line("error", Some(error));
        }
        let metadata = image_metadata(&record);
        if !metadata.is_empty() {
            println!("metadata:");
            for (key, value) in &metadata {
                println!("  {key}: {value}");
            }
        }
        if let Some(contract) = &contract {
            println!("{}", contract::to_yaml(contract).trim_end());
        }
        if let Some(lock) = &record.packages {
            let packages = crate::packages::lock::recorded_packages(lock).unwrap_or_default();
            println!(
                "python packages ({}, locked in /model/pylock.toml):",
                packages.len()
            );
            for package in &packages {
                println!(
                    "  {:<24} {:<12} {}  sha256:{}",
                    package.name, package.version, package.filename, package.sha256
                );
            }
        }
        if !record.log.is_empty() {
            println!("build log:");
            for entry in record.log.lines() {
                println!("  {entry}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The version's metadata (serving.yaml `metadata:`, facts of weight files) as its image's
/// annotations keep it: the catalogue does not store it, the local image does. Nothing when
/// the image is gone or was never built; the standard `org.opencontainers.*` keys are left
/// out (they repeat what `show` prints above).
fn image_metadata(record: &VersionRecord) -> BTreeMap<String, String> {
    let read = || -> Option<BTreeMap<String, String>> {
        let Ok(Location::Layout { dir, tag }) = Location::parse(record.local_image.as_deref()?)
        else {
            return None;
        };
        let layout = Layout::open(&dir).ok()?;
        let descriptor = layout.resolve(tag.as_deref()).ok()?;
        let manifest = layout.read_blob(&descriptor.digest, 4 << 20).ok()?;
        let manifest: Value = serde_json::from_slice(&manifest).ok()?;
        let annotations = manifest.get("annotations")?.as_object()?;
        Some(
            annotations
                .iter()
                .filter(|(key, _)| !key.starts_with("org.opencontainers."))
                .filter_map(|(key, value)| Some((key.clone(), value.as_str()?.to_string())))
                .collect(),
        )
    };
    read().unwrap_or_default()
}

fn version_json(record: &VersionRecord) -> Value {
    serde_json::to_value(record).unwrap_or(Value::Null)
}
