//! `GET`/`HEAD`/`PUT`/`DELETE /v2/<name>/manifests/<reference>` and the referrers API.

use super::blobs::check_digest;
use super::errors::{ApiError, ApiResult, Code};
use super::{Call, Shared, blocking, respond};
use crate::oci::{Index, MEDIA_INDEX};
use crate::store::manifests::{check_media_type, digest_like, manifest_facts};
use crate::store::{MANIFEST_LIMIT, Reference, StoreError, is_tag};
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use futures_util::StreamExt;

/// How much of a too-large manifest is read and dropped before answering 413.
const DRAIN_LIMIT: u64 = 16 << 20;

fn reference(text: &str) -> Result<Reference<'_>, ApiError> {
    Reference::parse(text).map_err(|(digest_like, message)| {
        ApiError::new(
            if digest_like {
                Code::DigestInvalid
            } else {
                Code::ManifestInvalid
            },
            message,
        )
    })
}

/// A reference to look up: a name that can be no tag names no manifest, so it is unknown
/// (404, as the spec has it for a manifest not found), while a malformed digest stays 400.
fn lookup_reference(name: &str, text: &str) -> Result<(), ApiError> {
    match Reference::parse(text) {
        Ok(_) => Ok(()),
        Err((true, message)) => Err(ApiError::new(Code::DigestInvalid, message)),
        Err((false, _)) => Err(ApiError::new(
            Code::ManifestUnknown,
            format!("no manifest {text} in {name}"),
        )),
    }
}

pub(super) async fn get(state: &Shared, name: &str, text: &str, call: Call) -> ApiResult {
    lookup_reference(name, text)?;
    let Some(layout) = state.store.existing_repository(name) else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("no repository {name}"),
        ));
    };
    let owned = text.to_string();
    let found = blocking(move || {
        let reference = Reference::parse(&owned).map_err(|(_, m)| ApiError::internal(m))?;
        Ok(layout.manifest(reference)?)
    })
    .await?;
    let Some((descriptor, bytes)) = found else {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!("no manifest {text} in {name}"),
        ));
    };
    let headers = [
        ("Content-Type", descriptor.media_type.clone()),
        ("Docker-Content-Digest", descriptor.digest.clone()),
    ];
    let length = bytes.len() as u64;
    let body = if call.method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    Ok(respond(StatusCode::OK, &headers, body, Some(length)))
}

