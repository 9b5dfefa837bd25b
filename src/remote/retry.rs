//! When to try again, and how long to wait: exponential backoff with jitter, `Retry-After`
//! honoured, and which answers and transport errors are worth another attempt.

use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// How many times an operation is tried and how long to wait between tries.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Tries in all (the first one included).
    pub attempts: u32,
    /// The wait before the second try; doubled for each further one.
    pub base: Duration,
    /// The longest wait (also caps `Retry-After`).
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based): what the registry asked for when
    /// it said, else `base · 2^(attempt-1)` with jitter (50–100 %), never more than `max`.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.max);
        }
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max);
        let fraction = 0.5 + 0.5 * random_unit();
        exp.mul_f64(fraction)
    }
}

/// A number in [0, 1) that differs between calls and processes (std's hasher keys are random),
/// enough to keep parallel clients from retrying in lock step; no RNG crate needed.
fn random_unit() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Answers that say "not now" rather than "no": 408, 429 and the server errors that can pass.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429)
        || (status.is_server_error()
            && !matches!(
                status,
                StatusCode::NOT_IMPLEMENTED | StatusCode::HTTP_VERSION_NOT_SUPPORTED
            ))
}

/// `Retry-After: <seconds>` (the HTTP-date form falls back to the backoff).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = headers.get(RETRY_AFTER)?.to_str().ok()?;
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// Whether a transport error may pass on its own: timeouts, refused or broken connections.
/// A certificate the client does not trust never will.
pub fn is_transient_error(error: &reqwest::Error) -> bool {
    if error.is_builder() || error.is_redirect() || is_certificate_error(error) {
        return false;
    }
    error.is_timeout() || error.is_connect() || error.is_request() || error.is_body()
}

pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let text = error_chain(error).to_ascii_lowercase();
    text.contains("certificate") || text.contains("unknownissuer")
}

/// An error and its causes on one line (reqwest's own message is only the outermost layer).
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 1..=6 {
            let d = policy.delay(attempt, None);
            let full = (Duration::from_millis(100) * (1 << (attempt - 1))).min(policy.max);
            assert!(d <= full && d >= full / 2, "{attempt}: {d:?}");
        }
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(1)
        );
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
    }

    #[test]
    fn transient_statuses() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(is_transient_status(StatusCode::from_u16(code).unwrap()));
        }
        for code in [400, 401, 403, 404, 413, 501] {
            assert!(!is_transient_status(StatusCode::from_u16(code).unwrap()));
        }
    }
}
