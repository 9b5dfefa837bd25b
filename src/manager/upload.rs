//! `POST /api/v2/model/upload`: a multipart request with `payload` (the model folder as a
//! tar.gz, unpacked while it streams in) and `metadata` (JSON: name, model-type, runtime,
//! contract, metadata). The answer comes as soon as the folder is checked and a version is
//! taken; the build runs in the queue. A refused upload leaves nothing behind.

use super::builds::Job;
use super::unpack::{UnpackError, unpack_tar_gz};
use super::{Failure, Manager, Shared, blocking, json_error};
use crate::base::{BaseChoice, check_runtime_name, installed_runtime};
use crate::model::serving::parse_serving_str;
use crate::model::spec::{Overrides, load_model};
use crate::pipeline::{Home, new_version};
use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The JSON of the `metadata` part, in the names Hydrosphere's CLI used and ours.
#[derive(Debug, Default, serde::Deserialize)]
struct UploadMetadata {
    name: Option<String>,
    #[serde(rename = "model-type", alias = "modelType", alias = "model_type")]
    model_type: Option<String>,
    /// `scratch` or the name of a runtime in this server's store (`mlambda base list`).
    runtime: Option<Value>,
    /// A contract in serving.yaml's form; it wins over the folder's.
    contract: Option<Value>,
    metadata: Option<BTreeMap<String, Value>>,
}

const MAX_METADATA_BYTES: usize = 1 << 20;
/// After a refused archive, the rest of the body is read (up to this) so that the client,
/// still sending, hears the answer instead of a reset connection.
const DRAIN_AFTER_REFUSAL: u64 = 64 << 20;

pub async fn upload(
    State(manager): State<Shared>,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<Response, Failure> {
    let mut multipart = multipart.map_err(|rejection| {
        json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "expected a multipart/form-data body with the parts `payload` and `metadata`: {}",
                rejection.body_text()
            ),
        )
    })?;
    let Some(slot) = manager.builds.reserve() else {
        drain(&mut multipart).await;
        return Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the build queue is full ({} builds waiting or running); retry later",
                manager.builds.capacity()
            ),
        ));
    };
    let workdir = TempUpload::create(&manager.builds.uploads)
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    let received = receive(&manager, &mut multipart, &workdir.path).await?;
    accept(&manager, received, workdir, slot).await
}

struct Received {
    metadata: UploadMetadata,
    folder: PathBuf,
}

/// Reads the parts; the payload is unpacked into `workdir/model` as it arrives.
async fn receive(
    manager: &Manager,
    multipart: &mut Multipart,
    workdir: &Path,
) -> Result<Received, Failure> {
    let mut metadata = None;
    let mut folder = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => return Err(multipart_error(error)),
        };
        match field.name().unwrap_or("") {
            "metadata" => metadata = Some(read_metadata(field).await?),
            "payload" if folder.is_none() => {
                let dest = workdir.join("model");
                std::fs::create_dir(&dest)
                    .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                if let Err(response) = receive_payload(manager, field, dest.clone()).await {
                    drain(multipart).await;
                    return Err(response);
                }
                folder = Some(dest);
            }
            "payload" => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "the request has two `payload` parts; send the model folder once",
                ));
            }
            other => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown part `{other}`: the upload takes `payload` (the model folder as .tar.gz) and `metadata` (JSON)"
                    ),
                ));
            }
        }
    }
    let folder = folder.ok_or_else(|| {
        json_error(
            StatusCode::BAD_REQUEST,
            "the request has no `payload` part: send the model folder as a .tar.gz in a part named `payload`",
        )
    })?;
    Ok(Received {
        metadata: metadata.unwrap_or_default(),
        folder,
    })
}

async fn read_metadata(mut field: Field<'_>) -> Result<UploadMetadata, Failure> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_METADATA_BYTES {
            return Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the `metadata` part is larger than 1 MiB",
            ));
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        json_error(
            StatusCode::BAD_REQUEST,
            format!("the `metadata` part is not valid JSON of an upload ({e}); expected e.g. {{\"name\": \"my-model\", \"model-type\": \"python:3.11\"}}"),
        )
    })
}

