//! `GET`/`HEAD`/`DELETE /v2/<name>/blobs/<digest>`: streamed from the file, `Range` by offset.
//!
//! The body goes out in 1 MiB pieces of the file mapped into memory (pages already in the
//! page cache, mapped on the blocking pool one piece ahead of the socket): the socket write
//! copies straight from the page cache, so no byte is copied through a buffer of ours — what
//! sendfile(2) does, which hyper cannot use since it writes only the buffers a body yields.
//! Blobs are immutable and only ever unlinked, never truncated, so a mapping cannot fault.

use super::errors::{ApiError, ApiResult, Code};
use super::{Call, Shared, blocking, respond};
use crate::oci::digest::parse_digest;
use crate::store::BlobRemoval;
use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode, header};
use std::sync::Arc;

/// The size of each read and of each buffer handed to hyper: large enough that the per-piece
/// costs (a blocking-pool hop, a syscall, a channel send) vanish, small enough that memory does
/// not matter.
const PIECE: usize = 1 << 20;
/// Pieces read ahead of the socket; memory per download is at most (AHEAD + 2) pieces.
const AHEAD: usize = 2;

pub(crate) fn check_digest(digest: &str) -> Result<(), ApiError> {
    parse_digest(digest)
        .map(|_| ())
        .map_err(|message| ApiError::new(Code::DigestInvalid, message))
}

pub(super) async fn get(state: &Shared, name: &str, digest: &str, call: Call) -> ApiResult {
    check_digest(digest)?;
    let unknown = || ApiError::new(Code::BlobUnknown, format!("blob {digest} is not in {name}"));
    let path = state
        .store
        .existing_repository(name)
        .and_then(|layout| layout.blob_path(digest).ok())
        .ok_or_else(unknown)?;
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(unknown()),
        Err(e) => return Err(ApiError::internal(format!("{}: {e}", path.display()))),
    };
    let size = file
        .metadata()
        .await
        .map_err(|e| ApiError::internal(format!("{}: {e}", path.display())))?
        .len();
    let mut headers = vec![
        ("Docker-Content-Digest", digest.to_string()),
        ("Content-Type", "application/octet-stream".to_string()),
        ("Accept-Ranges", "bytes".to_string()),
    ];
    let range = call
        .headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Range::Whole, |text| parse_range(text, size));
    let (status, start, length) = match range {
        Range::Whole => (StatusCode::OK, 0, size),
        Range::Part(start, end) => {
            headers.push(("Content-Range", format!("bytes {start}-{end}/{size}")));
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        Range::Unsatisfiable => {
            return Err(
                ApiError::new(Code::BlobUnknown, "the range cannot be satisfied")
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}")),
            );
        }
    };
    if call.method == Method::HEAD {
        return Ok(respond(status, &headers, Body::empty(), Some(length)));
    }
    let body = file_body(file.into_std().await, start, length);
    Ok(respond(status, &headers, body, Some(length)))
}

/// `length` bytes of `file` from `start`, read by a task that stays [`AHEAD`] pieces ahead of
/// the socket and stops when the client goes away.
fn file_body(file: std::fs::File, start: u64, length: u64) -> Body {
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(AHEAD);
    tokio::spawn(read_ahead(Arc::new(file), start, length, sender));
    let pieces = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|piece| (piece, receiver))
    });
    Body::from_stream(pieces)
}

async fn read_ahead(
    file: Arc<std::fs::File>,
    start: u64,
    length: u64,
    sender: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
) {
    let mut offset = start;
    let end = start + length;
    while offset < end {
        let len = PIECE.min((end - offset) as usize);
        let file = Arc::clone(&file);
        let piece = tokio::task::spawn_blocking(move || read_piece(&file, offset, len))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        let failed = piece.is_err();
        // A send fails when the client has gone: nothing more to read.
        if sender.send(piece).await.is_err() || failed {
            return;
        }
        offset += len as u64;
    }
}

