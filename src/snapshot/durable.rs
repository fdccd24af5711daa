//! When a snapshot's content is on disk for good, without a pull waiting for it.
//!
//! A snapshot is made in `tmp-…`, and a marker file `unsynced-<pid>-<n>` is put there and
//! made durable (fsync of the file and of its directory) before anything is unpacked; the
//! tree is renamed into place once verified, marker and all. The pull goes on at once; this
//! module's thread then makes the file system durable with one `syncfs` for every snapshot
//! renamed in by then, and only after that removes their markers. So a snapshot whose
//! name survived a crash but whose files may not have carries its marker, and the next
//! start removes it ([`Snapshots::open`](super::Snapshots::open)); it is unpacked again from
//! its blob when a container needs it. A marker's name is unique to one making of the
//! snapshot: a removal and a new pull of the same chain meanwhile never lose the new
//! marker to the old one's sync.
//!
//! Before a container stacks on snapshots, [`Syncer::settle`] syncs at once what of them
//! still carries a marker, so a container is never on a snapshot a crash could take away;
//! at shutdown, [`Syncer::flush`] syncs what is queued.
//!
//! Why: one `syncfs` per snapshot before its rename was a sixth of a pull's time on the
//! debian bench image (the last layer's sync waits for every layer's data).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The marker's name starts so.
pub const MARKER_PREFIX: &str = "unsynced-";

/// The markers (absolute paths) of snapshots renamed into place and not yet synced.
#[derive(Default)]
struct State {
    pending: Vec<PathBuf>,
    closed: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The background sync of one snapshot directory's file system.
pub struct Syncer {
    /// `snapshots/`: the file system `syncfs` flushes.
    dir: PathBuf,
    shared: Arc<Shared>,
}

/// Puts a fresh marker into `tmp` (a snapshot being made) and makes it durable; returns
/// its name.
pub fn mark(tmp: &Path) -> io::Result<String> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "{MARKER_PREFIX}{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    std::fs::File::create(tmp.join(&name))?.sync_all()?;
    std::fs::File::open(tmp)?.sync_all()?;
    Ok(name)
}

/// The markers in snapshot directory `snapshot`.
pub fn markers(snapshot: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(snapshot) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(MARKER_PREFIX))
        .map(|e| e.path())
        .collect()
}

fn syncfs(dir: &Path) -> io::Result<()> {
    let d = std::fs::File::open(dir)?;
    rustix::fs::syncfs(&d).map_err(io::Error::from)
}

/// Removes `markers` (the sync they waited for is done); one already gone is fine.
fn unmark(markers: &[PathBuf]) {
    for m in markers {
        if let Err(e) = std::fs::remove_file(m)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(marker = %m.display(), error = %e, "could not remove a synced snapshot's marker; the snapshot is unpacked again after the next start");
        }
    }
}

impl Syncer {
    /// Starts the sync thread for the snapshots in `dir`.
    pub fn start(dir: &Path) -> io::Result<Syncer> {
        let shared = Arc::new(Shared::default());
        let (d, s) = (dir.to_owned(), shared.clone());
        std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || run(&d, &s))?;
        Ok(Syncer {
            dir: dir.to_owned(),
            shared,
        })
    }

    /// The snapshot whose marker is `marker` (at its final name) is in place: sync it soon.
    pub fn queue(&self, marker: PathBuf) {
        self.shared.lock().pending.push(marker);
        self.shared.cv.notify_all();
    }

    /// Makes the snapshot directories `snapshots` durable now, where they still carry a
    /// marker. Blocking.
    pub fn settle(&self, snapshots: &[PathBuf]) -> io::Result<()> {
        let found: Vec<PathBuf> = snapshots.iter().flat_map(|s| markers(s)).collect();
        if found.is_empty() {
            return Ok(());
        }
        syncfs(&self.dir)?;
        unmark(&found);
        Ok(())
    }

    /// Syncs what is queued now (at shutdown). Blocking.
    pub fn flush(&self) -> io::Result<()> {
        let batch = std::mem::take(&mut self.shared.lock().pending);
        if batch.is_empty() {
            return Ok(());
        }
        syncfs(&self.dir)?;
        unmark(&batch);
        Ok(())
    }

    /// Markers queued and not yet synced (for tests and `flush`'s callers).
    pub fn queued(&self) -> usize {
        self.shared.lock().pending.len()
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
    }
}

/// The thread: waits for queued markers, takes them all, one `syncfs`, removes them; a
/// failed sync keeps them queued and is tried again a second later.
fn run(dir: &Path, shared: &Shared) {
    loop {
        let batch = {
            let mut s = shared.lock();
            while s.pending.is_empty() && !s.closed {
                s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.pending.is_empty() {
                return; // closed, nothing left
            }
            std::mem::take(&mut s.pending)
        };
        match syncfs(dir) {
            Ok(()) => unmark(&batch),
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, snapshots = batch.len(), "syncing the snapshots failed; trying again");
                shared.lock().pending.extend(batch);
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
