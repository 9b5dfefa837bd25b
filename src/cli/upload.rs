//! `mlambda upload`: a new version of the model's image, stored and recorded.

use super::ModelArgs;
use super::output::{print_json, step_printer};
use crate::base::{BaseChoice, parse_base};
use crate::manager_client::ManagerClient;
use crate::oci::Location;
use crate::pipeline::push::upload_to_registry;
use crate::pipeline::{BuildRequest, Home, upload_to_store};
use crate::store::Store;
use serde_json::json;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// The base image: `scratch` or `oci:DIR[:TAG]` [default: the runtime for the model-type in base-images/]
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// Where the image goes: `http(s)://host[:port][/prefix]` (any OCI registry; the image is
    /// built into the local store first, then pushed to <prefix>/<name>:<version>), or
    /// `file:DIR` (a file-backed store) [default: the local store in the mlambda home]
    #[arg(long, value_name = "URL", conflicts_with = "host")]
    registry: Option<String>,
    /// Send the folder to a manager (`mlambda serve`) that builds it: a host name or address,
    /// or `http(s)://host[:port]`
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// The manager's port, with --host [default: 8080, as `mlambda serve`]
    #[arg(long, requires = "host")]
    port: Option<u16>,
    /// With --host: return once the manager has accepted the upload, without following
    /// the build
    #[arg(long = "async", requires = "host")]
    asynchronous: bool,
    /// How small files and the contract are compressed (files of 64 MiB or more never are)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression: String,
    /// Start the image's runtime after the build: a model that does not load, or a signature
    /// with no implementation, fails the version with the runtime's own error
    #[arg(long, conflicts_with = "host")]
    check: bool,
    #[command(flatten)]
    packages: super::PackageArgs,
    #[command(flatten)]
    remote: super::push::RemoteArgs,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(host) = args.host.clone() {
        return to_manager(&host, args);
    }
    let base_choice: Option<BaseChoice> = args.base.as_deref().map(parse_base).transpose()?;
    let (store, remote) = match args.registry.as_deref() {
        None => (home.store()?, None),
        Some(url) => match Location::parse(url) {
            // Absolute, as the home: the image's path is recorded in the catalogue.
            Ok(Location::Store(dir)) => (Store::open(&std::path::absolute(&dir)?)?, None),
            Err(problem) => anyhow::bail!("--registry {problem}"),
            // The push target's own grammar says what is wrong with anything else.
            Ok(_) => (home.store()?, Some(args.remote.remote(url)?)),
        },
    };
    let spec = args.model.load()?;
    let mut catalog = home.open_catalog()?;
    let mut show = step_printer();
    let mut settings = super::build_settings(home, &args.compression, &args.packages);
    settings.check = args.check.then(|| home.run_cache());
    let request = BuildRequest {
        spec: &spec,
        base: base_choice.as_ref(),
        settings: &settings,
    };
    let result = match &remote {
        None => upload_to_store(catalog.as_mut(), &store, &request, &mut show),
        Some(remote) => {
            let watcher = super::push::progress_watcher();
            upload_to_registry(
                catalog.as_mut(),
                &store,
                &request,
                remote,
                &mut show,
                &watcher,
            )
        }
    };
    match result {
        Ok(uploaded) => {
            let image = uploaded
                .pushed
                .as_ref()
                .map_or(uploaded.image.clone(), |p| p.reference.clone());
            if args.json {
                let mut document = json!({
                    "name": spec.name,
                    "version": uploaded.version,
                    "status": "Finished",
                    "image": image,
                    "digest": uploaded.built.manifest.digest,
                    "config_digest": uploaded.built.config_digest,
                    "size": uploaded.built.size,
                    "model_type": spec.model_type,
                    "contract_source": spec.contract_source,
                    "base": uploaded.base,
                });
                if let Some(pushed) = &uploaded.pushed {
                    document["pushed_digest"] = json!(pushed.digest);
                    document["local_image"] = json!(uploaded.image);
                    document["blobs"] = super::push::blob_counts(pushed);
                }
                print_json(&document);
            } else {
                println!("{}:{} Finished", spec.name, uploaded.version);
                println!("  image     {image}");
                println!("  digest    {}", uploaded.built.manifest.digest);
                println!("  contract  {}", spec.contract_source);
                println!("  base      {}", uploaded.base);
                if let Some(pushed) = &uploaded.pushed {
                    println!("  local     {}", uploaded.image);
                    super::push::print_pushed(pushed);
                }
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

/// `file:DIR` → DIR.
/// `--host`: the manager builds; this side packs, sends and follows the log.
fn to_manager(host: &str, args: Args) -> anyhow::Result<ExitCode> {
    if args.compression != "gzip" {
        anyhow::bail!("--compression is the manager's choice with --host");
    }
    let manager = ManagerClient::connect(host, args.port, &args.remote.connect_options()?)?;
    let spec = args.model.load()?;
    let mut metadata = json!({ "name": spec.name });
    if let Some(model_type) = &args.model.model_type {
        metadata["model-type"] = json!(model_type);
    }
    if let Some(base) = &args.base {
        // A server builds on its own runtimes: `scratch` or a runtime name it holds.
        metadata["runtime"] = json!(base);
    }
    let quiet = args.json;
    if !quiet {
        eprintln!("sending {} to {}", spec.dir.display(), manager.url());
    }
    let accepted = manager.upload(&spec, &metadata)?;
    let version = accepted["version"].as_u64().unwrap_or(0) as u32;
    if !quiet {
        eprintln!(
            "{}:{version} accepted ({})",
            spec.name,
            accepted["status"].as_str().unwrap_or("Pending")
        );
    }
    if args.asynchronous {
        if args.json {
            print_json(&accepted);
        } else {
            println!("{}:{version} Pending", spec.name);
            println!(
                "  follow    {}{}",
                manager.url().as_str().trim_end_matches('/'),
                accepted["links"]["page"].as_str().unwrap_or("")
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut show = step_printer();
    let ended = manager.follow(&spec.name, version, &mut |line| {
        show(crate::pipeline::Event::Step(line.to_string()))
    })?;
    let record = manager.version(&spec.name, version)?;
    let finished = ended["status"] == "Finished";
    if args.json {
        print_json(&record);
    } else if finished {
        println!("{}:{version} Finished", spec.name);
        println!("  image     {}", record["image"].as_str().unwrap_or("-"));
        println!("  digest    {}", record["digest"].as_str().unwrap_or("-"));
        println!(
            "  contract  {}",
            record["contract_source"].as_str().unwrap_or("-")
        );
        println!(
            "  base      {}",
            record["base_image"].as_str().unwrap_or("-")
        );
    }
    if finished {
        Ok(ExitCode::SUCCESS)
    } else {
        let error = record["error"].as_str().unwrap_or("the build failed");
        anyhow::bail!("{}:{version} Failed: {error}", spec.name)
    }
}
