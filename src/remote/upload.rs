//! One blob to the registry, and the manifest last.
//!
//! A blob: HEAD (skip what the registry has) → mount from a repository that holds it (a 202
//! answer opens an ordinary upload instead) → POST an upload session → one streamed PUT of the
//! whole file, or PATCH chunks when the registry asks for them (`OCI-Chunk-Min-Length`) or
//! refuses a monolithic upload. The newest `Location` is always the one followed; a chunked
//! upload interrupted mid-way asks the registry where it got to (`Range`) and goes on from
//! there. The file is streamed, never read into memory.

use super::{Answer, Fault, Registry, RemoteError, Watcher, error_detail};
use crate::image::{BlobOutcome, BlobReader, Source};
use crate::oci::Descriptor;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, HeaderMap, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use std::io::Read;
use std::time::Duration;

pub const MANIFEST_LIMIT: u64 = 4 << 20;
/// The chunk size when the registry asks for chunks without saying how large.
const DEFAULT_CHUNK: u64 = 16 << 20;

/// An upload session: where to send next, and how many bytes the registry has.
#[derive(Debug, Clone)]
struct Session {
    location: Url,
    offset: u64,
    /// The last request failed mid-way: ask the registry for the offset before going on.
    uncertain: bool,
}

pub(super) fn push_blob(
    registry: &Registry,
    source: &dyn Source,
    repository: &str,
    blob: &Descriptor,
    sources: &[String],
    progress: &Watcher,
) -> Result<BlobOutcome, RemoteError> {
    let size = source.blob_size(&blob.digest)?;
    if size != blob.size {
        return Err(RemoteError::Protocol(format!(
            "{} {}: the manifest says {} bytes, the blob has {size}",
            source.name(),
            blob.digest,
            blob.size
        )));
    }
    progress.blob_started(&blob.digest, size);
    let what = format!("blob {}", short(&blob.digest));
    let mut state = BlobState {
        registry,
        repository,
        digest: &blob.digest,
        size,
        source,
        scopes: vec![format!("repository:{repository}:pull,push")],
        progress,
        chunk: None,
        session: None,
        mount_tried: false,
    };
    registry.retrying(&what, progress.as_ref(), |_| state.attempt(sources))
}

struct BlobState<'a> {
    registry: &'a Registry,
    repository: &'a str,
    digest: &'a str,
    size: u64,
    source: &'a dyn Source,
    scopes: Vec<String>,
    progress: &'a Watcher,
    /// Chunk size once the upload is chunked.
    chunk: Option<u64>,
    session: Option<Session>,
    mount_tried: bool,
}

