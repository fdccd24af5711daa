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

mod blobs;
pub mod check;
pub mod error;
pub mod layout;
pub mod records;
mod recover;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::task::TaskTracker;

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

/// Keeps blobs from being deleted while it lives. When the last lease on a blob goes and
/// no image references it (the pull failed or was cancelled), the blob is deleted.
pub struct Lease {
    shared: Arc<Shared>,
    digests: Vec<Digest>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut released = Vec::new();
        {
            let mut map = self.shared.leases.lock().unwrap_or_else(|p| p.into_inner());
            for d in self.digests.drain(..) {
                if let Some(n) = map.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&d);
                        released.push(d);
                    }
                }
            }
        }
        // Usually every released blob is referenced (the image was recorded): that is
        // decided in memory. Only real orphans (a failed or cancelled pull) cost file
        // system work, on a blocking thread the store's `close` waits for.
        let orphans = self.shared.unneeded(released);
        if !orphans.is_empty() {
            let shared = self.shared.clone();
            let work = move || unlink_trash(shared.collect(orphans));
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(self.shared.tasks.spawn_blocking(work));
            } else {
                work();
            }
        }
    }
}

/// The content store. Cheap to share: all state is behind one `Arc`.
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    root: PathBuf,
    _lock: std::fs::File,
    /// The image records. A std `RwLock`: reads are short, synchronous and never span an
    /// `.await`; writers replace the whole value after persisting it.
    records: RwLock<Arc<Records>>,
    /// Serialises index updates; holds the entries cri-imaged keeps verbatim.
    writer: tokio::sync::Mutex<Writer>,
    /// Blobs of entries cri-imaged did not write: never deleted.
    protected: RwLock<HashSet<Digest>>,
    /// Blobs in-flight pulls rely on, with how many leases each.
    leases: Mutex<HashMap<Digest, usize>>,
    /// Partial downloads a crash left in `ingest/`, each taken by the first download of
    /// its blob (so no two ingests ever share a file).
    partials: Mutex<HashMap<Digest, PathBuf>>,
    blob_bytes: AtomicU64,
    blob_inodes: AtomicU64,
    /// Work that must finish before the process exits: records changes, placements and
    /// clean-ups (see [`Store::close`]).
    tasks: TaskTracker,
}

