//! `mlambda run NAME[:VERSION]`: the version's image from the local store, served until Ctrl-C.

use crate::catalog::Status;
use crate::oci::Location;
use crate::pipeline::Home;
use crate::store::Layout;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// NAME[:VERSION] [default version: the latest finished one]
    reference: String,
    /// Where the model's server listens
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// How the image's program is isolated: the first that works here (bubblewrap, chroot as
    /// root, podman), or the one named
    #[arg(long, value_enum, default_value_t = crate::run::Isolation::Auto)]
    isolation: crate::run::Isolation,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    let catalog = home.open_catalog()?;
    let (name, version) = match args.reference.rsplit_once(':') {
        Some((name, v)) => (
            name,
            Some(v.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "'{}': the version after ':' must be a number",
                    args.reference
                )
            })?),
        ),
        None => (args.reference.as_str(), None),
    };
    let record = match version {
        Some(v) => catalog.version(name, v)?,
        None => catalog
            .versions(name)?
            .into_iter()
            .rev()
            .find(|r| r.status == Status::Finished),
    };
    let Some(record) = record else {
        anyhow::bail!(
            "no version '{}' in the catalogue (`mlambda versions {name}` lists them)",
            args.reference
        );
    };
    let image = record
        .local_image
        .clone()
        .filter(|_| record.status == Status::Finished);
    let Some(Ok(Location::Layout {
        dir,
        tag: Some(tag),
    })) = image.as_deref().map(Location::parse)
    else {
        anyhow::bail!(
            "{name}:{} is {:?}: only a finished version has an image to run",
            record.version,
            record.status
        );
    };
    let layout = Layout::open(&dir)?;
    let launch = crate::run::prepare(
        &layout,
        &tag,
        &home.run_cache(),
        crate::run::Purpose::Serve(args.addr),
        args.isolation,
    )?;
    eprintln!(
        "serving {name}:{} on http://{} (the Open Inference Protocol: /v2/models/{name}; gRPC on port {} where the runtime has grpcio), isolated with {}; Ctrl-C stops",
        record.version,
        args.addr,
        crate::run::grpc_port(args.addr),
        launch.isolation
    );
    let error = Command::new(&launch.program)
        .args(&launch.args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(anyhow::anyhow!(
        "cannot start {}: {error}",
        launch.program.display()
    ))
}
