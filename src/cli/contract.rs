//! `mlambda contract`: the contract upload would use, in a chosen form.

use super::ModelArgs;
use crate::contract;
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// yaml (the serving.yaml `contract:` form), json, prototxt, or protobin (the exact bytes of /model/contract.protobin)
    #[arg(long, default_value = "yaml", value_parser = ["yaml", "json", "prototxt", "protobin"])]
    format: String,
    /// Write to FILE instead of standard output
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let spec = args.model.load()?;
    eprintln!(
        "model '{}', model-type {}, contract: {}",
        spec.name, spec.model_type, spec.contract_source
    );
    let bytes = match args.format.as_str() {
        "protobin" => contract::to_protobin(&spec.contract),
        "prototxt" => contract::to_prototxt(&spec.contract).into_bytes(),
        "json" => {
            let mut value = contract::to_json(&spec.contract);
            value["model_type"] = spec.model_type.clone().into();
            value["source"] = spec.contract_source.clone().into();
            let mut text = serde_json::to_string_pretty(&value)?;
            text.push('\n');
            text.into_bytes()
        }
        _ => format!(
            "# source: {}\nkind: Model\nname: {}\nmodel-type: {}\n{}",
            spec.contract_source,
            spec.name,
            spec.model_type,
            contract::to_yaml(&spec.contract)
        )
        .into_bytes(),
    };
    match &args.output {
        Some(path) => std::fs::write(path, &bytes)
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => std::io::stdout()
            .write_all(&bytes)
            .context("cannot write to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}
