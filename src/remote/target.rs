//! Which registry: a `--registry` URL (`http(s)://host[:port][/prefix]`) or the registry of
//! an image reference, and how to reach it.

use super::RemoteError;
use super::auth::Credential;
use super::retry::RetryPolicy;
use crate::oci::RegistryReference;
use crate::oci::name::host_of;
use reqwest::Url;
use std::path::PathBuf;

/// A registry URL: `http(s)://host[:port][/prefix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `scheme://host[:port]/`.
    pub base: Url,
    /// `host[:port]`, as it appears in image references.
    pub authority: String,
    /// Repository path prefix, without slashes at either end; may be empty.
    pub prefix: String,
}

impl Target {
    /// Parses `--registry`. Plain HTTP is refused unless `insecure` or the host is loopback.
    pub fn parse(text: &str, insecure: bool) -> Result<Target, RemoteError> {
        let bad = |why: &str| {
            RemoteError::Config(format!(
                "--registry {text}: {why} (expected http://host:port[/prefix], https://host[/prefix] or file:DIR)"
            ))
        };
        let url = Url::parse(text).map_err(|_| bad("not a URL"))?;
        match url.scheme() {
            "https" => {}
            "http" => {
                if !insecure && !is_loopback(&url) {
                    return Err(RemoteError::Config(format!(
                        "--registry {text}: plain HTTP sends images and credentials unencrypted; use https:// or pass --insecure (loopback hosts need neither)"
                    )));
                }
            }
            _ => return Err(bad("unknown scheme")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad(
                "credentials do not belong in the URL; use --username with --password-stdin",
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let prefix = url.path().trim_matches('/').to_string();
        if !prefix.is_empty() {
            crate::oci::check_repository(&prefix).map_err(|why| bad(&why))?;
        }
        let mut base = url.clone();
        base.set_path("/");
        Ok(Target {
            base,
            authority,
            prefix,
        })
    }

    /// The registry of an image reference: https unless the reference says otherwise, or a
    /// loopback host or `--insecure` without `--ca-cert` (plain HTTP, as a local test
    /// registry is).
    pub fn for_reference(
        reference: &RegistryReference,
        options: &ConnectOptions,
    ) -> Result<Target, RemoteError> {
        let scheme = match &reference.scheme {
            Some(scheme) => scheme.as_str(),
            None => {
                let loopback = crate::oci::name::is_loopback(host_of(&reference.authority));
                if (loopback || options.insecure) && options.ca_cert.is_none() {
                    "http"
                } else {
                    "https"
                }
            }
        };
        Target::parse(
            &format!("{scheme}://{}", reference.authority),
            options.insecure,
        )
    }

    /// The repository of a model under this target's prefix.
    pub fn repository(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }

    /// `host[:port]/repository:tag`.
    pub fn reference(&self, repository: &str, tag: &str) -> String {
        format!("{}/{repository}:{tag}", self.authority)
    }
}

/// Whether the URL's host is this machine (plain HTTP needs no `--insecure` there).
pub fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(crate::oci::name::is_loopback)
}

/// How to reach and talk to a registry.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    pub insecure: bool,
    /// A PEM file of CA certificates trusted in addition to the system's.
    pub ca_cert: Option<PathBuf>,
    /// From the flags; else the environment and the docker config are looked at.
    pub credential: Option<Credential>,
    pub retry: RetryPolicy,
    /// Blobs uploaded at once.
    pub parallel: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://registry.example.com/team", false).unwrap();
        assert_eq!(t.authority, "registry.example.com");
        assert_eq!(t.prefix, "team");
        assert_eq!(t.repository("model"), "team/model");
        assert_eq!(
            t.reference("team/model", "2"),
            "registry.example.com/team/model:2"
        );
        let t = Target::parse("http://127.0.0.1:5000", false).unwrap();
        assert_eq!(t.authority, "127.0.0.1:5000");
        assert_eq!(t.prefix, "");
        assert!(Target::parse("http://[::1]:5000/x/", false).is_ok());
        assert!(Target::parse("http://localhost:5000", false).is_ok());
        let err = Target::parse("http://registry.example.com", false).unwrap_err();
        assert!(err.to_string().contains("--insecure"), "{err}");
        assert!(Target::parse("http://registry.example.com", true).is_ok());
        assert!(Target::parse("https://u:p@r.example.com", false).is_err());
        assert!(Target::parse("https://r.example.com/Bad", false).is_err());
        assert!(Target::parse("registry.example.com", false).is_err());
    }
}