/// Exactly `len` bytes at `offset`, mapped and faulted in; a file that ends sooner is an
/// error, so a body never comes out shorter than its `Content-Length` without the connection
/// failing.
fn read_piece(file: &std::fs::File, offset: u64, len: usize) -> std::io::Result<Bytes> {
    let size = file.metadata()?.len();
    if offset + len as u64 > size {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the blob is shorter than its size",
        ));
    }
    // SAFETY: pool blobs are written once (temporary file, verify, rename) and then only
    // unlinked, never modified or truncated, so the mapped bytes cannot change or vanish.
    // (memmap2 aligns the offset to a page itself.)
    let map = unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)?
    };
    Ok(Bytes::from_owner(map))
}

/// What a `Range` header asks of a blob of some size.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// No range we serve: a header that does not parse, another unit, or several ranges,
    /// which RFC 9110 lets a server ignore (a 200 with the whole blob).
    Whole,
    /// The inclusive range.
    Part(u64, u64),
    /// A well-formed single range that starts past the end: 416.
    Unsatisfiable,
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` within `size`.
fn parse_range(text: &str, size: u64) -> Range {
    let Some(spec) = text.trim().strip_prefix("bytes=").map(str::trim) else {
        return Range::Whole;
    };
    let Some((first, last)) = spec.split_once('-').filter(|_| !spec.contains(',')) else {
        return Range::Whole;
    };
    let number = |t: &str| t.trim().parse::<u64>().ok();
    match (first.trim().is_empty(), number(first), number(last)) {
        // `bytes=-n`: the last n bytes.
        (true, _, Some(suffix)) if suffix > 0 && size > 0 => {
            Range::Part(size.saturating_sub(suffix), size - 1)
        }
        (true, _, Some(_)) => Range::Unsatisfiable,
        (false, Some(start), end) => {
            let end = match (last.trim().is_empty(), end) {
                (true, _) => u64::MAX,
                (false, Some(end)) if end >= start => end,
                // `a-b` with b < a, or b not a number: not a valid range, ignored.
                _ => return Range::Whole,
            };
            if start >= size {
                Range::Unsatisfiable
            } else {
                Range::Part(start, end.min(size - 1))
            }
        }
        _ => Range::Whole,
    }
}

pub(super) async fn delete(state: &Shared, name: &str, digest: &str) -> ApiResult {
    check_digest(digest)?;
    let Some(layout) = state.store.existing_repository(name) else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("no repository {name}"),
        ));
    };
    let digest_owned = digest.to_string();
    match blocking(move || Ok(layout.delete_blob(&digest_owned)?)).await? {
        BlobRemoval::Removed => Ok(respond(StatusCode::ACCEPTED, &[], Body::empty(), Some(0))),
        BlobRemoval::Absent => Err(ApiError::new(
            Code::BlobUnknown,
            format!("blob {digest} is not in {name}"),
        )),
        // As distribution answers: a manifest is no blob of the blob API.
        BlobRemoval::IsManifest => Err(ApiError::new(
            Code::BlobUnknown,
            format!(
                "{digest} is a manifest of {name}, not a blob: delete it with DELETE /v2/{name}/manifests/{digest}"
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::{Range, parse_range};

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-0", 10), Range::Part(0, 0));
        assert_eq!(parse_range("bytes=2-", 10), Range::Part(2, 9));
        assert_eq!(parse_range("bytes=-3", 10), Range::Part(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), Range::Part(0, 9));
        assert_eq!(parse_range("bytes=5-100", 10), Range::Part(5, 9));
        assert_eq!(parse_range("bytes=10-", 10), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-0", 0), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Range::Unsatisfiable);
        // Not a range we can read: ignored (RFC 9110), the whole blob.
        assert_eq!(parse_range("bytes=3-2", 10), Range::Whole);
        assert_eq!(parse_range("bytes=0-1,3-4", 10), Range::Whole);
        assert_eq!(parse_range("items=0-1", 10), Range::Whole);
        assert_eq!(parse_range("garbage", 10), Range::Whole);
        assert_eq!(parse_range("bytes=x-", 10), Range::Whole);
    }
}
