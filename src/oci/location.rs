//! Where an image is, as a user writes it on the command line: the one parser of image
//! locations, for `--base`, `base import SOURCE`, `build --output` and `upload --registry`.
//! Each command then takes the kinds it can use and names the others in its error.
//!
//! ```text
//! scratch                              no base at all
//! oci:DIR[:TAG]                        an OCI image layout
//! oci-archive:FILE[:TAG]               a tar of an OCI layout
//! docker-archive:FILE[:TAG]            what `docker save` writes
//! FILE[:TAG] or DIR                    an archive (its content tells which) or a layout
//! file:DIR                             a file-backed store (mlambda's own)
//! docker://host[:port]/repo[:tag|@d]   a registry reference
//! host[:port]/repo[:tag|@digest]       the same, when the first component has a '.' or ':'
//!                                      or is `localhost`, and no such file exists
//! http(s)://host[:port][/path]         a registry by URL (a prefix, or a reference)
//! ```
//!
//! A registry location stays text here: `--registry https://r/team` names a prefix where
//! `base import https://r/team/tf:2` names an image, so the command parses it with the
//! reference grammar it needs ([`super::name::RegistryReference`] or the push target's).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Scratch,
    Layout {
        dir: PathBuf,
        tag: Option<String>,
    },
    Archive {
        kind: ArchiveKind,
        file: PathBuf,
        tag: Option<String>,
    },
    /// `file:DIR`.
    Store(PathBuf),
    /// A registry reference or URL, as written (without `docker://`).
    Registry(String),
}

/// What an archive's prefix said it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    Oci,
    Docker,
    /// No prefix: its content tells.
    Unknown,
}

impl Location {
    pub fn parse(text: &str) -> Result<Location, String> {
        if text == "scratch" {
            return Ok(Location::Scratch);
        }
        if let Some(rest) = text.strip_prefix("docker://") {
            return Ok(Location::Registry(rest.to_string()));
        }
        if text.starts_with("http://") || text.starts_with("https://") {
            return Ok(Location::Registry(text.to_string()));
        }
        if let Some(dir) = text.strip_prefix("file:") {
            if dir.is_empty() {
                return Err(format!("'{text}': expected file:DIR"));
            }
            return Ok(Location::Store(dir.into()));
        }
        if let Some(rest) = text.strip_prefix("oci:") {
            let (dir, tag) = split_tag(rest);
            if dir.is_empty() {
                return Err(format!("'{text}': expected oci:DIR[:TAG]"));
            }
            return Ok(Location::Layout {
                dir: dir.into(),
                tag: tag.map(str::to_string),
            });
        }
        let (kind, rest) = if let Some(rest) = text.strip_prefix("oci-archive:") {
            (ArchiveKind::Oci, rest)
        } else if let Some(rest) = text.strip_prefix("docker-archive:") {
            (ArchiveKind::Docker, rest)
        } else {
            (ArchiveKind::Unknown, text)
        };
        if rest.is_empty() {
            return Err(format!("'{text}': expected a file name"));
        }
        if Path::new(rest).is_dir() {
            return Ok(Location::Layout {
                dir: rest.into(),
                tag: None,
            });
        }
        if Path::new(rest).exists() {
            return Ok(Location::Archive {
                kind,
                file: rest.into(),
                tag: None,
            });
        }
        let (file, tag) = split_tag(rest);
        if kind == ArchiveKind::Unknown && !Path::new(file).exists() && looks_like_registry(text) {
            return Ok(Location::Registry(text.to_string()));
        }
        Ok(Location::Archive {
            kind,
            file: file.into(),
            tag: tag.map(str::to_string),
        })
    }

    /// How the location is recorded: absolute paths, a registry as written.
    pub fn describe(&self) -> String {
        let absolute = |p: &Path| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.to_path_buf())
                .display()
                .to_string()
        };
        let tag = |t: &Option<String>| t.as_ref().map(|t| format!(":{t}")).unwrap_or_default();
        match self {
            Location::Scratch => "scratch".into(),
            Location::Layout { dir, tag: t } => format!("oci:{}{}", absolute(dir), tag(t)),
            Location::Archive { file, tag: t, .. } => format!("{}{}", absolute(file), tag(t)),
            Location::Store(dir) => format!("file:{}", absolute(dir)),
            Location::Registry(reference) => reference.clone(),
        }
    }
}

/// `PATH[:TAG]`, where PATH may itself hold ':' (the tag is what follows the last ':' when it
/// has no '/').
fn split_tag(text: &str) -> (&str, Option<&str>) {
    match text.rsplit_once(':') {
        Some((path, tag)) if !tag.contains('/') && !tag.is_empty() => (path, Some(tag)),
        _ => (text, None),
    }
}

fn looks_like_registry(text: &str) -> bool {
    let Some((first, rest)) = text.split_once('/') else {
        return false;
    };
    !rest.is_empty()
        && !first.is_empty()
        && first != "."
        && first != ".."
        && (first.contains('.') || first.contains(':') || first == "localhost")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_references_are_told_from_paths() {
        for registry in [
            "docker://busybox/x",
            "127.0.0.1:5000/runtimes/busybox:1",
            "registry.example.com/ml/tf:2.14",
            "localhost/x@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "https://r.example.com/team",
        ] {
            assert!(
                matches!(Location::parse(registry), Ok(Location::Registry(_))),
                "{registry}"
            );
        }
        for path in [
            "/no/such/file.tar",
            "base.tar:v1",
            "./x.y/base.tar",
            "dir/base.tar",
        ] {
            assert!(
                matches!(Location::parse(path), Ok(Location::Archive { .. })),
                "{path}"
            );
        }
    }

    #[test]
    fn layouts_archives_scratch_and_stores() {
        assert_eq!(Location::parse("scratch"), Ok(Location::Scratch));
        assert_eq!(
            Location::parse("oci:/a/b:v1"),
            Ok(Location::Layout {
                dir: "/a/b".into(),
                tag: Some("v1".into())
            })
        );
        assert_eq!(
            Location::parse("oci:./x"),
            Ok(Location::Layout {
                dir: "./x".into(),
                tag: None
            })
        );
        assert_eq!(
            Location::parse("docker-archive:/no/such/out.tar"),
            Ok(Location::Archive {
                kind: ArchiveKind::Docker,
                file: "/no/such/out.tar".into(),
                tag: None
            })
        );
        assert_eq!(
            Location::parse("file:/srv/store"),
            Ok(Location::Store("/srv/store".into()))
        );
        assert!(Location::parse("file:").is_err());
        assert!(Location::parse("oci:").is_err());
    }
}
