//! How long a connection may sit without a request in progress, and how many connections
//! are served at once: what keeps clients that open sockets and never finish a request
//! (a half-sent header, a stalled TLS handshake, an idle keep-alive) from exhausting the
//! server's file descriptors.

use super::ListenError;
use std::time::Duration;

/// Seconds of `MLAMBDA_HTTP_TIMEOUT`, when not set.
const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// Connections at once, when `MLAMBDA_HTTP_CONNECTIONS` is not set and the open-file limit
/// is high enough.
const DEFAULT_CONNECTIONS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The TLS handshake, the wait for a request's header, and the wait for the next request
    /// on a kept-alive connection each end after this; a request in progress is never cut.
    pub timeout: Duration,
    /// Connections served at once; more wait in the kernel's accept queue until one closes.
    pub connections: usize,
}

impl Limits {
    /// The defaults, or what `MLAMBDA_HTTP_TIMEOUT` (seconds) and `MLAMBDA_HTTP_CONNECTIONS`
    /// say.
    pub fn from_env() -> Result<Limits, ListenError> {
        let timeout = positive("MLAMBDA_HTTP_TIMEOUT", "seconds")?.unwrap_or(DEFAULT_TIMEOUT_SECS);
        let connections = match positive("MLAMBDA_HTTP_CONNECTIONS", "connections")? {
            Some(connections) => usize::try_from(connections).unwrap_or(usize::MAX),
            None => default_connections(open_file_limit()),
        };
        Ok(Limits {
            timeout: Duration::from_secs(timeout),
            connections,
        })
    }
}

/// A whole number above zero from `variable`, if set.
fn positive(variable: &str, unit: &str) -> Result<Option<u64>, ListenError> {
    let Some(text) = std::env::var_os(variable) else {
        return Ok(None);
    };
    text.to_str()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|&n| n > 0)
        .map(Some)
        .ok_or_else(|| {
            ListenError::Config(format!(
                "{variable}={}: expected a whole number of {unit} above 0 (or unset it for the default)",
                text.to_string_lossy()
            ))
        })
}

/// Half the open-file limit, so that the store, the catalogue and the builds keep
/// descriptors when every connection slot is taken; at most [`DEFAULT_CONNECTIONS`].
fn default_connections(open_files: Option<u64>) -> usize {
    let half = open_files.map_or(DEFAULT_CONNECTIONS as u64, |limit| limit / 2);
    half.clamp(1, DEFAULT_CONNECTIONS as u64) as usize
}

/// The soft `RLIMIT_NOFILE` of this process.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct it is given, which lives through the call.
    let read = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (read == 0).then_some(limit.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_default_to_half_the_open_file_limit() {
        assert_eq!(default_connections(Some(1024)), 512);
        assert_eq!(default_connections(Some(1 << 20)), DEFAULT_CONNECTIONS);
        assert_eq!(default_connections(Some(u64::MAX)), DEFAULT_CONNECTIONS);
        assert_eq!(default_connections(Some(1)), 1);
        assert_eq!(default_connections(None), DEFAULT_CONNECTIONS);
    }
}
