//! Blob collection: the one predicate that says whether a blob is still needed, and the
//! two-step deletion of those that are not (renamed out of `blobs/` under the lease lock,
//! unlinked after it).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{MutexGuard, RwLockReadGuard};

use super::records::Records;
use super::{Shared, blobs, layout};
use crate::names::Digest;

/// Everything that keeps a blob: a lease, a foreign `index.json` entry, an image record.
/// Holding one means holding the lease lock, so a decision it makes stays true until it
/// is dropped (leases are the only way a blob gains a user outside the records writer).
struct Needs<'a> {
    leases: MutexGuard<'a, HashMap<Digest, usize>>,
    protected: RwLockReadGuard<'a, HashSet<Digest>>,
    records: std::sync::Arc<Records>,
}

impl Needs<'_> {
    /// Whether anything still needs blob `d`.
    fn needed(&mut self, d: &Digest) -> bool {
        self.leases.contains_key(d) || self.protected.contains(d) || self.records.references(d)
    }
}

impl Shared {
    /// Runs `f` with [`Needs`], its locks taken in the store's lock order. The records are
    /// read after the lease lock is taken: a pull publishes its image before it drops its
    /// lease, so a blob seen unleased here is seen in the records if an image has it.
    fn with_needs<R>(&self, f: impl FnOnce(&mut Needs<'_>) -> R) -> R {
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let protected = self.protected.read().unwrap_or_else(|p| p.into_inner());
        f(&mut Needs {
            leases,
            protected,
            records: self.records(),
        })
    }

    /// Those of `candidates` nothing needs (decided in memory; [`Shared::collect`] decides
    /// again, under the lock, before deleting).
    pub(super) fn unneeded(&self, candidates: Vec<Digest>) -> Vec<Digest> {
        if candidates.is_empty() {
            return candidates;
        }
        self.with_needs(|needs| {
            candidates
                .into_iter()
                .filter(|d| !needs.needed(d))
                .collect()
        })
    }

    /// Takes out of `blobs/` those of `candidates` nothing needs, and returns them for
    /// [`unlink_trash`]. Under the lease lock a blob is only renamed into `ingest/` (quick;
    /// a pull that leases it next finds it gone and downloads it); the unlink of possibly
    /// gigabytes comes after.
    pub(super) fn collect(&self, candidates: Vec<Digest>) -> Vec<(Digest, PathBuf)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut trash = Vec::new();
        self.with_needs(|needs| {
        for d in candidates {
            if needs.needed(&d) {
                continue;
            }
            let path = layout::blob_path(&self.root, &d);
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let doomed = self
                .root
                .join(layout::INGEST_DIR)
                .join(format!("deleting-{}-{n}", d.hex()));
            match std::fs::rename(&path, &doomed) {
                Ok(()) => {
                    self.usage.remove(blobs::allocated_bytes(&meta), 1);
                    trash.push((d, doomed));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(blob = %d, error = %e, "could not delete unreferenced blob; it goes at next start")
                }
            }
        }
        });
        trash
    }
}

/// Unlinks blobs [`Shared::collect`] moved aside. A crash before this leaves them in
/// `ingest/`, which is cleared at start.
pub(super) fn unlink_trash(trash: Vec<(Digest, PathBuf)>) {
    for (d, doomed) in trash {
        match std::fs::remove_file(&doomed) {
            Ok(()) => tracing::debug!(blob = %d, "deleted unreferenced blob"),
            Err(e) => {
                tracing::warn!(blob = %d, error = %e, "could not delete unreferenced blob; it goes at next start")
            }
        }
    }
}
