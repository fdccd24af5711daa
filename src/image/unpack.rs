//! The unpack stage (when `unpack` is on): every layer of a pulled image becomes a
//! snapshot keyed by its chain ID (`snapshot::Snapshots`), each checked against the
//! config's `diff_ids`, as soon as its blob is in the store and in parallel with the
//! other layers and downloads ([`Unpacks`]; a hard link into a lower layer waits for that
//! layer); and the collection of snapshots no image needs, after a removal and at start.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::{Semaphore, oneshot};

use super::progress::UnpackProgress;

use super::cache::{Cache, ImageMeta};
use super::{Error, Inner};
use crate::names::{Digest, ImageId};
use crate::oci::{self, Descriptor};
use crate::snapshot::{Snapshots, chain_ids};
use crate::store::follow::Follower;
use crate::store::{Store, layout};

/// The chain IDs of an image whose config lists `diff_ids` for `layers`; `Err` names what
/// is wrong with them.
pub(super) fn chains_of(
    diff_ids: &[String],
    layers: &[Descriptor],
) -> Result<Vec<(Digest, Digest)>, String> {
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        ));
    }
    let diffs = diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| format!("rootfs.diff_ids: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let chains = chain_ids(&diffs);
    Ok(diffs.into_iter().zip(chains).collect())
}

/// One layer's unpack, running.
type LayerTask = tokio::task::JoinHandle<Result<(), Error>>;

/// Whether each layer's snapshot is made; `abandoned` once the pull gave up (a layer
/// that waits for its lowers stops waiting then).
#[derive(Default)]
struct Made {
    layers: Vec<Option<bool>>,
    abandoned: bool,
}

type Shared = Arc<(Mutex<Made>, Condvar)>;

/// The layers of one image unpacked in parallel, each as soon as it can be: from its
/// download's bytes as they reach the ingest file ([`Unpacks::stream`]; never ahead of
/// the download nor holding it back, no permit, never waiting for a lower layer), or from its blob in the store (with one of
/// `Inner::unpacks`' permits; a hard link into a lower layer waits for that layer and
/// gives the permit back meanwhile, so no wait holds up what it waits for). A streamed
/// layer that cannot go on — its download could not feed every byte, or a hard link
/// needs a lower layer not made yet — starts again from the blob once it is in.
pub(super) struct Unpacks {
    snapshots: Arc<Snapshots>,
    permits: Arc<Semaphore>,
    image: String,
    root: std::path::PathBuf,
    layers: Vec<Descriptor>,
    ids: Vec<(Digest, Digest)>,
    made: Shared,
    tasks: Mutex<Vec<(usize, LayerTask)>>,
    metrics: crate::metrics::Metrics,
    progress: Option<UnpackProgress>,
}

/// What one layer's unpack needs, owned by its task.
#[derive(Clone)]
struct Job {
    i: usize,
    snaps: Arc<Snapshots>,
    permits: Arc<Semaphore>,
    made: Shared,
    layer: Descriptor,
    diff_id: Digest,
    chain: Digest,
    /// The chains below, nearest first.
    below: Vec<Digest>,
    blob: std::path::PathBuf,
    image: String,
    metrics: crate::metrics::Metrics,
    progress: Option<UnpackProgress>,
}

impl Job {
    fn mark(&self, ok: bool) {
        let (state, cv) = &*self.made;
        lock(state).layers[self.i] = Some(ok);
        cv.notify_all();
    }

    fn lower_dirs(&self) -> Vec<std::path::PathBuf> {
        self.below.iter().map(|c| self.snaps.fs(c)).collect()
    }

    /// After a layer's snapshot is there (`made` by this unpack, or found made).
    fn logged(&self, made: bool, streamed: bool, started: std::time::Instant) {
        if let Some(p) = &self.progress {
            p.unpacked(&self.layer.digest);
        }
        if made {
            self.metrics
                .layer_unpacked(streamed, started.elapsed().as_secs_f64());
            tracing::debug!(image = %self.image, layer = %self.i, streamed, chain = %self.chain, ms = started.elapsed().as_millis() as u64, "unpacked layer");
        }
    }

