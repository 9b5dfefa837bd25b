//! The read side of the manager API: models, versions, and a version's build log as
//! server-sent events that resume where a dropped connection left off (`Last-Event-ID`).
//! Documented in `docs/openapi.yaml`, served at `/openapi.yaml`.

use super::{Failure, Shared, blocking, json_error};
use crate::catalog::{Catalog, Status, VersionRecord};
use crate::contract;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const OPENAPI: &str = include_str!("../../docs/openapi.yaml");
/// How often a log stream looks for new lines: builds write their log to the catalogue,
/// which any process (another server, the CLI) may share.
const POLL: Duration = Duration::from_millis(250);
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/yaml")], OPENAPI).into_response()
}

pub async fn models(State(manager): State<Shared>) -> Result<Response, Failure> {
    let path = manager.home.catalog.clone();
    let models = blocking(move || open(&path)?.models().map_err(internal)).await?;
    Ok(json_response(
        &serde_json::to_value(models).unwrap_or(Value::Null),
    ))
}

pub async fn model(
    State(manager): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let path = manager.home.catalog.clone();
    let lookup = name.clone();
    let versions = blocking(move || open(&path)?.versions(&lookup).map_err(internal)).await?;
    if versions.is_empty() {
        return Err(no_model(&name));
    }
    let host = host_of(&headers);
    let versions: Vec<Value> = versions.iter().map(|r| version_json(r, &host)).collect();
    Ok(json_response(
        &json!({ "name": name, "versions": versions }),
    ))
}

pub async fn version(
    State(manager): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    let record = find_version(&manager, &name, &version).await?;
    Ok(json_response(&version_json(&record, &host_of(&headers))))
}

/// The version as the API shows it: the catalogue's record, the contract as JSON, and the
/// image as this server's registry serves it.
pub fn version_json(record: &VersionRecord, host: &str) -> Value {
    let mut value = serde_json::to_value(record).unwrap_or(Value::Null);
    value["contract"] = contract::from_protobin(&record.contract)
        .as_ref()
        .map_or(Value::Null, contract::to_json);
    // The store's path means nothing to a client; the reference it can pull does.
    value["image"] = match record.status {
        Status::Finished => json!(format!("{host}/{}:{}", record.name, record.version)),
        _ => Value::Null,
    };
    if let Value::Object(object) = &mut value {
        object.remove("local_image");
    }
    value
}

pub(crate) async fn find_version(
    manager: &Shared,
    name: &str,
    version: &str,
) -> Result<VersionRecord, Failure> {
    let Ok(number) = version.parse::<u32>() else {
        return Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("'{version}' is not a version number"),
        ));
    };
    let path = manager.home.catalog.clone();
    let lookup = name.to_string();
    let record = blocking(move || open(&path)?.version(&lookup, number).map_err(internal)).await?;
    record.ok_or_else(|| {
        json_error(
            StatusCode::NOT_FOUND,
            format!("no version {number} of model '{name}'"),
        )
    })
}

/// `text/event-stream`: `log` events (id = line number) and `status` events whenever the
/// status changes; the stream ends after the final status.
pub async fn logs(
    State(manager): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
    query: axum::extract::RawQuery,
) -> Result<Response, Failure> {
    let record = find_version(&manager, &name, &version).await?;
    let resume_from = last_event_id(&headers, query.0.as_deref());
    let path = manager.home.catalog.clone();
    let catalog = blocking(move || open(&path)).await?;
    let follow = Follow {
        catalog: Some(catalog),
        name: record.name.clone(),
        version: record.version,
        sent_lines: resume_from,
        sent_status: None,
        last_sent: Instant::now(),
        done: false,
        host: host_of(&headers),
        stopping: manager.stopping.clone(),
    };
    let stream = futures_util::stream::unfold(follow, |mut follow| async move {
        let chunk = follow.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), follow))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Where a client's log stream stands.