pub(super) async fn put(state: &Shared, name: &str, text: &str, call: Call) -> ApiResult {
    let parsed = reference(text)?;
    let mut tags: Vec<String> = match parsed {
        Reference::Tag(tag) => vec![tag.to_string()],
        Reference::Digest(_) => Vec::new(),
    };
    // The tags given as `tag` query parameters, each answered with an `OCI-Tag` header
    // once the manifest is stored: that header is how a client learns that the registry
    // applied them (it may not support the parameter and ignore it otherwise).
    let mut tag_params: Vec<String> = Vec::new();
    for (key, value) in &call.query {
        if key == "tag" {
            if !is_tag(value) {
                return Err(ApiError::new(
                    Code::ManifestInvalid,
                    format!("'{value}' is not a valid tag"),
                ));
            }
            if !tags.contains(value) {
                tags.push(value.clone());
            }
            if !tag_params.contains(value) {
                tag_params.push(value.clone());
            }
        }
    }
    let too_large = || {
        ApiError::new(
            Code::SizeInvalid,
            format!("a manifest may hold at most {MANIFEST_LIMIT} bytes"),
        )
        .status(StatusCode::PAYLOAD_TOO_LARGE)
    };
    let declared = call
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut bytes = Vec::new();
    let mut stream = call.body.into_data_stream();
    let mut over = declared.is_some_and(|n| n > MANIFEST_LIMIT);
    let mut drained = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                Code::ManifestInvalid,
                format!("the request body broke off: {e}"),
            )
        })?;
        if !over && (bytes.len() + chunk.len()) as u64 > MANIFEST_LIMIT {
            over = true;
            bytes = Vec::new();
        }
        if over {
            // Read (and drop) a little more, so that the client gets to see the 413 rather
            // than a connection reset in the middle of its request; not for ever.
            drained += chunk.len() as u64;
            if drained > DRAIN_LIMIT {
                break;
            }
        } else {
            bytes.extend_from_slice(&chunk);
        }
    }
    if over {
        return Err(too_large());
    }
    let facts = manifest_facts(&bytes)
        .map_err(|m| ApiError::new(Code::ManifestInvalid, format!("invalid manifest: {m}")))?;
    let content_type = call
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
        .filter(|v| !v.is_empty());
    let media_type = match (&content_type, &facts.media_type) {
        (Some(header), Some(inside)) if header != inside => {
            return Err(ApiError::new(
                Code::ManifestInvalid,
                format!("Content-Type {header} differs from the manifest's mediaType {inside}"),
            ));
        }
        (Some(header), _) => header.clone(),
        (None, Some(inside)) => inside.clone(),
        (None, None) => {
            return Err(ApiError::new(
                Code::ManifestInvalid,
                "the manifest has no mediaType and the request no Content-Type",
            ));
        }
    };
    check_media_type(&facts, &media_type)
        .map_err(|m| ApiError::new(Code::ManifestInvalid, format!("invalid manifest: {m}")))?;
    let digest = match parsed {
        Reference::Digest(expected) => {
            let actual = digest_like(Some(expected), &bytes);
            if actual != expected {
                return Err(ApiError::new(
                    Code::DigestInvalid,
                    format!("the manifest's digest is {actual}, not {expected}"),
                ));
            }
            actual
        }
        Reference::Tag(_) => digest_like(None, &bytes),
    };
    let store = state.store.clone();
    let (name_owned, digest_owned) = (name.to_string(), digest.clone());
    let subject = facts.subject.clone();
    let rules = state.tags;
    blocking(move || {
        // A repository is created only for a manifest that needs nothing from it, so a
        // refused PUT leaves no empty repository behind; the store checks the parts again
        // under the index lock.
        let layout = match store.existing_repository(&name_owned) {
            Some(layout) => layout,
            None => match facts.first_part() {
                Some(missing) => return Err(missing.into()),
                None => store.repository(&name_owned)?,
            },
        };
        let tags: Vec<(&str, _)> = tags
            .iter()
            .map(|tag| (tag.as_str(), rules.mutability(tag)))
            .collect();
        layout.put_manifest(&bytes, &digest_owned, &media_type, &tags, &facts)?;
        Ok(())
    })
    .await?;
    let mut headers = vec![
        ("Location", format!("/v2/{name}/manifests/{digest}")),
        ("Docker-Content-Digest", digest.clone()),
    ];
    if let Some(subject) = subject {
        headers.push(("OCI-Subject", subject));
    }
    for tag in tag_params {
        headers.push(("OCI-Tag", tag));
    }
    Ok(respond(
        StatusCode::CREATED,
        &headers,
        Body::empty(),
        Some(0),
    ))
}

pub(super) async fn delete(state: &Shared, name: &str, text: &str) -> ApiResult {
    lookup_reference(name, text)?;
    let Some(layout) = state.store.existing_repository(name) else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("no repository {name}"),
        ));
    };
    let owned = text.to_string();
    let allow_immutable = state.tags.allow_delete_immutable;
    let deleted = blocking(move || {
        let reference = Reference::parse(&owned).map_err(|(_, m)| ApiError::internal(m))?;
        layout
            .delete_manifest(reference, allow_immutable)
            .map_err(|error| match error {
                // The spec's answer when a registry does not delete tags: 405.
                StoreError::Immutable { tag, digest, .. } => ApiError::new(
                    Code::Unsupported,
                    format!(
                        "tag {tag} is immutable and names {digest}: this registry deletes it only when started with --allow-delete-immutable"
                    ),
                ),
                other => other.into(),
            })
    })
    .await?;
    if !deleted {
        return Err(ApiError::new(
            Code::ManifestUnknown,
            format!("no manifest {text} in {name}"),
        ));
    }
    Ok(respond(StatusCode::ACCEPTED, &[], Body::empty(), Some(0)))
}

pub(super) async fn referrers(state: &Shared, name: &str, digest: &str, call: Call) -> ApiResult {
    check_digest(digest)?;
    let artifact_type = crate::http::query_value(&call.query, "artifactType").map(str::to_string);
    // The spec forbids a 404 from the referrers API: a repository that does not exist
    // (yet) has no referrers, like any subject nothing refers to.
    let layout = state.store.existing_repository(name);
    let (digest_owned, filter) = (digest.to_string(), artifact_type.clone());
    let manifests = match layout {
        Some(layout) => {
            blocking(move || Ok(layout.referrers(&digest_owned, filter.as_deref())?)).await?
        }
        None => Vec::new(),
    };
    let index = Index {
        manifests,
        ..Index::default()
    };
    let body = serde_json::to_vec(&index).map_err(ApiError::internal)?;
    let mut headers = vec![("Content-Type", MEDIA_INDEX.to_string())];
    if artifact_type.is_some() {
        headers.push(("OCI-Filters-Applied", "artifactType".to_string()));
    }
    let length = body.len() as u64;
    Ok(respond(
        StatusCode::OK,
        &headers,
        Body::from(body),
        Some(length),
    ))
}
