//! A `requirements.txt` (pip's format: PEP 508 lines, `\` continuations, `#` comments,
//! `--hash` per requirement, global options) read only far enough to tell whether it is
//! already a lock — every requirement pinned with `==` and hashed, as `pip-compile
//! --generate-hashes` and `uv pip compile --generate-hashes` write it — or needs resolving.
//! The requirements themselves are PEP 508, parsed by `pep508_rs`; resolving is uv's job.

use super::PackagesError;
use super::target::{PythonTarget, normalize};
use pep508_rs::pep440_rs::Operator;
use pep508_rs::{Requirement, VersionOrUrl};
use std::str::FromStr;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirements {
    /// Nothing to install (only comments and blank lines, or markers that exclude all).
    Empty,
    /// A lock already: each package at one version, with the hashes its files may have.
    Pinned(Vec<Pinned>),
    /// Ranges, names alone, includes, URLs: uv resolves it.
    Loose,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    /// Normalised (PEP 503).
    pub name: String,
    pub version: String,
    /// Lower-case hex sha256 of the files the requirement allows.
    pub sha256: Vec<String>,
}

/// The index options a requirements file may carry (they apply to a pinned file too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileOptions {
    pub index_url: Option<String>,
    pub extra_index_urls: Vec<String>,
}

/// Reads `text` (`origin` names it in errors) for `target`: requirements whose marker does not
/// hold for the target are left out, as pip leaves them out.
pub fn read_requirements(
    text: &str,
    origin: &str,
    target: &PythonTarget,
) -> Result<(Requirements, FileOptions), PackagesError> {
    let environment = target.markers();
    let mut pinned = Vec::new();
    let mut options = FileOptions::default();
    let mut loose = false;
    let mut any = false;
    for (line_number, line) in logical_lines(text) {
        let invalid = |problem: String| PackagesError::Requirements {
            origin: format!("{origin}:{line_number}"),
            problem,
        };
        let (spec, flags) = split_options(&line);
        if spec.is_empty() {
            for (flag, value) in flags {
                match flag.as_str() {
                    "-i" | "--index-url" => options.index_url = value,
                    "--extra-index-url" => options.extra_index_urls.extend(value),
                    "--hash" => {
                        return Err(invalid(
                            "--hash must follow a requirement on its line".into(),
                        ));
                    }
                    // Includes, editables, find-links and the rest: uv knows them all.
                    _ => loose = true,
                }
            }
            continue;
        }
        let requirement = Requirement::<pep508_rs::VerbatimUrl>::from_str(spec)
            .map_err(|e| invalid(format!("'{spec}': {e}")))?;
        if !requirement.marker.evaluate(&environment, &[]) {
            continue;
        }
        any = true;
        let mut hashes = Vec::new();
        for (flag, value) in flags {
            match (flag.as_str(), value) {
                ("--hash", Some(hash)) => match hash.split_once(':') {
                    Some(("sha256", hex)) => hashes.push(hex.to_ascii_lowercase()),
                    // sha384/sha512 are allowed by pip; mlambda verifies sha256 only.
                    Some((_, _)) => {}
                    None => return Err(invalid(format!("--hash={hash}: expected ALGORITHM:HEX"))),
                },
                _ => loose = true,
            }
        }
        match exact_version(&requirement) {
            Some(version) if !hashes.is_empty() => pinned.push(Pinned {
                name: normalize(requirement.name.as_ref()),
                version,
                sha256: hashes,
            }),
            _ => loose = true,
        }
    }
    let requirements = if loose {
        Requirements::Loose
    } else if !any {
        Requirements::Empty
    } else {
        pinned.sort_by(|a, b| a.name.cmp(&b.name));
        Requirements::Pinned(pinned)
    };
    Ok((requirements, options))
}

/// `name==1.2.3` (or `===`): the one version it allows.
fn exact_version(requirement: &Requirement) -> Option<String> {
    let Some(VersionOrUrl::VersionSpecifier(specifiers)) = &requirement.version_or_url else {
        return None;
    };
    match &specifiers[..] {
        [only] if matches!(only.operator(), Operator::Equal | Operator::ExactEqual) => {
            Some(only.version().to_string())
        }
        _ => None,
    }
}

