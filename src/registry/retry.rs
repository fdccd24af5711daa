//! Retrying registry requests: which failures deserve another try, and how long to wait
//! before it (bounded exponential backoff with jitter).
//!
//! Retried: transport failures (reset, refused, truncated body) and the statuses a busy or
//! restarting registry answers (5xx, 408, 429). Not retried: answers that will not change
//! (404, 403, bad content), TLS failures, and timeouts (a registry that already held a pull
//! for a whole timeout must not hold it several times over). A 401 gets one
//! re-authentication instead (see `download` in `image/pull.rs`).
//!
//! `Retry-After` (in seconds) is honoured where cri-imaged sees it, on manifest requests
//! (its own GET, `fetch.rs`): the retry waits that long, and a registry asking for more than
//! [`RetryPolicy::max_delay`] is not retried within the pull (kubelet's backoff asks again
//! later). oci-client 0.18 drops the headers of an error response to a blob request, so
//! there a 429 waits as if three more retries had failed (8× the usual delay, still capped).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use super::RegistryError;
use crate::kind::Kind;

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
        if e.retry_after().is_some_and(|after| after > self.max_delay) {
            return false;
        }
        attempt < self.attempts && is_retryable(e)
    }

    /// The wait before retry number `retry` (1-based) after `e`: `base · 2^(retry-1)`,
    /// capped, with "equal jitter" (a random point in the upper half), so clients that
    /// failed together do not come back together. A 429 waits 8× longer (still capped);
    /// a `Retry-After` is waited exactly (it is never above the cap: see `should_retry`).
    pub fn delay(&self, retry: u32, e: &RegistryError) -> Duration {
        if let Some(after) = e.retry_after() {
            return after.min(self.max_delay);
        }
        let throttled = e.kind() == Kind::Throttled;
        let shift = retry.saturating_sub(1) + if throttled { 3 } else { 0 };
        let exp = self.base_delay.saturating_mul(1u32 << shift.min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        half + half.mul_f64(jitter())
    }
}

/// Whether `e` may go away if the same request is sent again (by its kind: a network
/// failure or a 429; timeouts and TLS failures are not retried).
pub fn is_retryable(e: &RegistryError) -> bool {
    matches!(e.kind(), Kind::Network | Kind::Throttled)
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
            after: None,
        }
    }

    fn throttled(after: Option<Duration>) -> RegistryError {
        RegistryError::Throttled {
            registry: "r.io".into(),
            reason: "HTTP 429".into(),
            after,
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
        let slow = p.delay(1, &throttled(None));
        assert!(
            slow >= Duration::from_millis(400) && slow <= Duration::from_millis(800),
            "{slow:?}"
        );
        assert!(p.delay(30, &throttled(None)) <= p.max_delay);
        // The text plays no part: a 503 whose reason mentions 429 is not throttled.
        let plain = p.delay(1, &unavailable("HTTP 429"));
        assert!(plain <= Duration::from_millis(100), "{plain:?}");
    }

    #[test]
    fn retry_after_is_waited_exactly_and_a_longer_one_than_the_cap_is_not_retried() {
        let p = RetryPolicy::default();
        let asks = |secs| throttled(Some(Duration::from_secs(secs)));
        assert!(p.should_retry(1, &asks(3)));
        assert_eq!(p.delay(1, &asks(3)), Duration::from_secs(3));
        assert_eq!(p.delay(4, &asks(0)), Duration::ZERO);
        assert!(!p.should_retry(1, &asks(11)), "more than max_delay");
        assert!(
            !p.should_retry(p.attempts, &asks(1)),
            "attempts still bound it"
        );
    }
}
