//! Prometheus metrics: owns the registry and every metric family, and the OpenMetrics text
//! encoding. The rest of the crate records through [`Metrics`]' plain methods (strings and
//! numbers); no `prometheus_client` type leaves this module.
//!
//! The names, labels and units are listed in the README ("Watching pulls"); they follow the
//! Prometheus conventions (`_total` counters, `_seconds` and `_bytes` units).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PullLabels {
    result: &'static str,
    error_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RegistryLabel {
    registry: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    rpc: &'static str,
    code: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Pull durations: 50 ms to about 14 min.
fn pull_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 15))
}

/// CRI request durations: 1 ms to about 16 min (PullImage is a CRI request too).
fn request_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 11))
}

/// Layer unpack durations: 10 ms to about 3 min.
fn unpack_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// Why the signature policy refused an image (`trust::Why::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// A mirror that failed and the class of its failure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MirrorLabels {
    mirror: String,
    error_class: &'static str,
}

/// How a layer was unpacked: `streamed` (from its download's bytes) or `blob`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnpackLabel {
    how: &'static str,
}

struct Families {
    registry: Registry,
    unpacks: HistogramFamily<UnpackLabel>,
    refused: Family<ReasonLabel, Counter>,
    mirror_failures: Family<MirrorLabels, Counter>,
    pulls: Family<PullLabels, Counter>,
    pull_duration: HistogramFamily<ResultLabel>,
    fetched: Family<RegistryLabel, Counter>,
    skipped: Counter,
    in_flight: Gauge,
    waiters: Gauge,
    store_images: Gauge,
    store_bytes: Gauge,
    requests: HistogramFamily<RequestLabels>,
}

/// Bytes fetched from one registry (`cri_imaged_pull_fetched_bytes_total`).
#[derive(Clone)]
pub struct FetchedBytes(Counter);

impl FetchedBytes {
    pub fn add(&self, bytes: u64) {
        self.0.inc_by(bytes);
    }
}

