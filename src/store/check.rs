//! `cri-imaged check`: verifies a store without changing it, and `--repair` removes what
//! cannot be trusted.
//!
//! Checked: `oci-layout` and `index.json` parse; every file in `blobs/sha256` is named by a
//! valid digest and hashes to it; every name's manifest, config and layers are present,
//! intact and of the size their descriptors give; every blob is reachable from
//! `index.json`; `ingest/` holds nothing but partial downloads. While a daemon holds the
//! store's lock, unreferenced blobs and ingest files are expected (pulls in flight) and
//! only noted.
//!
//! Repair (refused while a daemon holds the lock) deletes corrupt and misnamed blobs and
//! everything in `ingest/`, then opens the store as the daemon does, which drops the names
//! whose blobs are gone and deletes unreferenced blobs.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::error::StoreError;
use super::layout::{self, IndexEntry};
use super::{intents, recover};
use crate::names::Digest;
use crate::oci::{self, Parsed};

/// What a check found.
#[derive(Debug, Default)]
pub struct Report {
    /// What makes the store untrustworthy: the check fails when there is any.
    pub problems: Vec<String>,
    /// Worth knowing, not wrong (partial downloads, a running daemon).
    pub notes: Vec<String>,
    /// What `--repair` deleted.
    pub repaired: Vec<String>,
    pub blobs: usize,
    pub names: usize,
}

/// A blob file as found on disk.
struct BlobFile {
    size: u64,
    /// Content hashes to the file name.
    intact: bool,
}

/// Whether another process holds the store's lock (a daemon is running).
fn daemon_running(root: &Path) -> Result<bool, StoreError> {
    let path = root.join(layout::LOCK_FILE);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(StoreError::io(root, "open", &path, e)),
    };
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockShared) {
        Ok(()) => Ok(false),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(true),
        Err(e) => Err(StoreError::io(root, "lock", &path, e.into())),
    }
}

