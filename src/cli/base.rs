//! `mlambda base list | import | build`: the runtime base images of the local store.

use super::output::{print_json, print_table};
use super::push::RemoteArgs;
use crate::base::{
    self, ImportOptions, build_runtime, catalogue, import_base, installed_runtime, read_origin,
    runtime_image,
};
use crate::oci::Location;
use crate::pipeline::{Home, source_date_epoch};
use serde_json::json;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// The runtimes known, the model-types they serve, and whether they are in the store
    List {
        #[arg(long)]
        json: bool,
    },
    /// Bring a runtime image into the store from a registry, an archive (`docker save` or OCI)
    /// or an OCI layout
    Import {
        /// The runtime's name (a runtime of base-images/catalog.yaml, or a new one)
        name: String,
        /// [docker://]HOST[:PORT]/REPOSITORY[:TAG|@DIGEST] (https; plain http for a loopback
        /// host or with --insecure, unless --ca-cert is given), FILE[:TAG] (docker-archive or
        /// oci-archive), oci:DIR[:TAG]
        source: String,
        /// The platform taken from an image index: OS/ARCH[/VARIANT] [default: linux/<this
        /// machine's architecture>]
        #[arg(long, value_name = "PLATFORM")]
        platform: Option<String>,
        #[command(flatten)]
        remote: RemoteArgs,
        #[arg(long)]
        json: bool,
    },
    /// Assemble a runtime from its Debian packages (no container, no package script run)
    Build {
        /// The runtime's name in base-images/catalog.yaml
        name: String,
        /// A folder with the .deb files [default: fetched with apt-get download]
        #[arg(long, value_name = "DIR")]
        debs: Option<PathBuf>,
        /// Where its wheels come from (a runtime with a `wheels` lock)
        #[command(flatten)]
        packages: super::PackageArgs,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(home: &Home, command: Command) -> anyhow::Result<ExitCode> {
    let store = home.store()?;
    match command {
        Command::List { json } => {
            let rows: Vec<(base::Runtime, Option<String>, Option<base::Origin>)> = catalogue()
                .into_iter()
                .map(|runtime| {
                    let digest = installed_runtime(&store, &runtime.name).map(|d| d.digest);
                    // The record describes the image only while it is still the one tagged.
                    let origin = read_origin(&store, &runtime.name)
                        .filter(|o| Some(&o.digest) == digest.as_ref());
                    (runtime, digest, origin)
                })
                .collect();
            if json {
                print_json(&json!(
                    rows.iter()
                        .map(|(r, digest, origin)| json!({
                            "name": r.name,
                            "description": r.description,
                            "serves": r.serves,
                            "source": if r.debian.is_empty() { "import" } else { "debian" },
                            "in_store": digest.is_some(),
                            "digest": digest,
                            "imported_from": origin,
                        }))
                        .collect::<Vec<_>>()
                ));
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|(r, digest, origin)| {
                        vec![
                            r.name.clone(),
                            r.serves.join(" "),
                            match origin {
                                Some(o) => o.pinned.clone().unwrap_or_else(|| o.source.clone()),
                                None if r.debian.is_empty() => "import".into(),
                                None => "debian".into(),
                            },
                            digest.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                print_table(&["RUNTIME", "SERVES", "SOURCE", "IN STORE"], &table);
            }
        }
        Command::Import {
            name,
            source,
            platform,
            remote,
            json,
        } => {
            base::check_runtime_name(&name)?;
            let parsed = Location::parse(&source).map_err(anyhow::Error::msg)?;
            let options = ImportOptions {
                platform,
                connect: if matches!(parsed, Location::Registry(_)) {
                    remote.connect_options()?
                } else {
                    Default::default()
                },
            };
            let imported = import_base(&store, &name, &parsed, &options)?;
            let image = runtime_image(&store, &name);
            if json {
                print_json(&json!({
                    "name": name,
                    "digest": imported.manifest.digest,
                    "media_type": imported.manifest.media_type,
                    "platform": imported.origin.platform,
                    "source": imported.origin.source,
                    "pinned": imported.origin.pinned,
                    "image": image,
                }));
            } else {
                println!("runtime {name} imported from {source}");
                if let Some(pinned) = &imported.origin.pinned {
                    println!("  pinned  {pinned}");
                }
                if let Some(platform) = &imported.origin.platform {
                    println!("  platform {platform}");
                }
                println!("  image   {image}");
                println!("  digest  {}", imported.manifest.digest);
            }
        }
        Command::Build {
            name,
            debs,
            packages,
            json,
        } => {
            let runtime = base::runtime(&name).ok_or_else(|| {
                let known: Vec<String> = catalogue().into_iter().map(|r| r.name).collect();
                anyhow::anyhow!(
                    "no runtime '{name}' in base-images/catalog.yaml (known: {})",
                    known.join(", ")
                )
            })?;
            let show = std::io::stderr().is_terminal();
            let assembly = base::Assembly {
                debs: debs.as_deref(),
                created: source_date_epoch()?,
                packages: &packages.settings(),
                wheel_cache: &home.wheel_cache(),
            };
            let built = build_runtime(&store, &runtime, &assembly, &mut |line| {
                if show {
                    eprintln!("  {line}");
                }
            })?;
            let image = runtime_image(&store, &name);
            if json {
                print_json(
                    &json!({"name": name, "digest": built.manifest.digest, "size": built.size, "layers": built.layers.len(), "image": image}),
                );
            } else {
                println!(
                    "runtime {name} built from {} Debian packages",
                    runtime.debian.len()
                );
                println!("  image   {image}");
                println!("  digest  {}", built.manifest.digest);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
