//! Live progress of the pulls in flight: for each pull its image, the registry serving it,
//! how many callers wait on it, and per blob (config and layers) the bytes done of the
//! total. The core updates it as bytes arrive; the admin endpoint (`/pulls`) and the
//! 10-second progress log lines read [`Progress::snapshot`].
//!
//! Entries belong to guards: a pull, a waiting caller or a blob download that ends, fails
//! or is cancelled removes itself when its guard drops, so the view never shows a pull that
//! is gone.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use super::flight::PullKey;
use crate::names::Digest;

/// How often a pull still running logs a progress line.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The progress tracker; cheap to clone (clones share the state).
#[derive(Clone, Default)]
pub struct Progress {
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    next_id: u64,
    pulls: BTreeMap<u64, PullEntry>,
    /// Flight key → callers waiting on it.
    waiters: HashMap<PullKey, usize>,
    /// Digest → the download of that blob in flight.
    blobs: HashMap<Digest, BlobEntry>,
}

struct PullEntry {
    key: PullKey,
    image: String,
    source: String,
    started: Instant,
    started_at: SystemTime,
    blobs: Vec<BlobSlot>,
}

struct BlobSlot {
    digest: Digest,
    size: u64,
    state: SlotState,
    /// With `unpack` on, for layers: whether its snapshot is made.
    unpacked: Option<bool>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Pending,
    Present,
    Done,
}

struct BlobEntry {
    done: u64,
    downloads: usize,
}

/// One pull in flight, as `/pulls` and `cri-imaged pulls --output json` show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PullSnapshot {
    /// Unique while the daemon runs.
    pub id: u64,
    /// The fully qualified name being pulled.
    pub image: String,
    /// The registry serving it: the mirror's host when a mirror serves it (while sources
    /// are tried in turn, the one being tried).
    pub source: String,
    /// Seconds since the Unix epoch when the pull started.
    pub started_unix: u64,
    pub elapsed_seconds: f64,
    /// PullImage callers waiting on this pull.
    pub waiters: usize,
    /// Bytes of the config and layers in the store or downloaded so far.
    pub bytes_done: u64,
    /// Bytes of the config and layers (0 until the manifest is read).
    pub bytes_total: u64,
    /// Bytes downloaded by this pull per second since it started.
    pub bytes_per_second: f64,
    /// Seconds left at that rate; `None` before the first byte.
    pub eta_seconds: Option<f64>,
    /// The config, then the layers in manifest order.
    pub blobs: Vec<BlobSnapshot>,
}

/// One blob of a pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlobSnapshot {
    pub digest: String,
    pub size: u64,
    pub done: u64,
    pub state: BlobState,
    /// With `unpack` on, for a layer: whether its snapshot is made (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpacked: Option<bool>,
}

/// Where one blob of a pull stands; in JSON `present`, `waiting`, `downloading`, `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobState {
    /// It was in the store when the pull started.
    Present,
    /// Not in the store, and no download of it is running yet.
    Waiting,
    Downloading,
    /// Brought in by this pull.
    Done,
}

impl BlobState {
    pub fn as_str(self) -> &'static str {
        match self {
            BlobState::Present => "present",
            BlobState::Waiting => "waiting",
            BlobState::Downloading => "downloading",
            BlobState::Done => "done",
        }
    }
}

/// Compares with the JSON spelling (`state == "done"`).
impl PartialEq<&str> for BlobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for BlobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl PullSnapshot {
    /// Blobs the pull found in the store.
    pub fn present(&self) -> usize {
        self.blobs
            .iter()
            .filter(|b| b.state == BlobState::Present)
            .count()
    }

    /// One line for logs and the plain `cri-imaged pulls` listing.
    pub fn summary(&self) -> String {
        format!(
            "{} from {}: {} of {} bytes, {} blobs ({} present), {:.1} s, {:.0} B/s{}, {} waiting",
            self.image,
            self.source,
            self.bytes_done,
            self.bytes_total,
            self.blobs.len(),
            self.present(),
            self.elapsed_seconds,
            self.bytes_per_second,
            self.eta_seconds
                .map(|s| format!(", ETA {s:.0} s"))
                .unwrap_or_default(),
            self.waiters,
        )
    }
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A caller waits on the pull with flight key `key` while the guard lives.
    pub fn waiting(&self, key: &PullKey) -> WaiterGuard {
        *self.lock().waiters.entry(key.clone()).or_insert(0) += 1;
        WaiterGuard {
            progress: self.clone(),
            key: key.clone(),
        }
    }

