//! Disk usage: the blob bytes and inodes, counted as blobs are placed and collected (so
//! ImageFsInfo never walks the tree), plus the layout's own files.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Store, blobs, layout};

/// Disk space used by the store.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// The running count of what `blobs/` holds.
pub(super) struct BlobUsage {
    bytes: AtomicU64,
    inodes: AtomicU64,
}

impl BlobUsage {
    pub(super) fn new(bytes: u64, inodes: u64) -> BlobUsage {
        BlobUsage {
            bytes: AtomicU64::new(bytes),
            inodes: AtomicU64::new(inodes),
        }
    }

    pub(super) fn add(&self, bytes: u64, inodes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.inodes.fetch_add(inodes, Ordering::Relaxed);
    }

    pub(super) fn remove(&self, bytes: u64, inodes: u64) {
        let sub = |counter: &AtomicU64, n: u64| {
            let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
        };
        sub(&self.bytes, bytes);
        sub(&self.inodes, inodes);
    }
}

impl Store {
    /// Bytes and inodes the store uses: blobs plus the layout files and directories.
    pub fn usage(&self) -> Usage {
        let blobs_now = &self.shared.usage;
        let mut bytes = blobs_now.bytes.load(Ordering::Relaxed);
        let mut inodes = blobs_now.inodes.load(Ordering::Relaxed);
        for f in [
            layout::INDEX_FILE,
            layout::LAYOUT_FILE,
            layout::LOCK_FILE,
            "blobs",
            "blobs/sha256",
            layout::INGEST_DIR,
            super::intents::INTENTS_DIR,
        ] {
            if let Ok(m) = std::fs::metadata(self.root().join(f)) {
                bytes += blobs::allocated_bytes(&m);
                inodes += 1;
            }
        }
        Usage { bytes, inodes }
    }
}