struct Follow {
    catalog: Option<Box<dyn Catalog>>,
    name: String,
    version: u32,
    sent_lines: usize,
    sent_status: Option<Status>,
    last_sent: Instant,
    done: bool,
    host: String,
    stopping: tokio_util::sync::CancellationToken,
}

impl Follow {
    /// The next events to send, waiting for them; `None` once the final status is sent.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        loop {
            let record = self.read().await?;
            let mut out = String::new();
            for (index, line) in record.log.lines().enumerate().skip(self.sent_lines) {
                out.push_str(&format!("id: {}\nevent: log\n", index + 1));
                for part in line.split('\r') {
                    out.push_str(&format!("data: {part}\n"));
                }
                out.push('\n');
                self.sent_lines = index + 1;
            }
            if self.sent_status != Some(record.status) {
                self.sent_status = Some(record.status);
                let status = json!({
                    "status": record.status,
                    "error": record.error,
                    "image": version_json(&record, &self.host)["image"],
                    "digest": record.digest,
                });
                out.push_str(&format!("event: status\ndata: {status}\n\n"));
                self.done = matches!(record.status, Status::Finished | Status::Failed);
            }
            if out.is_empty() && self.last_sent.elapsed() >= KEEP_ALIVE {
                out.push_str(": waiting for the build\n\n");
            }
            if !out.is_empty() {
                self.last_sent = Instant::now();
                return Some(Bytes::from(out));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                // A stopping server ends the stream; the client resumes elsewhere or later.
                _ = self.stopping.cancelled() => return None,
            }
        }
    }

    async fn read(&mut self) -> Option<VersionRecord> {
        let catalog = self.catalog.take()?;
        let (name, version) = (self.name.clone(), self.version);
        let (catalog, record) = tokio::task::spawn_blocking(move || {
            let record = catalog.version(&name, version);
            (catalog, record)
        })
        .await
        .ok()?;
        self.catalog = Some(catalog);
        record.ok().flatten()
    }
}

/// The number of log lines the client has: `Last-Event-ID` (what a browser's EventSource
/// sends when it reconnects), else `?last-event-id=`.
fn last_event_id(headers: &HeaderMap, query: Option<&str>) -> usize {
    let from_header = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let from_query = || {
        crate::http::query_pairs(query)
            .into_iter()
            .find(|(k, _)| k == "last-event-id" || k == "lastEventId")
            .map(|(_, v)| v)
    };
    from_header
        .or_else(from_query)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// `host:port` as the client reached us, to name images it can pull.
pub(crate) fn host_of(headers: &HeaderMap) -> String {
    headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_string()
}

fn open(path: &crate::catalog::Location) -> Result<Box<dyn Catalog>, Failure> {
    crate::catalog::open(path).map_err(internal)
}

fn internal(error: impl std::fmt::Display) -> Failure {
    json_error(StatusCode::INTERNAL_SERVER_ERROR, error)
}

fn no_model(name: &str) -> Failure {
    json_error(
        StatusCode::NOT_FOUND,
        format!("no model '{name}' in the catalogue"),
    )
}

fn json_response(value: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::OPENAPI;

    #[test]
    fn the_openapi_document_parses_and_lists_every_endpoint() {
        let docs = yaml_rust2::YamlLoader::load_from_str(OPENAPI).expect("valid YAML");
        let paths = docs[0]["paths"].as_hash().expect("a paths mapping");
        let listed: Vec<&str> = paths.keys().filter_map(|k| k.as_str()).collect();
        for route in [
            "/api/v2/model/upload",
            "/api/v2/model",
            "/api/v2/model/{name}",
            "/api/v2/model/version/{name}/{version}",
            "/api/v2/model/version/{name}/{version}/logs",
            "/openapi.yaml",
        ] {
            assert!(
                listed.contains(&route),
                "{route} is not in docs/openapi.yaml"
            );
        }
        assert_eq!(docs[0]["openapi"].as_str(), Some("3.1.0"));
    }
}
