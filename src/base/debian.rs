//! A Debian package's `data.tar.*` as an image layer, as distroless assembles images: the
//! files land as the package ships them and no maintainer script runs.

use crate::model_image::layer::{Compression, Layer, LayerOptions, LayerTar, header};
use crate::store::Layout;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("{path}: not a Debian package: {problem}")]
    NotADeb { path: String, problem: String },
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error(transparent)]
    Layer(#[from] crate::model_image::layer::LayerError),
}

/// The package's data as one gzip layer, entries normalised (owner 0:0, the build's mtime).
pub fn deb_layer(deb: &Path, layout: &Layout, options: &LayerOptions) -> Result<Layer, DebError> {
    let name = deb.display().to_string();
    let not_a_deb = |problem: &str| DebError::NotADeb {
        path: name.clone(),
        problem: problem.to_string(),
    };
    let io_err = |source| DebError::Io {
        path: name.clone(),
        source,
    };
    let mut reader = BufReader::new(File::open(deb).map_err(io_err)?);
    let mut magic = [0u8; 8];
    reader
        .read_exact(&mut magic)
        .map_err(|_| not_a_deb("too short"))?;
    if &magic != b"!<arch>\n" {
        return Err(not_a_deb("no ar archive header ('!<arch>')"));
    }
    loop {
        let mut head = [0u8; 60];
        match reader.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return Err(not_a_deb("it holds no data.tar member"));
            }
            Err(e) => return Err(io_err(e)),
        }
        if &head[58..60] != b"`\n" {
            return Err(not_a_deb("a corrupt ar member header"));
        }
        let member = String::from_utf8_lossy(&head[..16])
            .trim_end()
            .trim_end_matches('/')
            .to_string();
        let size: u64 = String::from_utf8_lossy(&head[48..58])
            .trim()
            .parse()
            .map_err(|_| not_a_deb("a corrupt ar member size"))?;
        let data = (&mut reader).take(size);
        if let Some(compression) = member.strip_prefix("data.tar") {
            let decoded: Box<dyn Read + '_> = match compression {
                ".xz" => Box::new(xz2::read::XzDecoder::new(data)),
                ".zst" => Box::new(zstd::stream::read::Decoder::new(data).map_err(io_err)?),
                ".gz" => Box::new(flate2::read::GzDecoder::new(data)),
                "" => Box::new(data),
                other => {
                    return Err(not_a_deb(&format!(
                        "unsupported data.tar{other} compression"
                    )));
                }
            };
            let comment = format!(
                "debian package {}",
                deb.file_name()
                    .map_or(name.clone(), |n| n.to_string_lossy().into_owned())
            );
            return copy_entries(decoded, layout, options, comment).map_err(|e| match e {
                DebError::Io { source, .. } => DebError::Io {
                    path: name.clone(),
                    source,
                },
                other => other,
            });
        }
        // Skip this member and its padding to an even offset.
        io::copy(&mut (&mut reader).take(size + size % 2), &mut io::sink()).map_err(io_err)?;
    }
}

fn copy_entries(
    data: impl Read,
    layout: &Layout,
    options: &LayerOptions,
    comment: String,
) -> Result<Layer, DebError> {
    let io_err = |source| DebError::Io {
        path: String::new(),
        source,
    };
    let mut archive = tar::Archive::new(data);
    let mut tar = LayerTar::start(layout, Compression::Gzip)?;
    for entry in archive.entries().map_err(io_err)? {
        let mut entry = entry.map_err(io_err)?;
        let path = entry.path().map_err(io_err)?.to_string_lossy().into_owned();
        let path = normalise(&path);
        if path.is_empty() {
            continue;
        }
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(io_err)? & 0o7777;
        let link = entry
            .link_name()
            .map_err(io_err)?
            .map(|l| l.to_string_lossy().into_owned());
        match kind {
            tar::EntryType::Directory => {
                let mut h = header(kind, mode, 0, options);
                tar.append(&mut h, &format!("{path}/"), io::empty())
                    .map_err(io_err)?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(io_err)?;
                let mut h = header(tar::EntryType::Regular, mode, size, options);
                tar.append(&mut h, &path, &mut entry).map_err(io_err)?;
            }
            tar::EntryType::Symlink => {
                let mut h = header(kind, 0o777, 0, options);
                tar.append_link(&mut h, &path, &link.unwrap_or_default())
                    .map_err(io_err)?;
            }
            tar::EntryType::Link => {
                let mut h = header(kind, mode, 0, options);
                tar.append_link(&mut h, &path, &normalise(&link.unwrap_or_default()))
                    .map_err(io_err)?;
            }
            // Device nodes and fifos need privileges to create and no runtime here needs them.
            _ => {}
        }
    }
    Ok(tar.finish(layout, comment)?)
}

/// `./usr/bin/x` → `usr/bin/x`; `./` → empty.
fn normalise(path: &str) -> String {
    path.trim_start_matches("./")
        .trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}
