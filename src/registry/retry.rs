//! Retrying registry requests: which failures deserve another try, and how long to wait
//! before it (bounded exponential backoff with jitter).
//!
//! Retried: transport failures (reset, refused, truncated body) and the statuses a busy or
//! restarting registry answers (5xx, 408, 429). Not retried: answers that will not change
//! (404, 403, bad content), TLS failures, and timeouts (a registry that already held a pull
//! for a whole timeout must not hold it several times over). A 401 gets one
//! re-authentication instead (see `download` in `image/pull.rs`).
//!
//! `Retry-After`: oci-client 0.18 drops the headers of an error response, so the delay a
//! 429 asks for cannot be read; a 429 waits as if three more retries had failed (8× the
//! usual delay, still capped at [`RetryPolicy::max_delay`]).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::RegistryError;

/// How often and how long to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included (1: no retry).
    pub attempts: u32,
    /// The delay before the first retry; doubled for each further one.
    pub base_delay: Duration,
    /// No delay is longer than this, whatever the registry asks for.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// Whether another try may follow try number `attempt` (1-based) that failed with `e`.
    pub fn should_retry(&self, attempt: u32, e: &RegistryError) -> bool {
        attempt < self.attempts && is_retryable(e)
    }

    /// The wait before retry number `retry` (1-based) after `e`: `base · 2^(retry-1)`,
    /// capped, with "equal jitter" (a random point in the upper half), so clients that
    /// failed together do not come back together. A 429 waits 8× longer (still capped).
    pub fn delay(&self, retry: u32, e: &RegistryError) -> Duration {
        let shift = retry.saturating_sub(1) + if is_rate_limited(e) { 3 } else { 0 };
        let exp = self.base_delay.saturating_mul(1u32 << shift.min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

/// Whether `e` may go away if the same request is sent again.
pub fn is_retryable(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unavailable { .. })
}

/// A 429 (the registry asks clients to slow down).
fn is_rate_limited(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unavailable { reason, .. } if reason.contains("too many requests") || reason.contains("HTTP 429"))
}

/// A number in [0, 1), from the process's random hasher keys and the clock: enough to
/// spread retries, no crate needed.
fn jitter() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable(reason: &str) -> RegistryError {
        RegistryError::Unavailable {
            registry: "r.io".into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn only_unavailable_is_retried_and_attempts_are_bounded() {
        let p = RetryPolicy::default();
        assert!(p.should_retry(1, &unavailable("HTTP 503")));
        assert!(!p.should_retry(p.attempts, &unavailable("HTTP 503")));
        for e in [
            RegistryError::NotFound {
                registry: "r.io".into(),
                what: "x".into(),
            },
            RegistryError::Timeout {
                registry: "r.io".into(),
                reason: "read".into(),
            },
            RegistryError::DigestMismatch {
                registry: "r.io".into(),
                reason: "x".into(),
            },
            RegistryError::Unauthorized {
                registry: "r.io".into(),
            },
        ] {
            assert!(!p.should_retry(1, &e), "{e:?}");
        }
    }

    #[test]
    fn delays_grow_are_jittered_and_capped() {
        let p = RetryPolicy {
            attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let e = unavailable("HTTP 502");
        for retry in 1..=10 {
            let full = (Duration::from_millis(100) * (1 << (retry - 1))).min(p.max_delay);
            let d = p.delay(retry, &e);
            assert!(
                d >= full / 2 && d <= full,
                "retry {retry}: {d:?} vs {full:?}"
            );
        }
        let slow = p.delay(1, &unavailable("too many requests"));
        assert!(
            slow >= Duration::from_millis(400) && slow <= Duration::from_millis(800),
            "{slow:?}"
        );
        assert!(p.delay(30, &unavailable("HTTP 429")) <= p.max_delay);
    }
}
