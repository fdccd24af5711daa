//! The core image service: name resolution, pull, list, status, untag/remove and
//! filesystem usage, with CRI-O's rules (see `ARCHITECTURE.md` and the design notes).
//!
//! No gRPC here: callers pass plain strings and typed values and get typed results and
//! [`Error`]s. Pull coordination lives here too: one pull in flight per (name, credentials),
//! one download per blob, and a semaphore bounding concurrent blob downloads.

mod cache;
mod error;
mod flight;
mod fs_info;
mod info;
mod list;
mod pull;
mod remove;
pub mod status;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use cache::ImageMeta;
pub use error::Error;
pub use fs_info::FsUsage;
pub use info::{ImageInfo, ImageUser};
pub use list::Images;
pub use pull::PullRequest;
pub use status::verbose_info;

use crate::names::{self, ImageId, NameError, Resolved};
use crate::registry::RegistryClient;
use crate::store::{ImageRecord, Store};

/// Settings of the core service.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Registries for short names, in order.
    pub registries: Vec<String>,
    /// The transport of a name without one (only "docker" today).
    pub default_transport: String,
    /// Blob downloads running at once, across all pulls.
    pub max_concurrent_downloads: usize,
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
    cache: cache::Cache,
    listing: list::Listing,
    pulls: flight::Flights<Result<ImageId, Arc<Error>>>,
    blobs: flight::Flights<Result<(), Arc<Error>>>,
    downloads: Arc<Semaphore>,
    shutdown: CancellationToken,
}

impl ImageService {
    pub fn new(store: Store, registry: RegistryClient, settings: Settings) -> ImageService {
        let downloads = Arc::new(Semaphore::new(settings.max_concurrent_downloads.max(1)));
        ImageService {
            inner: Arc::new(Inner {
                store,
                registry,
                settings,
                cache: cache::Cache::default(),
                listing: list::Listing::default(),
                pulls: flight::Flights::default(),
                blobs: flight::Flights::default(),
                downloads,
                shutdown: CancellationToken::new(),
            }),
        }
    }

    /// Cancels every pull in flight; their callers get [`Error::ShuttingDown`].
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// Waits until the store work in flight (records changes, blob placements, clean-ups)
    /// is done: call after [`ImageService::shutdown`] and the server's drain, before exit.
    pub async fn close(&self) {
        self.inner.store.close().await;
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
        let resolved = names::resolve(input, &self.inner.settings.registries, |p| {
            records.by_id_prefix(p).map(|i| i.id.clone())
        });
        match resolved {
            Ok(Resolved::Id(id)) => Ok(records.get(&id).cloned()),
            Ok(Resolved::Names(candidates)) => {
                Ok(candidates.iter().find_map(|c| records.by_name(c)).cloned())
            }
            Err(NameError::UnknownImageId { .. } | NameError::NoRegistries { .. }) => Ok(None),
            // A truncated `sha256:` ID that matches nothing names no image.
            Err(NameError::InvalidDigest { .. }) if is_id_prefix(input) => Ok(None),
            Err(e) => Err(e.into()),
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
