//! ImageFsInfo: the store's real disk usage — blobs, and with `unpack` on the layer
//! snapshots too — kept up to date by the store and the snapshots themselves so the call
//! never walks the disk.

use std::path::PathBuf;

use super::ImageService;

/// Disk usage of the filesystem holding images.
#[derive(Debug, Clone)]
pub struct FsUsage {
    pub mountpoint: PathBuf,
    pub used_bytes: u64,
    pub inodes_used: u64,
    /// Nanoseconds since the epoch when collected.
    pub timestamp_nanos: i64,
}

impl ImageService {
    pub fn fs_info(&self) -> FsUsage {
        let usage = self.inner.store.usage();
        let snaps = self
            .inner
            .snapshots
            .as_ref()
            .map(|s| s.usage())
            .unwrap_or_default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
            .unwrap_or(1);
        FsUsage {
            mountpoint: self.inner.store.root().to_owned(),
            used_bytes: usage.bytes + snaps.bytes,
            inodes_used: usage.inodes + snaps.inodes,
            timestamp_nanos: now.max(1),
        }
    }
}
