//! `mlambda push NAME:VERSION --registry URL`: a version built earlier, pushed to a registry;
//! also the registry options and progress bars that `upload --registry http(s)://…` shares.

use super::output::print_json;
use crate::pipeline::Home;
use crate::pipeline::push::{Remote, push_version};
use crate::remote::Credential;
use crate::remote::{BlobOutcome, ConnectOptions, Progress, Pushed, Target, Watcher};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::collections::HashMap;
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The version to push: NAME:VERSION
    reference: String,
    /// The registry: http(s)://host[:port][/prefix]
    #[arg(long, value_name = "URL")]
    registry: String,
    #[command(flatten)]
    remote: RemoteArgs,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

/// How to reach a remote registry (shared by `upload` and `push`).
#[derive(clap::Args, Debug, Clone)]
pub struct RemoteArgs {
    /// Allow plain http:// to a registry that is not on this machine (loopback hosts —
    /// 127.0.0.1, ::1, localhost — may use http:// without it). It does not turn off
    /// certificate checks for https://: use --ca-cert for a registry with its own CA
    #[arg(long)]
    insecure: bool,
    /// PEM file of CA certificates to trust for https://, in addition to the system's
    #[arg(long, value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// User name for the registry; the password is read from stdin (--password-stdin).
    /// Without it: MLAMBDA_REGISTRY_USERNAME/MLAMBDA_REGISTRY_PASSWORD, else
    /// $DOCKER_CONFIG/config.json or ~/.docker/config.json (auths, credHelpers, credsStore)
    #[arg(long, value_name = "USER", requires = "password_stdin")]
    username: Option<String>,
    /// Read the registry password (or token) from stdin
    #[arg(long, requires = "username")]
    password_stdin: bool,
    /// Blobs sent (push, upload) or fetched (base import from a registry) at once
    #[arg(long, value_name = "N", default_value_t = 4)]
    parallel: usize,
}

impl RemoteArgs {
    pub fn remote(&self, url: &str) -> anyhow::Result<Remote> {
        let target = Target::parse(url, self.insecure)?;
        Ok(Remote {
            target,
            options: self.connect_options()?,
        })
    }

    /// The connection options alone (credentials read from stdin when asked).
    pub fn connect_options(&self) -> anyhow::Result<ConnectOptions> {
        let credential = match (&self.username, self.password_stdin) {
            (Some(username), true) => {
                let mut password = String::new();
                std::io::stdin()
                    .read_to_string(&mut password)
                    .map_err(|e| anyhow::anyhow!("--password-stdin: cannot read stdin: {e}"))?;
                let password = password.trim_end_matches(['\n', '\r']).to_string();
                if password.is_empty() {
                    anyhow::bail!("--password-stdin: stdin held no password");
                }
                Some(Credential::Basic {
                    username: username.clone(),
                    password,
                })
            }
            _ => None,
        };
        Ok(ConnectOptions {
            insecure: self.insecure,
            ca_cert: self.ca_cert.clone(),
            credential,
            parallel: self.parallel.max(1),
            ..ConnectOptions::default()
        })
    }
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    let Some((name, version)) = args.reference.rsplit_once(':') else {
        anyhow::bail!("'{}': expected NAME:VERSION", args.reference);
    };
    let version: u32 = version.parse().map_err(|_| {
        anyhow::anyhow!(
            "'{}': the version after ':' must be a number",
            args.reference
        )
    })?;
    let remote = args.remote.remote(&args.registry)?;
    let catalog = home.open_catalog()?;
    let store = home.store()?;
    let watcher = progress_watcher();
    let result = push_version(catalog.as_ref(), &store, name, version, &remote, &watcher);
    drop(watcher);
    match result {
        Ok(pushed) => {
            let record = catalog.version(name, version)?;
            if args.json {
                print_json(&json!({
                    "name": name,
                    "version": version,
                    "status": "Finished",
                    "image": pushed.reference,
                    "digest": record.as_ref().and_then(|r| r.digest.clone()),
                    "pushed_digest": pushed.digest,
                    "local_image": record.as_ref().and_then(|r| r.local_image.clone()),
                    "blobs": blob_counts(&pushed),
                }));
            } else {
                print_pushed(&pushed);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            if args.json {
                print_json(&json!({
                    "name": name,
                    "version": version,
                    "status": "Failed",
                    "error": error.to_string(),
                }));
            }
            Err(anyhow::Error::new(error).context(format!("push of {name}:{version} failed")))
        }
    }
}

pub fn print_pushed(pushed: &Pushed) {
    let counts = blob_counts(pushed);
    println!("  pushed    {}", pushed.reference);
    println!("  remote    {}", pushed.digest);
    println!(
        "  blobs     {} uploaded, {} mounted, {} already there",
        counts["uploaded"], counts["mounted"], counts["existed"]
    );
}

pub fn blob_counts(pushed: &Pushed) -> serde_json::Value {
    let count = |kind| pushed.blobs.iter().filter(|(_, o)| *o == kind).count();
    json!({
        "uploaded": count(BlobOutcome::Uploaded),
        "mounted": count(BlobOutcome::Mounted),
        "existed": count(BlobOutcome::Existed),
    })
}

/// Progress bars per blob on a terminal (stderr); nothing on a pipe, except retries, which
/// are always worth a line.
pub fn progress_watcher() -> Watcher {
    Arc::new(Bars::new(std::io::stderr().is_terminal()))
}

struct Bars {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Bars {
    fn new(terminal: bool) -> Bars {
        Bars {
            multi: terminal.then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr())),
            bars: Mutex::new(HashMap::new()),
        }
    }

    fn bar(&self, digest: &str) -> Option<ProgressBar> {
        self.bars.lock().ok()?.get(digest).cloned()
    }
}

impl Progress for Bars {
    fn blob_started(&self, digest: &str, size: u64) {
        let Some(multi) = &self.multi else { return };
        let bar = multi.add(ProgressBar::new(size));
        let style = ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
        bar.set_style(style);
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        bar.set_prefix(hex[..hex.len().min(12)].to_string());
        bar.enable_steady_tick(Duration::from_millis(250));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(digest.to_string(), bar);
        }
    }

    fn blob_position(&self, digest: &str, sent: u64) {
        if let Some(bar) = self.bar(digest) {
            bar.set_position(sent);
        }
    }

    fn blob_finished(&self, digest: &str, outcome: BlobOutcome) {
        if let Some(bar) = self.bar(digest) {
            let word = match outcome {
                BlobOutcome::Existed => "already there",
                BlobOutcome::Mounted => "mounted",
                BlobOutcome::Uploaded => "uploaded",
            };
            bar.set_position(bar.length().unwrap_or(0));
            bar.finish_with_message(word);
        }
    }

    fn retrying(&self, what: &str, message: &str, wait: Duration) {
        let line = format!("retrying {what} in {:.1}s: {message}", wait.as_secs_f64());
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}
