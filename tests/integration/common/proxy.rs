//! A tiny threaded HTTP/1.1 proxy in front of a registry: it logs and counts every request,
//! and injects faults (503s, a 429 with `Retry-After`, connections cut mid-blob on the way up
//! or down), chunk-size
//! demands (`OCI-Chunk-Min-Length`), and a bearer-token flow with tokens that expire.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    /// Path and query as sent.
    pub target: String,
    pub status: u16,
    /// The request's `Range` header, if any.
    pub range: Option<String>,
    /// The body was streamed (`Transfer-Encoding: chunked`): its length was not known when
    /// it was sent.
    pub streamed: bool,
}

#[derive(Default)]
pub struct ProxyState {
    pub log: Vec<Logged>,
    /// Answer 503 to this many requests.
    pub fail_first: usize,
    /// Answer 429 `Retry-After: 1` to the next blob upload PUT.
    pub too_many_once: bool,
    /// Cut the connection halfway through the body of this many blob PUT/PATCH requests.
    pub cut_uploads: usize,
    /// Cut the connection halfway through the answer to this many blob GETs.
    pub cut_downloads: usize,
    /// Add `OCI-Chunk-Min-Length` to upload sessions.
    pub chunk_min: Option<u64>,
    /// Bearer auth: the token endpoint wants these basic credentials; a token serves
    /// `token_uses` requests and is then refused (expired).
    pub bearer: Option<(String, String, usize)>,
    pub tokens: HashMap<String, usize>,
    pub tokens_issued: usize,
    pub cuts_done: usize,
}

