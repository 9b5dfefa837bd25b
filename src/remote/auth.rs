//! Who we are to a registry: credentials (flags, environment, `~/.docker/config.json` with its
//! credential helpers), the `WWW-Authenticate` challenge, and bearer tokens per scope.
//!
//! Secrets never reach an error, a log line or the catalogue: `Credential`'s `Debug` is
//! redacted and no message is built from one.

use super::retry::error_chain;
use super::{Fault, RemoteError};
use base64::Engine as _;
use reqwest::Url;
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    Basic {
        username: String,
        password: String,
    },
    /// A refresh token (`identitytoken` in config.json), exchanged at the token endpoint.
    IdentityToken(String),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Credential::IdentityToken(_) => write!(f, "IdentityToken(<redacted>)"),
        }
    }
}

/// Where credentials were found, for messages ("rejected the credentials from …").
#[derive(Debug, Clone)]
pub struct Found {
    pub credential: Credential,
    pub source: String,
}

/// The credentials for `authority` (`host[:port]`): the flags, else
/// `MLAMBDA_REGISTRY_USERNAME`/`MLAMBDA_REGISTRY_PASSWORD`, else the docker config.
pub fn find_credential(
    authority: &str,
    flags: Option<Credential>,
) -> Result<Option<Found>, RemoteError> {
    if let Some(credential) = flags {
        return Ok(Some(Found {
            credential,
            source: "--username/--password-stdin".into(),
        }));
    }
    let env = |key| std::env::var(key).ok().filter(|v| !v.is_empty());
    match (
        env("MLAMBDA_REGISTRY_USERNAME"),
        env("MLAMBDA_REGISTRY_PASSWORD"),
    ) {
        (Some(username), Some(password)) => {
            return Ok(Some(Found {
                credential: Credential::Basic { username, password },
                source: "MLAMBDA_REGISTRY_USERNAME/MLAMBDA_REGISTRY_PASSWORD".into(),
            }));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(RemoteError::Config(
                "set both MLAMBDA_REGISTRY_USERNAME and MLAMBDA_REGISTRY_PASSWORD, or neither"
                    .into(),
            ));
        }
        (None, None) => {}
    }
    let Some(path) = docker_config_path() else {
        return Ok(None);
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(RemoteError::Config(format!(
                "{}: cannot read: {e}",
                path.display()
            )));
        }
    };
    let config: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| RemoteError::Config(format!("{}: is not valid JSON: {e}", path.display())))?;
    from_docker_config(&config, authority, &path.display().to_string())
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker/config.json"))
}

/// A config.json key (`https://host:port/v1/`, `host:port`) reduced to its authority.
fn key_authority(key: &str) -> &str {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    rest.split('/').next().unwrap_or(rest)
}

pub(crate) fn from_docker_config(
    config: &serde_json::Value,
    authority: &str,
    path: &str,
) -> Result<Option<Found>, RemoteError> {
    let matching_key = |map: &serde_json::Value| -> Option<(String, serde_json::Value)> {
        map.as_object()?
            .iter()
            .find(|(key, _)| key_authority(key) == authority)
            .map(|(k, v)| (k.clone(), v.clone()))
    };
    // A helper named for this registry wins, then the store for all, then inline `auths`.
    if let Some((key, helper)) = matching_key(&config["credHelpers"])
        && let Some(helper) = helper.as_str()
    {
        return run_helper(helper, &key, authority);
    }
    if let Some(store) = config["credsStore"].as_str().filter(|s| !s.is_empty()) {
        let key = matching_key(&config["auths"]).map_or_else(|| authority.to_string(), |(k, _)| k);
        if let Some(found) = run_helper(store, &key, authority)? {
            return Ok(Some(found));
        }
    }
    let Some((_, entry)) = matching_key(&config["auths"]) else {
        return Ok(None);
    };
    let source = format!("{path} (auths)");
    if let Some(token) = entry["identitytoken"].as_str().filter(|t| !t.is_empty()) {
        return Ok(Some(Found {
            credential: Credential::IdentityToken(token.into()),
            source,
        }));
    }
    if let Some(auth) = entry["auth"].as_str().filter(|a| !a.is_empty()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok());
        let Some((username, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(RemoteError::Config(format!(
                "{path}: auths.{authority}.auth is not base64 of 'user:password'"
            )));
        };
        return Ok(Some(Found {
            credential: Credential::Basic {
                username: username.into(),
                password: password.into(),
            },
            source,
        }));
    }
    if let (Some(username), Some(password)) =
        (entry["username"].as_str(), entry["password"].as_str())
    {
        return Ok(Some(Found {
            credential: Credential::Basic {
                username: username.into(),
                password: password.into(),
            },
            source,
        }));
    }
    Ok(None)
}

