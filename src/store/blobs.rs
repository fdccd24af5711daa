//! Blob ingest: a temp file in `ingest/`, hashed while written, verified against the
//! expected digest and size, fsynced, then renamed into `blobs/sha256/`. A blob path only
//! ever holds verified content; an unfinished ingest is deleted when dropped.
//!
//! Chunks arrive as `Bytes` off the network and are kept as they are (no copy) until a
//! batch of [`BATCH`] bytes is ready; the batch is then hashed and written with `writev` on
//! a blocking thread while the next one is received, so hashing, the kernel's copy into the
//! page cache and the network run side by side. Each written batch starts its write-back
//! at once, so the fsync at the end waits for the last batch only, not the whole blob.
//!
//! A download's ingest file is named `<hex>.<pid>.<n>` after its blob. One that a crash
//! left behind is resumed by the next download of that blob ([`Ingest::resume`]): what is
//! on disk is hashed again, and the download continues from its end (bytes received but
//! still in the batch when the process died are fetched again). Nothing in it is trusted:
//! the finished blob is verified against its digest like any other.

use std::io::{IoSlice, Read, Seek, Write};
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

use super::error::StoreError;
use super::layout;
use crate::names::Digest;
use crate::oci::Descriptor;

static NEXT_INGEST: AtomicU64 = AtomicU64::new(0);

/// Bytes gathered before a batch is hashed and written. One batch is written while the
/// next is gathered: about twice this much is held per download (bench: 1 MiB pulls as
/// fast as 2 or 4 MiB, with the smallest peak RSS).
const BATCH: usize = 1 << 20;

/// Read size when a resumed partial download is hashed again.
const READ_BUFFER: usize = 1 << 20;

/// The file and the hash of what was written to it; owned by whoever writes next.
struct Sink {
    file: std::fs::File,
    hasher: Sha256,
    /// Bytes written to `file`.
    offset: u64,
    /// A follower of this file, told of each batch written.
    follow: Option<std::sync::Arc<super::follow::Shared>>,
}