    /// A pull of `image` from `source` (flight key `key`) runs while the guard lives; it
    /// logs a progress line every 10 s.
    pub fn start(&self, key: &PullKey, image: &str, source: &str) -> PullGuard {
        let id = {
            let mut st = self.lock();
            st.next_id += 1;
            let id = st.next_id;
            st.pulls.insert(
                id,
                PullEntry {
                    key: key.clone(),
                    image: image.to_owned(),
                    source: source.to_owned(),
                    started: Instant::now(),
                    started_at: SystemTime::now(),
                    blobs: Vec::new(),
                },
            );
            id
        };
        let progress = self.clone();
        let ticker = tokio::spawn(async move {
            let mut tick =
                tokio::time::interval_at(tokio::time::Instant::now() + LOG_EVERY, LOG_EVERY);
            loop {
                tick.tick().await;
                if let Some(s) = progress.snapshot_of(id) {
                    tracing::info!(
                        image = %s.image,
                        source = %s.source,
                        bytes_done = s.bytes_done,
                        bytes_total = s.bytes_total,
                        bytes_per_second = s.bytes_per_second as u64,
                        eta_seconds = s.eta_seconds.map(|e| e as u64),
                        waiters = s.waiters,
                        elapsed_seconds = s.elapsed_seconds as u64,
                        "pull in progress"
                    );
                }
            }
        });
        PullGuard {
            progress: self.clone(),
            id,
            ticker: ticker.abort_handle(),
        }
    }

    /// Blob `digest` is being downloaded while the guard lives.
    pub fn download(&self, digest: &Digest) -> DownloadGuard {
        let mut st = self.lock();
        let e = st.blobs.entry(digest.clone()).or_insert(BlobEntry {
            done: 0,
            downloads: 0,
        });
        e.downloads += 1;
        DownloadGuard {
            progress: self.clone(),
            digest: digest.clone(),
        }
    }

    /// Every pull in flight, oldest first.
    pub fn snapshot(&self) -> Vec<PullSnapshot> {
        let st = self.lock();
        st.pulls
            .iter()
            .map(|(id, p)| snapshot(&st, *id, p))
            .collect()
    }

    fn snapshot_of(&self, id: u64) -> Option<PullSnapshot> {
        let st = self.lock();
        st.pulls.get(&id).map(|p| snapshot(&st, id, p))
    }

    /// Callers waiting on pulls in flight, all pulls together.
    pub fn waiters(&self) -> usize {
        self.lock().waiters.values().sum()
    }
}

fn snapshot(st: &State, id: u64, p: &PullEntry) -> PullSnapshot {
    let blobs: Vec<BlobSnapshot> = p
        .blobs
        .iter()
        .map(|b| {
            let (done, state) = match (b.state, st.blobs.get(&b.digest)) {
                (SlotState::Present, _) => (b.size, BlobState::Present),
                (SlotState::Done, _) => (b.size, BlobState::Done),
                (SlotState::Pending, Some(e)) => (e.done.min(b.size), BlobState::Downloading),
                (SlotState::Pending, None) => (0, BlobState::Waiting),
            };
            BlobSnapshot {
                digest: b.digest.to_string(),
                size: b.size,
                done,
                state,
                unpacked: b.unpacked,
            }
        })
        .collect();
    let bytes_total: u64 = blobs.iter().map(|b| b.size).sum();
    let bytes_done: u64 = blobs.iter().map(|b| b.done).sum();
    let fetched: u64 = blobs
        .iter()
        .filter(|b| b.state != BlobState::Present)
        .map(|b| b.done)
        .sum();
    let elapsed = p.started.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 {
        fetched as f64 / elapsed
    } else {
        0.0
    };
    let eta_seconds = (rate > 0.0).then(|| (bytes_total - bytes_done) as f64 / rate);
    PullSnapshot {
        id,
        image: p.image.clone(),
        source: p.source.clone(),
        started_unix: p
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        elapsed_seconds: elapsed,
        waiters: st.waiters.get(&p.key).copied().unwrap_or(0),
        bytes_done,
        bytes_total,
        bytes_per_second: rate,
        eta_seconds,
        blobs,
    }
}

/// Marks a pull's layers unpacked; does nothing once the pull is gone.
#[derive(Clone)]
pub struct UnpackProgress {
    progress: Progress,
    id: u64,
}

impl UnpackProgress {
    /// Layer `digest`'s snapshot is made.
    pub fn unpacked(&self, digest: &Digest) {
        let mut st = self.progress.lock();
        if let Some(p) = st.pulls.get_mut(&self.id) {
            for b in p.blobs.iter_mut().filter(|b| &b.digest == digest) {
                b.unpacked = Some(true);
            }
        }
    }
}

/// Keeps a caller counted as waiting.
pub struct WaiterGuard {
    progress: Progress,
    key: PullKey,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut st = self.progress.lock();
        if let Some(n) = st.waiters.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                st.waiters.remove(&self.key);
            }
        }
    }
}

/// Keeps a pull listed; updates its blobs.
pub struct PullGuard {
    progress: Progress,
    id: u64,
    ticker: tokio::task::AbortHandle,
}