/// What the index writer keeps between updates.
struct Writer {
    /// Entries cri-imaged did not write, kept verbatim.
    foreign: Vec<serde_json::Value>,
    /// The `index.json` version cri-imaged last wrote (or read at start).
    stamp: Option<layout::Stamp>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, takes its lock, and recovers what a
    /// crash left behind.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        let lock = Self::lock(root)?;
        Self::open_locked(root, lock)
    }

    /// Takes the store's lock (creating the root's directories if needed), refusing a
    /// root that is not a store and one another process holds.
    fn lock(root: &Path) -> Result<std::fs::File, StoreError> {
        let io = |op, path: &Path, e| StoreError::io(root, op, path, e);
        // Before anything is created or deleted: is this a store at all?
        recover::check_is_store(root)?;
        for dir in [layout::blobs_dir(root), root.join(layout::INGEST_DIR)] {
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        }
        // The directories themselves survive a power loss before the first image.
        for dir in [root.join("blobs"), root.to_owned()] {
            layout::sync_dir(root, &dir)?;
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
        Ok(lock)
    }

    /// [`Store::open`] with the lock already taken.
    fn open_locked(root: &Path, lock: std::fs::File) -> Result<Store, StoreError> {
        layout::ensure_layout_file(root)?;
        if !root.join(layout::INDEX_FILE).exists() {
            layout::write_atomic(
                root,
                layout::INDEX_FILE,
                &layout::render_index(std::iter::empty(), &[]),
            )?;
        }
        let _ = std::fs::remove_file(root.join(format!("{}.tmp", layout::INDEX_FILE)));
        let rec = recover::load(root)?;
        let mut keep = rec.records.referenced_blobs();
        keep.extend(rec.protected.iter().cloned());
        recover::collect_garbage(root, &keep)?;
        let partials = recover::scan_ingest(root)?;
        if rec.dirty {
            layout::write_index_atomic(
                root,
                rec.records
                    .entries()
                    .map(|n| (&n.name, &n.manifest, &n.pulled_by)),
                &rec.foreign,
            )?;
        }
        let (bytes, inodes) = recover::disk_usage(&layout::blobs_dir(root));
        tracing::info!(root = %root.display(), images = rec.records.len(), bytes, "store opened");
        Ok(Store {
            shared: Arc::new(Shared {
                root: root.to_owned(),
                _lock: lock,
                records: RwLock::new(Arc::new(rec.records)),
                writer: tokio::sync::Mutex::new(Writer {
                    foreign: rec.foreign,
                    stamp: layout::stamp(root),
                }),
                protected: RwLock::new(rec.protected),
                leases: Mutex::default(),
                partials: Mutex::new(partials),
                blob_bytes: AtomicU64::new(bytes),
                blob_inodes: AtomicU64::new(inodes),
                tasks: TaskTracker::new(),
            }),
        })
    }

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

    /// Marks blobs as in use by an in-flight pull until the lease is dropped.
    pub fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let digests: Vec<Digest> = digests.into_iter().collect();
        let mut map = self.shared.leases.lock().unwrap_or_else(|p| p.into_inner());
        for d in &digests {
            *map.entry(d.clone()).or_default() += 1;
        }
        Lease {
            shared: self.shared.clone(),
            digests,
        }
    }

    /// Whether a verified blob with this digest and size is present.
    pub async fn has_blob(&self, d: &Descriptor) -> bool {
        tokio::fs::metadata(layout::blob_path(self.root(), &d.digest))
            .await
            .is_ok_and(|m| m.len() == d.size)
    }

    /// Starts writing a blob.
    pub async fn ingest(&self, expected: &Descriptor) -> Result<Ingest, StoreError> {
        Ingest::create(self.root(), expected, self.shared.tasks.clone())
    }

    /// Starts writing a blob, resuming the partial download a crash left for it if there is
    /// one (hashed again on a blocking thread: see [`Ingest::written`] for where it ends).
    pub async fn ingest_resumable(&self, expected: &Descriptor) -> Result<Ingest, StoreError> {
        let partial = self
            .shared
            .partials
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&expected.digest);
        let Some(path) = partial else {
            return self.ingest(expected).await;
        };
        let (root, expected_again, tasks) =
            (self.root().to_owned(), expected, self.shared.tasks.clone());
        let expected = expected_again.clone();
        // The blocking task owns the file from here: if this caller goes away, the
        // `Ingest` it makes is dropped there, deleting the file.
        let resumed = self
            .shared
            .tasks
            .spawn_blocking(move || Ingest::resume(&root, &expected, tasks, path))
            .await;
        match resumed {
            Ok(Ok(ingest)) => Ok(ingest),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "cannot resume a partial download; starting afresh");
                self.ingest(expected_again).await
            }
            Err(e) => Err(StoreError::io(
                self.root(),
                "resume",
                self.root(),
                std::io::Error::other(e),
            )),
        }
    }

    /// Verifies an ingest and places the blob under its digest. The placement and its
    /// accounting run to completion on a blocking thread even if the caller goes away.
    pub async fn commit(&self, ingest: Ingest) -> Result<(), StoreError> {
        let finished = ingest.finish().await?;
        // No `.await` between `finish` and the spawn: the temp file always has an owner.
        let shared = self.shared.clone();
        self.shared
            .tasks
            .spawn_blocking(move || shared.place(finished))
            .await
            .map_err(|e| {
                StoreError::io(self.root(), "commit", self.root(), std::io::Error::other(e))
            })?
    }

    /// Stores a small blob held in memory (a manifest or config), verified like any other.
    pub async fn put_blob(&self, d: &Descriptor, bytes: &[u8]) -> Result<(), StoreError> {
        if self.has_blob(d).await {
            return Ok(());
        }
        let mut ingest = self.ingest(d).await?;
        ingest.write(bytes::Bytes::copy_from_slice(bytes)).await?;
        self.commit(ingest).await
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

    /// Records `name` for image `id`, whose blobs must all be committed and stay leased by
    /// `lease` until the records name them: the lease is released only after the change is
    /// published, even when the caller goes away first. The blob directory is fsynced
    /// before `index.json` names the blobs.
    pub async fn add_name(
        &self,
        id: &ImageId,
        blobs: &ManifestBlobs,
        name: NameRecord,
        lease: Lease,
    ) -> Result<(), StoreError> {
        self.add_names(id, blobs, vec![name], lease).await
    }

    /// [`Store::add_name`] for several names of one image, in one `index.json` write.
    pub async fn add_names(
        &self,
        id: &ImageId,
        blobs: &ManifestBlobs,
        names: Vec<NameRecord>,
        lease: Lease,
    ) -> Result<(), StoreError> {
        let (id, blobs) = (id.clone(), blobs.clone());
        self.update_holding(
            move |r| {
                names
                    .into_iter()
                    .fold(false, |changed, n| r.tag(&id, &blobs, n) | changed)
            },
            Some(lease),
        )
        .await
        .map(|_| ())
    }

    /// Removes an image with all its names. Returns whether it existed.
    pub async fn remove_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.update(move |r| r.remove(&id)).await
    }

    /// Removes one name; the image goes with its last name. Returns whether it existed.
    pub async fn untag(&self, name: &ImageName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.update(move |r| r.untag(&name)).await
    }

    /// Runs a records change to completion in its own task: a caller that goes away (a
    /// client deadline, a cancelled pull) cannot interrupt it between writing `index.json`
    /// and publishing the records.
    async fn update(
        &self,
        change: impl FnOnce(&mut Records) -> bool + Send + 'static,
    ) -> Result<bool, StoreError> {
        self.update_holding(change, None).await
    }

    /// [`Store::update`], releasing `hold` only once the change is published.
    async fn update_holding(
        &self,
        change: impl FnOnce(&mut Records) -> bool + Send + 'static,
        hold: Option<Lease>,
    ) -> Result<bool, StoreError> {
        let shared = self.shared.clone();
        self.shared
            .tasks
            .spawn(async move {
                let result = shared.update(change).await;
                drop(hold);
                result
            })
            .await
            .map_err(|e| {
                StoreError::io(
                    self.root(),
                    "update",
                    &self.root().join(layout::INDEX_FILE),
                    std::io::Error::other(e),
                )
            })?
    }

    /// Waits for the records changes, blob placements and clean-ups under way, so that
    /// what they started is on disk, consistent, before the process exits.
    pub async fn close(&self) {
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
    }

    /// Bytes and inodes the store uses: blobs plus the layout files and directories.
    pub fn usage(&self) -> Usage {
        let mut bytes = self.shared.blob_bytes.load(Ordering::Relaxed);
        let mut inodes = self.shared.blob_inodes.load(Ordering::Relaxed);
        for f in [
            layout::INDEX_FILE,
            layout::LAYOUT_FILE,
            layout::LOCK_FILE,
            "blobs",
            "blobs/sha256",
            layout::INGEST_DIR,
        ] {
            if let Ok(m) = std::fs::metadata(self.root().join(f)) {
                bytes += blobs::allocated_bytes(&m);
                inodes += 1;
            }
        }
        Usage { bytes, inodes }
    }
}

