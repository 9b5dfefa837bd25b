//! Content digests, computed while bytes pass through a writer or a reader.

use sha2::{Digest as _, Sha256, Sha512};
use std::io::{self, Read, Write};

/// `sha256:<64 hex>`.
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Whether `digest` is a well-formed `sha256:<64 lowercase hex>`; anything else must never
/// become a file name.
pub fn is_sha256(digest: &str) -> bool {
    digest.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// The digest algorithms the store accepts (the distribution spec's registered ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// The algorithm of a well-formed `sha256:<64 hex>` or `sha512:<128 hex>` (lowercase); anything
/// else is refused with the reason, and must never become a file name.
pub fn parse_digest(digest: &str) -> Result<(Algorithm, &str), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("'{digest}' is not a digest (algorithm:hex)"))?;
    let algorithm = match algorithm {
        "sha256" => Algorithm::Sha256,
        "sha512" => Algorithm::Sha512,
        other => return Err(format!("digest algorithm '{other}' is not supported")),
    };
    if hex.len() != algorithm.hex_len()
        || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "'{digest}' is not a {} digest ({} lowercase hex digits)",
            algorithm.name(),
            algorithm.hex_len()
        ));
    }
    Ok((algorithm, hex))
}

/// `algorithm:<hex>` of `bytes`.
pub fn digest_of(algorithm: Algorithm, bytes: &[u8]) -> String {
    let mut hasher = Hasher::new(algorithm);
    hasher.update(bytes);
    hasher.finish()
}

/// A hasher of either supported algorithm.
#[derive(Clone)]
pub enum Hasher {
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// The digest of everything `reader` yields, read in fixed-size pieces.
pub fn digest_reader(algorithm: Algorithm, mut reader: impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Hasher::new(algorithm);
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher.finish(), total))
}

/// Hashes and counts what is written through it, so a blob's digest and size come from the
/// same pass that stores or sends it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The inner writer, the digest and the byte count of everything written.
    pub fn finish(self) -> (W, String, u64) {
        let digest = format!("sha256:{}", hex::encode(self.hasher.finalize()));
        (self.inner, digest, self.written)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hashes and counts what is read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.read,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writer_and_reader_agree_with_the_one_shot_digest() {
        let data = b"hello mlambda";
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(data).unwrap();
        let (out, digest, size) = w.finish();
        assert_eq!(out, data);
        assert_eq!(size, data.len() as u64);
        assert_eq!(digest, sha256_of(data));
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().0, digest);
        assert!(is_sha256(&digest));
        assert!(!is_sha256("sha256:../../etc"));
    }

    #[test]
    fn digests_of_both_algorithms_parse_and_bad_ones_do_not() {
        let d256 = digest_of(Algorithm::Sha256, b"x");
        let d512 = digest_of(Algorithm::Sha512, b"x");
        assert_eq!(d256, sha256_of(b"x"));
        assert_eq!(parse_digest(&d256).unwrap().0, Algorithm::Sha256);
        assert_eq!(parse_digest(&d512).unwrap().0, Algorithm::Sha512);
        assert_eq!(d512.len(), "sha512:".len() + 128);
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:ABC",
            "md5:00",
            "sha256",
            "",
            &d256[..d256.len() - 1],
            &d256.to_uppercase(),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
        let (again, size) = digest_reader(Algorithm::Sha512, &b"x"[..]).unwrap();
        assert_eq!((again, size), (d512, 1));
    }
}
