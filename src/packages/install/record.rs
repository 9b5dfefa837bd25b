//! RECORD, the wheel's list of its files with their hashes and sizes: the hashes (sha256,
//! sha384, sha512, as RECORD spells them), its CSV rows read and written as Python's csv module
//! does, and the `Checked` reader that hashes a file as it streams, so that a file which does not
//! match RECORD fails the install without being read twice.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE_NO_PAD, URL_SAFE_NO_PAD_INDIFFERENT};
use sha2::{Digest as _, Sha256, Sha384, Sha512};
use std::collections::BTreeMap;
use std::io::{self, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HashKind {
    Sha256,
    Sha384,
    Sha512,
}

impl HashKind {
    fn name(self) -> &'static str {
        match self {
            HashKind::Sha256 => "sha256",
            HashKind::Sha384 => "sha384",
            HashKind::Sha512 => "sha512",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hash {
    pub(super) kind: HashKind,
    pub(super) digest: Vec<u8>,
}

impl Hash {
    pub(super) fn of(kind: HashKind, bytes: &[u8]) -> Hash {
        let mut hasher = Hasher::new(kind);
        hasher.update(bytes);
        hasher.finish()
    }

    /// As RECORD spells it: `sha256=<urlsafe base64, no padding>`.
    pub(super) fn to_record(&self) -> String {
        format!(
            "{}={}",
            self.kind.name(),
            URL_SAFE_NO_PAD.encode(&self.digest)
        )
    }

    fn parse(text: &str) -> Result<Hash, String> {
        let (name, value) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?} is not a hash (algorithm=value)"))?;
        let (kind, len) = match name {
            "sha256" => (HashKind::Sha256, 32),
            "sha384" => (HashKind::Sha384, 48),
            "sha512" => (HashKind::Sha512, 64),
            // The spec forbids md5 and sha1; anything else is unknown to pip too.
            other => {
                return Err(format!(
                    "hash algorithm {other:?} is not sha256, sha384 or sha512"
                ));
            }
        };
        let digest = URL_SAFE_NO_PAD_INDIFFERENT
            .decode(value)
            .ok()
            .filter(|d| d.len() == len)
            .ok_or_else(|| format!("{text:?} is not a {name} in urlsafe base64"))?;
        Ok(Hash { kind, digest })
    }
}

pub(super) enum Hasher {
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl Hasher {
    pub(super) fn new(kind: HashKind) -> Hasher {
        match kind {
            HashKind::Sha256 => Hasher::Sha256(Sha256::new()),
            HashKind::Sha384 => Hasher::Sha384(Sha384::new()),
            HashKind::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha384(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(super) fn finish(self) -> Hash {
        let (kind, digest) = match self {
            Hasher::Sha256(h) => (HashKind::Sha256, h.finalize().to_vec()),
            Hasher::Sha384(h) => (HashKind::Sha384, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashKind::Sha512, h.finalize().to_vec()),
        };
        Hash { kind, digest }
    }
}

/// A row of RECORD; the hash and size are empty for RECORD itself and its signatures.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) hash: Option<Hash>,
    pub(super) size: Option<u64>,
}

pub(super) fn parse_record(text: &str) -> Result<BTreeMap<String, Recorded>, String> {
    let mut record = BTreeMap::new();
    for (line, row) in csv_rows(text)? {
        let at = |problem: String| format!("line {line}: {problem}");
        let [path, hash, size] = row.as_slice() else {
            return Err(at(format!(
                "has {} fields, not 3 (path,hash,size)",
                row.len()
            )));
        };
        let hash = match hash.as_str() {
            "" => None,
            text => Some(Hash::parse(text).map_err(at)?),
        };
        let size = match size.as_str() {
            "" => None,
            text => Some(
                text.parse::<u64>()
                    .map_err(|_| at(format!("size {text:?} is not a number")))?,
            ),
        };
        record.insert(path.clone(), Recorded { hash, size });
    }
    Ok(record)
}

/// The rows of a CSV text as Python's csv module writes them (RECORD's format): a field in
/// double quotes may hold commas, newlines and doubled quotes. Each row with its first line.
pub(super) fn csv_rows(text: &str) -> Result<Vec<(usize, Vec<String>)>, String> {
    let mut rows = Vec::new();
    let (mut row, mut field) = (Vec::new(), String::new());
    let (mut quoted, mut was_quoted) = (false, false);
    let (mut line, mut row_line) = (1, 1);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                c => {
                    line += usize::from(c == '\n');
                    field.push(c);
                }
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !was_quoted => (quoted, was_quoted) = (true, true),
            ',' => {
                row.push(std::mem::take(&mut field));
                was_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                if !row.is_empty() || !field.is_empty() || was_quoted {
                    row.push(std::mem::take(&mut field));
                    rows.push((row_line, std::mem::take(&mut row)));
                }
                was_quoted = false;
                line += 1;
                row_line = line;
            }
            c => field.push(c),
        }
    }
    if quoted {
        return Err(format!("line {row_line}: a quoted field is never closed"));
    }
    if !row.is_empty() || !field.is_empty() || was_quoted {
        row.push(field);
        rows.push((row_line, row));
    }
    Ok(rows)
}

pub(super) fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

pub(super) fn mismatch(kind: HashKind) -> String {
    format!("does not match its {} in RECORD", kind.name())
}

/// A zip entry's bytes as they stream: exactly `left` of them (the size the tar header
/// promised), hashed; why reading failed is kept to tell a bad wheel from a failing disk.
pub(super) struct Checked<R> {
    pub(super) inner: R,
    pub(super) hasher: Option<Hasher>,
    pub(super) left: u64,
    pub(super) failure: Option<String>,
}

impl<R: Read> Read for Checked<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        if max == 0 {
            return Ok(0);
        }
        let n = match self.inner.read(&mut buf[..max]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                self.failure = Some(format!("cannot be read: {e}"));
                return Err(e);
            }
        };
        if n == 0 {
            let problem = format!(
                "ends {} bytes before the size its zip header says",
                self.left
            );
            self.failure = Some(problem.clone());
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, problem));
        }
        if let Some(hasher) = &mut self.hasher {
            hasher.update(&buf[..n]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::relative;
    use super::super::test_wheels::*;
    use super::super::{InstallError, Scheme};
    use super::*;
    use std::io::Write;

    #[test]
    fn a_file_that_does_not_match_record_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = dist("demo", "1.0", true);
        files.push(file("demo/__init__.py", b"honest = True\n", 0o644));
        let record = record_of(&files, "demo-1.0.dist-info");
        files[2].1 = b"honest = False\n".to_vec();
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            Some(record.clone()),
            |_| {},
        );
        let error = install(&dir.path().join("a"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(matches!(error, InstallError::Corrupt { .. }), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("demo-1.0-py3-none-any.whl") && message.contains("demo/__init__.py"),
            "{message}"
        );
        assert!(message.contains("tampered"), "{message}");

        // Same size, other bytes: caught by the hash as the file streams.
        files[2].1 = b"honest = Nope\n".to_vec();
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            Some(record),
            |_| {},
        );
        let error = install(&dir.path().join("b"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("does not match its sha256 in RECORD"),
            "{error}"
        );
        assert!(
            !dir.path()
                .join("b/layout/blobs/sha256")
                .read_dir()
                .unwrap()
                .any(|_| true),
            "no layer is stored"
        );

        // A file RECORD does not list.
        let files = dist("demo", "1.0", true);
        let w = write_wheel(
            dir.path(),
            "demo-1.0-py3-none-any.whl",
            &files,
            None,
            |zip| {
                zip.start_file("demo/extra.py", zip_options(0o644)).unwrap();
                zip.write_all(b"sneaked in\n").unwrap();
            },
        );
        let error = install(&dir.path().join("c"), &[w], &Scheme::debian("3.11")).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("demo/extra.py is not listed in RECORD"),
            "{error}"
        );
    }

    #[test]
    fn record_csv_reads_quotes_and_crlf() {
        let rows = csv_rows("a,b,c\r\n\"x, \"\"y\"\"\",,\n\n\"multi\nline\",1,2").unwrap();
        let rows: Vec<Vec<&str>> = rows
            .iter()
            .map(|(_, r)| r.iter().map(String::as_str).collect())
            .collect();
        assert_eq!(
            rows,
            [
                vec!["a", "b", "c"],
                vec!["x, \"y\"", "", ""],
                vec!["multi\nline", "1", "2"]
            ]
        );
        assert!(csv_rows("\"open,1,2\n").is_err());
        assert_eq!(
            relative(
                "usr/local/lib/python3.11/dist-packages",
                "usr/local/bin/f2py"
            ),
            "../../../bin/f2py"
        );
        assert_eq!(relative("a/b", "a/b/c/d.py"), "c/d.py");
        assert_eq!(relative("", "x/y"), "x/y");
    }
}
