//! The core image service: name resolution, pull, list, status, untag/remove and
//! filesystem usage, with CRI-O's rules (see `ARCHITECTURE.md` and the design notes).
//!
//! No gRPC here: callers pass plain strings and typed values and get typed results and
//! [`Error`]s. Pull coordination lives here too: one pull in flight per (name, credentials),
//! one download per blob, and semaphores bounding concurrent blob downloads (large blobs
//! by `max_concurrent_downloads`; small ones, a round trip each, by four times as many).

mod bring;
mod cache;
pub mod containers;
mod error;
mod flight;
mod fs_info;
mod import;
mod info;
mod list;
mod observe;
mod pinned;
pub mod progress;
mod pull;
mod remove;
mod sources;
mod stall;
pub mod status;
mod trust;
mod unpack;

use std::sync::{Arc, RwLock};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use cache::ImageMeta;
pub use error::Error;
pub use fs_info::FsUsage;
pub use info::{ImageInfo, ImageUser};
pub use list::Images;
pub use pinned::Pinned;
pub use progress::{BlobSnapshot, BlobState, PullSnapshot};
pub use pull::PullRequest;
pub use status::verbose_info;

use crate::metrics::Metrics;
use crate::names::{ImageId, NameError, Resolved};
use crate::registries::NodeRegistries;
use crate::registry::{RegistryClient, RetryPolicy};
use crate::store::{ImageRecord, Store};
use crate::transport::ImportPolicy;

/// Blobs up to this size download under `small_downloads` (configs, small layers).
pub const SMALL_BLOB: u64 = 1 << 20;
/// How many small downloads may run per `max_concurrent_downloads`.
const SMALL_FACTOR: usize = 4;
/// At most this many small downloads at once, whatever the setting.
const MAX_SMALL_DOWNLOADS: usize = 64;

/// Settings of the core service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registries for short names, in order.
    pub registries: Vec<String>,
    /// The transport of a name without one (only "docker" today).
    pub default_transport: String,
    /// Blob downloads running at once, across all pulls.
    pub max_concurrent_downloads: usize,
    /// Which local transports are on and where their files may come from.
    pub imports: ImportPolicy,
    /// registries.conf, the auth file and certs.d at start (replaced by reloads).
    pub node: NodeRegistries,
    /// Images reported as pinned (kubelet's garbage collection leaves them alone).
    pub pinned: Pinned,
    /// Retries of broken blob downloads.
    pub retry: RetryPolicy,
    /// A blob download receiving nothing (or less than `min_rate`) for this long fails.
    pub progress_timeout: Option<std::time::Duration>,
    /// Bytes per second a download must average over each `progress_timeout` window.
    pub min_rate: u64,
    /// The signature policies and registries.d at start (replaced by reloads).
    pub trust: Arc<crate::trust::NodeTrust>,
    /// How long a credential helper's answer is kept (zero: asked every pull).
    pub credential_helper_cache: std::time::Duration,
}

/// The core image service; cheap to clone (all clones share one state).
#[derive(Clone)]
pub struct ImageService {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    registry: RegistryClient,
    settings: Settings,
    /// The registry configuration in force; a reload swaps the `Arc`.
    node: RwLock<Arc<NodeRegistries>>,
    /// The signature policies in force; a reload swaps the `Arc`.
    trust: RwLock<Arc<crate::trust::NodeTrust>>,
    cache: cache::Cache,
    helpers: sources::HelperCache,
    listing: list::Listing,
    pulls: flight::Flights<flight::PullKey, Result<ImageId, Arc<Error>>>,
    blobs: flight::Flights<crate::names::Digest, Result<(), Arc<Error>>>,
    /// Downloads of blobs larger than [`SMALL_BLOB`] at once, across all pulls.
    downloads: Arc<Semaphore>,
    /// Downloads of blobs up to [`SMALL_BLOB`] at once, besides: each costs a round trip
    /// and next to no bandwidth, so 50 small layers behind a 20 ms RTT do not wait in
    /// threes (`bench/pull.sh`'s network case: 0.52 → 0.20 s at 16 in flight).
    small_downloads: Arc<Semaphore>,
    /// Layers unpacking at once, across all pulls (one per core, at least 2).
    unpacks: Arc<Semaphore>,
    shutdown: CancellationToken,
    progress: progress::Progress,
    metrics: Metrics,
    /// Where layers are unpacked; `None` when `unpack` is off.
    snapshots: Option<Arc<crate::snapshot::Snapshots>>,
    /// Each config's chain IDs, read once (`unpack::collect`).
    chains: unpack::ChainMemo,
}