/// Streams the part into the unpacker, which runs on a blocking thread.
async fn receive_payload(
    manager: &Manager,
    mut field: Field<'_>,
    dest: PathBuf,
) -> Result<(), Failure> {
    let (sender, receiver) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(16);
    let limits = manager.limits;
    let unpacking = tokio::task::spawn_blocking(move || {
        unpack_tar_gz(ChannelReader::new(receiver), &dest, limits)
    });
    let mut stream_error = None;
    let mut received = 0u64;
    loop {
        match field.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if received > manager.max_upload {
                    let _ = sender.send(Err(io::Error::other("too large"))).await;
                    stream_error = Some(json_error(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the upload is larger than this server accepts ({} bytes; see `mlambda serve --max-upload`)",
                            manager.max_upload
                        ),
                    ));
                    break;
                }
                if sender.send(Ok(chunk)).await.is_err() {
                    break; // the unpacker stopped: its error says why
                }
            }
            Ok(None) => break,
            Err(error) => {
                let _ = sender
                    .send(Err(io::Error::other("the upload was cut short")))
                    .await;
                stream_error = Some(multipart_error(error));
                break;
            }
        }
    }
    drop(sender);
    let unpacked = unpacking
        .await
        .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
    if let Some(failure) = stream_error {
        return Err(failure);
    }
    match unpacked {
        Ok(_) => Ok(()),
        Err(error @ UnpackError::Io(_)) => {
            Err(json_error(StatusCode::INTERNAL_SERVER_ERROR, error))
        }
        Err(error) => {
            let status = match error {
                UnpackError::TooBig { .. } | UnpackError::TooManyEntries { .. } => {
                    StatusCode::PAYLOAD_TOO_LARGE
                }
                _ => StatusCode::BAD_REQUEST,
            };
            Err(json_error(status, error))
        }
    }
}

async fn drain(multipart: &mut Multipart) {
    let mut left = DRAIN_AFTER_REFUSAL;
    while let Ok(Some(mut field)) = multipart.next_field().await {
        while let Ok(Some(chunk)) = field.chunk().await {
            left = left.saturating_sub(chunk.len() as u64);
            if left == 0 {
                return;
            }
        }
    }
}

/// The request body is not multipart, or broke off; the size limit is counted by us, not here.
fn multipart_error(error: MultipartError) -> Failure {
    if error.status().is_server_error() {
        // axum says 500 when reading the body fails: the client stopped sending before the
        // end it announced, or its connection broke. Nothing on the server went wrong.
        return json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "the request body broke off before its end ({}); send the upload again",
                error.body_text()
            ),
        );
    }
    json_error(
        error.status(),
        format!("cannot read the upload: {}", error.body_text()),
    )
}

/// Checks the folder as `mlambda upload` would, takes a version and queues the build.
async fn accept(
    manager: &Shared,
    received: Received,
    workdir: TempUpload,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Response, Failure> {
    let overrides = overrides_of(&received.metadata)?;
    let base = base_of(manager, received.metadata.runtime.as_ref())?;
    let folder = received.folder;
    let spec = blocking(move || {
        load_model(&folder, &overrides)
            .map_err(|e| json_error(StatusCode::BAD_REQUEST, in_folder(&e.to_string(), &folder)))
    })
    .await?;
    let catalog_path = manager.home.catalog.clone();
    let for_version = spec.clone();
    let version = blocking(move || {
        let mut catalog = crate::catalog::open(&catalog_path)
            .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))?;
        new_version(catalog.as_mut(), &for_version)
            .map_err(|e| json_error(StatusCode::INTERNAL_SERVER_ERROR, e))
    })
    .await?;
    let document = json!({
        "name": spec.name,
        "version": version,
        "status": "Pending",
        "model_type": spec.model_type,
        "contract_source": spec.contract_source,
        "notes": spec.notes,
        "links": {
            "self": format!("/api/v2/model/version/{}/{version}", spec.name),
            "logs": format!("/api/v2/model/version/{}/{version}/logs", spec.name),
            "page": format!("/models/{}/{version}", spec.name),
        },
    });
    let location = format!("/api/v2/model/version/{}/{version}", spec.name);
    manager.builds.submit(
        &manager.home,
        &manager.store,
        Job {
            spec,
            base,
            version,
            workdir: workdir.keep(),
            slot,
        },
    );
    Ok((
        StatusCode::CREATED,
        [
            (header::CONTENT_TYPE, "application/json".to_string()),
            (header::LOCATION, location),
        ],
        document.to_string(),
    )
        .into_response())
}

