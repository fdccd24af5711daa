//! Intents: a durable note per pull in flight, naming the image and every blob it brings
//! in, written before its first blob and removed when the image is recorded or the pull
//! ends without a crash. One that a crash left makes start-up recovery keep that pull's
//! verified blobs (and `check` call them kept, not a problem) until the note expires, so
//! the next pull of the image reuses them instead of fetching them again; past that they
//! are collected like any unreferenced blob.
//!
//! `intents/<manifest-hex>.<pid>.<n>.json`: `{"image", "manifest", "blobs", "expires_unix"}`.
//! Nothing in one is trusted but its digests (validated) and its expiry: a note that does
//! not parse is deleted at start (and is a problem for `check`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{ManifestBlobs, Shared, Store, StoreError, layout};
use crate::names::Digest;

pub const INTENTS_DIR: &str = "intents";

/// How long the blobs of an interrupted pull are kept by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 60 * 60);

/// The largest note read (a manifest names at most a few thousand blobs).
const MAX_NOTE: u64 = 1 << 20;

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    image: String,
    manifest: String,
    blobs: Vec<String>,
    expires_unix: u64,
}

/// A note on disk, as recovery and `check` read it.
#[derive(Debug, Clone)]
pub struct Interrupted {
    pub path: PathBuf,
    pub image: String,
    pub manifest: Digest,
    pub blobs: Vec<Digest>,
    pub expires: SystemTime,
}

impl Interrupted {
    pub fn is_fresh(&self) -> bool {
        self.expires > SystemTime::now()
    }
}

/// A pull's note; removed when dropped (the pull recorded its image, failed or was
/// cancelled). Only a crash leaves it.
pub struct Intent {
    path: PathBuf,
}

impl Drop for Intent {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Store {
    /// Writes the note of a pull of `image` about to bring in `blobs`, durably (temp file,
    /// fsync, rename, fsync of the directory) before it returns.
    pub async fn intend(&self, image: &str, blobs: &ManifestBlobs) -> Result<Intent, StoreError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = self.root().to_owned();
        let dir = root.join(INTENTS_DIR);
        let name = format!(
            "{}.{}.{}.json",
            blobs.manifest.digest.hex(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let expires = SystemTime::now() + self.shared.grace;
        let note = Note {
            image: image.to_owned(),
            manifest: blobs.manifest.digest.to_string(),
            blobs: blobs.all().map(|d| d.digest.to_string()).collect(),
            expires_unix: expires
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let bytes = serde_json::to_vec(&note).expect("a note serializes");
        let path = dir.join(&name);
        let intent = Intent { path: path.clone() };
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| StoreError::io(&root, "create", &dir, e))?;
            let tmp = dir.join(format!("{name}.tmp"));
            let write = || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                StoreError::io(&root, "write", &path, e)
            })?;
            layout::sync_dir(&root, &dir)
        })
        .await
        .map_err(|e| {
            StoreError::io(self.root(), "write", &intent.path, std::io::Error::other(e))
        })??;
        Ok(intent)
    }

    /// The image with manifest `manifest` is recorded: the blobs an interrupted pull of it
    /// left are the image's now, and its notes go.
    pub(super) fn forget_interrupted(&self, manifest: &Digest) {
        self.shared.release_kept(|k| &k.manifest == manifest);
    }
}

/// Reads every note under `root` (`None` for one that cannot be used: not ours, too big,
/// unparsable), with its path.
pub fn read_all(root: &Path) -> Vec<(PathBuf, Option<Interrupted>)> {
    let Ok(entries) = std::fs::read_dir(root.join(INTENTS_DIR)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| {
            let path = e.path();
            let note = read_one(&path);
            (path, note)
        })
        .collect()
}

fn read_one(path: &Path) -> Option<Interrupted> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    let name = path.file_name()?.to_str()?;
    if !meta.is_file() || meta.len() > MAX_NOTE || !name.ends_with(".json") {
        return None;
    }
    let note: Note = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let manifest = Digest::parse(&note.manifest).ok()?;
    if !name.starts_with(manifest.hex()) {
        return None;
    }
    let blobs = note
        .blobs
        .iter()
        .map(|b| Digest::parse(b).ok())
        .collect::<Option<Vec<_>>>()?;
    Some(Interrupted {
        path: path.to_owned(),
        image: note.image,
        manifest,
        blobs,
        expires: SystemTime::UNIX_EPOCH + Duration::from_secs(note.expires_unix),
    })
}

/// At start: the notes still fresh are kept (their blobs with them); expired and unusable
/// ones are deleted.
pub(super) fn recover(root: &Path) -> Vec<Interrupted> {
    let mut kept = Vec::new();
    for (path, note) in read_all(root) {
        match note {
            Some(n) if n.is_fresh() => {
                tracing::info!(image = %n.image, manifest = %n.manifest, blobs = n.blobs.len(), "keeping the blobs of an interrupted pull");
                kept.push(n);
            }
            _ => {
                tracing::info!(path = %path.display(), "removing the note of an interrupted pull");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    kept
}

/// The blobs `kept` notes hold.
pub(super) fn blobs_of(kept: &[Interrupted]) -> HashSet<Digest> {
    kept.iter().flat_map(|k| k.blobs.iter().cloned()).collect()
}

impl Shared {
    /// Releases the notes `which` selects: their files are deleted and their blobs'
    /// holds dropped (collected if nothing else needs them).
    pub(super) fn release_kept(self: &std::sync::Arc<Self>, which: impl Fn(&Interrupted) -> bool) {
        let gone: Vec<Interrupted> = {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            let (gone, stay) = std::mem::take(&mut *kept)
                .into_iter()
                .partition(|k| which(k));
            *kept = stay;
            gone
        };
        for k in gone {
            let _ = std::fs::remove_file(&k.path);
            self.release(k.blobs);
        }
    }
}

/// Releases the notes of `shared` when they expire (holding only a weak reference: the
/// store may close first).
pub(super) fn expire_later(shared: &std::sync::Arc<Shared>) {
    let Some(first) = shared
        .kept
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|k| k.expires)
        .min()
    else {
        return;
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    let weak = std::sync::Arc::downgrade(shared);
    tokio::spawn(async move {
        let mut next = first;
        loop {
            let wait = next
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait + Duration::from_millis(10)).await;
            let Some(shared) = weak.upgrade() else { return };
            shared.release_kept(|k| !k.is_fresh());
            let Some(n) = shared
                .kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|k| k.expires)
                .min()
            else {
                return;
            };
            next = n;
        }
    });
}