/// `docker-credential-<helper> get`, the server URL on stdin, `{"Username","Secret"}` out.
fn run_helper(helper: &str, key: &str, authority: &str) -> Result<Option<Found>, RemoteError> {
    let program = format!("docker-credential-{helper}");
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            RemoteError::Config(format!(
                "credential helper {program} (for {authority}) cannot be started: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(key.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|e| RemoteError::Config(format!("credential helper {program} failed: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        if said.contains("credentials not found") {
            return Ok(None);
        }
        return Err(RemoteError::Config(format!(
            "credential helper {program} failed for {authority} ({})",
            output.status
        )));
    }
    let answer: serde_json::Value = serde_json::from_slice(&output.stdout).map_err(|_| {
        RemoteError::Config(format!("credential helper {program} did not answer JSON"))
    })?;
    let username = answer["Username"].as_str().unwrap_or_default();
    let secret = answer["Secret"].as_str().unwrap_or_default();
    if secret.is_empty() {
        return Ok(None);
    }
    let credential = if username == "<token>" {
        Credential::IdentityToken(secret.into())
    } else {
        Credential::Basic {
            username: username.into(),
            password: secret.into(),
        }
    };
    Ok(Some(Found {
        credential,
        source: program,
    }))
}

/// What the registry asked for in `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
pub fn parse_challenge(headers: &HeaderMap) -> Option<Challenge> {
    let text = headers.get(WWW_AUTHENTICATE)?.to_str().ok()?.trim();
    let (scheme, rest) = text.split_once(' ').unwrap_or((text, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = parse_params(rest);
    Some(Challenge::Bearer {
        realm: params.get("realm")?.clone(),
        service: params.get("service").cloned(),
    })
}

/// `key="value",key=value` pairs; quoted values may hold commas.
fn parse_params(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, next)) = chars.next() {
                            value.push(next);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    other => value.push(other),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

struct Token {
    value: String,
    expires: Instant,
}

/// The authentication state shared by every request of one push (and its threads).
pub struct Auth {
    found: Option<Found>,
    challenge: Mutex<Option<Challenge>>,
    tokens: Mutex<HashMap<String, Token>>,
}

impl Auth {
    pub fn new(found: Option<Found>) -> Auth {
        Auth {
            found,
            challenge: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    pub fn has_credential(&self) -> bool {
        self.found.is_some()
    }

    pub fn source(&self) -> Option<&str> {
        self.found.as_ref().map(|f| f.source.as_str())
    }

    fn challenge(&self) -> Option<Challenge> {
        self.challenge.lock().ok().and_then(|c| c.clone())
    }

    /// The `Authorization` header for a request needing `scopes`, fetching a token when the
    /// registry uses bearer tokens and none is valid.
    pub fn header(&self, http: &Client, scopes: &[String]) -> Result<Option<HeaderValue>, Fault> {
        match self.challenge() {
            None => Ok(None),
            Some(Challenge::Basic) => match self.found.as_ref().map(|f| &f.credential) {
                Some(Credential::Basic { username, password }) => {
                    let raw = format!("{username}:{password}");
                    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
                    Ok(HeaderValue::from_str(&format!("Basic {encoded}")).ok())
                }
                _ => Ok(None),
            },
            Some(Challenge::Bearer { realm, service }) => {
                let key = scopes.join(" ");
                if let Ok(tokens) = self.tokens.lock()
                    && let Some(token) = tokens.get(&key)
                    && token.expires > Instant::now()
                {
                    return Ok(HeaderValue::from_str(&format!("Bearer {}", token.value)).ok());
                }
                let token = self.fetch_token(http, &realm, service.as_deref(), scopes)?;
                let header = HeaderValue::from_str(&format!("Bearer {}", token.value)).ok();
                if let Ok(mut tokens) = self.tokens.lock() {
                    tokens.insert(key, token);
                }
                Ok(header)
            }
        }
    }

    /// A 401 came back: take its challenge and drop the token it refused. Returns whether
    /// the request is worth sending again.
    pub fn unauthorized(&self, headers: &HeaderMap, scopes: &[String], sent: bool) -> bool {
        let Some(challenge) = parse_challenge(headers) else {
            return false;
        };
        let known = self.challenge();
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.remove(&scopes.join(" "));
        }
        let changed = known.as_ref() != Some(&challenge);
        if let Ok(mut slot) = self.challenge.lock() {
            *slot = Some(challenge.clone());
        }
        match challenge {
            // Basic credentials sent and refused will be refused again.
            Challenge::Basic => self.has_credential() && (changed || !sent),
            // An expired token is replaced by a fresh one.
            Challenge::Bearer { .. } => true,
        }
    }

    fn fetch_token(
        &self,
        http: &Client,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> Result<Token, Fault> {
        let mut url = Url::parse(realm).map_err(|_| {
            Fault::Fatal(RemoteError::Auth(format!(
                "the registry's token realm '{realm}' is not a URL"
            )))
        })?;
        let credential = self.found.as_ref().map(|f| &f.credential);
        let request = match credential {
            Some(Credential::IdentityToken(refresh)) => {
                // OAuth2 refresh-token grant, as docker does with an identity token.
                let mut form = url::form_urlencoded::Serializer::new(String::new());
                form.append_pair("grant_type", "refresh_token")
                    .append_pair("refresh_token", refresh)
                    .append_pair("client_id", "mlambda");
                if let Some(service) = service {
                    form.append_pair("service", service);
                }
                form.append_pair("scope", &scopes.join(" "));
                http.post(url.clone())
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(form.finish())
            }
            other => {
                {
                    let mut query = url.query_pairs_mut();
                    if let Some(service) = service {
                        query.append_pair("service", service);
                    }
                    for scope in scopes {
                        query.append_pair("scope", scope);
                    }
                }
                let request = http.get(url.clone());
                match other {
                    Some(Credential::Basic { username, password }) => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .map_err(|e| Fault::from_transport("fetching a token", e))?;
        let status = response.status();
        if status.as_u16() == 401 || status.as_u16() == 403 {
            return Err(Fault::Fatal(self.rejected(realm)));
        }
        if super::retry::is_transient_status(status) {
            return Err(Fault::Transient {
                message: format!("the token server {realm} answered HTTP {status}"),
                retry_after: super::retry::retry_after(response.headers()),
            });
        }
        if !status.is_success() {
            return Err(Fault::Fatal(RemoteError::Auth(format!(
                "the token server {realm} answered HTTP {status}"
            ))));
        }
        let body: serde_json::Value = response.json_value().map_err(|e| {
            Fault::Fatal(RemoteError::Auth(format!(
                "the token server {realm} did not answer JSON: {e}"
            )))
        })?;
        let value = body["token"]
            .as_str()
            .or_else(|| body["access_token"].as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Fault::Fatal(RemoteError::Auth(format!(
                    "the token server {realm} answered without a token"
                )))
            })?;
        let lifetime = body["expires_in"].as_u64().unwrap_or(60).max(1);
        // Renew a little early so a token does not expire between the check and the use.
        let usable = Duration::from_secs(lifetime).mul_f64(0.9);
        Ok(Token {
            value: value.to_string(),
            expires: Instant::now() + usable,
        })
    }

    /// The error for credentials the registry refused (or none when it wanted some).
    pub fn rejected(&self, registry: &str) -> RemoteError {
        match self.source() {
            Some(source) => RemoteError::Auth(format!(
                "{registry} rejected the credentials from {source} (HTTP 401/403): check the user name and password"
            )),
            None => RemoteError::Auth(format!(
                "{registry} requires authentication: run `docker login`, pass --username with --password-stdin, or set MLAMBDA_REGISTRY_USERNAME and MLAMBDA_REGISTRY_PASSWORD"
            )),
        }
    }
}

/// Reads a JSON body; a small extension so the `json` feature of reqwest is not needed.
trait JsonBody {
    fn json_value(self) -> Result<serde_json::Value, String>;
}

impl JsonBody for reqwest::blocking::Response {
    fn json_value(self) -> Result<serde_json::Value, String> {
        let bytes = self.bytes().map_err(|e| error_chain(&e))?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenges_parse_with_commas_in_quotes() {
        let mut headers = HeaderMap::new();
        headers.insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static(
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push""#,
            ),
        );
        assert_eq!(
            parse_challenge(&headers),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=x"));
        assert_eq!(parse_challenge(&headers), Some(Challenge::Basic));
    }

    #[test]
    fn docker_config_auths_and_identity_tokens() {
        let config = serde_json::json!({
            "auths": {
                "https://registry.example.com/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("ci:s3cret")},
                "other:5000": {"identitytoken": "refresh"}
            }
        });
        let found = from_docker_config(&config, "registry.example.com", "config.json")
            .unwrap()
            .unwrap();
        assert_eq!(
            found.credential,
            Credential::Basic {
                username: "ci".into(),
                password: "s3cret".into()
            }
        );
        assert!(!format!("{found:?}").contains("s3cret"));
        let found = from_docker_config(&config, "other:5000", "config.json")
            .unwrap()
            .unwrap();
        assert_eq!(
            found.credential,
            Credential::IdentityToken("refresh".into())
        );
        assert!(
            from_docker_config(&config, "nowhere", "config.json")
                .unwrap()
                .is_none()
        );
    }
}
