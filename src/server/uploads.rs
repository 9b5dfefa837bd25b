//! Blob uploads: `POST /v2/<name>/blobs/uploads/` (a session, a monolithic `?digest=` push,
//! or a `?mount=&from=` mount), then `PATCH` chunks (in order: 416 otherwise), `GET` status,
//! `PUT ?digest=` to complete (with or without a last chunk), `DELETE` to cancel.
//!
//! Bytes are streamed to the session's file while hashed (sha256); a sha512 digest, or a
//! session whose running hash was lost with a restart, is checked by reading the file again.

use super::blobs::check_digest;
use super::errors::{ApiError, ApiResult, Code};
use super::{Call, Shared, blocking, respond};
use crate::http::query_value;
use crate::image::{Sink, Source};
use crate::oci::digest::{Algorithm, Hasher};
use crate::oci::{Descriptor, MEDIA_BLOB};
use crate::store::uploads::FinishError;
use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use futures_util::StreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

/// The running sha256 of a session's bytes, valid when it covers all of them.
pub(crate) struct Progress {
    hasher: Hasher,
    hashed: u64,
}

impl Progress {
    pub(crate) fn new() -> Progress {
        Progress {
            hasher: Hasher::new(Algorithm::Sha256),
            hashed: 0,
        }
    }
}

fn location(name: &str, id: &str) -> String {
    format!("/v2/{name}/blobs/uploads/{id}")
}

fn session_headers(name: &str, id: &str, size: u64) -> Vec<(&'static str, String)> {
    vec![
        ("Location", location(name, id)),
        ("Range", format!("0-{}", size.saturating_sub(1))),
        ("Docker-Upload-UUID", id.to_string()),
    ]
}

fn unknown(id: &str) -> ApiError {
    ApiError::new(Code::BlobUploadUnknown, format!("no upload {id}"))
}

fn session(state: &Shared, id: &str) -> Arc<tokio::sync::Mutex<Progress>> {
    // Unknown here (the server restarted): the hash no longer covers the bytes.
    state.sessions.get_or_insert(id, || Progress {
        hasher: Hasher::new(Algorithm::Sha256),
        hashed: u64::MAX,
    })
}

fn forget(state: &Shared, id: &str) {
    state.sessions.forget(id);
}

/// The session's data file, when `id` is a live session of `name`.
async fn open_session(state: &Shared, name: &str, id: &str) -> Result<(PathBuf, u64), ApiError> {
    let uploads = state.store.uploads();
    let id_owned = id.to_string();
    let found = blocking(move || {
        let Some(upload) = uploads.state(&id_owned)? else {
            return Ok(None);
        };
        let path = uploads.data_path(&id_owned);
        let size = uploads.size(&id_owned)?;
        Ok(path.map(|p| (upload.repository, p, size)))
    })
    .await?;
    match found {
        Some((repository, path, size)) if repository == name => Ok((path, size)),
        _ => Err(unknown(id)),
    }
}

pub(super) async fn start(state: &Shared, name: &str, call: Call) -> ApiResult {
    if let Some(digest) = query_value(&call.query, "mount") {
        check_digest(digest)?;
        let from = query_value(&call.query, "from").map(str::to_string);
        if mount(state, name, digest, from).await? {
            return Ok(created(name, digest));
        }
    }
    // The repository is created when a blob lands in it, not for a session that may never
    // complete: no empty repository is left by a cancelled or refused upload.
    let uploads = state.store.uploads();
    let name_owned = name.to_string();
    let id = blocking(move || Ok(uploads.create(&name_owned)?)).await?;
    state.sessions.get_or_insert(&id, Progress::new);
    let Some(digest) = query_value(&call.query, "digest").map(str::to_string) else {
        return Ok(respond(
            StatusCode::ACCEPTED,
            &session_headers(name, &id, 0),
            Body::empty(),
            Some(0),
        ));
    };
    // A monolithic upload: the whole blob in this request.
    if let Err(e) = check_digest(&digest) {
        cancel_quietly(state, &id).await;
        return Err(e);
    }
    let result = receive_and_finish(state, name, &id, &digest, call).await;
    if result.is_err() {
        cancel_quietly(state, &id).await;
    }
    result
}

