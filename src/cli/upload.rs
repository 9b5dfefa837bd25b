//! `mlambda upload`: a new version of the model's image, stored and recorded.

use super::ModelArgs;
use super::output::{print_json, step_printer};
use crate::base::{BaseChoice, parse_base};
use crate::catalog::Catalog;
use crate::pipeline::{Home, upload_to_store};
use crate::registry::store::Store;
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The base image: `scratch` or `oci:DIR[:TAG]` [default: the runtime for the model-type in base-images/]
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// Where the image goes: `file:DIR` (a file-backed store) [default: the local store in the mlambda home]
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    /// How small files and the contract are compressed (files of 64 MiB or more never are)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression: String,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    let base_choice: Option<BaseChoice> = args.base.as_deref().map(parse_base).transpose()?;
    let store = match args.registry.as_deref() {
        None => home.store()?,
        Some(url) => Store::open(&file_registry(url)?)?,
    };
    let spec = args.model.load()?;
    let mut catalog = Catalog::open(&home.catalog_path())?;
    let mut show = step_printer();
    match upload_to_store(
        &mut catalog,
        &store,
        &spec,
        base_choice.as_ref(),
        &super::build_settings(&args.compression),
        &mut show,
    ) {
        Ok(uploaded) => {
            if args.json {
                print_json(&json!({
                    "name": spec.name,
                    "version": uploaded.version,
                    "status": "Finished",
                    "image": uploaded.image,
                    "digest": uploaded.built.manifest.digest,
                    "config_digest": uploaded.built.config_digest,
                    "size": uploaded.built.size,
                    "model_type": spec.model_type,
                    "contract_source": spec.contract_source,
                    "base": uploaded.base,
                }));
            } else {
                println!("{}:{} Finished", spec.name, uploaded.version);
                println!("  image     {}", uploaded.image);
                println!("  digest    {}", uploaded.built.manifest.digest);
                println!("  contract  {}", spec.contract_source);
                println!("  base      {}", uploaded.base);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err((version, error)) => {
            if args.json {
                print_json(&json!({
                    "name": spec.name,
                    "version": version,
                    "status": "Failed",
                    "error": error.to_string(),
                    "contract_source": spec.contract_source,
                }));
            }
            match version {
                Some(v) => {
                    Err(anyhow::Error::new(error).context(format!("{}:{v} Failed", spec.name)))
                }
                None => Err(error.into()),
            }
        }
    }
}

/// `file:DIR` → DIR. Other registries are pushed to over HTTP, which this build does not do yet.
fn file_registry(url: &str) -> anyhow::Result<PathBuf> {
    match url.strip_prefix("file:") {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => anyhow::bail!(
            "--registry {url}: only file:DIR (a file-backed store) is supported by this version of mlambda"
        ),
    }
}