    /// From the blob in the store.
    async fn unpack_blob(self) -> Result<(), Error> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Internal(format!("unpack permits: {e}")))?;
        let started = std::time::Instant::now();
        let job = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let permit = Mutex::new(Some(permit));
            let lowers = || {
                // Waiting needs no CPU: the permit goes to a layer that can run.
                drop(lock(&permit).take());
                let (state, cv) = &*job.made;
                let mut m = lock(state);
                while !m.abandoned && m.layers[..job.i].iter().any(Option::is_none) {
                    m = cv.wait(m).unwrap_or_else(|p| p.into_inner());
                }
                drop(m);
                job.lower_dirs()
            };
            job.snaps
                .unpack(&job.layer, &job.blob, &job.diff_id, &job.chain, &lowers)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))
        .and_then(|r| {
            r.map_err(|source| Error::Unpack {
                image: self.image.clone(),
                source,
            })
        });
        self.mark(result.is_ok());
        if let Ok(made) = result {
            self.logged(made, false, started);
        }
        result.map(|_| ())
    }

    /// From the download's bytes; `Ok(false)`: it could not go on (start again from the
    /// blob), with nothing of it kept.
    async fn unpack_feed(&self, feed: Follower) -> Result<bool, Error> {
        let started = std::time::Instant::now();
        let stopped = Arc::new(AtomicBool::new(false));
        let (job, stop) = (self.clone(), stopped.clone());
        let result = tokio::task::spawn_blocking(move || {
            let lowers = || {
                let (state, _) = &*job.made;
                if lock(state).layers[..job.i].iter().all(|m| *m == Some(true)) {
                    job.lower_dirs()
                } else {
                    // Waiting here would hold back this layer's download.
                    stop.store(true, Ordering::Relaxed);
                    Vec::new()
                }
            };
            let input = Streamed {
                feed,
                stopped: stop.clone(),
            };
            job.snaps
                .unpack_from(&job.layer, input, &job.diff_id, &job.chain, &lowers)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?;
        match result {
            Ok(made) => {
                self.mark(true);
                self.logged(made, true, started);
                Ok(true)
            }
            Err(_) if stopped.load(Ordering::Relaxed) => Ok(false),
            Err(source) => {
                self.mark(false);
                Err(Error::Unpack {
                    image: self.image.clone(),
                    source,
                })
            }
        }
    }
}

/// A layer's compressed bytes from its download's ingest file as they reach it, ending
/// once the download says the blob verified; a download that stopped before that is an
/// error (and `stopped` says why).
struct Streamed {
    feed: Follower,
    stopped: Arc<AtomicBool>,
}

impl std::io::Read for Streamed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.feed.read(buf).inspect_err(|_| {
            self.stopped.store(true, Ordering::Relaxed);
        })
    }
}

impl Unpacks {
    pub(super) fn new(
        inner: &Inner,
        snapshots: &Arc<Snapshots>,
        image: &str,
        layers: &[Descriptor],
        ids: &[(Digest, Digest)],
    ) -> Unpacks {
        Unpacks {
            snapshots: snapshots.clone(),
            permits: inner.unpacks.clone(),
            image: image.to_owned(),
            root: inner.store.root().to_owned(),
            layers: layers.to_vec(),
            ids: ids.to_vec(),
            made: Arc::new((
                Mutex::new(Made {
                    layers: vec![None; layers.len()],
                    abandoned: false,
                }),
                Condvar::new(),
            )),
            tasks: Mutex::default(),
            metrics: inner.metrics.clone(),
            progress: None,
        }
    }

    /// Marks each layer unpacked in the pull's progress as its snapshot is made.
    pub(super) fn reporting(mut self, progress: UnpackProgress) -> Unpacks {
        self.progress = Some(progress);
        self
    }

    fn job(&self, i: usize) -> Job {
        let (diff_id, chain) = self.ids[i].clone();
        Job {
            i,
            snaps: self.snapshots.clone(),
            permits: self.permits.clone(),
            made: self.made.clone(),
            layer: self.layers[i].clone(),
            diff_id,
            chain,
            below: self.ids[..i].iter().rev().map(|(_, c)| c.clone()).collect(),
            blob: layout::blob_path(&self.root, &self.layers[i].digest),
            image: self.image.clone(),
            metrics: self.metrics.clone(),
            progress: self.progress.clone(),
        }
    }

    /// Starts unpacking layer `i`, whose blob is in the store now.
    pub(super) fn start(&self, i: usize) {
        let task = tokio::spawn(self.job(i).unpack_blob());
        lock(&self.tasks).push((i, task));
    }

    /// Starts unpacking layer `i` from its download, read through `fed` (the follower of
    /// the tap given to the download, from byte 0 whenever this starts); `blob_there`
    /// fires once the blob is in the store (dropped unfired: it never will).
    pub(super) fn stream(
        &self,
        i: usize,
        fed: crate::store::follow::Follower,
        blob_there: oneshot::Receiver<()>,
    ) {
        let job = self.job(i);
        let task = tokio::spawn(async move {
            if job.unpack_feed(fed).await? {
                return Ok(());
            }
            if blob_there.await.is_err() {
                // The download failed: the pull does, for that reason.
                job.mark(false);
                return Ok(());
            }
            job.unpack_blob().await
        });
        lock(&self.tasks).push((i, task));
    }