impl Sink {
    /// Hashes and writes one batch, then asks the kernel to start writing it back.
    fn write_batch(&mut self, batch: &[Bytes]) -> std::io::Result<()> {
        let len: usize = batch.iter().map(Bytes::len).sum();
        for chunk in batch {
            self.hasher.update(chunk);
        }
        let mut slices: Vec<IoSlice<'_>> = batch.iter().map(|b| IoSlice::new(b)).collect();
        let mut rest = &mut slices[..];
        while !rest.is_empty() {
            match self.file.write_vectored(rest) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // POSIX_FADV_DONTNEED on dirty pages starts their write-back (and drops nothing
        // that is not yet on disk): the final fsync then has little left to wait for.
        if let Some(n) = NonZeroU64::new(len as u64) {
            let _ = rustix::fs::fadvise(
                &self.file,
                self.offset,
                Some(n),
                rustix::fs::Advice::DontNeed,
            );
        }
        self.offset += len as u64;
        if let Some(f) = &self.follow {
            f.advance(self.offset);
        }
        Ok(())
    }
}

type Flush = JoinHandle<(Sink, std::io::Result<()>)>;

/// An in-progress blob write.
pub struct Ingest {
    root: PathBuf,
    expected: Descriptor,
    path: PathBuf,
    /// The sink, when no batch is being written.
    sink: Option<Sink>,
    /// The batch being written on a blocking thread; it hands the sink back.
    flushing: Option<Flush>,
    /// Chunks received since the last batch went out.
    batch: Vec<Bytes>,
    batch_len: usize,
    written: u64,
    /// The store's tracker: batch writes and a drop's clean-up are waited for at shutdown.
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
            // Readable too: a follower reads it as it grows.
            match std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(StoreError::io(root, "create", &path, e)),
            }
        };
        Ok(Ingest::new(root, expected, tasks, path, file))
    }

    fn new(
        root: &Path,
        expected: &Descriptor,
        tasks: TaskTracker,
        path: PathBuf,
        file: std::fs::File,
    ) -> Ingest {
        Ingest {
            root: root.to_owned(),
            expected: expected.clone(),
            path,
            sink: Some(Sink {
                file,
                hasher: Sha256::new(),
                offset: 0,
                follow: None,
            }),
            flushing: None,
            batch: Vec::new(),
            batch_len: 0,
            written: 0,
            tasks,
        }
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
        let io = |op, e| StoreError::io(root, op, &path, e);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", e))?;
        // From here on the `Ingest` owns the file (its drop deletes it).
        let mut ingest = Ingest::new(root, expected, tasks, path.clone(), file);
        let Some(sink) = ingest.sink.as_mut() else {
            return Err(io("open", std::io::Error::other("ingest closed")));
        };
        let len = sink.file.metadata().map_err(|e| io("stat", e))?.len();
        if len > expected.size {
            sink.file.set_len(0).map_err(|e| io("truncate", e))?;
        } else {
            let mut buf = vec![0u8; READ_BUFFER];
            loop {
                let n = sink.file.read(&mut buf).map_err(|e| io("read", e))?;
                if n == 0 {
                    break;
                }
                sink.hasher.update(&buf[..n]);
                sink.offset += n as u64;
            }
        }
        sink.file
            .seek(std::io::SeekFrom::Start(sink.offset))
            .map_err(|e| io("seek", e))?;
        ingest.written = sink.offset;
        Ok(ingest)
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Lets `tap`'s follower read this file as it is written, from byte 0. `false`: it
    /// cannot (bytes were written before, or a batch is being written).
    pub fn follow(&mut self, tap: &super::follow::Tap) -> bool {
        let Some(sink) = self.sink.as_mut() else {
            return false;
        };
        if self.written > 0 || sink.follow.is_some() {
            return false;
        }
        let Ok(file) = sink.file.try_clone() else {
            return false;
        };
        tap.0.attach(file, 0);
        sink.follow = Some(tap.0.clone());
        true
    }

    /// Empties the ingest to start the blob again from byte 0 (a registry that ignored a
    /// `Range`, or a resumed partial that turned out corrupt).
    pub async fn reset(&mut self) -> Result<(), StoreError> {
        let mut sink = self.settle().await?;
        // What a follower read is not the blob any more: it is on its own now.
        sink.follow = None;
        self.batch.clear();
        self.batch_len = 0;
        self.written = 0;
        // Truncating frees the file's extents: off the async workers.
        let (sink, r) = self
            .tasks
            .spawn_blocking(move || {
                let r = sink
                    .file
                    .set_len(0)
                    .map_err(|e| ("truncate", e))
                    .and_then(|()| {
                        sink.file
                            .seek(std::io::SeekFrom::Start(0))
                            .map_err(|e| ("seek", e))
                    });
                sink.hasher = Sha256::new();
                sink.offset = 0;
                (sink, r)
            })
            .await
            .map_err(|e| self.io("truncate", std::io::Error::other(e)))?;
        self.sink = Some(sink);
        r.map(|_| ()).map_err(|(op, e)| self.io(op, e))
    }

    /// Whether exactly the expected number of bytes was written.
    fn check_size(&self) -> Result<(), StoreError> {
        if self.written == self.expected.size {
            return Ok(());
        }
        Err(StoreError::SizeMismatch {
            digest: self.expected.digest.clone(),
            expected: self.expected.size,
            actual: self.written,
        })
    }

    /// Whether what was written so far is the whole blob, with the right digest. Writes out
    /// the batch gathered so far to hash it.
    pub async fn verify(&mut self) -> Result<(), StoreError> {
        self.check_size()?;
        let mut sink = self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        let (sink, actual, r) = self
            .tasks
            .spawn_blocking(move || {
                let r = sink.write_batch(&batch);
                let digest = Digest::from_sha256(sink.hasher.clone().finalize().into());
                (sink, digest, r)
            })
            .await
            .map_err(|e| self.io("write", std::io::Error::other(e)))?;
        self.sink = Some(sink);
        r.map_err(|e| self.io("write", e))?;
        if actual != self.expected.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.digest.clone(),
                actual,
            });
        }
        Ok(())
    }

    fn io(&self, op: &'static str, e: std::io::Error) -> StoreError {
        StoreError::io(&self.root, op, &self.path, e)
    }

    /// Appends a chunk; refuses to grow past the expected size.
    pub async fn write(&mut self, chunk: Bytes) -> Result<(), StoreError> {
        let new_len = self.written + chunk.len() as u64;
        if new_len > self.expected.size {
            return Err(StoreError::SizeMismatch {
                digest: self.expected.digest.clone(),
                expected: self.expected.size,
                actual: new_len,
            });
        }
        self.written = new_len;
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= BATCH {
            let mut sink = self.settle().await?;
            let batch = std::mem::take(&mut self.batch);
            self.batch_len = 0;
            self.flushing = Some(self.tasks.spawn_blocking(move || {
                let r = sink.write_batch(&batch);
                (sink, r)
            }));
        }
        Ok(())
    }

    /// Waits for the batch being written, if any, and takes the sink back.
    async fn settle(&mut self) -> Result<Sink, StoreError> {
        if let Some(flush) = self.flushing.as_mut() {
            // Awaited in place: a cancelled caller leaves the handle (and the file) owned.
            let done = flush.await;
            self.flushing = None;
            let (sink, r) = done.map_err(|e| self.io("write", std::io::Error::other(e)))?;
            r.map_err(|e| self.io("write", e))?;
            return Ok(sink);
        }
        self.sink
            .take()
            .ok_or_else(|| self.io("write", std::io::Error::other("ingest closed")))
    }

    /// Verifies size and digest and fsyncs the content. The result names the verified
    /// temp file; the store places it (see `Store::commit`). From here on this `Ingest` no
    /// longer deletes the file: the placement does, whatever happens to its caller.
    pub async fn finish(mut self) -> Result<Finished, StoreError> {
        self.check_size()?;
        let mut sink = self.settle().await?;
        let batch = std::mem::take(&mut self.batch);
        // The last batch, the hash and the fsync in one trip to a blocking thread. A
        // digest mismatch is reported even though the (doomed) file was already synced.
        let (sink, actual, r) = self
            .tasks
            .spawn_blocking(move || {
                let r = sink
                    .write_batch(&batch)
                    .map_err(|e| ("write", e))
                    .and_then(|()| sink.file.sync_all().map_err(|e| ("fsync", e)));
                let digest = Digest::from_sha256(sink.hasher.clone().finalize().into());
                (sink, digest, r)
            })
            .await
            .map_err(|e| self.io("fsync", std::io::Error::other(e)))?;
        // Kept until the end: an error below leaves the file to this ingest's drop.
        self.sink = Some(sink);
        if actual != self.expected.digest {
            return Err(StoreError::DigestMismatch {
                expected: self.expected.digest.clone(),
                actual,
            });
        }
        r.map_err(|(op, e)| self.io(op, e))?;
        self.sink = None;
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
        // A batch still being written owns the file until it is done; unlinking first is
        // fine, the blocks are freed when the last descriptor closes.
        let (sink, flushing) = (self.sink.take(), self.flushing.take());
        let work = move || {
            let _ = std::fs::remove_file(&path);
            drop(sink);
            drop(flushing);
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
