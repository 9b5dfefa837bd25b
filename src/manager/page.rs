//! The Models page of Hydrosphere's manager, rendered on the server: plain HTML that reads without
//! JavaScript; with it, a running build's log grows live from the API's event stream.

use super::api::{find_version, host_of};
use super::{Shared, blocking, json_error};
use crate::catalog::{Status, VersionRecord};
use crate::contract::{self, Field, FieldKind, Shape};
use crate::contract::{dtype_name, profile_name};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .7em;text-align:left}
th{background:#f3f3f3}pre{background:#f7f7f7;padding:1em;overflow:auto;max-height:40em}
.Finished{color:#176f2c}.Failed{color:#b00020}.Running,.Pending{color:#8a5a00}code{font-size:.95em}";

pub async fn models(State(manager): State<Shared>) -> Response {
    let path = manager.home.catalog.clone();
    let models = blocking(move || {
        crate::catalog::open(&path)
            .and_then(|c| c.models())
            .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await;
    let models = match models {
        Ok(models) => models,
        Err(failure) => return error_page(failure.status, &failure.message),
    };
    let mut body = String::from("<h1>Models</h1>");
    if models.is_empty() {
        body.push_str("<p>No models yet. Upload one with <code>mlambda upload DIR --host HOST --port PORT</code>.</p>");
    } else {
        body.push_str("<table id=\"models\"><tr><th>Name</th><th>Versions</th><th>Latest</th><th>Build Status</th><th>Model Type</th><th>Updated</th></tr>");
        for m in &models {
            let name = escape(&m.name);
            let _ = write!(
                body,
                "<tr><td><a href=\"/models/{name}\">{name}</a></td><td>{}</td><td><a href=\"/models/{name}/{v}\">{v}</a></td>{}<td>{}</td><td>{}</td></tr>",
                m.versions,
                status_cell(m.latest_status),
                escape(&m.model_type),
                escape(&m.updated),
                v = m.latest_version,
            );
        }
        body.push_str("</table>");
    }
    page("Models", &body, None)
}

pub async fn model(State(manager): State<Shared>, Path(name): Path<String>) -> Response {
    let path = manager.home.catalog.clone();
    let lookup = name.clone();
    let versions = blocking(move || {
        crate::catalog::open(&path)
            .and_then(|c| c.versions(&lookup))
            .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await;
    let versions = match versions {
        Ok(versions) if versions.is_empty() => {
            return error_page(StatusCode::NOT_FOUND, &format!("No model '{name}'."));
        }
        Ok(versions) => versions,
        Err(failure) => return error_page(failure.status, &failure.message),
    };
    // `page` escapes the title itself.
    let title = name.clone();
    let name = escape(&name);
    let mut body = format!("<p><a href=\"/\">Models</a></p><h1>{name}</h1>");
    body.push_str("<table id=\"versions\"><tr><th>Version</th><th>Created</th><th>Build Status</th><th>Model Type</th><th>Digest</th></tr>");
    for record in versions.iter().rev() {
        let _ = write!(
            body,
            "<tr><td><a href=\"/models/{name}/{v}\">{v}</a></td><td>{}</td>{}<td>{}</td><td><code>{}</code></td></tr>",
            escape(&record.created),
            status_cell(record.status),
            escape(&record.model_type),
            escape(record.digest.as_deref().unwrap_or("")),
            v = record.version,
        );
    }
    body.push_str("</table>");
    page(&title, &body, None)
}

pub async fn version(
    State(manager): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let record = match find_version(&manager, &name, &version).await {
        Ok(record) => record,
        Err(_) => {
            return error_page(
                StatusCode::NOT_FOUND,
                &format!("No version {version} of model '{name}'."),
            );
        }
    };
    let body = version_body(&record, &host_of(&headers));
    let live = matches!(record.status, Status::Pending | Status::Running).then(|| {
        format!(
            "/api/v2/model/version/{}/{}/logs",
            record.name, record.version
        )
    });
    page(
        &format!("{}:{}", record.name, record.version),
        &body,
        live.as_deref(),
    )
}

fn version_body(record: &VersionRecord, host: &str) -> String {
    let name = escape(&record.name);
    let mut body = format!(
        "<p><a href=\"/\">Models</a> / <a href=\"/models/{name}\">{name}</a></p><h1>{name}:{}</h1><table id=\"details\">",
        record.version
    );
    let mut row = |key: &str, value: &str| {
        let _ = write!(body, "<tr><th>{key}</th><td>{value}</td></tr>");
    };
    row(
        "Build Status",
        &format!(
            "<span id=\"status\" class=\"{0:?}\">{0:?}</span>",
            record.status
        ),
    );
    row("Model Type", &escape(&record.model_type));
    row("Created", &escape(&record.created));
    row(
        "Finished",
        &escape(record.finished.as_deref().unwrap_or("")),
    );
    if record.status == Status::Finished {
        row(
            "Image",
            &format!("<code>{}/{name}:{}</code>", escape(host), record.version),
        );
    }
    row(
        "Digest",
        &format!(
            "<code>{}</code>",
            escape(record.digest.as_deref().unwrap_or(""))
        ),
    );
    row("Base", &escape(record.base_image.as_deref().unwrap_or("")));
    row("Contract from", &escape(&record.contract_source));
    if let Some(error) = &record.error {
        row(
            "Error",
            &format!("<span class=\"Failed\">{}</span>", escape(error)),
        );
    }
    body.push_str("</table><h2>Contract</h2>");
    match contract::from_protobin(&record.contract) {
        Ok(contract) => {
            for signature in &contract.signatures {
                let _ = write!(
                    body,
                    "<h3>Signature <code>{}</code></h3>",
                    escape(&signature.name)
                );
                body.push_str("<table class=\"contract\"><tr><th>Direction</th><th>Field</th><th>Type</th><th>Shape</th><th>Profile</th></tr>");
                for (direction, fields) in
                    [("input", &signature.inputs), ("output", &signature.outputs)]
                {
                    for field in fields {
                        field_rows(&mut body, direction, "", field);
                    }
                }
                body.push_str("</table>");
            }
        }
        Err(error) => {
            let _ = write!(
                body,
                "<p>The contract cannot be read: {}</p>",
                escape(&error.to_string())
            );
        }
    }
    // The number of lines as the event stream counts them (its ids), for the script to resume
    // from: the text the browser parses is no count of them (it drops a newline opening a
    // <pre> and reads a lone '\r' as a line break).
    let _ = write!(
        body,
        "<h2>Build log</h2><pre id=\"log\" data-lines=\"{}\">{}</pre>",
        record.log.lines().count(),
        escape(&record.log)
    );
    body
}

fn field_rows(body: &mut String, direction: &str, prefix: &str, field: &Field) {
    let name = format!("{prefix}{}", field.name);
    let kind = match &field.kind {
        FieldKind::Tensor(dtype) => dtype_name(*dtype).to_string(),
        FieldKind::Nested(_) => "map".to_string(),
    };
    let _ = write!(
        body,
        "<tr><td>{direction}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
        escape(&name),
        escape(&kind),
        escape(&shape_text(field.shape.as_ref())),
        profile_name(field.profile),
    );
    if let FieldKind::Nested(fields) = &field.kind {
        for nested in fields {
            field_rows(body, direction, &format!("{name}."), nested);
        }
    }
}

fn shape_text(shape: Option<&Shape>) -> String {
    match shape {
        None => "any".into(),
        Some(shape) if shape.unknown_rank => "unknown rank".into(),
        Some(shape) if shape.dims.is_empty() => "scalar".into(),
        Some(shape) => format!(
            "[{}]",
            shape
                .dims
                .iter()
                .map(|d| d.size.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn status_cell(status: Status) -> String {
    format!("<td class=\"{status:?}\">{status:?}</td>")
}

/// The whole document. `live`: the event stream a running build's log grows from.
fn page(title: &str, body: &str, live: Option<&str>) -> Response {
    let script = live.map_or_else(String::new, |url| {
        format!(
            "<script>
(function () {{
  var log = document.getElementById('log'), status = document.getElementById('status');
  var events = new EventSource('{url}?last-event-id=' + (log.getAttribute('data-lines') || 0));
  events.addEventListener('log', function (e) {{ log.textContent += e.data + '\\n'; log.scrollTop = log.scrollHeight; }});
  events.addEventListener('status', function (e) {{
    var s = JSON.parse(e.data).status;
    status.textContent = s; status.className = s;
    if (s === 'Finished' || s === 'Failed') {{ events.close(); location.reload(); }}
  }});
}})();
</script>"
        )
    });
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title} · mlambda</title>{refresh}<style>{STYLE}</style></head><body>{body}{script}</body></html>",
        // Without JavaScript, a running build's page reloads itself instead.
        refresh = if live.is_some() {
            "<noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>"
        } else {
            ""
        },
        title = escape(title),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn error_page(status: StatusCode, message: &str) -> Response {
    let mut response = page(
        status.canonical_reason().unwrap_or("Error"),
        &format!("<p><a href=\"/\">Models</a></p><p>{}</p>", escape(message)),
        None,
    );
    *response.status_mut() = status;
    response
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}
