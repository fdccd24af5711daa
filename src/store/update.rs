//! Records changes: tag, untag and remove applied to a copy of the records, persisted to
//! `index.json` (blob directory fsynced first), then published, then the blobs no image
//! needs any more collected. Each change runs to completion in its own task.
//!
//! Group commit: changes queue while `index.json` is being written, and the next writer
//! applies all of them, in the order they came, to one copy and writes `index.json` once.
//! A caller is answered only after the write that holds its change, so what it was told
//! is on disk; a write that fails fails every change in it and publishes none. With many
//! pulls at once the O(images) write is paid once per batch instead of once per change.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Lease, ManifestBlobs, NameRecord, Records, Shared, Store, StoreError, gc};
use super::{layout, recover};
use crate::names::{Digest, ImageId, ImageName};

/// One records change: applied to the copy under the writer lock; `true` if it changed it.
pub(super) type Change = Box<dyn FnOnce(&mut Records) -> bool + Send>;

/// A change waiting for the next `index.json` write, with its lease and its caller.
pub(super) struct Pending {
    change: Change,
    /// Released only after the change is published (or failed).
    hold: Option<Lease>,
    answer: oneshot::Sender<Result<bool, StoreError>>,
}

/// What the index writer keeps between updates.
pub(super) struct Writer {
    /// Entries cri-imaged did not write, kept verbatim.
    foreign: Vec<serde_json::Value>,
    /// The `index.json` version cri-imaged last wrote (or read at start).
    stamp: Option<layout::Stamp>,
    /// `index.json` writes since the store opened (one per batch of changes).
    pub(super) writes: u64,
}

impl Writer {
    pub(super) fn new(foreign: Vec<serde_json::Value>, stamp: Option<layout::Stamp>) -> Writer {
        Writer {
            foreign,
            stamp,
            writes: 0,
        }
    }
}

impl Store {
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
        let manifest = blobs.manifest.digest.clone();
        let (id, blobs) = (id.clone(), blobs.clone());
        self.update_holding(
            move |r| {
                names
                    .into_iter()
                    .fold(false, |changed, n| r.tag(&id, &blobs, n) | changed)
            },
            Some(lease),
        )
        .await?;
        // What an interrupted pull of this manifest kept is the image's now.
        self.forget_interrupted(&manifest);
        Ok(())
    }

    /// Removes an image with all its names. Returns whether it existed.
    pub async fn remove_image(&self, id: &ImageId) -> Result<bool, StoreError> {
        let id = id.clone();
        self.update_holding(move |r| r.remove(&id), None).await
    }

    /// Removes one name; the image goes with its last name. Returns whether it existed.
    pub async fn untag(&self, name: &ImageName) -> Result<bool, StoreError> {
        let name = name.clone();
        self.update_holding(move |r| r.untag(&name), None).await
    }

    /// Queues a records change and has it committed in its own task: a caller that goes
    /// away (a client deadline, a cancelled pull) cannot interrupt it between writing
    /// `index.json` and publishing the records. `hold` is released only once the change
    /// is published (or its write failed).
    async fn update_holding(
        &self,
        change: impl FnOnce(&mut Records) -> bool + Send + 'static,
        hold: Option<Lease>,
    ) -> Result<bool, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                change: Box::new(change),
                hold,
                answer,
            });
        let shared = self.shared.clone();
        self.shared.tasks.spawn(shared.commit_queued());
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::io(
                self.root(),
                "update",
                &self.root().join(layout::INDEX_FILE),
                std::io::Error::other("the records writer stopped before answering"),
            ))
        })
    }
}

impl Shared {
    /// Takes the writer, then every queued change (its own and any that queued while the
    /// previous write ran), and commits them in one `index.json` write. A task that finds
    /// the queue empty had its change committed by an earlier one.
    async fn commit_queued(self: Arc<Self>) {
        let writer = self.writer.lock().await;
        let batch = std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
        if batch.is_empty() {
            return;
        }
        let (mut changes, mut holds, mut answers) = (Vec::new(), Vec::new(), Vec::new());
        for p in batch {
            changes.push(p.change);
            holds.push(p.hold);
            answers.push(p.answer);
        }
        let result = self.clone().update(writer, changes).await;
        // Leases go only now: the records naming their blobs are published.
        drop(holds);
        match result {
            Ok(changed) => {
                for (answer, c) in answers.into_iter().zip(changed) {
                    let _ = answer.send(Ok(c));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.duplicate()));
                }
            }
        }
    }

    /// Applies `changes` in order to a copy of the records, persists the copy, publishes
    /// it, then deletes the blobs no image references any more. Returns, per change,
    /// whether it changed the records.
    async fn update(
        self: Arc<Self>,
        mut writer: tokio::sync::MutexGuard<'_, Writer>,
        changes: Vec<Change>,
    ) -> Result<Vec<bool>, StoreError> {
        let before = self.records();
        let mut after = (*before).clone();
        let changed: Vec<bool> = changes.into_iter().map(|c| c(&mut after)).collect();
        if !changed.contains(&true) {
            return Ok(changed);
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
            // Only the records this batch changed are rendered; the rest were kept.
            layout::write_index_chunks_atomic(
                root,
                next.images().map(|img| img.index_entries()),
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
        writer.writes += 1;
        tracing::debug!(
            changes = changed.len(),
            images = after.len(),
            writes = writer.writes,
            "index.json written"
        );
        let candidates = before.blobs_changed_in(&after);
        let orphans: Vec<Digest> = candidates
            .into_iter()
            .filter(|d| !after.references(d))
            .cloned()
            .collect();
        *self.records.write().unwrap_or_else(|p| p.into_inner()) = after;
        drop(writer);
        if !orphans.is_empty() {
            let shared = self.clone();
            let _ = tokio::task::spawn_blocking(move || gc::unlink_trash(shared.collect(orphans)))
                .await;
        }
        Ok(changed)
    }
}
