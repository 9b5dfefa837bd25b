//! `mlambda build`: the same image as upload, written to a layout or an archive, with no
//! version recorded (for scripts and CI).

use super::ModelArgs;
use super::output::{print_json, step_printer};
use crate::base::parse_base;
use crate::image::archive::{ArchiveFormat, ArchiveSink};
use crate::image::{Source, copy};
use crate::oci::{ArchiveKind, Location};
use crate::pipeline::{Home, build_to_layout, choose_base};
use crate::store::Layout;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    model: ModelArgs,
    /// oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE
    #[arg(long, short = 'o', value_name = "TARGET")]
    output: String,
    /// The tag inside an archive, and the default tag of an oci: layout
    #[arg(long, default_value = "latest")]
    tag: String,
    /// The base image: `scratch` or `oci:DIR[:TAG]` [default: the runtime for the model-type in base-images/]
    #[arg(long, value_name = "IMAGE")]
    base: Option<String>,
    /// How small files and the contract are compressed (files of 64 MiB or more never are)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression: String,
    #[command(flatten)]
    packages: super::PackageArgs,
    /// Print one JSON document for scripts
    #[arg(long)]
    json: bool,
}

enum Output {
    Layout { dir: PathBuf, tag: String },
    OciArchive(PathBuf, String),
    DockerArchive(PathBuf, String),
}

fn parse_output(text: &str, default_tag: &str) -> anyhow::Result<Output> {
    let tag = |tag: Option<String>| tag.unwrap_or_else(|| default_tag.to_string());
    match Location::parse(text) {
        Ok(Location::Layout { dir, tag: t }) if text.starts_with("oci:") => {
            Ok(Output::Layout { dir, tag: tag(t) })
        }
        Ok(Location::Archive {
            kind: ArchiveKind::Oci,
            file,
            tag: t,
        }) => Ok(Output::OciArchive(file, tag(t))),
        Ok(Location::Archive {
            kind: ArchiveKind::Docker,
            file,
            tag: t,
        }) => Ok(Output::DockerArchive(file, tag(t))),
        _ => anyhow::bail!(
            "--output {text}: expected oci:DIR[:TAG], oci-archive:FILE or docker-archive:FILE"
        ),
    }
}

pub fn run(home: &Home, args: Args) -> anyhow::Result<ExitCode> {
    let output = parse_output(&args.output, &args.tag)?;
    let base_choice = args.base.as_deref().map(parse_base).transpose()?;
    let spec = args.model.load()?;
    let store = home.store()?;
    let settings = super::build_settings(home, &args.compression, &args.packages);
    let mut show = step_printer();
    let (base, note) = choose_base(
        &store,
        base_choice.as_ref(),
        &spec.model_type,
        &settings,
        &mut show,
    )?;
    if let Some(note) = note {
        eprintln!("note: {note}");
    }
    let packages = crate::pipeline::prepare_packages(&spec, &base, &settings, &[], &mut show)?;
    // An archive is written from a layout of its own beside it, removed afterwards.
    let (layout, tag, scratch) = match &output {
        Output::Layout { dir, tag } => (Layout::create(dir)?, tag, None),
        Output::OciArchive(file, tag) | Output::DockerArchive(file, tag) => {
            let scratch = tempfile::Builder::new()
                .prefix(".mlambda-build-")
                .tempdir_in(parent_of(file))?;
            (Layout::create(scratch.path())?, tag, Some(scratch))
        }
    };
    let built = build_to_layout(
        &spec,
        &base,
        packages.as_ref(),
        None,
        &layout,
        tag,
        &settings,
        None,
        &mut show,
    )?;
    let written_to = match &output {
        Output::Layout { dir, tag } => format!("oci:{}:{tag}", dir.display()),
        Output::OciArchive(file, _) | Output::DockerArchive(file, _) => {
            let (format, prefix) = match output {
                Output::DockerArchive(..) => (ArchiveFormat::Docker, "docker-archive"),
                _ => (ArchiveFormat::Oci, "oci-archive"),
            };
            let manifest = Source::manifest(&layout, Some(&built.manifest.digest))?;
            let sink = ArchiveSink::create(file, format, &spec.name)?;
            copy(&layout, &manifest, &sink, Some(tag))?;
            format!("{prefix}:{}", file.display())
        }
    };
    drop(scratch);
    if args.json {
        print_json(&json!({
            "name": spec.name,
            "image": written_to,
            "digest": built.manifest.digest,
            "config_digest": built.config_digest,
            "size": built.size,
            "model_type": spec.model_type,
            "contract_source": spec.contract_source,
            "base": base.reference,
        }));
    } else {
        println!("{written_to}");
        println!("  digest    {}", built.manifest.digest);
        println!("  contract  {}", spec.contract_source);
        println!("  base      {}", base.reference);
    }
    Ok(ExitCode::SUCCESS)
}

fn parent_of(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