impl BlobState<'_> {
    fn attempt(&mut self, sources: &[String]) -> Result<BlobOutcome, Fault> {
        if self.exists()? {
            return Ok(BlobOutcome::Existed);
        }
        if !self.mount_tried {
            self.mount_tried = true;
            let repository = self.repository;
            for from in sources.iter().filter(|r| *r != repository).take(3) {
                if let Some(outcome) = self.mount(from)? {
                    return Ok(outcome);
                }
                if self.session.is_some() {
                    break;
                }
            }
        }
        loop {
            if self.session.is_none() {
                self.start()?;
            }
            if self.chunk.is_some() {
                return self.chunked();
            }
            match self.monolithic()? {
                Some(outcome) => return Ok(outcome),
                // Refused as one piece: send it in chunks, in a new session.
                None => {
                    self.chunk = Some(DEFAULT_CHUNK);
                    self.session = None;
                }
            }
        }
    }

    fn blob_url(&self) -> Result<Url, RemoteError> {
        self.registry
            .url(&format!("v2/{}/blobs/{}", self.repository, self.digest))
    }

    fn exists(&self) -> Result<bool, Fault> {
        let url = self.blob_url()?;
        let response = self.registry.send(
            &format!("HEAD blob {}", short(self.digest)),
            &self.scopes,
            &|http| Ok(http.head(url.clone()).timeout(Duration::from_secs(60))),
        )?;
        match response.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            other => Err(self.unexpected("HEAD", other, response)),
        }
    }

    /// Some(Mounted), or None (the registry opened an ordinary upload, or cannot mount).
    fn mount(&mut self, from: &str) -> Result<Option<BlobOutcome>, Fault> {
        let mut url = self
            .registry
            .url(&format!("v2/{}/blobs/uploads/", self.repository))?;
        url.query_pairs_mut()
            .append_pair("mount", self.digest)
            .append_pair("from", from);
        let mut scopes = self.scopes.clone();
        scopes.push(format!("repository:{from}:pull"));
        let response = self.registry.send(
            &format!("mount blob {} from {from}", short(self.digest)),
            &scopes,
            &|http| {
                Ok(http
                    .post(url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(Duration::from_secs(60)))
            },
        )?;
        match response.status() {
            StatusCode::CREATED => Ok(Some(BlobOutcome::Mounted)),
            StatusCode::ACCEPTED => {
                self.open_session(&url, response.headers())?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// POST: a new upload session.
    fn start(&mut self) -> Result<(), Fault> {
        let url = self
            .registry
            .url(&format!("v2/{}/blobs/uploads/", self.repository))?;
        let response = self.registry.send(
            &format!("start upload of {}", short(self.digest)),
            &self.scopes,
            &|http| {
                Ok(http
                    .post(url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(Duration::from_secs(60)))
            },
        )?;
        match response.status() {
            StatusCode::ACCEPTED => self.open_session(&url, response.headers()),
            other => Err(self.unexpected("POST upload", other, response)),
        }
    }

    fn open_session(&mut self, from: &Url, headers: &HeaderMap) -> Result<(), Fault> {
        let location = location(from, headers)?;
        if let Some(min) = headers
            .get("OCI-Chunk-Min-Length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            self.chunk = Some(min.max(1).max(self.chunk.unwrap_or(0)));
        }
        self.session = Some(Session {
            location,
            offset: 0,
            uncertain: false,
        });
        Ok(())
    }

    /// One PUT with the whole file. None when the registry refuses a monolithic upload.
    fn monolithic(&mut self) -> Result<Option<BlobOutcome>, Fault> {
        let Some(session) = self.session.take() else {
            return Err(Fault::Fatal(RemoteError::Protocol(
                "no upload session".into(),
            )));
        };
        let url = with_digest(&session.location, self.digest);
        let (source, size, digest) = (self.source, self.size, self.digest.to_string());
        let progress = self.progress.clone();
        let response = self.registry.send_streamed(
            &format!("upload blob {}", short(self.digest)),
            &self.scopes,
            &|http| {
                let body = BlobBody::open(source, 0, size, &digest, progress.clone())?;
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .header(CONTENT_LENGTH, size)
                    .timeout(transfer_timeout(size))
                    .body(body.into_stream()))
            },
        )?;
        match response.status() {
            StatusCode::CREATED => {
                self.progress.blob_position(self.digest, self.size);
                Ok(Some(BlobOutcome::Uploaded))
            }
            StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::METHOD_NOT_ALLOWED
            | StatusCode::LENGTH_REQUIRED
            | StatusCode::NOT_IMPLEMENTED => Ok(None),
            // The session went stale (e.g. the registry restarted): a new one next time.
            StatusCode::NOT_FOUND => Err(Fault::Transient {
                message: format!(
                    "upload blob {}: the upload session was lost{}",
                    short(self.digest),
                    response.detail()
                ),
                retry_after: None,
            }),
            other => Err(self.unexpected("PUT blob", other, response)),
        }
    }

    /// PATCH chunks from the registry's offset, then PUT `?digest=` to close.
    fn chunked(&mut self) -> Result<BlobOutcome, Fault> {
        let chunk = self.chunk.unwrap_or(DEFAULT_CHUNK).max(1);
        loop {
            let Some(mut session) = self.session.clone() else {
                return Err(Fault::Fatal(RemoteError::Protocol(
                    "no upload session".into(),
                )));
            };
            if session.uncertain {
                match self.status(&session)? {
                    Some(resumed) => {
                        session = resumed;
                        self.session = Some(session.clone());
                    }
                    None => {
                        // The registry forgot the session: start again from nothing.
                        self.session = None;
                        return Err(Fault::Transient {
                            message: format!(
                                "upload blob {}: the registry lost the upload session",
                                short(self.digest)
                            ),
                            retry_after: None,
                        });
                    }
                }
            }
            if session.offset >= self.size {
                return self.close(&session);
            }
            let start = session.offset;
            let len = chunk.min(self.size - start);
            let (source, digest) = (self.source, self.digest.to_string());
            let progress = self.progress.clone();
            let url = session.location.clone();
            let result = self.registry.send_streamed(
                &format!("upload chunk of {}", short(self.digest)),
                &self.scopes,
                &|http| {
                    let body = BlobBody::open(source, start, len, &digest, progress.clone())?;
                    Ok(http
                        .patch(url.clone())
                        .header(CONTENT_TYPE, "application/octet-stream")
                        .header(CONTENT_LENGTH, len)
                        .header(CONTENT_RANGE, format!("{start}-{}", start + len - 1))
                        .timeout(transfer_timeout(len))
                        .body(body.into_stream()))
                },
            );
            let response = match result {
                Ok(response) => response,
                Err(fault) => {
                    if let Some(s) = self.session.as_mut() {
                        s.uncertain = true;
                    }
                    return Err(fault);
                }
            };
            match response.status() {
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT | StatusCode::CREATED => {
                    let location = location(&session.location, response.headers())?;
                    let offset = range_end(response.headers()).unwrap_or(start + len);
                    self.session = Some(Session {
                        location,
                        offset,
                        uncertain: false,
                    });
                    self.progress.blob_position(self.digest, offset);
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // We and the registry disagree on the offset: start the blob over.
                    self.session = None;
                    return Err(Fault::Transient {
                        message: format!(
                            "upload chunk of {}: the registry refused the range {start}-{}",
                            short(self.digest),
                            start + len - 1
                        ),
                        retry_after: None,
                    });
                }
                StatusCode::NOT_FOUND => {
                    self.session = None;
                    return Err(Fault::Transient {
                        message: format!(
                            "upload chunk of {}: the upload session was lost{}",
                            short(self.digest),
                            response.detail()
                        ),
                        retry_after: None,
                    });
                }
                other => return Err(self.unexpected("PATCH blob", other, response)),
            }
        }
    }

    /// GET the session: where the registry got to. None when it no longer knows the session.
    fn status(&self, session: &Session) -> Result<Option<Session>, Fault> {
        let url = session.location.clone();
        let response = self.registry.send(
            &format!("upload status of {}", short(self.digest)),
            &self.scopes,
            &|http| Ok(http.get(url.clone()).timeout(Duration::from_secs(60))),
        )?;
        match response.status() {
            StatusCode::NO_CONTENT | StatusCode::OK | StatusCode::ACCEPTED => {
                let location = location(&session.location, response.headers())?;
                Ok(Some(Session {
                    location,
                    offset: range_end(response.headers()).unwrap_or(0),
                    uncertain: false,
                }))
            }
            StatusCode::NOT_FOUND => Ok(None),
            other => Err(self.unexpected("GET upload status", other, response)),
        }
    }

    fn close(&mut self, session: &Session) -> Result<BlobOutcome, Fault> {
        let url = with_digest(&session.location, self.digest);
        let response = self.registry.send(
            &format!("finish upload of {}", short(self.digest)),
            &self.scopes,
            &|http| {
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(Duration::from_secs(120)))
            },
        );
        let response = match response {
            Ok(r) => r,
            Err(fault) => {
                if let Some(s) = self.session.as_mut() {
                    s.uncertain = true;
                }
                return Err(fault);
            }
        };
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => {
                self.session = None;
                Ok(BlobOutcome::Uploaded)
            }
            // The session was lost, or what the registry assembled after a resume is not
            // the blob: send it again from the start.
            StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST => {
                self.session = None;
                Err(Fault::Transient {
                    message: format!(
                        "finish upload of {}: HTTP {}{}",
                        short(self.digest),
                        response.status(),
                        error_detail(response)
                    ),
                    retry_after: None,
                })
            }
            other => Err(self.unexpected("PUT blob", other, response)),
        }
    }

    fn unexpected(&self, what: &str, status: StatusCode, response: impl Answer) -> Fault {
        Fault::Fatal(RemoteError::Status {
            what: format!("{what} {} to {}", short(self.digest), self.repository),
            registry: self.registry.target.authority.clone(),
            status: status.as_u16(),
            detail: response.detail(),
        })
    }
}

/// PUT the manifest; returns the digest the registry confirmed (it must be ours).
pub(super) fn put_manifest(
    registry: &Registry,
    repository: &str,
    tag: &str,
    bytes: &[u8],
    media_type: &str,
    digest: &str,
    progress: &Watcher,
) -> Result<String, RemoteError> {
    let url = registry.url(&format!("v2/{repository}/manifests/{tag}"))?;
    let scopes = vec![format!("repository:{repository}:pull,push")];
    let what = format!("manifest {repository}:{tag}");
    registry.retrying(&what, progress.as_ref(), |_| {
        let response = registry.send(&what, &scopes, &|http| {
            Ok(http
                .put(url.clone())
                .header(CONTENT_TYPE, media_type)
                .timeout(Duration::from_secs(120))
                .body(bytes.to_vec()))
        })?;
        let status = response.status();
        if status != StatusCode::CREATED && status != StatusCode::OK {
            let detail = error_detail(response);
            // CNCF distribution on a filesystem rewrites a blob's link in place when a second
            // client finishes the same blob: a manifest checked meanwhile reads the link empty
            // and is refused though every blob is there. The next try finds the link whole.
            if status == StatusCode::BAD_REQUEST && detail.contains("MANIFEST_BLOB_UNKNOWN") {
                return Err(Fault::Transient {
                    message: format!("PUT {what}: HTTP 400{detail}"),
                    retry_after: None,
                });
            }
            return Err(Fault::Fatal(RemoteError::Status {
                what: format!("PUT {what}"),
                registry: registry.target.authority.clone(),
                status: status.as_u16(),
                detail,
            }));
        }
        let confirmed = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| digest.to_string());
        if confirmed != digest {
            return Err(Fault::Fatal(RemoteError::Protocol(format!(
                "{what}: the registry stored the manifest as {confirmed}, not {digest}"
            ))));
        }
        Ok(confirmed)
    })
}

