//! `GET /v2/<name>/tags/list` and `GET /v2/_catalog`, both in lexical order with `n` and an
//! exclusive `last`, and `Link: <…>; rel="next"` while more remain.

use super::errors::{ApiError, ApiResult, Code};
use super::{Call, Shared, blocking, respond};
use crate::http::query_value;
use axum::body::Body;
use axum::http::StatusCode;

/// One page of a sorted list, and whether more follow it.
fn page(all: Vec<String>, call: &Call) -> Result<(Vec<String>, bool), ApiError> {
    let n = match query_value(&call.query, "n") {
        None | Some("") => None,
        Some(text) => Some(text.parse::<usize>().map_err(|_| {
            ApiError::new(
                Code::Unsupported,
                format!("n must be a number, not '{text}'"),
            )
            .status(StatusCode::BAD_REQUEST)
        })?),
    };
    let last = query_value(&call.query, "last").filter(|l| !l.is_empty());
    let mut rest: Vec<String> = all
        .into_iter()
        .filter(|item| last.is_none_or(|last| item.as_str() > last))
        .collect();
    let more = n.is_some_and(|n| rest.len() > n);
    if let Some(n) = n {
        rest.truncate(n);
    }
    Ok((rest, more))
}

fn json_page(
    base: &str,
    key: &str,
    name: Option<&str>,
    items: Vec<String>,
    more: bool,
    call: &Call,
) -> ApiResult {
    let mut headers = vec![("Content-Type", "application/json".to_string())];
    if more && let Some(last) = items.last() {
        let n = query_value(&call.query, "n").unwrap_or("");
        headers.push((
            "Link",
            format!("<{base}?n={n}&last={}>; rel=\"next\"", encode(last)),
        ));
    }
    let mut body = serde_json::Map::new();
    if let Some(name) = name {
        body.insert("name".into(), name.into());
    }
    body.insert(key.into(), items.into());
    let body = serde_json::Value::Object(body).to_string();
    let length = body.len() as u64;
    Ok(respond(
        StatusCode::OK,
        &headers,
        Body::from(body),
        Some(length),
    ))
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'_' | b'-' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

pub(super) async fn list(state: &Shared, name: &str, call: Call) -> ApiResult {
    let Some(layout) = state.store.existing_repository(name) else {
        return Err(ApiError::new(
            Code::NameUnknown,
            format!("no repository {name}"),
        ));
    };
    let tags = blocking(move || Ok(layout.tags()?)).await?;
    let (items, more) = page(tags, &call)?;
    json_page(
        &format!("/v2/{name}/tags/list"),
        "tags",
        Some(name),
        items,
        more,
        &call,
    )
}

pub(super) async fn catalog(state: &Shared, call: Call) -> ApiResult {
    let store = state.store.clone();
    let names = blocking(move || Ok(store.repositories()?)).await?;
    let (items, more) = page(names, &call)?;
    json_page("/v2/_catalog", "repositories", None, items, more, &call)
}