impl PullGuard {
    /// The blobs the pull needs (digest, size, already in the store), config first.
    pub fn set_blobs(&self, blobs: impl IntoIterator<Item = (Digest, u64, bool)>) {
        let mut st = self.progress.lock();
        if let Some(p) = st.pulls.get_mut(&self.id) {
            p.blobs = blobs
                .into_iter()
                .map(|(digest, size, present)| BlobSlot {
                    digest,
                    size,
                    state: if present {
                        SlotState::Present
                    } else {
                        SlotState::Pending
                    },
                    unpacked: None,
                })
                .collect();
        }
    }

    /// The pull is now served by (or trying) `source`: a mirror instead of the registry
    /// that was asked for.
    pub fn set_source(&self, source: &str) {
        if let Some(p) = self.progress.lock().pulls.get_mut(&self.id) {
            source.clone_into(&mut p.source);
        }
    }

    /// These layers are to be unpacked by this pull.
    pub fn set_unpacking(&self, layers: &[Digest]) {
        let mut st = self.progress.lock();
        if let Some(p) = st.pulls.get_mut(&self.id) {
            for b in p.blobs.iter_mut().filter(|b| layers.contains(&b.digest)) {
                b.unpacked = Some(false);
            }
        }
    }

    /// A handle the unpack stage keeps (the guard stays with the pull).
    pub fn unpacks(&self) -> UnpackProgress {
        UnpackProgress {
            progress: self.progress.clone(),
            id: self.id,
        }
    }

    /// Blob `digest` is in the store now.
    pub fn blob_done(&self, digest: &Digest) {
        let mut st = self.progress.lock();
        if let Some(p) = st.pulls.get_mut(&self.id) {
            for b in p.blobs.iter_mut().filter(|b| &b.digest == digest) {
                if b.state == SlotState::Pending {
                    b.state = SlotState::Done;
                }
            }
        }
    }

    /// The pull as it stands.
    pub fn snapshot(&self) -> Option<PullSnapshot> {
        self.progress.snapshot_of(self.id)
    }
}

impl Drop for PullGuard {
    fn drop(&mut self) {
        self.ticker.abort();
        self.progress.lock().pulls.remove(&self.id);
    }
}

/// Counts the bytes of one blob download.
pub struct DownloadGuard {
    progress: Progress,
    digest: Digest,
}

impl DownloadGuard {
    pub fn add(&self, bytes: u64) {
        if let Some(e) = self.progress.lock().blobs.get_mut(&self.digest) {
            e.done += bytes;
        }
    }

    /// Takes back bytes counted before a download had to start again.
    pub fn sub(&self, bytes: u64) {
        if let Some(e) = self.progress.lock().blobs.get_mut(&self.digest) {
            e.done = e.done.saturating_sub(bytes);
        }
    }
}

impl Drop for DownloadGuard {
    fn drop(&mut self) {
        let mut st = self.progress.lock();
        if let Some(e) = st.blobs.get_mut(&self.digest) {
            e.downloads -= 1;
            if e.downloads == 0 {
                st.blobs.remove(&self.digest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pull_shows_its_blobs_and_waiters_and_is_gone_when_its_guard_drops() {
        let p = Progress::default();
        let key = PullKey::Import {
            source: "oci:/x".into(),
            policy: "built-in".into(),
        };
        let w1 = p.waiting(&key);
        let w2 = p.waiting(&key);
        let pull = p.start(&key, "r.io/a:1", "r.io");
        let [c, l1, l2] = [1, 2, 3].map(|n| Digest::from_sha256([n; 32]));
        pull.set_blobs([
            (c, 10, true),
            (l1.clone(), 100, false),
            (l2.clone(), 50, false),
        ]);
        let d = p.download(&l1);
        d.add(40);
        pull.blob_done(&l2);
        let s = p.snapshot();
        assert_eq!(s.len(), 1);
        let s = &s[0];
        assert_eq!((s.image.as_str(), s.source.as_str()), ("r.io/a:1", "r.io"));
        pull.set_source("mirror.local:5000");
        assert_eq!(p.snapshot()[0].source, "mirror.local:5000");
        assert_eq!(s.waiters, 2);
        assert_eq!((s.bytes_done, s.bytes_total), (10 + 40 + 50, 160));
        let states: Vec<_> = s.blobs.iter().map(|b| b.state.as_str()).collect();
        assert_eq!(states, ["present", "downloading", "done"]);
        let json = serde_json::to_value(&s.blobs[1]).unwrap();
        assert_eq!(
            json["state"], "downloading",
            "the /pulls JSON keeps its strings"
        );
        assert_eq!(s.present(), 1);
        drop(w1);
        assert_eq!(p.waiters(), 1);
        drop((d, w2));
        assert_eq!(p.snapshot()[0].blobs[1].state, BlobState::Waiting);
        assert_eq!(p.waiters(), 0);
        drop(pull);
        assert!(p.snapshot().is_empty());
        assert!(p.lock().blobs.is_empty());
    }
}
