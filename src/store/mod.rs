//! The content store: a standard OCI image layout under the root directory.
//!
//! Owns every file below the root: blobs (content-addressed, verified before they get their
//! name), `index.json` (the image names, replaced atomically), the ingest area for partial
//! downloads and the lock that keeps a second daemon out. It keeps the image records in
//! memory, so listing never touches the disk. It knows nothing of registries, short names
//! or gRPC.
//!
//! Ordering that makes a crash harmless: a blob is fsynced and renamed into place, the blob
//! directory is fsynced, and only then does `index.json` name it; a removal rewrites
//! `index.json` first and deletes blobs after. Start-up recovery ([`recover`]) deletes what
//! a crash left between those steps. [`check`] verifies a store offline
//! (`cri-imaged check`) and repairs it.
//!
//! # Files
//! [`open`](self) opens and recovers; [`leases`](self) and [`gc`](self) decide what may be
//! deleted and delete it; `update` persists records changes; `usage` counts disk use;
//! `blobs` is one ingest, `follow` a reader of one as it grows; `layout`, `records`, `recover` and `check` as named.
//!
//! # Lock order
//! A thread that holds one of these may take only those below it, never one above:
//! 1. `writer` (async; held across the `index.json` write of one batch of records changes)
//! 2. `leases` (the lease counts; held while a collection decides and renames)
//! 3. `protected` (blobs of foreign `index.json` entries)
//! 4. `records` (held only to clone or replace the `Arc`, never across other work)
//!
//! `partials`, `kept` and `queue` are leaves: each taken alone, released before anything
//! else is locked. Leases are released only after the records naming their blobs are
//! published, and a collection reads the records after it takes `leases` ([`gc`](self)),
//! so a blob an image has is never collected. A lock added later (the snapshot store's) says here
//! where it sits.

mod blobs;
pub mod check;
pub mod error;
pub mod follow;
mod gc;
pub mod intents;
pub mod layout;
mod leases;
mod open;
mod placing;
pub mod records;
mod recover;
mod update;
mod usage;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::task::TaskTracker;

pub use blobs::Ingest;
pub use error::StoreError;
pub use intents::{Intent, Interrupted};
pub use leases::Lease;
pub use records::{ImageRecord, ManifestBlobs, NameRecord, Records};
pub use usage::Usage;

use crate::names::{Digest, ImageId};
use crate::oci::Descriptor;

/// How a store is opened.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// How long the verified blobs of an interrupted pull are kept for the next pull.
    pub interrupted_grace: std::time::Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            interrupted_grace: intents::DEFAULT_GRACE,
        }
    }
}

/// The content store. Cheap to share: all state is behind one `Arc`.
pub struct Store {
    shared: Arc<Shared>,
}

/// The store's state. The fields that are locks are listed, in the order they may be
/// taken, in the module doc.
struct Shared {
    root: PathBuf,
    _lock: std::fs::File,
    /// The image records. A std `RwLock`: reads are short, synchronous and never span an
    /// `.await`; writers replace the whole value after persisting it.
    records: RwLock<Arc<Records>>,
    /// Serialises index updates; holds the entries cri-imaged keeps verbatim.
    writer: tokio::sync::Mutex<update::Writer>,
    /// Records changes waiting for the next `index.json` write (group commit).
    queue: Mutex<Vec<update::Pending>>,
    /// Blobs of entries cri-imaged did not write: never deleted.
    protected: RwLock<HashSet<Digest>>,
    /// Blobs in-flight pulls rely on, with how many leases each.
    leases: leases::LeaseCounts,
    /// Partial downloads a crash left in `ingest/`, each taken by the first download of
    /// its blob (so no two ingests ever share a file).
    partials: Mutex<HashMap<Digest, PathBuf>>,
    usage: usage::BlobUsage,
    /// How long the blobs of an interrupted pull are kept (written into each note).
    grace: std::time::Duration,
    /// Notes of interrupted pulls found at start, whose blobs hold one lease count each
    /// until they expire or their image is recorded.
    kept: Mutex<Vec<Interrupted>>,
    /// Work that must finish before the process exits: records changes, placements and
    /// clean-ups (see [`Store::close`]).
    tasks: TaskTracker,
}

impl Store {
    pub fn root(&self) -> &Path {
        &self.shared.root
    }

    /// A consistent snapshot of the image records.
    pub fn records(&self) -> Arc<Records> {
        self.shared.records()
    }

    /// The image an ID prefix (hex, at least one character) names, if exactly one.
    pub fn find_id_prefix(&self, hex_prefix: &str) -> Option<ImageId> {
        self.records()
            .by_id_prefix(hex_prefix)
            .map(|i| i.id.clone())
    }

    /// Whether a verified blob with this digest and size is present.
    pub async fn has_blob(&self, d: &Descriptor) -> bool {
        tokio::fs::metadata(layout::blob_path(self.root(), &d.digest))
            .await
            .is_ok_and(|m| m.len() == d.size)
    }

    /// Reads a blob (manifests and configs: callers cap the size through the descriptor).
    pub async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = layout::blob_path(self.root(), digest);
        tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    digest: digest.clone(),
                }
            } else {
                StoreError::io(self.root(), "read", &path, e)
            }
        })
    }

    /// Reads the blobs `digests` name and hands each to `parse` on blocking threads (up to
    /// the machine's cores, at most 4), without a task per blob: for many small blobs at
    /// once (the configs a first listing needs). Returns what was read and parsed; a blob
    /// that is missing or that `parse` refuses is left out.
    pub async fn read_blobs_with<T: Send + 'static>(
        &self,
        digests: Vec<Digest>,
        parse: impl Fn(&[u8]) -> Option<T> + Clone + Send + 'static,
    ) -> Vec<(Digest, T)> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        let per = digests.len().div_ceil(threads).max(1);
        let reads = digests.chunks(per).map(|chunk| {
            let (chunk, root, parse) = (chunk.to_vec(), self.root().to_owned(), parse.clone());
            tokio::task::spawn_blocking(move || {
                chunk
                    .into_iter()
                    .filter_map(|d| {
                        let bytes = std::fs::read(layout::blob_path(&root, &d)).ok()?;
                        Some((d, parse(&bytes)?))
                    })
                    .collect::<Vec<_>>()
            })
        });
        futures_util::future::join_all(reads)
            .await
            .into_iter()
            .flat_map(|r| r.unwrap_or_default())
            .collect()
    }

    /// Waits for the records changes, blob placements and clean-ups under way, so that
    /// what they started is on disk, consistent, before the process exits.
    pub async fn close(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }
}

impl Shared {
    fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
