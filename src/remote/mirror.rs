//! A build's new blobs sent to the registry while they are written: the push of
//! `upload --registry` in the same pass as the build.
//!
//! Each blob gets an upload session as soon as its writer opens (POST), one PATCH whose body is
//! the blob's bytes as the layer writer produces them (no length: the distribution spec's
//! streamed upload, what `docker push` sends), and the closing PUT `?digest=` once the writer
//! knows the digest. The writer hands its bytes over through a small bounded pipe, so a slow
//! registry slows the build to its pace but memory stays a few pieces per blob; a registry that
//! stalls for [`STALL`] is left behind. A copy that fails in any way is given up, its session
//! deleted, and the push after the build sends that blob as usual: a mirror never fails a
//! build. An abandoned blob (the build failed) is never closed, so it never becomes a blob on
//! the registry; the tag is only ever written by the push after the build.
//!
//! The blobs that exist already (a base image's layers) go the ordinary way (HEAD, mount,
//! upload: `upload::push_blob`) on a thread of their own while the build writes the rest; the
//! push after the build waits for it (`settle`) and then finds them there.

use super::upload::{location, push_blob, range_end, short, with_digest};
use super::{Answer, Fault, Registry, RemoteError, error_detail};
use crate::image::{BlobOutcome, Mirror, MirrorStream, Source};
use crate::oci::Descriptor;
use reqwest::StatusCode;
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The pieces handed to the connection, as the blob bodies of `upload` send them.
const PIECE: usize = 1 << 20;
/// Pieces waiting for the connection, per blob.
const PIECES_QUEUED: usize = 4;
/// How long a writer waits for a registry that takes nothing before it goes on alone.
const STALL: Duration = Duration::from_secs(60);
/// How long an abandoned copy is given to delete its upload session.
const ABANDON_GRACE: Duration = Duration::from_secs(10);

/// Streams the new blobs of a build to one repository of a registry.
pub struct RegistryMirror {
    registry: Arc<Registry>,
    repository: String,
    report: Arc<Mutex<MirrorReport>>,
    /// The threads sending existing blobs (see [`Mirror::existing`]).
    early: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What the copies came to.
#[derive(Debug, Default, Clone)]
pub struct MirrorReport {
    /// Blobs that are on the registry, sent while they were written.
    pub sent: Vec<String>,
    /// Existing blobs (a base's), and how they got to the registry during the build.
    pub early: Vec<(String, BlobOutcome)>,
    /// Copies given up, and why (their blobs go with the push after the build).
    pub given_up: Vec<String>,
}

impl std::fmt::Debug for RegistryMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryMirror({}/{})",
            self.registry.target.authority, self.repository
        )
    }
}

impl RegistryMirror {
    pub fn new(registry: Arc<Registry>, repository: &str) -> RegistryMirror {
        RegistryMirror {
            registry,
            repository: repository.to_string(),
            report: Arc::default(),
            early: Mutex::default(),
        }
    }

    /// Waits for the existing blobs being sent: the push after the build must not start
    /// them again.
    pub fn settle(&self) {
        let threads = std::mem::take(&mut *self.early.lock().unwrap_or_else(|e| e.into_inner()));
        for thread in threads {
            let _ = thread.join();
        }
    }

