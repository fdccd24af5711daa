//! Following an ingest as it is written: a [`Follower`] reads a blob's bytes from its
//! ingest file as each batch reaches the file, so a reader (the unpack stage) consumes a
//! download without the download ever waiting for it and without a copy of the bytes held
//! in memory (they are in the page cache). The download holds the [`Tap`]: attached to its
//! ingest ([`Ingest::follow`](super::Ingest::follow)), it says when the blob verified and
//! was placed ([`Tap::verified`]); a tap dropped before that — the download failed, or
//! restarted from byte 0 — ends the follower with an error, so what it read is never
//! taken for the blob.

use std::os::unix::fs::FileExt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    /// The ingest file, once the download opened it.
    file: Option<Arc<std::fs::File>>,
    /// Bytes from the start of the file that are written.
    on_disk: u64,
    verified: bool,
    closed: bool,
}

#[derive(Default)]
pub(super) struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.cv.notify_all();
    }

    /// Bytes `0..on_disk` of the file are written (called by the ingest after each batch).
    pub(super) fn advance(&self, on_disk: u64) {
        self.update(|s| s.on_disk = s.on_disk.max(on_disk));
    }

    pub(super) fn attach(&self, file: std::fs::File, on_disk: u64) {
        self.update(|s| {
            s.file = Some(Arc::new(file));
            s.on_disk = on_disk;
        });
    }
}

/// A tap and its follower: give the tap to the download, read from the follower.
pub fn tap() -> (Tap, Follower) {
    let shared = Arc::new(Shared::default());
    (
        Tap(shared.clone()),
        Follower {
            shared,
            file: None,
            pos: 0,
        },
    )
}

/// The download's end. Dropped without [`Tap::verified`]: the follower fails.
pub struct Tap(pub(super) Arc<Shared>);

impl Tap {
    /// The blob verified and is in the store: the follower reads to its end, then stops.
    pub fn verified(self) {
        self.0.update(|s| s.verified = true);
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        self.0.update(|s| s.closed = true);
    }
}

/// The reading end ([`std::io::Read`], blocking: use it off the async workers).
pub struct Follower {
    shared: Arc<Shared>,
    file: Option<Arc<std::fs::File>>,
    pos: u64,
}

/// The error a follower ends with when the download stopped before the blob verified.
fn stopped() -> std::io::Error {
    std::io::Error::other("the download stopped feeding this layer")
}

impl std::io::Read for Follower {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let end = {
            let mut s = self.shared.lock();
            loop {
                // Verified wins over closed: the tap is dropped right after it says so.
                if s.verified && s.on_disk <= self.pos {
                    return Ok(0);
                }
                if s.closed && !s.verified {
                    return Err(stopped());
                }
                if s.file.is_some() && s.on_disk > self.pos {
                    break;
                }
                s = self.shared.cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            if self.file.is_none() {
                self.file = s.file.clone();
            }
            s.on_disk
        };
        let Some(file) = &self.file else {
            return Err(stopped());
        };
        let want = buf
            .len()
            .min(usize::try_from(end - self.pos).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            // The file shrank under us: only a restart from byte 0 does that, and that
            // closes the tap first.
            return Err(stopped());
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, std::fs::File) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ingest");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(bytes).unwrap();
        (dir, std::fs::File::open(&path).unwrap())
    }

    #[test]
    fn reads_what_is_on_disk_then_ends_when_verified() {
        let (tap, mut follower) = tap();
        let (_dir, file) = file_with(b"hello world");
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            follower.read_to_end(&mut out).map(|_| out)
        });
        tap.0.attach(file, 0);
        tap.0.advance(5);
        std::thread::sleep(std::time::Duration::from_millis(20));
        tap.0.advance(11);
        tap.verified();
        assert_eq!(reader.join().unwrap().unwrap(), b"hello world");
    }

    #[test]
    fn a_tap_dropped_before_verified_fails_the_reader() {
        let (tap, mut follower) = tap();
        let (_dir, file) = file_with(b"hello world");
        tap.0.attach(file, 11);
        drop(tap);
        let mut out = Vec::new();
        let e = follower.read_to_end(&mut out).unwrap_err();
        assert!(e.to_string().contains("stopped feeding"), "{e}");
    }

    #[test]
    fn never_reads_past_what_is_written() {
        let (tap, mut follower) = tap();
        let (_dir, file) = file_with(b"hello world");
        tap.0.attach(file, 5);
        let mut buf = [0u8; 64];
        assert_eq!(follower.read(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        drop(tap);
        assert!(follower.read(&mut buf).is_err());
    }
}