impl ImageService {
    pub fn new(store: Store, registry: RegistryClient, settings: Settings) -> ImageService {
        ImageService::with_snapshots(store, registry, settings, None)
    }

    /// [`ImageService::new`] unpacking every pulled layer into `snapshots`; the snapshots
    /// no recorded image needs are collected now.
    pub fn with_snapshots(
        store: Store,
        registry: RegistryClient,
        settings: Settings,
        snapshots: Option<crate::snapshot::Snapshots>,
    ) -> ImageService {
        let (chains, cache) = (unpack::ChainMemo::default(), cache::Cache::default());
        if let Some(s) = &snapshots {
            let removed = unpack::collect(&store, s, &chains, &cache);
            if removed > 0 {
                tracing::info!(snapshots = removed, "removed snapshots no image needs");
            }
        }
        let downloads = Arc::new(Semaphore::new(settings.max_concurrent_downloads.max(1)));
        let small_downloads = Arc::new(Semaphore::new(
            (settings.max_concurrent_downloads.max(1) * SMALL_FACTOR).min(MAX_SMALL_DOWNLOADS),
        ));
        ImageService {
            inner: Arc::new(Inner {
                store,
                registry,
                node: RwLock::new(Arc::new(settings.node.clone())),
                trust: RwLock::new(settings.trust.clone()),
                settings,
                cache,
                helpers: Default::default(),
                listing: list::Listing::default(),
                pulls: flight::Flights::default(),
                blobs: flight::Flights::default(),
                downloads,
                small_downloads,
                unpacks: Arc::new(Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get().max(2)),
                )),
                shutdown: CancellationToken::new(),
                progress: progress::Progress::default(),
                metrics: Metrics::new(),
                snapshots: snapshots.map(Arc::new),
                chains,
            }),
        }
    }

    /// Cancels every pull in flight; their callers get [`Error::ShuttingDown`].
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits until the store work in flight (records changes, blob placements, clean-ups)
    /// is done and the snapshots made are synced: call after [`ImageService::shutdown`] and
    /// the server's drain, before exit.
    pub async fn close(&self) {
        self.inner.store.close().await;
        if let Some(snapshots) = self.inner.snapshots.clone() {
            // What was unpacked is made durable before the process goes.
            let flushed = tokio::task::spawn_blocking(move || snapshots.flush()).await;
            if let Ok(Err(e)) = flushed {
                tracing::error!(error = %e, "syncing the snapshots at shutdown failed; those not synced are unpacked again after the next start");
            }
        }
    }

    /// The store's root directory.
    pub fn root(&self) -> &std::path::Path {
        self.inner.store.root()
    }

    /// Finds the image a user string names: an ID, an ID prefix, a full or short name, a
    /// name@digest. Unknown images and unknown 64-hex IDs are `None`.
    fn find(&self, input: &str) -> Result<Option<ImageRecord>, Error> {
        let input = strip_transport(input);
        if input.is_empty() {
            return Err(Error::EmptyName);
        }
        let records = self.inner.store.records();
        let resolved = self.resolve_input(
            &self.node(),
            input,
            |p| records.by_id_prefix(p).map(|i| i.id.clone()),
            false,
        );
        match resolved {
            Ok(Resolved::Id(id)) => Ok(records.get(&id).cloned()),
            Ok(Resolved::Names(candidates)) => {
                Ok(candidates.iter().find_map(|c| records.by_name(c)).cloned())
            }
            Err(Error::Name(NameError::UnknownImageId { .. } | NameError::NoRegistries { .. })) => {
                Ok(None)
            }
            // A truncated `sha256:` ID that matches nothing names no image.
            Err(Error::Name(NameError::InvalidDigest { .. })) if is_id_prefix(input) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// `sha256:` followed by lowercase hex: the form of a (truncated) image ID.
fn is_id_prefix(input: &str) -> bool {
    input.strip_prefix("sha256:").is_some_and(|h| {
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// `docker://name` is `name`: the only transport that lookups understand.
fn strip_transport(input: &str) -> &str {
    input.strip_prefix("docker://").unwrap_or(input)
}

#[cfg(test)]
mod tests;
