//! An image's layers applied in order to a folder, as an OCI runtime bundle's rootfs: each
//! layer's tar unpacked (tar's `unpack_in` keeps every entry inside the folder, through
//! symlinks too), with the OCI whiteouts applied (`.wh.NAME` deletes NAME, `.wh..wh..opq`
//! empties its folder of what earlier layers put there). Ownership is not kept: the rootfs is
//! the user's, as with `umoci unpack --rootless`.

use crate::image::walk::verified;
use crate::image::{ImageError, Source};
use crate::oci::{Descriptor, MEDIA_LAYER_GZIP, MEDIA_LAYER_TAR, MEDIA_LAYER_ZSTD};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("layer {layer}: {problem}")]
    Layer { layer: String, problem: String },
}

/// Unpacks `layers` of `source` into `rootfs` (which must exist and be empty).
pub fn unpack_layers(
    source: &dyn Source,
    layers: &[Descriptor],
    rootfs: &Path,
) -> Result<(), UnpackError> {
    for layer in layers {
        let failed = |problem: String| UnpackError::Layer {
            layer: layer.digest.clone(),
            problem,
        };
        let blob = verified(source.blob(&layer.digest, 0)?, &layer.digest, layer.size)?;
        let tar: Box<dyn Read> = match layer.media_type.as_str() {
            MEDIA_LAYER_GZIP => Box::new(flate2::read::MultiGzDecoder::new(blob)),
            MEDIA_LAYER_ZSTD => {
                Box::new(zstd::stream::read::Decoder::new(blob).map_err(|e| failed(e.to_string()))?)
            }
            MEDIA_LAYER_TAR => Box::new(blob),
            other => {
                return Err(failed(format!(
                    "media type {other} is not a layer mlambda unpacks"
                )));
            }
        };
        let mut archive = tar::Archive::new(tar);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        archive.set_unpack_xattrs(false);
        for entry in archive.entries().map_err(|e| failed(e.to_string()))? {
            let mut entry = entry.map_err(|e| failed(e.to_string()))?;
            let path = entry
                .path()
                .map_err(|e| failed(e.to_string()))?
                .into_owned();
            let kind = entry.header().entry_type();
            if kind.is_block_special() || kind.is_character_special() || kind.is_fifo() {
                continue; // devices need privileges; a runtime's /dev is its own
            }
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(WHITEOUT) {
                // A whiteout under a folder that is not there (or not inside) deletes nothing.
                let parent = inside(rootfs, path.parent().unwrap_or(Path::new("")));
                if let Some(parent) = parent {
                    let done = match name.strip_prefix(WHITEOUT) {
                        _ if name == OPAQUE => empty_folder(&parent),
                        Some(deleted) => remove(&parent.join(deleted)),
                        None => Ok(()),
                    };
                    done.map_err(|e| failed(format!("{}: {e}", path.display())))?;
                }
                continue;
            }
            entry
                .unpack_in(rootfs)
                .map_err(|e| failed(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

/// The folder `relative` names under `root`, resolved, or `None` when it would leave `root`
/// (by `..`, or through a symlink an earlier layer put there, which must never make a
/// whiteout delete a file of this machine) or does not exist.
fn inside(root: &Path, relative: &Path) -> Option<PathBuf> {
    let mut out = root.to_path_buf();
    for part in relative.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    let resolved = std::fs::canonicalize(&out).ok()?;
    let root = std::fs::canonicalize(root).ok()?;
    resolved.starts_with(&root).then_some(resolved)
}

fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn empty_folder(dir: &Path) -> std::io::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        remove(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model_image::layer::{Compression, LayerOptions, LayerTar, header};
    use crate::store::Layout;

    /// A gzip layer of `entries`: (path, Some(content)) files, (path, None) folders, and
    /// symlinks as (path, "-> target").
    fn layer(layout: &Layout, entries: &[(&str, Option<&str>)]) -> Descriptor {
        let options = LayerOptions::default();
        let mut tar = LayerTar::start(layout, Compression::Gzip).unwrap();
        for (path, content) in entries {
            match content {
                None => tar.append_dir(path, &options).unwrap(),
                Some(target) if target.starts_with("-> ") => {
                    let mut h = header(tar::EntryType::Symlink, 0o777, 0, &options);
                    tar.append_link(&mut h, path, &target[3..]).unwrap();
                }
                Some(text) => {
                    let mut h = header(tar::EntryType::Regular, 0o644, text.len() as u64, &options);
                    tar.append(&mut h, path, text.as_bytes()).unwrap();
                }
            }
        }
        tar.finish(layout, "test".into()).unwrap().descriptor
    }

    #[test]
    fn whiteouts_delete_what_earlier_layers_put_and_nothing_outside() {
        let store = tempfile::tempdir().unwrap();
        let layout = Layout::create(store.path()).unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "keep me").unwrap();
        let escape = format!("-> {}", outside.path().display());
        let first = layer(
            &layout,
            &[
                ("a", None),
                ("a/x", Some("x")),
                ("a/y", Some("y")),
                ("b", None),
                ("b/z", Some("z")),
                ("esc", Some(escape.as_str())),
            ],
        );
        let second = layer(
            &layout,
            &[
                ("a/.wh.x", Some("")),
                ("b/.wh..wh..opq", Some("")),
                ("b/new", Some("new")),
                ("esc/.wh.victim", Some("")),
                ("gone/.wh.nothing", Some("")),
            ],
        );
        let rootfs = tempfile::tempdir().unwrap();
        unpack_layers(&layout, &[first, second], rootfs.path()).unwrap();
        let root = rootfs.path();
        assert!(!root.join("a/x").exists());
        assert_eq!(std::fs::read_to_string(root.join("a/y")).unwrap(), "y");
        assert!(!root.join("b/z").exists());
        assert_eq!(std::fs::read_to_string(root.join("b/new")).unwrap(), "new");
        assert!(!root.join("gone").exists(), "a whiteout creates nothing");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("victim")).unwrap(),
            "keep me",
            "a whiteout through a symlink must not reach out of the rootfs"
        );
    }
}