impl Shared {
    fn records(&self) -> Arc<Records> {
        self.records
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `change` to a copy of the records, persists the copy, publishes it, then
    /// deletes the blobs no image references any more.
    async fn update(
        self: Arc<Self>,
        change: impl FnOnce(&mut Records) -> bool,
    ) -> Result<bool, StoreError> {
        let mut writer = self.writer.lock().await;
        let before = self.records();
        let mut after = (*before).clone();
        if !change(&mut after) {
            return Ok(false);
        }
        let after = Arc::new(after);
        let shared = self.clone();
        let (ours, known, stamp, next) = (
            before.clone(),
            writer.foreign.clone(),
            writer.stamp,
            after.clone(),
        );
        let written = tokio::task::spawn_blocking(move || {
            let root = &shared.root;
            let mut foreign = known;
            if layout::stamp(root) != stamp {
                // Someone else wrote index.json since cri-imaged did: its entries that are
                // not cri-imaged's are kept, as they now are.
                let (others, keep) = recover::foreign_entries(root, &[&ours, &next])?;
                shared
                    .protected
                    .write()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(keep);
                foreign = others;
            }
            layout::sync_dir(root, &layout::blobs_dir(root))?;
            layout::write_index_atomic(
                root,
                next.entries().map(|n| (&n.name, &n.manifest, &n.pulled_by)),
                &foreign,
            )?;
            Ok::<_, StoreError>((foreign, layout::stamp(root)))
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
        (writer.foreign, writer.stamp) = written;
        let candidates = before.blobs_changed_in(&after);
        let mut still = after.reference_check();
        let orphans: Vec<Digest> = candidates
            .into_iter()
            .filter(|d| !still.contains(d))
            .cloned()
            .collect();
        drop(still);
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = after;
        drop(writer);
        if !orphans.is_empty() {
            let shared = self.clone();
            let _ =
                tokio::task::spawn_blocking(move || unlink_trash(shared.collect(orphans))).await;
        }
        Ok(true)
    }

    /// Links verified content into place and counts it. A blob already there (a
    /// concurrent commit of the same content) is counted once; a damaged file in its place
    /// (wrong size) is replaced. A blob no lease holds and no image references (its pull
    /// went away meanwhile) is collected at once.
    fn place(&self, f: blobs::Finished) -> Result<(), StoreError> {
        let dest = layout::blob_path(&self.root, &f.digest);
        let allocated = || {
            std::fs::metadata(&dest)
                .map(|m| blobs::allocated_bytes(&m))
                .unwrap_or(f.size)
        };
        let placed = match std::fs::hard_link(&f.temp, &dest) {
            Ok(()) => {
                self.blob_bytes.fetch_add(allocated(), Ordering::Relaxed);
                self.blob_inodes.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                // Under the lease lock, like `collect`: check and replace happen as one.
                let _leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
                match std::fs::metadata(&dest) {
                    Ok(m) if m.len() == f.size => Ok(()),
                    Ok(m) => {
                        tracing::warn!(blob = %f.digest, bytes = m.len(), expected = f.size, "replacing a damaged blob");
                        let old = blobs::allocated_bytes(&m);
                        std::fs::rename(&f.temp, &dest)
                            .map_err(|e| StoreError::io(&self.root, "rename", &dest, e))
                            .map(|()| {
                                self.blob_bytes.fetch_add(allocated(), Ordering::Relaxed);
                                self.sub_bytes(old);
                            })
                    }
                    Err(e) => Err(StoreError::io(&self.root, "stat", &dest, e)),
                }
            }
            Err(e) => Err(StoreError::io(&self.root, "link", &dest, e)),
        };
        let _ = std::fs::remove_file(&f.temp);
        if placed.is_ok() {
            unlink_trash(self.collect(vec![f.digest]));
        }
        placed
    }

    /// Those of `candidates` no lease, no foreign entry and no image needs (decided in
    /// memory; [`Shared::collect`] checks again under the lock before deleting).
    fn unneeded(&self, candidates: Vec<Digest>) -> Vec<Digest> {
        if candidates.is_empty() {
            return candidates;
        }
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let protected = self.protected.read().unwrap_or_else(|p| p.into_inner());
        let records = self.records();
        let mut referenced = records.reference_check();
        candidates
            .into_iter()
            .filter(|d| !leases.contains_key(d) && !protected.contains(d))
            .filter(|d| !referenced.contains(d))
            .collect()
    }

    fn sub_bytes(&self, n: u64) {
        let _ = self
            .blob_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// Takes out of `blobs/` those of `candidates` that no image references, no pull
    /// leases and no foreign entry protects, and returns them for [`unlink_trash`]. Under
    /// the lease lock a blob is only renamed into `ingest/` (quick; a pull that leases it
    /// next finds it gone and downloads it); the unlink of possibly gigabytes comes after.
    fn collect(&self, candidates: Vec<Digest>) -> Vec<(Digest, PathBuf)> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let mut trash = Vec::new();
        let leases = self.leases.lock().unwrap_or_else(|p| p.into_inner());
        let protected = self.protected.read().unwrap_or_else(|p| p.into_inner());
        let records = self.records();
        let mut referenced = records.reference_check();
        for d in candidates {
            if leases.contains_key(&d) || protected.contains(&d) {
                continue;
            }
            if referenced.contains(&d) {
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
                    self.sub_bytes(blobs::allocated_bytes(&meta));
                    let _ =
                        self.blob_inodes
                            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                Some(n.saturating_sub(1))
                            });
                    trash.push((d, doomed));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(blob = %d, error = %e, "could not delete unreferenced blob; it goes at next start")
                }
            }
        }
        trash
    }
}

/// Unlinks blobs [`Shared::collect`] moved aside. A crash before this leaves them in
/// `ingest/`, which is cleared at start.
fn unlink_trash(trash: Vec<(Digest, PathBuf)>) {
    for (d, doomed) in trash {
        match std::fs::remove_file(&doomed) {
            Ok(()) => tracing::debug!(blob = %d, "deleted unreferenced blob"),
            Err(e) => {
                tracing::warn!(blob = %d, error = %e, "could not delete unreferenced blob; it goes at next start")
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
