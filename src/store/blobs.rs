//! Blob ingest: a temp file in `ingest/`, hashed while written, verified against the
//! expected digest and size, fsynced, then renamed into `blobs/sha256/`. A blob path only
//! ever holds verified content; an unfinished ingest is deleted when dropped.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;
use tokio_util::task::TaskTracker;

use super::error::StoreError;
use super::layout;
use crate::names::Digest;
use crate::oci::Descriptor;

static NEXT_INGEST: AtomicU64 = AtomicU64::new(0);

/// Size of the write buffer in front of the ingest file.
const WRITE_BUFFER: usize = 1 << 20;

/// An in-progress blob write.
pub struct Ingest {
    root: PathBuf,
    expected: Descriptor,
    path: PathBuf,
    file: Option<tokio::io::BufWriter<tokio::fs::File>>,
    hasher: Sha256,
    written: u64,
    /// The store's tracker: a drop's clean-up is waited for at shutdown.
    tasks: TaskTracker,
}

impl Ingest {
    pub(super) fn create(
        root: &Path,
        expected: &Descriptor,
        tasks: TaskTracker,
    ) -> Result<Ingest, StoreError> {
        let n = NEXT_INGEST.fetch_add(1, Ordering::Relaxed);
        let path = root.join(layout::INGEST_DIR).join(format!(
            "{}.{}.{n}",
            expected.digest.hex(),
            std::process::id()
        ));
        // Created synchronously (one quick syscall), so no cancellation can fall between
        // the file's creation and the `Ingest` whose drop deletes it.
        let file = std::fs::File::create(&path)
            .map(tokio::fs::File::from_std)
            .map_err(|e| StoreError::io(root, "create", &path, e))?;
        Ok(Ingest {
            root: root.to_owned(),
            expected: expected.clone(),
            path,
            file: Some(tokio::io::BufWriter::with_capacity(WRITE_BUFFER, file)),
            hasher: Sha256::new(),
            written: 0,
            tasks,
        })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends a chunk; refuses to grow past the expected size.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), StoreError> {
        let new_len = self.written + chunk.len() as u64;
        if new_len > self.expected.size {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.digest.clone(),
                expected: self.expected.size,
                actual: new_len,
            });
        }
        self.hasher.update(chunk);
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::io(
                &self.root,
                "write",
                &self.path,
                std::io::Error::other("ingest closed"),
            ));
        };
        file.write_all(chunk)
            .await
            .map_err(|e| StoreError::io(&self.root, "write", &self.path, e))?;
        self.written = new_len;
        Ok(())
    }

    /// Verifies size and digest and fsyncs the content. The result names the verified
    /// temp file; the store places it (see `Store::commit`). From here on this `Ingest` no
    /// longer deletes the file: the placement does, whatever happens to its caller.
    pub async fn finish(mut self) -> Result<Finished, StoreError> {
        if self.written != self.expected.size {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.digest.clone(),
                expected: self.expected.size,
                actual: self.written,
            });
        }
        let actual = Digest::from_sha256(self.hasher.clone().finalize().into());
        if actual != self.expected.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.digest.clone(),
                actual,
            });
        }
        let Some(mut file) = self.file.take() else {
            return Err(StoreError::io(
                &self.root,
                "commit",
                &self.path,
                std::io::Error::other("ingest closed"),
            ));
        };
        let io = |op, e| StoreError::io(&self.root, op, &self.path, e);
        file.flush().await.map_err(|e| io("write", e))?;
        let file = file.into_inner();
        file.sync_all().await.map_err(|e| io("fsync", e))?;
        drop(file);
        Ok(Finished {
            temp: std::mem::take(&mut self.path),
            digest: self.expected.digest.clone(),
            size: self.expected.size,
        })
    }
}

/// Verified, fsynced content waiting in `ingest/` to be placed under its digest.
pub struct Finished {
    pub temp: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

impl Drop for Ingest {
    /// Deletes an unfinished ingest. Unlinking and closing a large file frees its extents,
    /// which can take long: that happens on a blocking thread when a runtime is around.
    fn drop(&mut self) {
        let path = std::mem::take(&mut self.path);
        if path.as_os_str().is_empty() {
            return;
        }
        let file = self.file.take();
        let work = move || {
            let _ = std::fs::remove_file(&path);
            drop(file);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            drop(self.tasks.spawn_blocking(work));
        } else {
            work();
        }
    }
}

/// Bytes a file occupies on disk.
pub fn allocated_bytes(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.blocks() * 512
}
