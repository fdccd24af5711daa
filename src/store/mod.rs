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
//! a crash left between those steps.

mod blobs;
pub mod error;
pub mod layout;
pub mod records;
mod recover;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

pub use blobs::Ingest;
pub use error::StoreError;
pub use records::{ImageRecord, ManifestBlobs, NameRecord, Records};

use crate::names::{Digest, ImageId, ImageName};
use crate::oci::Descriptor;

/// Disk space used by the store.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// Blobs that in-flight pulls rely on: removal never deletes a leased blob.
#[derive(Default)]
struct Leases(Mutex<HashMap<Digest, usize>>);

/// Keeps blobs from being deleted while it lives.
pub struct Lease {
    leases: Arc<Leases>,
    digests: Vec<Digest>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut map = self.leases.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in &self.digests {
            if let Some(n) = map.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    map.remove(d);
                }
            }
        }
    }
}

pub struct Store {
    root: PathBuf,
    _lock: std::fs::File,
    /// The image records. A std `RwLock`: reads are short, synchronous and never span an
    /// `.await`; writers replace the whole value after persisting it.
    records: RwLock<Arc<Records>>,
    /// Serialises index updates; holds the entries cri-imaged keeps verbatim.
    writer: tokio::sync::Mutex<Writer>,
    leases: Arc<Leases>,
    blob_bytes: AtomicU64,
    blob_inodes: AtomicU64,
}

