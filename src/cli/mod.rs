//! The command line: one file per command. Only this module prints.

mod base;
mod build;
mod catalog;
mod contract;
mod output;
mod packages;
mod push;
mod registry;
mod run;
mod serve;
mod upload;
mod versions;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mlambda",
    version,
    about = "Turns a machine-learning model folder into a versioned OCI image, without Docker"
)]
struct Cli {
    /// Where the catalogue and the local registry live [default: $MLAMBDA_HOME, else $XDG_DATA_HOME/mlambda, else ~/.local/share/mlambda]
    #[arg(long, global = true, value_name = "DIR")]
    home: Option<PathBuf>,
    /// The catalogue of versions: postgres://USER@HOST[:PORT]/DATABASE, shared by several build
    /// hosts and manager replicas, or sqlite:PATH [default: catalog.db in the home]
    #[arg(long, global = true, value_name = "URL", env = "MLAMBDA_CATALOG")]
    catalog: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the model folder into a new version of its image and store it (Hydrosphere's `hs upload`)
    Upload(upload::Args),
    /// Push a version built earlier to a registry (e.g. one built on an air-gapped host)
    Push(push::Args),
    /// Print the contract that upload would put into the image
    Contract(contract::Args),
    /// Build the image to an OCI layout or archive without recording a version
    Build(build::Args),
    /// List the models in the catalogue
    Models(versions::ModelsArgs),
    /// List the versions of a model
    Versions(versions::VersionsArgs),
    /// Show one version of a model (the latest when no version is given)
    Show(versions::ShowArgs),
    /// Serve a version from the local store, no daemon, until Ctrl-C (the Open Inference Protocol)
    Run(run::Args),
    /// Runtime base images: list, import, build
    #[command(subcommand)]
    Base(base::Command),
    /// Python packages: fetch a model's wheels into a wheelhouse for an air-gapped host
    #[command(subcommand)]
    Packages(packages::Command),
    /// The file-backed registry: serve it over HTTP, collect its garbage
    Registry(registry::Args),
    /// The manager: an upload API that builds in a queue, a Models page, and the registry at /v2/
    Serve(serve::Args),
    /// The catalogue itself: copy it into another engine
    #[command(subcommand)]
    Catalog(catalog::Command),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let home = match mlambda_home(cli.home, cli.catalog.as_deref()) {
        Ok(home) => home,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Upload(args) => upload::run(&home, args),
        Command::Push(args) => push::run(&home, args),
        Command::Contract(args) => contract::run(args),
        Command::Build(args) => build::run(&home, args),
        Command::Models(args) => versions::models(&home, args),
        Command::Versions(args) => versions::versions(&home, args),
        Command::Show(args) => versions::show(&home, args),
        Command::Run(args) => run::run(&home, args),
        Command::Base(command) => base::run(&home, command),
        Command::Packages(command) => packages::run(&home, command),
        Command::Registry(args) => registry::run(&home, args),
        Command::Serve(args) => serve::run(&home, args),
        Command::Catalog(command) => catalog::run(&home, command),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn mlambda_home(
    flag: Option<PathBuf>,
    catalog: Option<&str>,
) -> Result<crate::pipeline::Home, crate::catalog::CatalogError> {
    let home = crate::pipeline::Home::new(flag.unwrap_or_else(crate::pipeline::default_home));
    match catalog.filter(|c| !c.is_empty()) {
        Some(url) => home.with_catalog(url),
        None => Ok(home),
    }
}

/// The options that say what model to build, shared by upload, build and contract.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model folder
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Model (repository) name; overrides serving.yaml
    #[arg(long)]
    name: Option<String>,
    /// <framework>:<version>, e.g. python:3.6; overrides serving.yaml
    #[arg(long = "model-type", value_name = "TYPE")]
    model_type: Option<String>,
}

impl ModelArgs {
    fn load(&self) -> anyhow::Result<crate::model::spec::ModelSpec> {
        let overrides = crate::model::spec::Overrides {
            name: self.name.clone(),
            model_type: self.model_type.clone(),
            ..Default::default()
        };
        let spec = crate::model::spec::load_model(&self.dir, &overrides)?;
        for note in &spec.notes {
            eprintln!("note: {note}");
        }
        Ok(spec)
    }
}

/// Where a model's Python packages come from, shared by upload, build and `packages fetch`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct PackageArgs {
    /// A folder of wheels searched before any index (pip's --find-links), e.g. one filled by
    /// `mlambda packages fetch`
    #[arg(long, value_name = "DIR")]
    wheelhouse: Option<PathBuf>,
    /// Nothing from the network: wheels from the wheelhouse and the cache only
    #[arg(long)]
    offline: bool,
    /// The package index (simple API) [default: PIP_INDEX_URL, UV_INDEX_URL, else PyPI]
    #[arg(long, value_name = "URL")]
    index_url: Option<String>,
}

impl PackageArgs {
    fn settings(&self) -> crate::packages::Settings {
        crate::packages::Settings {
            wheelhouse: self.wheelhouse.clone(),
            offline: self.offline,
            index_url: self.index_url.clone(),
        }
    }
}

fn build_settings(
    home: &crate::pipeline::Home,
    compression: &str,
    packages: &PackageArgs,
) -> crate::pipeline::BuildSettings {
    let compression = match compression {
        "zstd" => crate::model_image::layer::Compression::Zstd,
        _ => crate::model_image::layer::Compression::Gzip,
    };
    crate::pipeline::BuildSettings {
        compression,
        packages: packages.settings(),
        ..crate::pipeline::BuildSettings::new(home)
    }
}

/// `30s` → (30, "s"): the leading digits and what follows them; `example` is for the message.
fn number_and_unit<'a>(text: &'a str, example: &str) -> Result<(u64, &'a str), String> {
    let text = text.trim();
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, ""), |i| text.split_at(i));
    let number = number
        .parse()
        .map_err(|_| format!("'{text}' is not {example}"))?;
    Ok((number, unit))
}
