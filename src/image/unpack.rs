//! The unpack stage (when `unpack` is on): every layer of a pulled image becomes a
//! snapshot keyed by its chain ID (`snapshot::Snapshots`), each checked against the
//! config's `diff_ids`, as soon as its blob is in the store and in parallel with the
//! other layers and downloads ([`Unpacks`]; a hard link into a lower layer waits for that
//! layer); and the collection of snapshots no image needs, after a removal and at start.

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};

use tokio::sync::Semaphore;

use super::{Error, Inner};
use crate::names::Digest;
use crate::oci::{self, Descriptor};
use crate::snapshot::{Snapshots, chain_ids};
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

/// The layers of one image unpacked as their blobs arrive, in parallel (at most
/// `Inner::unpacks` at once across the daemon): a layer waits for the layers below it
/// only when a hard link needs a target from them, and gives its permit back while it
/// waits, so no wait can hold up the layers it waits for.
pub(super) struct Unpacks {
    snapshots: Arc<Snapshots>,
    permits: Arc<Semaphore>,
    image: String,
    root: std::path::PathBuf,
    layers: Vec<Descriptor>,
    ids: Vec<(Digest, Digest)>,
    made: Arc<(Mutex<Made>, Condvar)>,
    tasks: Mutex<Vec<(usize, LayerTask)>>,
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
        }
    }

    /// Starts unpacking layer `i`, whose blob is in the store now.
    pub(super) fn start(&self, i: usize) {
        let (snaps, permits, made) = (
            self.snapshots.clone(),
            self.permits.clone(),
            self.made.clone(),
        );
        let (layer, (diff_id, chain)) = (self.layers[i].clone(), self.ids[i].clone());
        let below: Vec<Digest> = self.ids[..i].iter().rev().map(|(_, c)| c.clone()).collect();
        let blob = layout::blob_path(&self.root, &layer.digest);
        let image = self.image.clone();
        let task = tokio::spawn(async move {
            let permit = permits
                .acquire_owned()
                .await
                .map_err(|e| Error::Internal(format!("unpack permits: {e}")))?;
            let started = std::time::Instant::now();
            let waited = made.clone();
            let chain2 = chain.clone();
            let result = tokio::task::spawn_blocking(move || {
                let permit = Mutex::new(Some(permit));
                let lowers = || {
                    // Waiting needs no CPU: the permit goes to a layer that can run.
                    drop(lock(&permit).take());
                    let (state, cv) = &*waited;
                    let mut m = lock(state);
                    while !m.abandoned && m.layers[..i].iter().any(Option::is_none) {
                        m = cv.wait(m).unwrap_or_else(|p| p.into_inner());
                    }
                    below.iter().map(|c| snaps.fs(c)).collect()
                };
                snaps.unpack(&layer, &blob, &diff_id, &chain2, &lowers)
            })
            .await
            .map_err(|e| Error::Internal(format!("unpack task failed: {e}")));
            let ok = matches!(result, Ok(Ok(_)));
            {
                let (state, cv) = &*made;
                lock(state).layers[i] = Some(ok);
                cv.notify_all();
            }
            if let Ok(Ok(true)) = result {
                tracing::debug!(image, layer = %i, chain = %chain, ms = started.elapsed().as_millis() as u64, "unpacked layer");
            }
            result?
                .map(|_| ())
                .map_err(|source| Error::Unpack { image, source })
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

/// Removes the snapshots no recorded image needs (reading each image's config).
pub(super) fn collect(store: &Store, snapshots: &Snapshots) -> usize {
    let records = store.records();
    let mut keep = HashSet::new();
    for image in records.images() {
        for m in &image.manifests {
            let Ok(bytes) = std::fs::read(layout::blob_path(store.root(), &m.config.digest)) else {
                continue;
            };
            let Ok(config) = oci::manifest::parse_config(&bytes) else {
                continue;
            };
            if let Ok(ids) = chains_of(&config.diff_ids, &m.layers) {
                keep.extend(ids.into_iter().map(|(_, c)| c));
            }
        }
    }
    snapshots.retain(&keep)
}