struct Writer {
    foreign: Vec<serde_json::Value>,
    protected: HashSet<Digest>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, takes its lock, and recovers what a
    /// crash left behind.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let io = |op, path: &Path, e| StoreError::io(root, op, path, e);
        for dir in [layout::blobs_dir(root), root.join(layout::INGEST_DIR)] {
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        }
        let lock_path = root.join(layout::LOCK_FILE);
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| io("open", &lock_path, e))?;
        match rustix::fs::flock(&lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(StoreError::Locked {
                    root: root.to_owned(),
                    lock: lock_path,
                });
            }
            Err(e) => return Err(io("lock", &lock_path, e.into())),
        }
        layout::ensure_layout_file(root)?;
        let _ = std::fs::remove_file(root.join(format!("{}.tmp", layout::INDEX_FILE)));
        recover::clear_dir(root, &root.join(layout::INGEST_DIR))?;
        let rec = recover::load(root)?;
        let mut keep = rec.records.referenced_blobs();
        keep.extend(rec.protected.iter().cloned());
        recover::collect_garbage(root, &keep)?;
        if rec.dirty {
            let bytes = layout::render_index(
                rec.records
                    .entries()
                    .map(|n| (&n.name, &n.manifest, &n.pulled_by)),
                &rec.foreign,
            );
            layout::write_atomic(root, layout::INDEX_FILE, &bytes)?;
        }
        let (bytes, inodes) = recover::disk_usage(&layout::blobs_dir(root));
        tracing::info!(root = %root.display(), images = rec.records.len(), bytes, "store opened");
        Ok(Store {
            root: root.to_owned(),
            _lock: lock,
            records: RwLock::new(Arc::new(rec.records)),
            writer: tokio::sync::Mutex::new(Writer {
                foreign: rec.foreign,
                protected: rec.protected,
            }),
            leases: Arc::default(),
            blob_bytes: AtomicU64::new(bytes),
            blob_inodes: AtomicU64::new(inodes),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A consistent snapshot of the image records.
    pub fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The image an ID prefix (hex, at least one character) names, if exactly one.
    pub fn find_id_prefix(&self, hex_prefix: &str) -> Option<ImageId> {
        self.records()
            .by_id_prefix(hex_prefix)
            .map(|i| i.id.clone())
    }

    /// Marks blobs as in use by an in-flight pull until the lease is dropped.
    pub fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let digests: Vec<Digest> = digests.into_iter().collect();
        let mut map = self.leases.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in &digests {
            *map.entry(d.clone()).or_default() += 1;
        }
        Lease {
            leases: self.leases.clone(),
            digests,
        }
    }

    /// Whether a verified blob with this digest and size is present.
    pub async fn has_blob(&self, d: &Descriptor) -> bool {
        tokio::fs::metadata(layout::blob_path(&self.root, &d.digest))
            .await
            .is_ok_and(|m| m.len() == d.size)
    }

    /// Starts writing a blob.
    pub async fn ingest(&self, expected: &Descriptor) -> Result<Ingest, StoreError> {
        Ingest::create(&self.root, expected)
    }

    /// Verifies and commits an ingest.
    pub async fn commit(&self, ingest: Ingest) -> Result<(), StoreError> {
        let allocated = ingest.commit().await?;
        self.blob_bytes.fetch_add(allocated, Ordering::Relaxed);
        self.blob_inodes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a small blob held in memory (a manifest or config), verified like any other.
    pub async fn put_blob(&self, d: &Descriptor, bytes: &[u8]) -> Result<(), StoreError> {
        if self.has_blob(d).await {
            return Ok(());
        }
        let mut ingest = self.ingest(d).await?;
        ingest.write(bytes).await?;
        self.commit(ingest).await
    }

    /// Reads a blob (manifests and configs: callers cap the size through the descriptor).
    pub async fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let path = layout::blob_path(&self.root, digest);
        tokio::fs::read(&path).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::MissingBlob {
                    digest: digest.clone(),
                }
            } else {
                StoreError::io(&self.root, "read", &path, e)
            }
        })
    }

    /// Records `name` for image `id`, whose blobs must all be committed. The blob directory
    /// is fsynced before `index.json` names them.
    pub async fn add_name(
        &self,
        id: &ImageId,
        blobs: &ManifestBlobs,
        name: NameRecord,
    ) -> Result<(), StoreError> {
        self.update(|r| r.tag(id, blobs, name)).await.map(|_| ())
    }

    /// Removes an image with all its names. Returns whether it existed.
    pub async fn remove_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        self.update(|r| r.remove(id)).await
    }

    /// Removes one name; the image goes with its last name. Returns whether it existed.
    pub async fn untag(&self, name: &ImageName) -> Result<bool, StoreError> {
        self.update(|r| r.untag(name)).await
    }

    /// Applies `change` to a copy of the records, persists the copy, publishes it, then
    /// deletes the blobs no image references any more.
    async fn update(&self, change: impl FnOnce(&mut Records) -> bool) -> Result<bool, StoreError> {
        let writer = self.writer.lock().await;
        let before = self.records();
        let mut after = (*before).clone();
        if !change(&mut after) {
            return Ok(false);
        }
        let bytes = layout::render_index(
            after
                .entries()
                .map(|n| (&n.name, &n.manifest, &n.pulled_by)),
            &writer.foreign,
        );
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || {
            layout::sync_dir(&root, &layout::blobs_dir(&root))?;
            layout::write_atomic(&root, layout::INDEX_FILE, &bytes)
        })
        .await
        .map_err(|e| {
            StoreError::io(
                &self.root,
                "write",
                &self.root.join(layout::INDEX_FILE),
                std::io::Error::other(e),
            )
        })??;
        let still = after.referenced_blobs();
        let orphans: Vec<Digest> = before
            .referenced_blobs()
            .into_iter()
            .filter(|d| !still.contains(d) && !writer.protected.contains(d))
            .collect();
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(after);
        drop(writer);
        self.delete_blobs(orphans);
        Ok(true)
    }

    fn delete_blobs(&self, orphans: Vec<Digest>) {
        // The lease map stays locked across check and unlink, so a pull cannot lease a blob
        // between the two and then find it gone.
        let leases = self.leases.0.lock().unwrap_or_else(|p| p.into_inner());
        for d in orphans {
            if leases.contains_key(&d) {
                continue;
            }
            let path = layout::blob_path(&self.root, &d);
            let allocated = std::fs::metadata(&path)
                .map(|m| blobs::allocated_bytes(&m))
                .unwrap_or(0);
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    self.blob_bytes.fetch_sub(
                        allocated.min(self.blob_bytes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                    self.blob_inodes.fetch_sub(
                        1.min(self.blob_inodes.load(Ordering::Relaxed)),
                        Ordering::Relaxed,
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(blob = %d, error = %e, "could not delete unreferenced blob; it goes at next start")
                }
            }
        }
    }

    /// Bytes and inodes the store uses: blobs plus the layout files and directories.
    pub fn usage(&self) -> Usage {
        let mut bytes = self.blob_bytes.load(Ordering::Relaxed);
        let mut inodes = self.blob_inodes.load(Ordering::Relaxed);
        for f in [
            layout::INDEX_FILE,
            layout::LAYOUT_FILE,
            layout::LOCK_FILE,
            "blobs",
            "blobs/sha256",
            layout::INGEST_DIR,
        ] {
            if let Ok(m) = std::fs::metadata(self.root.join(f)) {
                bytes += blobs::allocated_bytes(&m);
                inodes += 1;
            }
        }
        Usage { bytes, inodes }
    }
}

#[cfg(test)]
mod tests;
