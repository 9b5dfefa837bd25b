//! `mlambda catalog migrate`.

use super::output::print_json;
use crate::catalog::{Location, migrate};
use crate::pipeline::Home;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Copy every version of one catalogue into another (e.g. this host's SQLite file into a
    /// shared PostgreSQL), then check the copy version by version
    Migrate(MigrateArgs),
}

#[derive(clap::Args, Debug)]
pub struct MigrateArgs {
    /// The catalogue to copy: sqlite:PATH or postgres://… [default: the home's catalogue]
    #[arg(long, value_name = "URL")]
    from: Option<String>,
    /// The catalogue to copy into: postgres://… or sqlite:PATH
    #[arg(long, value_name = "URL")]
    to: String,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, command: Command) -> anyhow::Result<ExitCode> {
    let Command::Migrate(args) = command;
    let local = home.dir.join("catalog.db");
    let from = match &args.from {
        Some(url) => Location::parse(url, &local)?,
        None => home.catalog.clone(),
    };
    let to = Location::parse(&args.to, &local)?;
    let migrated = migrate::copy(&from, &to)?;
    if args.json {
        print_json(&serde_json::to_value(&migrated)?);
    } else {
        println!(
            "{} versions of {} models in {}: {} copied, {} there already; every version reads back with its status and digests",
            migrated.versions,
            migrated.models,
            to.display(),
            migrated.copied,
            migrated.versions - migrated.copied
        );
    }
    Ok(ExitCode::SUCCESS)
}
