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
//! at shutdown, [`Syncer::flush`] syncs what is queued and waits for a sync under way.
//!
//! Every `syncfs` goes through one descriptor opened at start: the kernel reports a
//! write-back error once per descriptor, so a fresh one could answer 0 after an error
//! another call was told of. A sync that fails keeps its snapshots' markers for good (the
//! next start removes those snapshots) and `settle` refuses a container on them.
//!
//! Why: one `syncfs` per snapshot before its rename was a sixth of a pull's time on the
//! debian bench image (the last layer's sync waits for every layer's data).

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// The marker's name starts so.
pub const MARKER_PREFIX: &str = "unsynced-";

/// The markers (absolute paths) of snapshots renamed into place and not yet synced.
#[derive(Default)]
struct State {
    pending: Vec<PathBuf>,
    /// A batch taken by the thread and not yet synced and unmarked.
    in_flight: bool,
    /// Markers whose sync failed: kept until the next start removes their snapshots.
    failed: HashSet<PathBuf>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// `snapshots/`, open for every `syncfs` of this file system.
    dir: std::fs::File,
    /// Tests: the syncs to answer with an I/O error, as a failing disk would.
    #[cfg(test)]
    fail: std::sync::atomic::AtomicUsize,
}

/// The background sync of one snapshot directory's file system.
pub struct Syncer {
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

/// The markers in snapshot directory `snapshot` (none where it is gone); a directory
/// that cannot be read is an error, never "no markers".
pub fn markers(snapshot: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = match std::fs::read_dir(snapshot) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for e in entries {
        let e = e?;
        if e.file_name().to_string_lossy().starts_with(MARKER_PREFIX) {
            found.push(e.path());
        }
    }
    Ok(found)
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn syncfs(&self) -> io::Result<()> {
        #[cfg(test)]
        if self
            .fail
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::from_raw_os_error(
                rustix::io::Errno::IO.raw_os_error(),
            ));
        }
        rustix::fs::syncfs(&self.dir).map_err(io::Error::from)
    }

    /// Syncs and unmarks `batch`; a failed sync records it as failed, markers kept.
    fn sync(&self, batch: Vec<PathBuf>) -> io::Result<()> {
        match self.syncfs() {
            Ok(()) => {
                unmark(&batch);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, snapshots = batch.len(), "syncing snapshots failed; they are removed at the next start and unpacked again when needed");
                self.lock().failed.extend(batch);
                Err(e)
            }
        }
    }
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
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            cv: Condvar::new(),
            dir: std::fs::File::open(dir)?,
            #[cfg(test)]
            fail: Default::default(),
        });
        let s = shared.clone();
        std::thread::Builder::new()
            .name("snapshot-sync".into())
            .spawn(move || run(&s))?;
        Ok(Syncer { shared })
    }

    /// The snapshot whose marker is `marker` (at its final name) is in place: sync it soon.
    pub fn queue(&self, marker: PathBuf) {
        self.shared.lock().pending.push(marker);
        self.shared.cv.notify_all();
    }

    /// Makes the snapshot directories `snapshots` durable now, where they still carry a
    /// marker. Blocking.
    pub fn settle(&self, snapshots: &[PathBuf]) -> io::Result<()> {
        let mut found = Vec::new();
        for s in snapshots {
            found.extend(markers(s)?);
        }
        if found.is_empty() {
            return Ok(());
        }
        if let Some(bad) = found
            .iter()
            .find(|m| self.shared.lock().failed.contains(*m))
        {
            return Err(io::Error::other(format!(
                "the sync of snapshot {} failed; it is unpacked again after the next start",
                bad.parent().unwrap_or(bad).display()
            )));
        }
        self.shared.sync(found)
    }

    /// Syncs what is queued now and waits for a sync under way (at shutdown). Blocking.
    pub fn flush(&self) -> io::Result<()> {
        let batch = {
            let mut s = self.shared.lock();
            while s.in_flight {
                s = self.shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            std::mem::take(&mut s.pending)
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.shared.sync(batch)
    }

    /// Markers queued and not yet synced.
    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// Markers whose sync failed.
    #[cfg(test)]
    pub fn failed(&self) -> usize {
        self.shared.lock().failed.len()
    }

    /// Tests: the next `n` syncs fail with EIO.
    #[cfg(test)]
    pub fn fail_next(&self, n: usize) {
        self.shared.fail.store(n, Ordering::Relaxed);
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.cv.notify_all();
    }
}

/// The thread: waits for queued markers, takes them all, one `syncfs`, removes them (a
/// failed sync keeps them, see [`Shared::sync`]).
fn run(shared: &Shared) {
    loop {
        let batch = {
            let mut s = shared.lock();
            while s.pending.is_empty() && !s.closed {
                s = shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if s.pending.is_empty() {
                return; // closed, nothing left
            }
            s.in_flight = true;
            std::mem::take(&mut s.pending)
        };
        let _ = shared.sync(batch);
        shared.lock().in_flight = false;
        shared.cv.notify_all();
    }
}
