//! Bringing blobs in: an ingest is started (or a crash's partial download resumed),
//! verified, and placed under its digest with its disk use counted. A placed blob that
//! nothing needs any more (its pull went away meanwhile) is collected at once.

use super::{Ingest, Shared, Store, StoreError, blobs, gc, layout};
use crate::oci::Descriptor;

impl Store {
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
}

impl Shared {
    /// Links verified content into place and counts it. A blob already there (a
    /// concurrent commit of the same content) is counted once; a damaged file in its place
    /// (wrong size) is replaced. A blob no lease holds and no image references (its pull
    /// went away meanwhile) is collected at once.
    pub(super) fn place(&self, f: blobs::Finished) -> Result<(), StoreError> {
        let dest = layout::blob_path(&self.root, &f.digest);
        let allocated = || {
            std::fs::metadata(&dest)
                .map(|m| blobs::allocated_bytes(&m))
                .unwrap_or(f.size)
        };
        let placed = match std::fs::hard_link(&f.temp, &dest) {
            Ok(()) => {
                self.usage.add(allocated(), 1);
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
                                self.usage.add(allocated(), 0);
                                self.usage.remove(old, 0);
                            })
                    }
                    Err(e) => Err(StoreError::io(&self.root, "stat", &dest, e)),
                }
            }
            Err(e) => Err(StoreError::io(&self.root, "link", &dest, e)),
        };
        let _ = std::fs::remove_file(&f.temp);
        if placed.is_ok() {
            gc::unlink_trash(self.collect(vec![f.digest]));
        }
        placed
    }
}
