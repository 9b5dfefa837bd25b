//! The reference grammar of the distribution spec, written once: repository names, tags,
//! manifest references (a tag or a digest), registry references
//! (`[http(s)://]host[:port]/repository[:tag|@digest]`), and which hosts are this machine.

use super::digest::{is_sha256, parse_digest};

/// The distribution spec's repository name grammar; it also keeps names out of the store's
/// own folders and away from `..`.
pub fn check_repository(name: &str) -> Result<(), String> {
    if name.len() > 255 || !name.split('/').all(component_ok) {
        return Err(format!(
            "'{name}' is not a valid repository name: lowercase letters and digits, separated by '.', '_', '__', '-' or '/'"
        ));
    }
    Ok(())
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn component_ok(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let run_start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == run_start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        match bytes[i] {
            b'.' => i += 1,
            b'_' => {
                i += if bytes.get(i + 1) == Some(&b'_') {
                    2
                } else {
                    1
                }
            }
            b'-' => {
                while bytes.get(i) == Some(&b'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// What a manifest reference names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reference<'a> {
    Tag(&'a str),
    Digest(&'a str),
}

impl<'a> Reference<'a> {
    /// A tag (`[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`) or a supported digest; the reason otherwise,
    /// and whether it looked like a digest.
    pub fn parse(text: &'a str) -> Result<Reference<'a>, (bool, String)> {
        if text.contains(':') {
            parse_digest(text).map_err(|e| (true, e))?;
            Ok(Reference::Digest(text))
        } else if is_tag(text) {
            Ok(Reference::Tag(text))
        } else {
            Err((false, format!("'{text}' is not a valid tag")))
        }
    }
}

/// The distribution spec's tag grammar: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let bytes = tag.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 128
        && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Whether `host` (a name, an IPv4 address, or an IPv6 address with or without brackets) is
/// this machine: `localhost` or a loopback address. Plain HTTP is allowed to these alone.
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The host of `host[:port]`.
pub fn host_of(authority: &str) -> &str {
    authority
        .rsplit_once(':')
        .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
        .map_or(authority, |(host, _)| host)
}

/// `[http(s)://]host[:port]/repository[:tag|@digest]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryReference {
    /// Given explicitly with `http://` or `https://`.
    pub scheme: Option<String>,
    pub authority: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl RegistryReference {
    pub fn parse(text: &str) -> Result<RegistryReference, String> {
        let (scheme, rest) = match text.split_once("://") {
            Some((scheme @ ("http" | "https"), rest)) => (Some(scheme.to_string()), rest),
            Some((other, _)) => return Err(format!("unknown scheme '{other}://'")),
            None => (None, text),
        };
        let (authority, path) = rest
            .split_once('/')
            .filter(|(a, p)| !a.is_empty() && !p.is_empty())
            .ok_or("expected host[:port]/repository[:tag|@digest]")?;
        let (path, digest) = match path.split_once('@') {
            Some((path, digest)) => {
                if !is_sha256(digest) {
                    return Err(format!("'{digest}' is not a sha256 digest"));
                }
                (path, Some(digest.to_string()))
            }
            None => (path, None),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repository, tag)) if !tag.contains('/') => (repository, Some(tag.to_string())),
            _ => (path, None),
        };
        if let Some(tag) = &tag
            && !is_tag(tag)
        {
            return Err(format!("'{tag}' is not a valid tag"));
        }
        check_repository(repository)?;
        Ok(RegistryReference {
            scheme,
            authority: authority.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// What to ask the registry for: the digest when given, else the tag (`latest` by default).
    pub fn reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for ok in ["model", "team/model", "a.b_c-d", "a__b", "a--b", "x1/y2/z3"] {
            assert!(check_repository(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "Model", "../x", "a/../b", "_blobs", "a/", "/a", "a..b", "-a", "a b", "a._b",
        ] {
            assert!(check_repository(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_grammar() {
        for ok in ["1", "latest", "_x", "A.b-c_d", &"a".repeat(128)] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129), "../x"] {
            assert!(!is_tag(bad), "{bad}");
        }
    }

    #[test]
    fn loopback_hosts() {
        for yes in [
            "localhost",
            "LocalHost",
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
        ] {
            assert!(is_loopback(yes), "{yes}");
        }
        for no in ["example.com", "10.0.0.1", "[::2]", "localhost.example.com"] {
            assert!(!is_loopback(no), "{no}");
        }
        assert_eq!(host_of("[::1]:5000"), "[::1]");
        assert_eq!(host_of("r.example.com"), "r.example.com");
    }

    #[test]
    fn registry_references() {
        let r = RegistryReference::parse("127.0.0.1:5000/runtimes/busybox:1").unwrap();
        assert_eq!(
            (r.authority.as_str(), r.repository.as_str(), r.reference()),
            ("127.0.0.1:5000", "runtimes/busybox", "1")
        );
        let r = RegistryReference::parse("r.example.com/a/b").unwrap();
        assert_eq!(r.reference(), "latest");
        let d = format!("sha256:{}", "ab".repeat(32));
        let r = RegistryReference::parse(&format!("r.example.com:443/a@{d}")).unwrap();
        assert_eq!(r.reference(), d);
        assert!(RegistryReference::parse("r.example.com/a@sha256:12").is_err());
        assert!(RegistryReference::parse("r.example.com/A").is_err());
        assert!(RegistryReference::parse("r.example.com/").is_err());
        assert!(RegistryReference::parse("ftp://r.example.com/a").is_err());
        assert!(RegistryReference::parse("r.example.com/a:.bad").is_err());
    }
}