    /// Waits for every started layer; the first failure, bottom layer first.
    pub(super) async fn finish(self) -> Result<(), Error> {
        let mut tasks = std::mem::take(&mut *lock(&self.tasks));
        tasks.sort_by_key(|(i, _)| *i);
        let mut first = None;
        for (_, task) in tasks {
            let r = task
                .await
                .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))
                .and_then(|r| r);
            if let (Err(e), None) = (r, &first) {
                first = Some(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Unpacks {
    fn drop(&mut self) {
        let (state, cv) = &*self.made;
        lock(state).abandoned = true;
        cv.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Unpacks `layers` (all in the store) as snapshots. `image` names the image in errors.
pub(super) async fn unpack_layers(
    inner: &Inner,
    snapshots: &Arc<Snapshots>,
    image: &str,
    layers: &[Descriptor],
    ids: &[(Digest, Digest)],
) -> Result<(), Error> {
    let unpacks = Unpacks::new(inner, snapshots, image, layers, ids);
    for i in 0..layers.len() {
        unpacks.start(i);
    }
    unpacks.finish().await
}

/// The chain IDs each config's layers make, by config digest: a config never changes
/// under its digest, so it is read once, not at every removal (with thousands of images,
/// reading every config per RemoveImage cost tens of milliseconds).
#[derive(Default)]
pub(super) struct ChainMemo {
    chains: std::sync::Mutex<std::collections::HashMap<Digest, Arc<Vec<Digest>>>>,
}

impl ChainMemo {
    fn chains(&self, store: &Store, m: &crate::store::ManifestBlobs) -> Arc<Vec<Digest>> {
        self.chains_noting(store, m, None)
    }

    /// [`ChainMemo::chains`]; a config read here also gives its user to `users`, so the
    /// start-up collection and the first listing read each config once between them.
    fn chains_noting(
        &self,
        store: &Store,
        m: &crate::store::ManifestBlobs,
        users: Option<&Cache>,
    ) -> Arc<Vec<Digest>> {
        if let Some(c) = self.lock().get(&m.config.digest) {
            return c.clone();
        }
        let config = std::fs::read(layout::blob_path(store.root(), &m.config.digest))
            .ok()
            .and_then(|bytes| oci::manifest::parse_config(&bytes).ok());
        if let (Some(users), Some(config)) = (users, &config) {
            let user = config.user.clone();
            users.insert(ImageId::new(m.config.digest.clone()), ImageMeta { user });
        }
        let chains: Option<Vec<Digest>> = config
            .and_then(|config| chains_of(&config.diff_ids, &m.layers).ok())
            .map(|ids| ids.into_iter().map(|(_, c)| c).collect());
        // A config that cannot be read now is not remembered: asked again next time.
        let Some(chains) = chains else {
            return Arc::default();
        };
        let chains = Arc::new(chains);
        self.lock().insert(m.config.digest.clone(), chains.clone());
        chains
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<Digest, Arc<Vec<Digest>>>> {
        self.chains.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The chains of `image`'s layers (its configs read once, see [`ChainMemo`]).
pub(super) fn chains_of_image(
    store: &Store,
    memo: &ChainMemo,
    image: &crate::store::ImageRecord,
) -> HashSet<Digest> {
    image
        .manifests
        .iter()
        .flat_map(|m| memo.chains(store, m).iter().cloned().collect::<Vec<_>>())
        .collect()
}

/// After an image whose layers made `candidates` was removed: removes those snapshots no
/// recorded image needs. Only its own chains are looked at (a snapshot nobody needs for
/// another reason is found by [`collect`] at start).
pub(super) fn collect_removed(
    store: &Store,
    snapshots: &Snapshots,
    memo: &ChainMemo,
    mut candidates: HashSet<Digest>,
) -> usize {
    let records = store.records();
    for image in records.images() {
        if candidates.is_empty() {
            return 0;
        }
        for m in &image.manifests {
            for c in memo.chains(store, m).iter() {
                candidates.remove(c);
            }
        }
    }
    if candidates.is_empty() {
        return 0;
    }
    snapshots.remove_unused(&candidates)
}

/// Removes the snapshots no recorded image needs (each image's config read once, then
/// remembered in `memo`, its user noted in `users`; entries of configs no image has any
/// more are dropped).
pub(super) fn collect(
    store: &Store,
    snapshots: &Snapshots,
    memo: &ChainMemo,
    users: &Cache,
) -> usize {
    let records = store.records();
    let mut keep = HashSet::new();
    let mut configs = HashSet::new();
    for image in records.images() {
        for m in &image.manifests {
            configs.insert(m.config.digest.clone());
            keep.extend(memo.chains_noting(store, m, Some(users)).iter().cloned());
        }
    }
    memo.lock().retain(|config, _| configs.contains(config));
    snapshots.retain(&keep)
}
