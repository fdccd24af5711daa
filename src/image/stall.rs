//! The stall watch of a blob download (`pull_progress_timeout`, `pull_min_rate`): a
//! download that receives no bytes for the timeout, or fewer than the rate floor allows
//! over a whole timeout window, fails with an error naming the image, the blob and the
//! setting, instead of holding a download slot (and the kubelet's pull) forever.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// A transfer the watch stopped; the reason names the blob, the image and the setting.
/// The source turns it into its own timeout error.
#[derive(Debug)]
pub struct Stalled(pub String);

impl std::fmt::Display for Stalled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Watches one transfer; windows of `timeout` each must bring enough bytes.
pub struct Watch {
    timeout: Option<Duration>,
    /// Bytes per second below which a window counts as stalled (0: any byte is progress).
    min_rate: u64,
    window_start: Instant,
    window_bytes: u64,
    what: String,
}

/// `90s` → `1m30s`, `2s`, `500ms`: how durations are written in config and messages.
pub fn humane(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

impl Watch {
    /// Watches the transfer of `what` (e.g. "blob sha256:… of r.io/a:1").
    pub fn new(timeout: Option<Duration>, min_rate: u64, what: String) -> Watch {
        Watch {
            timeout,
            min_rate,
            window_start: Instant::now(),
            window_bytes: 0,
            what,
        }
    }

    /// The fewest bytes a window must bring.
    fn floor(&self, timeout: Duration) -> u64 {
        ((self.min_rate as f64 * timeout.as_secs_f64()) as u64).max(1)
    }

    fn stalled(&self, timeout: Duration) -> Stalled {
        let reason = if self.window_bytes == 0 {
            format!(
                "{}: no data received for {} (pull_progress_timeout)",
                self.what,
                humane(timeout)
            )
        } else {
            format!(
                "{}: {} bytes received in {}, below pull_min_rate {} bytes/s (pull_progress_timeout {})",
                self.what,
                self.window_bytes,
                humane(timeout),
                self.min_rate,
                humane(timeout)
            )
        };
        Stalled(reason)
    }

    /// Closes the window if it is over: enough bytes start a new one, too few are a stall.
    fn roll(&mut self, timeout: Duration) -> Result<(), Stalled> {
        if self.window_bytes < self.floor(timeout) {
            return Err(self.stalled(timeout));
        }
        self.window_start = Instant::now();
        self.window_bytes = 0;
        Ok(())
    }

    /// Awaits `f` (a response, the next chunk) while the windows it spans bring enough.
    pub async fn guard<F: Future>(&mut self, f: F) -> Result<F::Output, Stalled> {
        let Some(timeout) = self.timeout else {
            return Ok(f.await);
        };
        let mut f = std::pin::pin!(f);
        loop {
            match tokio::time::timeout_at(self.window_start + timeout, &mut f).await {
                Ok(v) => return Ok(v),
                Err(_) => self.roll(timeout)?,
            }
        }
    }

    /// Counts `n` bytes received.
    pub fn received(&mut self, n: u64) -> Result<(), Stalled> {
        self.window_bytes += n;
        match self.timeout {
            Some(t) if self.window_start.elapsed() >= t => self.roll(t),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(timeout: Duration, min_rate: u64) -> Watch {
        let blob = crate::names::Digest::from_sha256([7; 32]);
        Watch::new(Some(timeout), min_rate, format!("blob {blob} of r.io/a:1"))
    }

    #[test]
    fn durations_print_humanely() {
        assert_eq!(humane(Duration::from_secs(60)), "1m");
        assert_eq!(humane(Duration::from_secs(90)), "1m30s");
        assert_eq!(humane(Duration::from_secs(30)), "30s");
        assert_eq!(humane(Duration::from_millis(1500)), "1500ms");
    }

    #[tokio::test]
    async fn silence_for_the_timeout_is_a_stall_naming_blob_and_setting() {
        let mut w = watch(Duration::from_millis(200), 0);
        let e = w
            .guard(std::future::pending::<()>())
            .await
            .expect_err("nothing arrives");
        let text = e.to_string();
        for part in ["r.io/a:1", "sha256:0707", "200ms", "pull_progress_timeout"] {
            assert!(text.contains(part), "{part} missing in {text}");
        }
    }

    #[tokio::test]
    async fn a_trickle_below_the_floor_is_a_stall_and_enough_bytes_are_not() {
        let window = Duration::from_millis(300);
        // Floor: 1000 B/s × 0.3 s = 300 bytes per window.
        let mut fast = watch(window, 1000);
        for _ in 0..16 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            fast.received(10_000)
                .expect("10 kB per chunk is above the floor");
        }
        let mut slow = watch(window, 1000);
        let mut result = Ok(());
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            result = slow.received(1);
            if result.is_err() {
                break;
            }
        }
        let e = result.expect_err("one byte per 50 ms is below 1000 B/s");
        assert!(e.to_string().contains("pull_min_rate 1000"), "{e}");
    }
}