/// Lines with `\` continuations joined and comments removed, with the number of the line
/// each starts on; blank ones left out.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (index, raw) in text.lines().enumerate() {
        if current.is_empty() {
            start = index + 1;
        }
        let without_comment = strip_comment(raw);
        match without_comment.strip_suffix('\\') {
            Some(continued) => {
                current.push_str(continued);
                current.push(' ');
            }
            None => {
                current.push_str(without_comment);
                let line = current.trim().to_string();
                if !line.is_empty() {
                    lines.push((start, line));
                }
                current.clear();
            }
        }
    }
    let line = current.trim().to_string();
    if !line.is_empty() {
        lines.push((start, line));
    }
    lines
}

/// pip's rule: `#` starts a comment at the start of a line or after whitespace.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return line[..i].trim_end();
        }
    }
    line.trim_end()
}

/// The requirement before the first option, and the options (`--flag=value`, `--flag value`,
/// `-f value`).
fn split_options(line: &str) -> (&str, Vec<(String, Option<String>)>) {
    let option_start = if line.starts_with('-') {
        0
    } else {
        line.find(" -").map_or(line.len(), |i| i + 1)
    };
    let spec = line[..option_start].trim();
    let mut flags = Vec::new();
    let mut words = line[option_start..].split_whitespace().peekable();
    while let Some(word) = words.next() {
        if let Some((flag, value)) = word.split_once('=').filter(|_| word.starts_with("--")) {
            flags.push((flag.to_string(), Some(value.to_string())));
        } else if word.starts_with('-') {
            let takes_value = words.peek().is_some_and(|next| !next.starts_with('-'));
            let value = if takes_value && !is_switch(word) {
                words.next().map(str::to_string)
            } else {
                None
            };
            flags.push((word.to_string(), value));
        }
    }
    (spec, flags)
}

/// Options of pip's file format that take no value.
fn is_switch(flag: &str) -> bool {
    matches!(
        flag,
        "--no-index" | "--pre" | "--prefer-binary" | "--require-hashes"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<(Requirements, FileOptions), PackagesError> {
        let target = PythonTarget::for_platform("3.11", "amd64", (2, 36)).unwrap();
        read_requirements(text, "requirements.txt", &target)
    }

    #[test]
    fn a_hashed_pinned_file_is_a_lock() {
        let text = "# made by uv\n--index-url https://mirror.example/simple\nnumpy==2.4.6 \\\n    --hash=sha256:89CD \\\n    --hash=sha256:0280\n    # via scikit-learn\nScikit_Learn==1.9.1 --hash=sha256:52a0\npywin32==306 ; sys_platform == 'win32' --hash=sha256:ffff\n";
        let (requirements, options) = read(text).unwrap();
        assert_eq!(
            requirements,
            Requirements::Pinned(vec![
                Pinned {
                    name: "numpy".into(),
                    version: "2.4.6".into(),
                    sha256: vec!["89cd".into(), "0280".into()]
                },
                Pinned {
                    name: "scikit-learn".into(),
                    version: "1.9.1".into(),
                    sha256: vec!["52a0".into()]
                },
            ])
        );
        assert_eq!(
            options.index_url.as_deref(),
            Some("https://mirror.example/simple")
        );
    }

    #[test]
    fn ranges_names_and_unhashed_pins_need_resolving() {
        for loose in [
            "scikit-learn>=1.5\n",
            "numpy\n",
            "numpy==2.4.6\n",
            "numpy==2.*  --hash=sha256:00\n",
            "-r other.txt\nnumpy==1 --hash=sha256:00\n",
        ] {
            assert_eq!(read(loose).unwrap().0, Requirements::Loose, "{loose}");
        }
        assert_eq!(
            read("# nothing beyond the standard library\n\n").unwrap().0,
            Requirements::Empty
        );
    }

    #[test]
    fn a_bad_line_is_named_with_its_number() {
        let error = read("numpy\n\nscikit-learn>=>1\n").unwrap_err().to_string();
        assert!(error.contains("requirements.txt:3"), "{error}");
    }
}