pub struct Proxy {
    pub port: u16,
    pub state: Arc<Mutex<ProxyState>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ProxyState::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream_port, port, &s);
                });
            }
        });
        Proxy { port, state, stop }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("http://127.0.0.1:{}/{prefix}", self.port)
    }

    pub fn set(&self, f: impl FnOnce(&mut ProxyState)) {
        f(&mut self.state.lock().unwrap());
    }

    pub fn take_log(&self) -> Vec<Logged> {
        std::mem::take(&mut self.state.lock().unwrap().log)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(conn: &mut TcpStream, status: &str, headers: &[(&str, String)]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.flush()
}

fn handle(
    mut conn: TcpStream,
    upstream: u16,
    own_port: u16,
    state: &Mutex<ProxyState>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    let mut headers: Vec<(String, String)> = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let path = target.split('?').next().unwrap_or_default().to_string();
    let is_upload = path.contains("/blobs/uploads/") && (method == "PUT" || method == "PATCH");

    // A streamed body (`Transfer-Encoding: chunked`, a blob sent as it is written).
    let chunked =
        header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let log = |status: u16| {
        state.lock().unwrap().log.push(Logged {
            method: method.clone(),
            target: target.clone(),
            status,
            range: header("range"),
            streamed: chunked,
        })
    };

    // A connection cut in the middle of a blob.
    if is_upload && (length > 1 || chunked) {
        let mut s = state.lock().unwrap();
        if s.cut_uploads > 0 {
            s.cut_uploads -= 1;
            s.cuts_done += 1;
            drop(s);
            if chunked {
                let _ = read_chunk(&mut reader);
            } else {
                let mut half = vec![0u8; length / 2];
                let _ = reader.read_exact(&mut half);
            }
            log(0);
            let _ = conn.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    let body = if chunked {
        let mut body = Vec::new();
        loop {
            match read_chunk(&mut reader) {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                // The client broke its stream off: logged, nothing forwarded.
                Err(_) => {
                    log(0);
                    return Ok(());
                }
            }
        }
        body
    } else {
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        body
    };

    // The token endpoint.
    if path == "/token" {
        let mut s = state.lock().unwrap();
        let (user, pass, uses) = s.bearer.clone().unwrap_or_default();
        let expected = format!(
            "Basic {}",
            base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                format!("{user}:{pass}")
            )
        );
        if header("authorization").as_deref() != Some(expected.as_str()) {
            drop(s);
            log(401);
            return respond(&mut conn, "401 Unauthorized", &[]);
        }
        s.tokens_issued += 1;
        let token = format!("tok-{}", s.tokens_issued);
        s.tokens.insert(token.clone(), uses);
        drop(s);
        log(200);
        let body = format!("{{\"token\":\"{token}\",\"expires_in\":300}}");
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body.as_bytes())?;
        return Ok(());
    }
    {
        let mut s = state.lock().unwrap();
        if s.bearer.is_some() {
            let token = header("authorization")
                .and_then(|a| a.strip_prefix("Bearer ").map(str::to_string))
                .unwrap_or_default();
            let valid = match s.tokens.get_mut(&token) {
                Some(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                _ => false,
            };
            if !valid {
                drop(s);
                log(401);
                return respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[(
                        "WWW-Authenticate",
                        format!(
                            "Bearer realm=\"http://127.0.0.1:{own_port}/token\",service=\"proxy-test\""
                        ),
                    )],
                );
            }
        }
        if s.fail_first > 0 {
            s.fail_first -= 1;
            drop(s);
            log(503);
            return respond(&mut conn, "503 Service Unavailable", &[]);
        }
        if is_upload && method == "PUT" && s.too_many_once {
            s.too_many_once = false;
            drop(s);
            log(429);
            return respond(
                &mut conn,
                "429 Too Many Requests",
                &[("Retry-After", "1".into())],
            );
        }
    }

    // Forward.
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\n");
    for (k, v) in &headers {
        if k.eq_ignore_ascii_case("connection") || k.eq_ignore_ascii_case("authorization") {
            continue;
        }
        // A streamed body goes on whole, with its length.
        if chunked && k.eq_ignore_ascii_case("transfer-encoding") {
            continue;
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if chunked {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    up.flush()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(response.len());
    let head_text = String::from_utf8_lossy(&response[..split]).to_string();
    let rest = &response[(split + 4).min(response.len())..];
    let mut lines = head_text.split("\r\n");
    let status_line = lines.next().unwrap_or_default().to_string();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out = format!("{status_line}\r\n");
    for h in lines {
        if h.to_ascii_lowercase().starts_with("connection:") {
            continue;
        }
        out.push_str(h);
        out.push_str("\r\n");
    }
    if method == "POST"
        && status == 202
        && let Some(min) = state.lock().unwrap().chunk_min
    {
        out.push_str(&format!("OCI-Chunk-Min-Length: {min}\r\n"));
    }
    out.push_str("Connection: close\r\n\r\n");
    log(status);
    conn.write_all(out.as_bytes())?;
    let is_download = method == "GET" && path.contains("/blobs/sha256:") && status == 200;
    if is_download && rest.len() > 1 {
        let mut s = state.lock().unwrap();
        if s.cut_downloads > 0 {
            s.cut_downloads -= 1;
            s.cuts_done += 1;
            drop(s);
            conn.write_all(&rest[..rest.len() / 2])?;
            conn.flush()?;
            return conn.shutdown(Shutdown::Both);
        }
    }
    conn.write_all(rest)?;
    conn.flush()
}

/// One chunk of a chunked body; `None` after the last (its trailers read).
fn read_chunk(reader: &mut impl BufRead) -> std::io::Result<Option<Vec<u8>>> {
    let mut size_line = String::new();
    reader.read_line(&mut size_line)?;
    let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
        .map_err(|e| std::io::Error::other(format!("bad chunk size {size_line:?}: {e}")))?;
    if size == 0 {
        loop {
            let mut trailer = String::new();
            if reader.read_line(&mut trailer)? == 0 || trailer.trim_end().is_empty() {
                return Ok(None);
            }
        }
    }
    let mut chunk = vec![0u8; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok(Some(chunk))
}

/// The `digest=` of an upload-closing PUT, if any.
pub fn put_digest(entry: &Logged) -> Option<String> {
    if entry.method != "PUT" || !entry.target.contains("/blobs/uploads/") {
        return None;
    }
    let query = entry.target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        pair.strip_prefix("digest=")
            .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
    })
}

/// The `mount=` of a mount POST, if any.
pub fn mount_digest(entry: &Logged) -> Option<String> {
    if entry.method != "POST" {
        return None;
    }
    let query = entry.target.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        pair.strip_prefix("mount=")
            .map(|d| d.replace("%3A", ":").replace("%3a", ":"))
    })
}
