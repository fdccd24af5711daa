//! What the daemon shows about its work: the public `pull` entry point (timed, its outcome
//! counted by error class and logged), and the read-outs the admin endpoint serves (pulls
//! in flight, store totals, the metrics handle).

use std::time::Instant;

use super::{Error, ImageService, PullRequest, PullSnapshot};
use crate::metrics::{Metrics, PullResult};
use crate::names::ImageId;

/// Records a pull request's outcome once; a request dropped before it ended (its caller
/// went away) counts as `cancelled`.
struct Outcome<'a> {
    metrics: &'a Metrics,
    image: &'a str,
    started: Instant,
    recorded: bool,
}

impl Outcome<'_> {
    fn record(&mut self, result: PullResult) {
        self.recorded = true;
        self.metrics
            .pull_finished(result, self.started.elapsed().as_secs_f64());
    }
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.record(PullResult::Failure("cancelled"));
            tracing::info!(
                image = self.image,
                seconds = format_args!("{:.3}", self.started.elapsed().as_secs_f64()),
                "pull request cancelled by its caller"
            );
        }
    }
}

impl ImageService {
    /// Pulls an image and returns its ID (the config digest).
    pub async fn pull(&self, req: PullRequest) -> Result<ImageId, Error> {
        let image = req.image.clone();
        let mut outcome = Outcome {
            metrics: &self.inner.metrics,
            image: &image,
            started: Instant::now(),
            recorded: false,
        };
        let result = self.pull_unobserved(req).await;
        // A pull's buffers (manifests, batches of layer bytes) are garbage now.
        crate::memory::trim_soon();
        match &result {
            Ok(_) => outcome.record(PullResult::Success),
            Err(e) => {
                let class = e.kind().class();
                outcome.record(PullResult::Failure(class));
                tracing::warn!(
                    image = %image,
                    error_class = class,
                    seconds = format_args!("{:.3}", outcome.started.elapsed().as_secs_f64()),
                    error = %e,
                    "pull failed"
                );
            }
        }
        result
    }

    /// The metrics this service records into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Every pull in flight, oldest first.
    pub fn pulls_in_flight(&self) -> Vec<PullSnapshot> {
        self.inner.progress.snapshot()
    }

    /// Callers waiting on the pulls in flight.
    pub fn pull_waiters(&self) -> usize {
        self.inner.progress.waiters()
    }

    /// Images in the store and the disk space it uses.
    pub fn store_totals(&self) -> (usize, u64) {
        (
            self.inner.store.records().len(),
            self.inner.store.usage().bytes,
        )
    }
}