    pub fn report(&self) -> MirrorReport {
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl Mirror for RegistryMirror {
    fn registry(&self) -> String {
        self.registry.target.authority.clone()
    }

    fn existing(
        &self,
        blobs: &[Descriptor],
        source: Arc<dyn Source>,
        mount_from: &HashMap<String, Vec<String>>,
    ) {
        let blobs: Vec<(Descriptor, Vec<String>)> = blobs
            .iter()
            .map(|b| {
                (
                    b.clone(),
                    mount_from.get(&b.digest).cloned().unwrap_or_default(),
                )
            })
            .collect();
        let (registry, repository) = (self.registry.clone(), self.repository.clone());
        let report = self.report.clone();
        let sending = std::thread::Builder::new()
            .name("mirror-existing".into())
            .spawn(move || {
                let quiet = super::quiet();
                for (blob, sources) in blobs {
                    let outcome = push_blob(
                        &registry,
                        source.as_ref(),
                        &repository,
                        &blob,
                        &sources,
                        &quiet,
                    );
                    let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
                    match outcome {
                        Ok(outcome) => report.early.push((blob.digest.clone(), outcome)),
                        Err(error) => report
                            .given_up
                            .push(format!("{}: {error}", short(&blob.digest))),
                    }
                }
            });
        // No thread: the push after the build sends them, as without a mirror.
        if let Ok(thread) = sending {
            self.early
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(thread);
        }
    }

    fn open(&self) -> Option<Box<dyn MirrorStream>> {
        let pipe = Arc::new(Pipe::default());
        let (done, finished) = std::sync::mpsc::channel();
        let copy = BlobCopy {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            pipe: pipe.clone(),
        };
        let report = self.report.clone();
        let spawned = std::thread::Builder::new()
            .name("mirror".into())
            .spawn(move || {
                let outcome = copy.run();
                {
                    let mut report = report.lock().unwrap_or_else(|e| e.into_inner());
                    match &outcome {
                        Ok(digest) => report.sent.push(digest.clone()),
                        Err(why) => report.given_up.push(why.clone()),
                    }
                }
                // Whoever waited may have stopped waiting: nobody to tell is fine.
                let _ = done.send(());
            });
        if spawned.is_err() {
            return None;
        }
        Some(Box::new(Stream {
            pipe,
            piece: Vec::new(),
            finished,
            size: 0,
            closed: false,
        }))
    }
}

/// The writer's side of one copy.
struct Stream {
    pipe: Arc<Pipe>,
    /// Bytes gathered into the next piece.
    piece: Vec<u8>,
    finished: std::sync::mpsc::Receiver<()>,
    size: u64,
    closed: bool,
}

impl MirrorStream for Stream {
    fn write(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.piece.capacity() == 0 {
                self.piece.reserve_exact(PIECE);
            }
            let take = (PIECE - self.piece.len()).min(bytes.len());
            self.piece.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.piece.len() == PIECE {
                let piece = std::mem::take(&mut self.piece);
                self.pipe.push(piece);
            }
        }
    }

    fn close(&mut self, digest: &str, size: u64) {
        if !self.piece.is_empty() {
            let piece = std::mem::take(&mut self.piece);
            self.pipe.push(piece);
        }
        self.size = size;
        self.closed = true;
        self.pipe.end(digest, size);
    }

    fn wait(self: Box<Self>) {
        // The rest is at most a few pieces and the closing PUT; past this the copy runs on
        // alone and the push after the build finds the blob there, or sends it.
        let grace = Duration::from_secs(120 + self.size / (256 * 1024));
        let _ = self.finished.recv_timeout(grace);
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // The build gave this blob up: the copy breaks off and deletes its session, which a
        // process on its way out would not wait for unless told to (bounded: a registry that
        // does not answer keeps the session until it expires there).
        self.pipe.abandon();
        let _ = self.finished.recv_timeout(ABANDON_GRACE);
    }
}

/// Pieces from the writer to the connection, bounded.
#[derive(Default)]
struct Pipe {
    state: Mutex<PipeState>,
    changed: Condvar,
}

#[derive(Default)]
struct PipeState {
    pieces: VecDeque<Vec<u8>>,
    /// Set by the writer: the blob's digest and size; no piece follows.
    end: Option<(String, u64)>,
    /// The copy is off: the writer abandoned it, or the connection gave up.
    broken: bool,
}

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a piece; waits while the queue is full, up to [`STALL`], then breaks the copy.
    fn push(&self, piece: Vec<u8>) {
        let deadline = Instant::now() + STALL;
        let mut state = self.lock();
        while state.pieces.len() >= PIECES_QUEUED && !state.broken {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                state.broken = true;
                break;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        if !state.broken {
            state.pieces.push_back(piece);
        }
        drop(state);
        self.changed.notify_all();
    }

    fn end(&self, digest: &str, size: u64) {
        self.lock().end = Some((digest.to_string(), size));
        self.changed.notify_all();
    }

    fn abandon(&self) {
        let mut state = self.lock();
        if state.end.is_none() {
            state.broken = true;
        }
        drop(state);
        self.changed.notify_all();
    }

    /// The connection's side: the next piece, `Ok(None)` at the blob's end, an error when the
    /// copy is off (so the request breaks off rather than end as if complete).
    fn pull(&self) -> std::io::Result<Option<Vec<u8>>> {
        let mut state = self.lock();
        loop {
            if state.broken {
                return Err(std::io::Error::other("the copy was given up"));
            }
            if let Some(piece) = state.pieces.pop_front() {
                drop(state);
                self.changed.notify_all();
                return Ok(Some(piece));
            }
            if state.end.is_some() {
                return Ok(None);
            }
            state = self.changed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Turns the copy off from the connection's side: the writer stops waiting on it.
    fn give_up(&self) {
        self.lock().broken = true;
        self.changed.notify_all();
    }

    /// The blob's digest and size, once the writer said them and the copy is still on.
    fn ended(&self) -> Option<(String, u64)> {
        let state = self.lock();
        if state.broken {
            return None;
        }
        state.end.clone()
    }
}

/// The connection's side of one copy, on a thread of its own.
struct BlobCopy {
    registry: Arc<Registry>,
    repository: String,
    pipe: Arc<Pipe>,
}

impl BlobCopy {
    /// The digest of the blob now on the registry, or why not.
    fn run(&self) -> Result<String, String> {
        let scopes = vec![format!("repository:{}:pull,push", self.repository)];
        let session = self.start(&scopes);
        let result = session.and_then(|session| self.send(&scopes, session));
        match result {
            Ok(digest) => Ok(digest),
            Err((session, why)) => {
                self.pipe.give_up();
                if let Some(session) = session {
                    self.cancel(&scopes, &session);
                }
                Err(why)
            }
        }
    }

    /// POST: the upload session.
    fn start(&self, scopes: &[String]) -> Result<reqwest::Url, (Option<reqwest::Url>, String)> {
        let fail = |why: String| (None, format!("opening an upload: {why}"));
        let url = self
            .registry
            .url(&format!("v2/{}/blobs/uploads/", self.repository))
            .map_err(|e| fail(e.to_string()))?;
        let response = self
            .registry
            .send("start a streamed upload", scopes, &|http| {
                Ok(http
                    .post(url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(Duration::from_secs(60)))
            })
            .map_err(|f| fail(fault_text(f)))?;
        if response.status() != StatusCode::ACCEPTED {
            return Err(fail(format!(
                "HTTP {}{}",
                response.status(),
                error_detail(response)
            )));
        }
        let session = location(&url, response.headers()).map_err(|f| fail(fault_text(f)))?;
        // Such a registry takes PATCHes of a length it fixes, which a stream of unknown
        // length cannot promise: the push after the build sends the blob in its chunks.
        if let Some(min) = response.headers().get("OCI-Chunk-Min-Length") {
            let min = min.to_str().unwrap_or("?");
            return Err((
                Some(session),
                format!("the registry asks for chunks of at least {min} bytes"),
            ));
        }
        Ok(session)
    }

    /// The PATCH of every byte as it comes, then the PUT that names the digest.
    fn send(
        &self,
        scopes: &[String],
        session: reqwest::Url,
    ) -> Result<String, (Option<reqwest::Url>, String)> {
        let body = Mutex::new(Some(self.pipe.clone()));
        let reply = self
            .registry
            .send_streamed("streamed upload", scopes, &|http| {
                // A body can be sent once: a second round (a new token) finds none.
                let pipe = body
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                    .ok_or_else(|| {
                        RemoteError::Protocol("the registry asked for the body again".into())
                    })?;
                let pieces = futures_util::stream::poll_fn(move |_| {
                    std::task::Poll::Ready(pipe.pull().transpose())
                });
                Ok(http
                    .patch(session.clone())
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .body(reqwest::Body::wrap_stream(pieces)))
            });
        let failed = |why: String| (Some(session.clone()), why);
        let reply = reply.map_err(|f| failed(format!("PATCH: {}", fault_text(f))))?;
        if reply.status() != StatusCode::ACCEPTED && reply.status() != StatusCode::NO_CONTENT {
            let status = reply.status();
            return Err(failed(format!("PATCH: HTTP {status}{}", reply.detail())));
        }
        let next = location(&session, reply.headers()).map_err(|f| failed(fault_text(f)))?;
        let Some((digest, size)) = self.pipe.ended() else {
            return Err(failed("the build gave the blob up".into()));
        };
        if let Some(held) = range_end(reply.headers())
            && held != size
        {
            return Err(failed(format!(
                "the registry holds {held} bytes of {size} of {}",
                short(&digest)
            )));
        }
        let url = with_digest(&next, &digest);
        let response = self
            .registry
            .send("finish a streamed upload", scopes, &|http| {
                Ok(http
                    .put(url.clone())
                    .header(CONTENT_LENGTH, 0)
                    .timeout(Duration::from_secs(120)))
            })
            .map_err(|f| (Some(next.clone()), format!("PUT: {}", fault_text(f))))?;
        match response.status() {
            StatusCode::CREATED | StatusCode::NO_CONTENT | StatusCode::OK => Ok(digest),
            status => Err((
                Some(next.clone()),
                format!(
                    "PUT {}: HTTP {status}{}",
                    short(&digest),
                    error_detail(response)
                ),
            )),
        }
    }

    /// DELETE: a session given up is not left open on the registry (best effort: an old
    /// session expires there anyway). A registry may still be taking in the PATCH that broke
    /// off on this side, and answers 404 meanwhile (CNCF distribution does): asked again a
    /// little later.
    fn cancel(&self, scopes: &[String], session: &reqwest::Url) {
        for wait_ms in [0, 250, 500, 1000, 2000] {
            std::thread::sleep(Duration::from_millis(wait_ms));
            let answer = self
                .registry
                .send("cancel a streamed upload", scopes, &|http| {
                    Ok(http
                        .delete(session.clone())
                        .timeout(Duration::from_secs(30)))
                });
            if answer.is_ok_and(|r| r.status().is_success()) {
                return;
            }
        }
    }
}

fn fault_text(fault: Fault) -> String {
    match fault {
        Fault::Fatal(error) => error.to_string(),
        Fault::Transient { message, .. } => message,
    }
}
