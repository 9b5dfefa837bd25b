//! HTTP basic authentication against an htpasswd file of bcrypt entries (`htpasswd -Bbn`),
//! as CNCF distribution reads it.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Why a request is not let in; each server answers it in its own error envelope, with
/// [`CHALLENGE`] as `WWW-Authenticate`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unauthorized(pub &'static str);

/// The `WWW-Authenticate` challenge of every refusal.
pub const CHALLENGE: &str = "Basic realm=\"mlambda\"";

#[derive(Debug)]
pub struct Htpasswd {
    users: BTreeMap<String, String>,
    /// The entry of the highest bcrypt cost: an unknown user's password is verified against
    /// it (and refused whatever the outcome), so that a 401 takes as long for a user who does
    /// not exist as for one who does, and the timing tells nobody which users exist.
    decoy: String,
    /// sha256 of `Authorization` values already verified: bcrypt is slow on purpose, and a
    /// client sends the same header with every request.
    verified: Mutex<HashSet<String>>,
}

impl Htpasswd {
    /// Reads `user:$2y$…` lines; anything but bcrypt is refused with the line number.
    pub fn load(path: &Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", number + 1))?;
            if !["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p)) {
                return Err(format!(
                    "line {}: the entry of '{user}' is not bcrypt (create it with htpasswd -B)",
                    number + 1
                ));
            }
            if hash.parse::<bcrypt::HashParts>().is_err() {
                return Err(format!(
                    "line {}: the bcrypt hash of '{user}' is malformed (create it with htpasswd -B)",
                    number + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        let decoy = users
            .values()
            .max_by_key(|hash| cost_of(hash))
            .cloned()
            .ok_or("no users")?;
        Ok(Htpasswd {
            users,
            decoy,
            verified: Mutex::new(HashSet::new()),
        })
    }

    /// The hash to verify `user`'s password against, and whether the user exists: the decoy
    /// for unknown users, so that every refusal costs the same bcrypt work.
    fn hash_for(&self, user: &str) -> (&str, bool) {
        match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        }
    }

    /// Whether an `Authorization` header names a user with the right password.
    pub async fn check(self: &Arc<Self>, authorization: Option<&str>) -> Result<(), Unauthorized> {
        let unauthorized = Unauthorized;
        let Some(value) = authorization else {
            return Err(unauthorized("authentication required"));
        };
        let key = crate::oci::digest::sha256_of(value.as_bytes());
        if self
            .verified
            .lock()
            .is_ok_and(|verified| verified.contains(&key))
        {
            return Ok(());
        }
        let Some((user, password)) = value
            .strip_prefix("Basic ")
            .and_then(|b64| base64_decode(b64.trim()))
            .and_then(|raw| String::from_utf8(raw).ok())
            .and_then(|pair| {
                pair.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            })
        else {
            return Err(unauthorized("malformed basic credentials"));
        };
        let (hash, known) = self.hash_for(&user);
        let hash = hash.to_string();
        let matches = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
            .await
            .is_ok_and(|verified| verified.unwrap_or(false));
        if !(known && matches) {
            return Err(unauthorized("invalid username or password"));
        }
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() > 1024 {
                verified.clear();
            }
            verified.insert(key);
        }
        Ok(())
    }
}

/// The cost of a hash `parse` accepted.
fn cost_of(hash: &str) -> u32 {
    hash.parse::<bcrypt::HashParts>()
        .map_or(0, |parts| parts.get_cost())
}

/// Standard base64, padded or not (clients differ); `None` when malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    LENIENT.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_known_values() {
        assert_eq!(base64_decode("dXNlcjpwYXNz").unwrap(), b"user:pass");
        assert_eq!(base64_decode("YQ==").unwrap(), b"a");
        assert_eq!(base64_decode("YWI=").unwrap(), b"ab");
        assert!(base64_decode("Y").is_none());
        assert!(base64_decode("!!!!").is_none());
    }

    #[test]
    fn only_bcrypt_entries_are_accepted() {
        assert!(Htpasswd::parse("u:$apr1$x$y").is_err());
        assert!(Htpasswd::parse("").is_err());
        assert!(Htpasswd::parse("u:$2y$05$short").is_err());
        let ok = Htpasswd::parse(&format!("u:{}\n", bcrypt::hash("p", 4).unwrap())).unwrap();
        let ok = Arc::new(ok);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            assert!(ok.check(Some("Basic dTpw")).await.is_ok());
            assert!(ok.check(Some("Basic dTpx")).await.is_err());
            assert!(ok.check(None).await.is_err());
        });
    }

    #[test]
    fn unknown_users_cost_the_same_bcrypt_work() {
        let cheap = bcrypt::hash("p", 4).unwrap();
        let dear = bcrypt::hash("q", 6).unwrap();
        let htpasswd = Htpasswd::parse(&format!("a:{cheap}\nb:{dear}\n")).unwrap();
        assert_eq!(htpasswd.hash_for("a"), (cheap.as_str(), true));
        // Verified against the dearest entry, as slow as the slowest real user.
        assert_eq!(htpasswd.hash_for("ghost"), (dear.as_str(), false));
        let htpasswd = Arc::new(htpasswd);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            // The decoy's own password lets no unknown user in ("ghost:q").
            let refused = htpasswd.check(Some("Basic Z2hvc3Q6cQ==")).await;
            assert_eq!(refused, Err(Unauthorized("invalid username or password")));
            assert!(htpasswd.check(Some("Basic Yjpx")).await.is_ok());
        });
    }
}