/// A message about the server's temporary copy, in the client's terms: paths relative to
/// the folder it sent.
fn in_folder(message: &str, folder: &Path) -> String {
    let folder = folder.display().to_string();
    message
        .replace(&format!("{folder}/"), "")
        .replace(&folder, "the uploaded folder")
}

fn overrides_of(metadata: &UploadMetadata) -> Result<Overrides, Failure> {
    let bad = |message: String| json_error(StatusCode::BAD_REQUEST, message);
    let contract = match &metadata.contract {
        None => None,
        Some(contract) => {
            // The contract is checked by serving.yaml's own parser (JSON is YAML), so its
            // errors read the same, with the key path inside the metadata.
            let text = serde_json::to_string_pretty(&json!({ "contract": contract }))
                .map_err(|e| bad(e.to_string()))?;
            let parsed = parse_serving_str(Path::new("metadata"), &text)
                .map_err(|e| bad(format!("the metadata's contract: {e}")))?;
            parsed
                .contract
                .map(|signatures| (signatures, "the upload's metadata".to_string()))
        }
    };
    let mut entries = BTreeMap::new();
    for (key, value) in metadata.metadata.iter().flatten() {
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(_) | Value::Bool(_) => value.to_string(),
            _ => {
                return Err(bad(format!(
                    "metadata.{key}: a metadata value is a string, a number or a boolean"
                )));
            }
        };
        entries.insert(key.clone(), text);
    }
    Ok(Overrides {
        name: metadata.name.clone(),
        model_type: metadata.model_type.clone(),
        contract,
        metadata: entries,
        no_folder_name: true,
    })
}

/// `runtime` in the metadata: `scratch`, or a runtime already in this server's store.
fn base_of(manager: &Manager, runtime: Option<&Value>) -> Result<Option<BaseChoice>, Failure> {
    let name = match runtime {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(name)) => name.clone(),
        // Hydrosphere's form: {"name": ..., "tag": ...}; the tag of a local runtime is fixed.
        Some(Value::Object(object)) => match object.get("name") {
            Some(Value::String(name)) => name.clone(),
            _ => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    "metadata.runtime: expected a runtime name such as \"python-3.11\" or \"scratch\"",
                ));
            }
        },
        Some(_) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "metadata.runtime: expected a runtime name such as \"python-3.11\" or \"scratch\"",
            ));
        }
    };
    if name == "scratch" {
        return Ok(Some(BaseChoice::Scratch));
    }
    check_runtime_name(&name)
        .map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("metadata.runtime: {e}")))?;
    match installed_runtime(&manager.store, &name) {
        Some(_) => Ok(Some(BaseChoice::Runtime(name))),
        None => Err(json_error(
            StatusCode::BAD_REQUEST,
            format!(
                "metadata.runtime: runtime '{name}' is not in this server's store; bring it with `mlambda base build {name}` or `mlambda base import {name} SOURCE` on the server, or leave `runtime` out to use the model-type's"
            ),
        )),
    }
}

/// Removes the leftovers of a server that stopped while folders waited for their build,
/// and returns the folder uploads are unpacked in.
pub fn clean_upload_area(home: &Home) -> Result<PathBuf, std::io::Error> {
    let dir = home.dir.join("manager").join("uploads");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// An upload's temporary folder, removed when dropped unless kept for its build.
struct TempUpload {
    path: PathBuf,
    keep: bool,
}

impl TempUpload {
    fn create(parent: &Path) -> io::Result<TempUpload> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(io::Error::other)?;
        let path = parent.join(hex::encode(random));
        std::fs::create_dir(&path)?;
        Ok(TempUpload { path, keep: false })
    }

    fn keep(mut self) -> PathBuf {
        self.keep = true;
        self.path.clone()
    }
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The payload's bytes, as the async side receives them, for the blocking unpacker.
struct ChannelReader {
    receiver: tokio::sync::mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    fn new(receiver: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> ChannelReader {
        ChannelReader {
            receiver,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.receiver.blocking_recv() {
                Some(Ok(chunk)) => self.current = chunk,
                Some(Err(error)) => return Err(error),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}