/// Mounts `digest` into `name`, from `from`, or (no `from`, as the spec allows) from any
/// repository of the store that holds it; whether it is there now. When it is not, the
/// caller falls back to an upload session, as the spec wants.
async fn mount(
    state: &Shared,
    name: &str,
    digest: &str,
    from: Option<String>,
) -> Result<bool, ApiError> {
    let (store, name_owned, digest_owned) =
        (state.store.clone(), name.to_string(), digest.to_string());
    blocking(move || {
        let Some(from) = from else {
            // Created only for a blob that exists somewhere: a miss leaves no empty layout.
            if !store.pool_holds(&digest_owned) {
                return Ok(false);
            }
            let target = store.repository(&name_owned)?;
            return Ok(target.has_or_link_held_elsewhere(&digest_owned));
        };
        let Some(source) = store.existing_repository(&from) else {
            return Ok(false);
        };
        let Ok(size) = source.blob_size(&digest_owned) else {
            return Ok(false);
        };
        let target = store.repository(&name_owned)?;
        let blob = Descriptor::new(MEDIA_BLOB, digest_owned.clone(), size);
        Ok(Sink::put_blob(&target, &blob, &source).is_ok())
    })
    .await
}

async fn cancel_quietly(state: &Shared, id: &str) {
    forget(state, id);
    let uploads = state.store.uploads();
    let id = id.to_string();
    let _ = tokio::task::spawn_blocking(move || uploads.remove(&id)).await;
}

fn created(name: &str, digest: &str) -> axum::response::Response {
    respond(
        StatusCode::CREATED,
        &[
            ("Location", format!("/v2/{name}/blobs/{digest}")),
            ("Docker-Content-Digest", digest.to_string()),
        ],
        Body::empty(),
        Some(0),
    )
}

pub(super) async fn status(state: &Shared, name: &str, id: &str) -> ApiResult {
    let (_, size) = open_session(state, name, id).await?;
    Ok(respond(
        StatusCode::NO_CONTENT,
        &session_headers(name, id, size),
        Body::empty(),
        None,
    ))
}

pub(super) async fn patch(state: &Shared, name: &str, id: &str, call: Call) -> ApiResult {
    let (path, _) = open_session(state, name, id).await?;
    let progress = session(state, id);
    let mut progress = progress.lock().await;
    let size = append(&path, &mut progress, name, id, call.headers, call.body).await?;
    Ok(respond(
        StatusCode::ACCEPTED,
        &session_headers(name, id, size),
        Body::empty(),
        Some(0),
    ))
}

pub(super) async fn finish(state: &Shared, name: &str, id: &str, call: Call) -> ApiResult {
    let Some(digest) = query_value(&call.query, "digest").map(str::to_string) else {
        return Err(ApiError::new(
            Code::DigestInvalid,
            "the digest parameter is required",
        ));
    };
    check_digest(&digest)?;
    open_session(state, name, id).await?;
    receive_and_finish(state, name, id, &digest, call).await
}

/// Appends the request's body (if any) to the session, then completes it as `digest`.
async fn receive_and_finish(
    state: &Shared,
    name: &str,
    id: &str,
    digest: &str,
    call: Call,
) -> ApiResult {
    let (path, _) = open_session(state, name, id).await?;
    let progress = session(state, id);
    let mut progress = progress.lock().await;
    append(&path, &mut progress, name, id, call.headers, call.body).await?;
    let hasher = std::mem::replace(&mut progress.hasher, Hasher::new(Algorithm::Sha256));
    let known = Some((hasher.finish(), progress.hashed));
    progress.hashed = u64::MAX;
    let (store, name_owned, id_owned, digest_owned) = (
        state.store.clone(),
        name.to_string(),
        id.to_string(),
        digest.to_string(),
    );
    let result = blocking(move || {
        let layout = || store.repository(&name_owned);
        match store
            .uploads()
            .finish(&id_owned, layout, &digest_owned, known)
        {
            Ok(size) => Ok(Ok(size)),
            Err(FinishError::Mismatch { expected, actual }) => Ok(Err(ApiError::new(
                Code::DigestInvalid,
                format!("the uploaded content's digest is {actual}, not {expected}"),
            ))),
            Err(FinishError::Store(e)) => Err(e.into()),
        }
    })
    .await;
    forget(state, id);
    result??;
    Ok(created(name, digest))
}