/// The daemon's metrics; cheap to clone (clones share the registry).
#[derive(Clone)]
pub struct Metrics {
    f: Arc<Families>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// How a pull request ended, for [`Metrics::pull_finished`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullResult {
    Success,
    /// A failure of the given class (`not_found`, `auth`, `network`, …).
    Failure(&'static str),
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let pulls = Family::<PullLabels, Counter>::default();
        registry.register(
            "cri_imaged_pulls",
            "PullImage requests finished, by result and error class",
            pulls.clone(),
        );
        let pull_duration = HistogramFamily::<ResultLabel>::new_with_constructor(pull_buckets);
        registry.register_with_unit(
            "cri_imaged_pull_duration",
            "Time from a PullImage request to its answer",
            Unit::Seconds,
            pull_duration.clone(),
        );
        let fetched = Family::<RegistryLabel, Counter>::default();
        registry.register_with_unit(
            "cri_imaged_pull_fetched",
            "Blob bytes downloaded, by registry",
            Unit::Bytes,
            fetched.clone(),
        );
        let skipped = Counter::default();
        registry.register_with_unit(
            "cri_imaged_pull_skipped",
            "Blob bytes pulls did not download because the store already had them",
            Unit::Bytes,
            skipped.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "cri_imaged_pulls_in_flight",
            "Pulls running now (one per image name and credentials)",
            in_flight.clone(),
        );
        let waiters = Gauge::default();
        registry.register(
            "cri_imaged_pull_waiters",
            "PullImage callers waiting on the pulls in flight",
            waiters.clone(),
        );
        let store_images = Gauge::default();
        registry.register(
            "cri_imaged_store_images",
            "Images in the store",
            store_images.clone(),
        );
        let store_bytes = Gauge::default();
        registry.register_with_unit(
            "cri_imaged_store",
            "Disk space the store uses",
            Unit::Bytes,
            store_bytes.clone(),
        );
        let requests = HistogramFamily::<RequestLabels>::new_with_constructor(request_buckets);
        registry.register_with_unit(
            "cri_imaged_cri_request_duration",
            "CRI requests by RPC and gRPC status code",
            Unit::Seconds,
            requests.clone(),
        );
        let unpacks = HistogramFamily::<UnpackLabel>::new_with_constructor(unpack_buckets);
        registry.register_with_unit(
            "cri_imaged_layer_unpack_duration",
            "Time to unpack one layer into its snapshot, by how (streamed from its download, or from its blob)",
            Unit::Seconds,
            unpacks.clone(),
        );
        let refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "cri_imaged_pulls_refused",
            "Pulls the signature policy refused, by reason (rejected, no_signature, other_key, other_image, invalid_signature, bad_key, fetch_failed)",
            refused.clone(),
        );
        let mirror_failures = Family::<MirrorLabels, Counter>::default();
        registry.register(
            "cri_imaged_mirror_failures",
            "Mirrors that could not serve a pull's manifest (the next source was tried), by mirror and error class",
            mirror_failures.clone(),
        );
        Metrics {
            f: Arc::new(Families {
                registry,
                unpacks,
                refused,
                mirror_failures,
                pulls,
                pull_duration,
                fetched,
                skipped,
                in_flight,
                waiters,
                store_images,
                store_bytes,
                requests,
            }),
        }
    }

    /// The signature policy refused a pull for `reason`.
    pub fn refused(&self, reason: &'static str) {
        self.f.refused.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// `mirror` (a registry host) failed with an error of `class`; the pull went on to the
    /// next source.
    pub fn mirror_failed(&self, mirror: &str, class: &'static str) {
        self.f
            .mirror_failures
            .get_or_create(&MirrorLabels {
                mirror: mirror.to_owned(),
                error_class: class,
            })
            .inc();
    }

    /// A layer was unpacked in `seconds`, `streamed` from its download or from its blob.
    pub fn layer_unpacked(&self, streamed: bool, seconds: f64) {
        let how = if streamed { "streamed" } else { "blob" };
        self.f
            .unpacks
            .get_or_create(&UnpackLabel { how })
            .observe(seconds);
    }

    /// A PullImage request ended after `seconds`.
    pub fn pull_finished(&self, result: PullResult, seconds: f64) {
        let (result, error_class) = match result {
            PullResult::Success => ("success", "none"),
            PullResult::Failure(class) => ("failure", class),
        };
        self.f
            .pulls
            .get_or_create(&PullLabels {
                result,
                error_class,
            })
            .inc();
        self.f
            .pull_duration
            .get_or_create(&ResultLabel { result })
            .observe(seconds);
    }

    /// The counter of bytes fetched from `registry`, looked up once: a download adds to
    /// it chunk by chunk without a label lookup (or allocation) per chunk.
    pub fn fetched(&self, registry: &str) -> FetchedBytes {
        FetchedBytes(
            self.f
                .fetched
                .get_or_create(&RegistryLabel {
                    registry: registry.to_owned(),
                })
                .clone(),
        )
    }

    /// A pull found `bytes` of blobs already in the store.
    pub fn skipped(&self, bytes: u64) {
        self.f.skipped.inc_by(bytes);
    }

    /// The gauges read from the daemon's state when scraped.
    pub fn set_state(&self, pulls_in_flight: usize, waiters: usize, images: usize, bytes: u64) {
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.f.in_flight.set(gauge(pulls_in_flight as u64));
        self.f.waiters.set(gauge(waiters as u64));
        self.f.store_images.set(gauge(images as u64));
        self.f.store_bytes.set(gauge(bytes));
    }

    /// A CRI request `rpc` was answered with gRPC status `code` after `seconds`.
    pub fn cri_request(&self, rpc: &'static str, code: &'static str, seconds: f64) {
        self.f
            .requests
            .get_or_create(&RequestLabels { rpc, code })
            .observe(seconds);
    }

    /// Every metric in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.f.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions_and_values_move() {
        let m = Metrics::new();
        m.pull_finished(PullResult::Success, 0.2);
        m.pull_finished(PullResult::Failure("not_found"), 0.01);
        m.fetched("quay.io").add(100);
        m.fetched("quay.io").add(23);
        m.skipped(7);
        m.set_state(2, 3, 4, 5);
        m.cri_request("PullImage", "OK", 0.2);
        let text = m.encode();
        for line in [
            "cri_imaged_pulls_total{result=\"success\",error_class=\"none\"} 1",
            "cri_imaged_pulls_total{result=\"failure\",error_class=\"not_found\"} 1",
            "cri_imaged_pull_duration_seconds_count{result=\"success\"} 1",
            "cri_imaged_pull_fetched_bytes_total{registry=\"quay.io\"} 123",
            "cri_imaged_pull_skipped_bytes_total 7",
            "cri_imaged_pulls_in_flight 2",
            "cri_imaged_pull_waiters 3",
            "cri_imaged_store_images 4",
            "cri_imaged_store_bytes 5",
            "cri_imaged_cri_request_duration_seconds_count{rpc=\"PullImage\",code=\"OK\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn the_contrib_dashboard_and_alerts_name_only_metrics_that_exist() {
        let m = Metrics::new();
        m.pull_finished(PullResult::Success, 1.0);
        m.fetched("r.io").add(1);
        m.skipped(1);
        m.cri_request("PullImage", "OK", 1.0);
        let exposed: Vec<String> = m
            .encode()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
            .collect();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/prometheus");
        let mut checked = 0;
        for file in ["grafana-dashboard.json", "prometheus.yml"] {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            if file.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&text).expect("dashboard is JSON");
            }
            for (i, _) in text.match_indices("cri_imaged_") {
                let name: String = text[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(exposed.contains(&name), "{file} uses {name}, not exposed");
                checked += 1;
            }
        }
        assert!(checked >= 8, "only {checked} metric uses found");
    }
}