/// `Location` resolved against the URL it answered (it may be relative).
pub(super) fn location(from: &Url, headers: &HeaderMap) -> Result<Url, Fault> {
    let text = headers
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            Fault::Fatal(RemoteError::Protocol(
                "the registry opened an upload without a Location".into(),
            ))
        })?;
    from.join(text).map_err(|e| {
        Fault::Fatal(RemoteError::Protocol(format!(
            "the registry's Location '{text}' is not a URL: {e}"
        )))
    })
}

/// `Range: 0-N` → N+1, the bytes the registry has. CNCF distribution answers `0-0` for an
/// empty upload as well as for one byte: taken as 0, since sending a byte again is harmless
/// where skipping one is not.
pub(super) fn range_end(headers: &HeaderMap) -> Option<u64> {
    let text = headers.get(RANGE)?.to_str().ok()?;
    let text = text.trim().trim_start_matches("bytes=");
    let (_, end) = text.split_once('-')?;
    match end.trim().parse::<u64>().ok()? {
        0 => Some(0),
        end => Some(end + 1),
    }
}

pub(super) fn with_digest(location: &Url, digest: &str) -> Url {
    let mut url = location.clone();
    url.query_pairs_mut().append_pair("digest", digest);
    url
}

/// Generous: a request is cut only when it stalls far below any usable rate (256 KiB/s).
fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(120 + bytes / (256 * 1024))
}

