//! Blob ingest: a temp file in `ingest/`, hashed while written, verified against the
//! expected digest and size, fsynced, then renamed into `blobs/sha256/`. A blob path only
//! ever holds verified content; an unfinished ingest is deleted when dropped.
//!
//! A download's ingest file is named `<hex>.<pid>.<n>` after its blob. One that a crash
//! left behind is resumed by the next download of that blob ([`Ingest::resume`]): what is
//! on disk is hashed again, and the download continues from its end. Nothing in it is
//! trusted: the finished blob is verified against its digest like any other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
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
        // Created synchronously (one quick syscall), so no cancellation can fall between
        // the file's creation and the `Ingest` whose drop deletes it. Never an existing
        // file: a partial left by an earlier process with the same PID may be in use.
        let (path, file) = loop {
            let n = NEXT_INGEST.fetch_add(1, Ordering::Relaxed);
            let path = root.join(layout::INGEST_DIR).join(format!(
                "{}.{}.{n}",
                expected.digest.hex(),
                std::process::id()
            ));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, tokio::fs::File::from_std(f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io(root, "create", &path, e)),
            }
        };
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

    /// Opens a partial download a crash left at `path` (blocking: it hashes what is there,
    /// so call it off the async workers). Content longer than the blob is discarded; the
    /// ingest continues from the end of the rest.
    pub(super) fn resume(
        root: &Path,
        expected: &Descriptor,
        tasks: TaskTracker,
        path: PathBuf,
    ) -> Result<Ingest, StoreError> {
        use std::io::{Read, Seek};
        let io = |op, e| StoreError::io(root, op, &path, e);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        // From here on the `Ingest` owns the file (its drop deletes it).
        let mut ingest = Ingest {
            root: root.to_owned(),
            expected: expected.clone(),
            path: path.clone(),
            file: None,
            hasher: Sha256::new(),
            written: 0,
            tasks,
        };
        let len = file.metadata().map_err(|e| io("stat", e))?.len();
        if len > expected.size {
            file.set_len(0).map_err(|e| io("truncate", e))?;
        } else {
            let mut buf = vec![0u8; WRITE_BUFFER];
            loop {
                let n = file.read(&mut buf).map_err(|e| io("read", e))?;
                if n == 0 {
                    break;
                }
                ingest.hasher.update(&buf[..n]);
                ingest.written += n as u64;
            }
        }
        file.seek(std::io::SeekFrom::Start(ingest.written))
            .map_err(|e| io("seek", e))?;
        ingest.file = Some(tokio::io::BufWriter::with_capacity(
            WRITE_BUFFER,
            tokio::fs::File::from_std(file),
        ));
        Ok(ingest)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Empties the ingest to start the blob again from byte 0 (a registry that ignored a
    /// `Range`, or a resumed partial that turned out corrupt).
    pub async fn reset(&mut self) -> Result<(), StoreError> {
        let Some(file) = self.file.as_mut() else {
            return Err(StoreError::io(
                &self.root,
                "truncate",
                &self.path,
                std::io::Error::other("ingest closed"),
            ));
        };
        let io = |op, e| StoreError::io(&self.root, op, &self.path, e);
        file.flush().await.map_err(|e| io("write", e))?;
        let inner = file.get_mut();
        inner.set_len(0).await.map_err(|e| io("truncate", e))?;
        inner
            .seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| io("seek", e))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Whether what was written so far is the whole blob, with the right digest.
    pub fn verify(&self) -> Result<(), StoreError> {
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
        Ok(())
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
        self.verify()?;
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
