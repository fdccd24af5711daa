//! Opening a store: refuse what is not one, take the lock that keeps a second daemon out,
//! recover what a crash left ([`super::recover`]) and load the records.

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use tokio_util::task::TaskTracker;

use super::update::Writer;
use super::usage::BlobUsage;
use super::{Options, Shared, Store, StoreError, intents, layout, recover};

impl Store {
    /// Opens (creating if needed) the store at `root`, takes its lock, and recovers what a
    /// crash left behind.
    pub fn open(root: &Path) -> Result<Store, StoreError> {
        Store::open_with(root, Options::default())
    }

    /// [`Store::open`] with options.
    pub fn open_with(root: &Path, options: Options) -> Result<Store, StoreError> {
        let lock = lock(root)?;
        open_locked(root, lock, options)
    }
}

/// Takes the store's lock (creating the root's directories if needed), refusing a root
/// that is not a store and one another process holds.
pub(super) fn lock(root: &Path) -> Result<std::fs::File, StoreError> {
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
pub(super) fn open_locked(
    root: &Path,
    lock: std::fs::File,
    options: Options,
) -> Result<Store, StoreError> {
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
    // Interrupted pulls whose image is recorded meanwhile need no note any more.
    let (kept, done): (Vec<_>, Vec<_>) = intents::recover(root).into_iter().partition(|k| {
        !rec.records
            .images()
            .any(|i| i.manifests.iter().any(|m| m.manifest.digest == k.manifest))
    });
    for k in done {
        let _ = std::fs::remove_file(&k.path);
    }
    let kept_blobs = intents::blobs_of(&kept);
    // Blobs are counted as they are kept; none is removed or added until the store opens.
    let (bytes, inodes) = recover::collect_garbage(root, |d| {
        rec.records.references(d) || rec.protected.contains(d) || kept_blobs.contains(d)
    })?;
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
    tracing::info!(root = %root.display(), images = rec.records.len(), bytes, "store opened");
    let mut leases = std::collections::HashMap::new();
    for k in &kept {
        for d in &k.blobs {
            *leases.entry(d.clone()).or_insert(0) += 1;
        }
    }
    let shared = Arc::new(Shared {
        root: root.to_owned(),
        _lock: lock,
        records: RwLock::new(Arc::new(rec.records)),
        writer: tokio::sync::Mutex::new(Writer::new(rec.foreign, layout::stamp(root))),
        queue: Mutex::new(Vec::new()),
        protected: RwLock::new(rec.protected),
        leases: Mutex::new(leases),
        partials: Mutex::new(partials),
        usage: BlobUsage::new(bytes, inodes),
        grace: options.interrupted_grace,
        kept: Mutex::new(kept),
        tasks: TaskTracker::new(),
    });
    intents::expire_later(&shared);
    Ok(Store { shared })
}