pub(super) fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

/// A range of a blob as a request body, reporting how far it got.
struct BlobBody {
    file: std::io::Take<BlobReader>,
    position: u64,
    digest: String,
    progress: Watcher,
}

impl BlobBody {
    fn open(
        source: &dyn Source,
        start: u64,
        len: u64,
        digest: &str,
        progress: Watcher,
    ) -> Result<BlobBody, RemoteError> {
        let reader = source.blob(digest, start)?;
        progress.blob_position(digest, start);
        Ok(BlobBody {
            file: reader.take(len),
            position: start,
            digest: digest.to_string(),
            progress,
        })
    }
}

/// The pieces a blob's body is sent in (the buffers handed to the socket).
const PIECE: usize = 1 << 20;

impl BlobBody {
    /// The body as a stream of pieces of up to `PIECE` bytes, read when the connection asks
    /// for the next (on the uploading thread: see `Streamer`). Never more than a piece or two
    /// in memory.
    fn into_stream(mut self) -> reqwest::Body {
        let pieces = futures_util::stream::poll_fn(move |_| {
            let left = self.file.limit().min(PIECE as u64) as usize;
            if left == 0 {
                return std::task::Poll::Ready(None);
            }
            let mut piece = vec![0u8; left];
            let mut filled = 0;
            while filled < left {
                match self.read(&mut piece[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return std::task::Poll::Ready(Some(Err(e))),
                }
            }
            if filled == 0 {
                return std::task::Poll::Ready(None);
            }
            piece.truncate(filled);
            std::task::Poll::Ready(Some(Ok(piece)))
        });
        reqwest::Body::wrap_stream(pieces)
    }
}

impl Read for BlobBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        self.position += n as u64;
        self.progress.blob_position(&self.digest, self.position);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_locations() {
        let mut headers = HeaderMap::new();
        headers.insert(RANGE, "0-1023".parse().unwrap());
        assert_eq!(range_end(&headers), Some(1024));
        headers.insert(RANGE, "0-0".parse().unwrap());
        assert_eq!(range_end(&headers), Some(0));
        headers.insert(LOCATION, "/v2/a/blobs/uploads/u?_state=x".parse().unwrap());
        let from = Url::parse("http://127.0.0.1:5000/v2/a/blobs/uploads/").unwrap();
        let to = location(&from, &headers).unwrap();
        assert_eq!(
            to.as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x"
        );
        assert_eq!(
            with_digest(&to, "sha256:ab").as_str(),
            "http://127.0.0.1:5000/v2/a/blobs/uploads/u?_state=x&digest=sha256%3Aab"
        );
    }
}