/// `Content-Range: <start>-<end>` (also `bytes <start>-<end>[/<total>]`).
fn content_range(headers: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(value) = headers.get(header::CONTENT_RANGE) else {
        return Ok(None);
    };
    let invalid = || ApiError::new(Code::BlobUploadInvalid, "malformed Content-Range");
    let text = value.to_str().map_err(|_| invalid())?.trim();
    let text = text
        .strip_prefix("bytes")
        .map_or(text, |t| t.trim_start_matches([' ', '=']));
    let text = text.split('/').next().unwrap_or(text);
    let (start, end) = text.split_once('-').ok_or_else(invalid)?;
    let start: u64 = start.trim().parse().map_err(|_| invalid())?;
    let end: u64 = end.trim().parse().map_err(|_| invalid())?;
    if end < start {
        return Err(invalid());
    }
    Ok(Some((start, end)))
}

/// Streams `body` to the end of the session's file while hashing it; on any failure the
/// file and the hash go back to where they were. Returns the new size.
async fn append(
    path: &std::path::Path,
    progress: &mut Progress,
    name: &str,
    id: &str,
    headers: HeaderMap,
    body: Body,
) -> Result<u64, ApiError> {
    let io = |e: std::io::Error| ApiError::internal(format!("{}: {e}", path.display()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .await
        .map_err(|_| unknown(id))?;
    let start = file.metadata().await.map_err(io)?.len();
    let range = content_range(&headers)?;
    if let Some((first, _)) = range
        && first != start
    {
        return Err(ApiError::new(
            Code::BlobUploadInvalid,
            format!("the chunk starts at {first}, but the upload holds {start} bytes"),
        )
        .status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::LOCATION, location(name, id))
        .header(header::RANGE, format!("0-{}", start.saturating_sub(1))));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let expected = range.map(|(first, last)| last - first + 1).or(declared);
    if let (Some((first, last)), Some(declared)) = (range, declared)
        && declared != last - first + 1
    {
        return Err(ApiError::new(
            Code::SizeInvalid,
            format!("Content-Range {first}-{last} does not match Content-Length {declared}"),
        )
        .status(StatusCode::RANGE_NOT_SATISFIABLE)
        .header(header::LOCATION, location(name, id))
        .header(header::RANGE, format!("0-{}", start.saturating_sub(1))));
    }
    let saved = progress.hasher.clone();
    let valid = progress.hashed == start;
    file.seek(std::io::SeekFrom::Start(start))
        .await
        .map_err(io)?;
    let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut written = 0u64;
    let mut writeback = crate::store::writeback::Writeback::default();
    let mut stream = body.into_data_stream();
    let outcome: Result<(), ApiError> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    Code::BlobUploadInvalid,
                    format!("the request body broke off: {e}"),
                )
            })?;
            writer.write_all(&chunk).await.map_err(io)?;
            writeback.wrote(writer.get_ref(), chunk.len());
            if valid {
                progress.hasher.update(&chunk);
            }
            written += chunk.len() as u64;
        }
        writer.flush().await.map_err(io)?;
        if let Some(expected) = expected
            && expected != written
        {
            return Err(ApiError::new(
                Code::SizeInvalid,
                format!("expected {expected} bytes, received {written}"),
            ));
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => {
            progress.hashed = if valid { start + written } else { u64::MAX };
            Ok(start + written)
        }
        Err(error) => {
            progress.hasher = saved;
            let file = writer.into_inner();
            file.set_len(start).await.map_err(io)?;
            Err(error)
        }
    }
}

pub(super) async fn cancel(state: &Shared, name: &str, id: &str) -> ApiResult {
    open_session(state, name, id).await?;
    let progress = session(state, id);
    let _held = progress.lock().await;
    let uploads = state.store.uploads();
    let id_owned = id.to_string();
    let removed = blocking(move || Ok(uploads.remove(&id_owned)?)).await?;
    forget(state, id);
    if !removed {
        return Err(unknown(id));
    }
    Ok(respond(StatusCode::NO_CONTENT, &[], Body::empty(), None))
}
