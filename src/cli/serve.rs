//! `mlambda serve`: the manager API, the Models page and the registry, on one address.

use crate::manager::{ManagerConfig, serve};
use crate::pipeline::Home;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Require HTTP basic credentials from this htpasswd file (bcrypt: `htpasswd -Bbn`), for
    /// the API, the page and the registry alike
    #[arg(long, value_name = "FILE")]
    htpasswd: Option<PathBuf>,
    /// Serve HTTPS with this PEM certificate chain
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Largest upload request accepted (the compressed folder), e.g. 500M, 64G
    #[arg(long, default_value = "64G", value_parser = parse_size)]
    max_upload: u64,
    /// Largest folder an upload may unpack to
    #[arg(long, default_value = "256G", value_parser = parse_size)]
    max_unpacked: u64,
    /// Builds that run at once
    #[arg(long, default_value_t = 2)]
    builders: usize,
    /// Uploads accepted and not yet built (waiting or running) before new ones get 503
    #[arg(long, default_value_t = 32)]
    queue: usize,
    /// Push every version to this registry once built: http(s)://host[:port][/prefix]. With a
    /// shared --catalog, several managers behind a balancer serve one model history
    #[arg(long, value_name = "URL")]
    registry: Option<String>,
    #[command(flatten)]
    remote: super::push::RemoteArgs,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_max_level(tracing::Level::INFO)
        .try_init();
    let config = ManagerConfig {
        home: home.clone(),
        addr: args.addr,
        htpasswd: args.htpasswd,
        tls: args.tls_cert.zip(args.tls_key),
        max_upload: args.max_upload,
        max_unpacked: args.max_unpacked,
        builders: args.builders,
        queue: args.queue,
        remote: args
            .registry
            .as_deref()
            .map(|url| args.remote.remote(url))
            .transpose()?,
    };
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let dir = home.dir.clone();
    let served = runtime.block_on(serve(config, |addr| {
        eprintln!(
            "mlambda serve: models at {scheme}://{addr}/, API at {scheme}://{addr}/api/v2/, registry at {scheme}://{addr}/v2/ (home {})",
            dir.display()
        );
    }));
    // Builds still running are marked Failed by now; their threads are not waited for.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    served?;
    Ok(ExitCode::SUCCESS)
}

/// `1048576`, `512K`, `500M`, `64G`, `1T` (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let (number, unit) = super::number_and_unit(text, "a size (e.g. 500M, 64G)")?;
    let shift = match unit.trim_end_matches(['B', 'b', 'i']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        "T" | "t" => 40,
        _ => return Err(format!("'{text}': the unit must be K, M, G or T")),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100").unwrap(), 100);
        assert_eq!(parse_size("2K").unwrap(), 2048);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("64GiB").unwrap(), 64 << 30);
        assert!(parse_size("G").is_err());
        assert!(parse_size("5X").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
