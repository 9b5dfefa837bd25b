//! `mlambda registry serve` and `mlambda registry gc`.

use super::output::print_json;
use crate::pipeline::Home;
use crate::server::{ImmutableTags, ServeConfig, TagRules, serve};
use crate::store::{Store, gc, uploads::UPLOAD_MAX_AGE};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Serve the file-backed store over the OCI distribution API (v1.1)
    Serve(ServeArgs),
    /// Remove blobs no manifest names, expired uploads, and empty or incomplete repositories
    /// (waits for builds and pushes writing into the store)
    Gc(GcArgs),
}

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// The store to serve [default: the registry in the mlambda home]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: SocketAddr,
    /// Require HTTP basic credentials from this htpasswd file (bcrypt entries: `htpasswd -Bbn`)
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// With --htpasswd: let pulls through without credentials
    #[arg(long, requires = "htpasswd")]
    anonymous_read: bool,
    /// Serve HTTPS with this PEM certificate chain
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Make every pushed tag immutable: pushing another manifest under it is refused
    /// (DENIED); pushing the same one again is fine. Version tags that `mlambda upload`
    /// recorded are immutable with or without this flag
    #[arg(long)]
    immutable_tags: bool,
    /// Admin override: let DELETE remove immutable tags and the manifests they name
    #[arg(long)]
    allow_delete_immutable: bool,
}

#[derive(clap::Args, Debug)]
struct GcArgs {
    /// The store to clean [default: the registry in the mlambda home]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Only report what would be removed
    #[arg(long)]
    dry_run: bool,
    /// Keep unreferenced blobs younger than this (e.g. 30s, 10m, 1h, 2d)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    grace: Duration,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Serve(args) => run_serve(home, args),
        Command::Gc(args) => run_gc(home, args),
    }
}

fn root_of(home: &Home, root: Option<PathBuf>) -> PathBuf {
    root.unwrap_or_else(|| home.dir.join("registry"))
}

fn run_serve(home: &Home, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let config = ServeConfig {
        root: root_of(home, args.root),
        addr: args.addr,
        htpasswd: args.htpasswd,
        anonymous_read: args.anonymous_read,
        tls: args.tls_cert.zip(args.tls_key),
        tags: TagRules {
            immutable: if args.immutable_tags {
                ImmutableTags::All
            } else {
                ImmutableTags::None
            },
            allow_delete_immutable: args.allow_delete_immutable,
        },
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let root = config.root.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(config, |addr| {
        eprintln!("serving {} at {scheme}://{addr}/v2/", root.display());
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn run_gc(home: &Home, args: GcArgs) -> anyhow::Result<ExitCode> {
    let store = Store::open(&root_of(home, args.root))?;
    let report = gc::collect(&store, args.grace, UPLOAD_MAX_AGE, args.dry_run, || {
        eprintln!("waiting for the builds and pushes writing into the store to finish…");
    })?;
    let verb = if args.dry_run { "would free" } else { "freed" };
    if args.json {
        print_json(&serde_json::json!({
            "dry_run": args.dry_run,
            "blobs": report.removed.iter().map(|(d, s)| serde_json::json!({"digest": d, "size": s})).collect::<Vec<_>>(),
            "blob_count": report.removed.len(),
            "uploads_expired": report.uploads_expired,
            "temporary_files": report.temporary_files,
            "repository_links": report.repository_links,
            "repositories": report.repositories,
            "kept_young": report.kept_young,
            "bytes": report.freed_bytes(),
        }));
    } else {
        for (digest, size) in &report.removed {
            println!("{digest} {size}");
        }
        println!(
            "{verb} {} bytes: {} blob(s), {} expired upload(s), {} temporary file(s), {} unused repository link(s), {} empty or incomplete repositories; {} unreferenced blob(s) younger than {:?} kept",
            report.freed_bytes(),
            report.removed.len(),
            report.uploads_expired,
            report.temporary_files,
            report.repository_links,
            report.repositories.len(),
            report.kept_young,
            args.grace
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `90`, `30s`, `10m`, `1h`, `2d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = super::number_and_unit(text, "a duration (e.g. 30s, 10m, 1h, 2d)")?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{text}': the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("1y").is_err());
    }
}