fn hash_file(root: &Path, path: &Path) -> Result<Digest, StoreError> {
    let io = |op, e| StoreError::io(root, op, path, e);
    let mut f = std::fs::File::open(path).map_err(|e| io("open", e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| io("read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(Digest::from_sha256(h.finalize().into()))
}

/// Verifies the store at `root` without changing anything.
pub fn check(root: &Path) -> Result<Report, StoreError> {
    let running = daemon_running(root)?;
    let (report, _) = inspect(root, running)?;
    Ok(report)
}

/// Files `--repair` deletes: corrupt or misnamed blobs and `ingest/`'s content.
type Doomed = Vec<PathBuf>;

/// The whole check, step by step; also lists what `--repair` would delete.
fn inspect(root: &Path, running: bool) -> Result<(Report, Doomed), StoreError> {
    let mut r = Report::default();
    let mut doomed = Vec::new();
    if !root.is_dir() {
        r.problems
            .push(format!("{} is not a directory", root.display()));
        return Ok((r, doomed));
    }
    if running {
        r.notes.push(
            "a daemon holds the store's lock: unreferenced blobs and ingest files may be pulls in flight"
                .into(),
        );
    }
    check_layout_file(root, &mut r);
    let blobs = hash_blobs(root, &mut r, &mut doomed)?;
    r.blobs = blobs.len();
    let reachable = check_references(root, &mut r, &blobs)?;
    let kept = check_intents(root, &mut r, &mut doomed);
    report_unreferenced(&mut r, &blobs, &reachable, &kept, running);
    check_ingest(root, &mut r, &mut doomed, running)?;
    Ok((r, doomed))
}

/// `oci-layout` is there and says it is one.
fn check_layout_file(root: &Path, r: &mut Report) {
    match std::fs::read(root.join(layout::LAYOUT_FILE)) {
        Ok(b) => {
            let ok = serde_json::from_slice::<serde_json::Value>(&b)
                .ok()
                .and_then(|v| v.get("imageLayoutVersion").cloned())
                .is_some();
            if !ok {
                r.problems
                    .push(format!("{}: not an OCI layout file", layout::LAYOUT_FILE));
            }
        }
        Err(e) => r
            .problems
            .push(format!("{}: cannot be read: {e}", layout::LAYOUT_FILE)),
    }
}

/// Every blob on disk, hashed; a file that is not a blob, or does not hash to its name,
/// is a problem (and doomed).
fn hash_blobs(
    root: &Path,
    r: &mut Report,
    doomed: &mut Doomed,
) -> Result<HashMap<Digest, BlobFile>, StoreError> {
    let mut blobs: HashMap<Digest, BlobFile> = HashMap::new();
    let dir = layout::blobs_dir(root);
    let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| StoreError::io(root, "stat", &path, e))?;
        let Some(digest) = Digest::parse(&format!("sha256:{name}"))
            .ok()
            .filter(|_| meta.is_file())
        else {
            r.problems.push(format!(
                "blobs/sha256/{name}: not a blob (a file named by a sha256 digest)"
            ));
            doomed.push(path);
            continue;
        };
        let actual = hash_file(root, &path)?;
        let intact = actual == digest;
        if !intact {
            r.problems.push(format!(
                "blob {digest} is corrupt: its content hashes to {actual}"
            ));
            doomed.push(path);
        }
        blobs.insert(
            digest,
            BlobFile {
                size: meta.len(),
                intact,
            },
        );
    }
    Ok(blobs)
}

/// Every `index.json` reference: its blob is there, of its size, intact. Returns every
/// blob an entry reaches.
fn check_references(
    root: &Path,
    r: &mut Report,
    blobs: &HashMap<Digest, BlobFile>,
) -> Result<HashSet<Digest>, StoreError> {
    let mut reachable: HashSet<Digest> = HashSet::new();
    let entries = match layout::read_index(root) {
        Ok(e) => e,
        Err(e) => {
            r.problems.push(format!("{}: {e}", layout::INDEX_FILE));
            Vec::new()
        }
    };
    let need = |r: &mut Report, what: &str, d: &oci::Descriptor| match blobs.get(&d.digest) {
        None => r
            .problems
            .push(format!("{what}: blob {} is missing", d.digest)),
        Some(b) if b.size != d.size => r.problems.push(format!(
            "{what}: blob {} has {} bytes, its descriptor says {}",
            d.digest, b.size, d.size
        )),
        Some(b) if !b.intact => r
            .problems
            .push(format!("{what}: blob {} is corrupt", d.digest)),
        Some(_) => {}
    };
    for entry in entries {
        match entry {
            IndexEntry::Named { name, manifest, .. } => {
                r.names += 1;
                let what = format!("image {name}");
                reachable.insert(manifest.digest.clone());
                need(r, &what, &manifest);
                let intact = blobs.get(&manifest.digest).is_some_and(|b| b.intact);
                if !intact {
                    continue;
                }
                let path = layout::blob_path(root, &manifest.digest);
                if std::fs::metadata(&path).map_or(0, |m| m.len())
                    > oci::manifest::MAX_DOCUMENT_BYTES as u64
                {
                    r.problems.push(format!(
                        "{what}: manifest {} is larger than any manifest cri-imaged stores",
                        manifest.digest
                    ));
                    continue;
                }
                let bytes =
                    std::fs::read(&path).map_err(|e| StoreError::io(root, "read", &path, e))?;
                match oci::manifest::parse(&bytes, None) {
                    Ok(Parsed::Manifest(m)) => {
                        for d in std::iter::once(&m.config).chain(m.layers.iter()) {
                            reachable.insert(d.digest.clone());
                            need(r, &what, d);
                        }
                    }
                    // Recovery keeps such entries as someone else's: so does the check.
                    _ => {
                        r.notes.push(format!(
                            "{what}: manifest {} is not an image cri-imaged reads; kept as another tool's entry",
                            manifest.digest
                        ));
                        recover::protect(root, manifest.digest.clone(), &mut reachable, 4)?;
                    }
                }
            }
            IndexEntry::Foreign { manifest, .. } => {
                if let Some(d) = manifest {
                    if !blobs.contains_key(&d) {
                        r.problems
                            .push(format!("an index.json entry names a missing blob {d}"));
                    }
                    recover::protect(root, d, &mut reachable, 4)?;
                }
            }
        }
    }
    Ok(reachable)
}

/// Blobs no entry reaches: a problem, or a note while a daemon runs (pulls in flight).
fn report_unreferenced(
    r: &mut Report,
    blobs: &HashMap<Digest, BlobFile>,
    reachable: &HashSet<Digest>,
    kept: &HashMap<Digest, String>,
    running: bool,
) {
    let mut unreferenced: Vec<&Digest> = blobs.keys().filter(|d| !reachable.contains(*d)).collect();
    unreferenced.sort_by_key(|d| d.to_string());
    for d in unreferenced {
        // Verified blobs a crash interrupted the pull of: the next pull reuses them.
        if let Some(image) = kept.get(d).filter(|_| blobs[d].intact) {
            r.notes
                .push(format!("blob {d} kept from an interrupted pull of {image}"));
            continue;
        }
        let text = format!("blob {d} is not referenced by index.json");
        if running {
            r.notes.push(text);
        } else {
            r.problems.push(text);
        }
    }
}

/// `intents/`: the notes of interrupted pulls. A fresh one's blobs are kept (returned,
/// with the image each is kept for); an expired one goes at the next start; anything
/// else there is a problem. Expired and unusable notes are doomed.
fn check_intents(root: &Path, r: &mut Report, doomed: &mut Doomed) -> HashMap<Digest, String> {
    let mut kept = HashMap::new();
    for (path, note) in intents::read_all(root) {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        if name.ends_with(".tmp") {
            // A crash while the note was written: the pull had not fetched a blob yet.
            r.notes.push(format!(
                "{}/{name}: a note a crash cut short; removed at the next start",
                intents::INTENTS_DIR
            ));
            doomed.push(path);
            continue;
        }
        match note {
            Some(n) if n.is_fresh() => {
                for b in n.blobs {
                    kept.insert(b, n.image.clone());
                }
            }
            Some(n) => {
                r.notes.push(format!(
                    "{}/{name}: the interrupted pull of {} expired; its blobs go at the next start",
                    intents::INTENTS_DIR,
                    n.image
                ));
                doomed.push(path);
            }
            None => {
                r.problems.push(format!(
                    "{}/{name}: not a note of an interrupted pull",
                    intents::INTENTS_DIR
                ));
                doomed.push(path);
            }
        }
    }
    kept
}

/// `ingest/`: partial downloads are resumed by the next pull; anything else is left over.
fn check_ingest(
    root: &Path,
    r: &mut Report,
    doomed: &mut Doomed,
    running: bool,
) -> Result<(), StoreError> {
    let ingest = root.join(layout::INGEST_DIR);
    if let Ok(entries) = std::fs::read_dir(&ingest) {
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io(root, "read dir", &ingest, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(entry.path())
                .map_err(|e| StoreError::io(root, "stat", &entry.path(), e))?;
            doomed.push(entry.path());
            match recover::partial_digest(&name).filter(|_| meta.is_file()) {
                Some(d) => r.notes.push(format!(
                    "ingest/{name}: partial download of blob {d} ({} bytes), resumed by the next pull",
                    meta.len()
                )),
                None if running => r.notes.push(format!("ingest/{name}: in use by the daemon")),
                None => r
                    .problems
                    .push(format!("ingest/{name}: left over (not a partial download)")),
            }
        }
    }
    Ok(())
}

/// Removes what cannot be trusted, then checks again. Refused (`StoreError::Locked`)
/// while a daemon holds the store's lock.
pub fn repair(root: &Path) -> Result<Report, StoreError> {
    if !root.join(layout::INDEX_FILE).exists() {
        // Opening would create a store, or (with blobs) refuse: neither is a repair.
        recover::check_is_store(root)?;
    }
    let lock = super::open::lock(root)?;
    let (_, doomed) = inspect(root, false)?;
    let mut repaired = Vec::new();
    for path in doomed {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match removed {
            Ok(()) => repaired.push(format!("removed {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io(root, "remove", &path, e)),
        }
    }
    let names_before = layout::read_index(root).map(|e| e.len()).unwrap_or(0);
    // Opening drops names whose blobs are now missing and deletes unreferenced blobs.
    let blobs_before = std::fs::read_dir(layout::blobs_dir(root)).map_or(0, |d| d.count());
    let store = super::open::open_locked(root, lock, super::Options::default())?;
    let names_after = layout::read_index(root).map(|e| e.len()).unwrap_or(0);
    let blobs_after = std::fs::read_dir(layout::blobs_dir(root)).map_or(0, |d| d.count());
    if names_after < names_before {
        repaired.push(format!(
            "dropped {} image name(s) whose content was missing or corrupt",
            names_before - names_after
        ));
    }
    if blobs_after < blobs_before {
        repaired.push(format!(
            "removed {} unreferenced blob(s)",
            blobs_before - blobs_after
        ));
    }
    let (mut report, _) = inspect(root, false)?;
    drop(store);
    report.repaired = repaired;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use crate::store::testing;

    #[tokio::test]
    async fn a_sound_store_passes_and_damage_is_reported_then_repaired() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (blobs, lease) = testing::put_image(&store, "{}", b"layer bytes").await;
        testing::name_image(&store, &blobs, "r.io/a:1").await;
        drop(lease);
        store.close().await;
        drop(store);
        let layer_digest = blobs.layers[0].digest.clone();
        let r = check(dir.path()).unwrap();
        assert!(r.problems.is_empty(), "{r:?}");
        assert_eq!((r.names, r.blobs), (1, 3), "{r:?}");

        // Corrupt the layer (same size), add an unreferenced blob and a stray ingest file.
        let layer = layout::blob_path(dir.path(), &layer_digest);
        let mut bytes = std::fs::read(&layer).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&layer, &bytes).unwrap();
        let stray = b"nobody needs me";
        let stray_digest = Digest::from_sha256(Sha256::digest(stray).into());
        std::fs::write(layout::blob_path(dir.path(), &stray_digest), stray).unwrap();
        std::fs::write(dir.path().join("ingest").join("junk"), b"x").unwrap();
        let r = check(dir.path()).unwrap();
        let text = r.problems.join("\n");
        for part in [
            format!("blob {} is corrupt", layer_digest),
            "image r.io/a:1".to_string(),
            format!("blob {stray_digest} is not referenced"),
            "ingest/junk".to_string(),
        ] {
            assert!(text.contains(&part), "{part} missing in:\n{text}");
        }

        let r = repair(dir.path()).unwrap();
        assert!(r.problems.is_empty(), "after repair: {r:?}");
        assert_eq!(r.names, 0, "the image with the corrupt layer is dropped");
        assert!(!r.repaired.is_empty());
        assert!(!layer.exists());
    }

    #[test]
    fn repair_is_refused_while_the_lock_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert!(matches!(repair(dir.path()), Err(StoreError::Locked { .. })));
        let r = check(dir.path()).unwrap();
        assert!(r.problems.is_empty(), "{r:?}");
        assert!(r.notes.iter().any(|n| n.contains("daemon holds")), "{r:?}");
        drop(store);
    }
}
