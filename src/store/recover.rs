//! Start-up recovery: what a crash may have left behind is cleaned before the store opens.
//!
//! - a half-written `index.json.tmp`, blobs a crash left half-deleted, and ingest files
//!   that are not a partial download of a blob still missing are deleted; the partial
//!   downloads are kept for the next pull to resume (the longest per blob);
//! - a name whose manifest, config or layers are missing, truncated or (for the manifest)
//!   corrupt is dropped, so every listed image is complete;
//! - blobs no name references any more (a crash between a removal's index update and its
//!   deletes, or between a blob commit and the index update) are deleted.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::error::StoreError;
use super::layout::{self, IndexEntry};
use super::records::{ManifestBlobs, NameRecord, Records};
use crate::names::Digest;
use crate::oci::{self, Parsed};

/// What start-up recovery found.
pub struct Recovered {
    pub records: Records,
    pub foreign: Vec<serde_json::Value>,
    /// Blobs kept for entries cri-imaged did not write.
    pub protected: HashSet<Digest>,
    /// Whether `index.json` must be rewritten (names were dropped).
    pub dirty: bool,
}

/// Refuses a root that holds blobs but no `index.json`: without the index nothing says
/// which blobs matter, and recovery would delete them all (another tool's OCI layout, or
/// a containerd content store, given as `--root` by mistake).
pub fn check_is_store(root: &Path) -> Result<(), StoreError> {
    // A lock file says cri-imaged made this root (an older version wrote index.json only
    // with its first image, so a crash during the very first pull left blobs without it).
    if root.join(layout::INDEX_FILE).exists() || root.join(layout::LOCK_FILE).exists() {
        return Ok(());
    }
    let dir = layout::blobs_dir(root);
    let mut entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StoreError::io(root, "read dir", &dir, e)),
    };
    if entries.next().is_some() {
        return Err(StoreError::Corrupt {
            root: root.to_owned(),
            path: root.join(layout::INDEX_FILE),
            reason: "missing while blobs/sha256 holds blobs; refusing to treat them as garbage (is --root another tool's directory?)".into(),
        });
    }
    Ok(())
}

/// The blob a partial download in `ingest/` belongs to: its name is `<hex>.<pid>.<n>`.
pub fn partial_digest(file_name: &str) -> Option<Digest> {
    let (hex, rest) = file_name.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    Digest::parse(&format!("sha256:{hex}")).ok()
}

/// How long a partial download is kept for a pull to resume it.
const PARTIAL_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 60 * 60);

/// Cleans `ingest/` and returns the partial downloads worth resuming: for each blob not
/// yet in `blobs/`, its longest non-empty partial file written to in the last
/// [`PARTIAL_MAX_AGE`]. Everything else (blobs being deleted, older or shorter partials,
/// directories, unknown names) is deleted.
pub fn scan_ingest(root: &Path) -> Result<HashMap<Digest, PathBuf>, StoreError> {
    let dir = root.join(layout::INGEST_DIR);
    let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
    let mut best: HashMap<Digest, (u64, PathBuf)> = HashMap::new();
    let mut doomed = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
        let path = entry.path();
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| StoreError::io(root, "stat", &path, e))?;
        let digest = entry.file_name().to_str().and_then(partial_digest);
        // A partial no pull has written to for a day is not coming back: it is only space.
        let fresh = meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_none_or(|age| age < PARTIAL_MAX_AGE);
        let Some(digest) = digest.filter(|d| {
            meta.is_file() && meta.len() > 0 && fresh && !layout::blob_path(root, d).exists()
        }) else {
            doomed.push(path);
            continue;
        };
        match best.get(&digest) {
            Some((len, _)) if *len >= meta.len() => doomed.push(path),
            _ => {
                if let Some((_, old)) = best.insert(digest, (meta.len(), path)) {
                    doomed.push(old);
                }
            }
        }
    }
    for path in doomed {
        tracing::info!(path = %path.display(), "removing unfinished download");
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| StoreError::io(root, "remove", &path, e))?;
    }
    for (digest, (len, path)) in &best {
        tracing::info!(blob = %digest, bytes = len, path = %path.display(), "keeping a partial download to resume");
    }
    Ok(best.into_iter().map(|(d, (_, p))| (d, p)).collect())
}

/// Why a named entry's content cannot be used as an image.
enum Problem {
    /// Missing, truncated or corrupt: the name is dropped.
    Incomplete(String),
    /// Readable, but not an image cri-imaged pulls (an artifact, an index, schema 1):
    /// someone else's entry, kept verbatim.
    NotOurs(String),
    /// The disk answered with an error: the store refuses to open rather than guess.
    Io(StoreError),
}

/// A document blob's bytes; `None` when it does not exist or is larger than any
/// document cri-imaged reads (so a layer named as a manifest is never read whole).
fn read_document(root: &Path, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
    use std::io::Read as _;
    let path = layout::blob_path(root, digest);
    let io = |e| StoreError::io(root, "read", &path, e);
    // One path lookup: the size is asked of the open file.
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    if len > oci::manifest::MAX_DOCUMENT_BYTES as u64 {
        return Ok(None);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(len + 1)
        .read_to_end(&mut bytes)
        .map(|_| Some(bytes))
        .map_err(io)
}

/// The blobs a named entry needs, all present and the manifest intact.
fn check_named(
    root: &Path,
    manifest: &oci::Descriptor,
    present: &mut HashSet<([u8; 32], u64)>,
) -> Result<ManifestBlobs, Problem> {
    let digest = &manifest.digest;
    let bytes = read_document(root, digest)
        .map_err(Problem::Io)?
        .ok_or_else(|| Problem::Incomplete(format!("manifest {digest} is missing or too large")))?;
    let actual = Digest::of(&bytes);
    if &actual != digest {
        return Err(Problem::Incomplete(format!(
            "manifest {digest} is corrupt (content hashes to {actual})"
        )));
    }
    let m = match oci::manifest::parse(&bytes, None) {
        Ok(Parsed::Manifest(m)) => m,
        Ok(Parsed::Index(_)) => return Err(Problem::NotOurs(format!("{digest} is an index"))),
        // cri-imaged stores only manifests its parser reads: an intact one it cannot parse
        // was written by someone else.
        Err(e) => return Err(Problem::NotOurs(format!("manifest {digest}: {e}"))),
    };
    let blobs = ManifestBlobs {
        manifest: manifest.clone(),
        config: m.config,
        layers: m.layers,
    };
    for d in blobs.all().skip(1) {
        // A layer many images share is looked at once.
        if present.contains(&(d.digest.sha256(), d.size)) {
            continue;
        }
        let path = layout::blob_path(root, &d.digest);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == d.size => {
                present.insert((d.digest.sha256(), d.size));
            }
            Ok(meta) => {
                return Err(Problem::Incomplete(format!(
                    "blob {} has {} bytes, expected {}",
                    d.digest,
                    meta.len(),
                    d.size
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Problem::Incomplete(format!("blob {} is missing", d.digest)));
            }
            Err(e) => return Err(Problem::Io(StoreError::io(root, "stat", &path, e))),
        }
    }
    Ok(blobs)
}

/// Adds everything a foreign document reaches to `keep`, read leniently as plain JSON
/// (artifacts and unknown media types included): `config`, `layers`, `blobs`, `subject`,
/// and for an index each of `manifests`, recursively to a bounded depth.
pub(super) fn protect(
    root: &Path,
    digest: Digest,
    keep: &mut HashSet<Digest>,
    depth: usize,
) -> Result<(), StoreError> {
    let bytes = read_document(root, &digest)?;
    keep.insert(digest);
    let Some(bytes) = bytes else {
        return Ok(());
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(());
    };
    let digest_of = |v: &serde_json::Value| {
        v.get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok())
    };
    let list = |key: &str| {
        doc.get(key)
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default()
    };
    keep.extend(
        ["config", "subject"]
            .iter()
            .filter_map(|k| doc.get(*k))
            .filter_map(digest_of),
    );
    keep.extend(
        list("layers")
            .iter()
            .chain(list("blobs").iter())
            .filter_map(digest_of),
    );
    if depth > 0 {
        for child in list("manifests").iter().filter_map(digest_of) {
            protect(root, child, keep, depth - 1)?;
        }
    }
    Ok(())
}

/// [`check_named`] of every named entry (`None` for a foreign one), in order, on up to
/// four threads: a store of 20,000 images reads 20,000 manifests before it serves.
fn check_all(root: &Path, entries: &[IndexEntry]) -> Vec<Option<Result<ManifestBlobs, Problem>>> {
    let check = |chunk: &[IndexEntry]| {
        let mut present = HashSet::new();
        chunk
            .iter()
            .map(|e| match e {
                IndexEntry::Named { manifest, .. } => {
                    Some(check_named(root, manifest, &mut present))
                }
                IndexEntry::Foreign { .. } => None,
            })
            .collect::<Vec<_>>()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    if threads < 2 || entries.len() < 512 {
        return check(entries);
    }
    std::thread::scope(|s| {
        let parts: Vec<_> = entries
            .chunks(entries.len().div_ceil(threads))
            .map(|chunk| s.spawn(move || check(chunk)))
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    })
}

/// Rebuilds the records from `index.json`, dropping names whose content is incomplete.
pub fn load(root: &Path) -> Result<Recovered, StoreError> {
    let mut named = Vec::new();
    let mut foreign = Vec::new();
    let mut protected = HashSet::new();
    let mut dirty = false;
    let entries = layout::read_index(root)?;
    let checks = check_all(root, &entries);
    for (entry, check) in entries.into_iter().zip(checks) {
        let (raw, manifest) = match (entry, check) {
            (
                IndexEntry::Named {
                    name,
                    manifest,
                    pulled_by,
                    raw,
                },
                Some(check),
            ) => match check {
                Ok(blobs) => {
                    named.push((
                        NameRecord {
                            name,
                            manifest,
                            pulled_by,
                        },
                        blobs,
                    ));
                    continue;
                }
                Err(Problem::Incomplete(reason)) => {
                    tracing::error!(%name, %reason, "dropping image name whose content is incomplete");
                    dirty = true;
                    continue;
                }
                Err(Problem::NotOurs(reason)) => {
                    tracing::info!(%name, %reason, "keeping an entry cri-imaged did not write");
                    (raw, Some(manifest.digest))
                }
                Err(Problem::Io(e)) => return Err(e),
            },
            (IndexEntry::Foreign { raw, manifest }, _) => (raw, manifest),
            (IndexEntry::Named { raw, manifest, .. }, None) => (raw, Some(manifest.digest)),
        };
        if let Some(d) = manifest {
            protect(root, d, &mut protected, 4)?;
        }
        foreign.push(raw);
    }
    Ok(Recovered {
        records: Records::from_entries(named),
        foreign,
        protected,
        dirty,
    })
}

/// The entries of `index.json` that are not cri-imaged's, after another tool wrote it
/// while the daemon ran: every entry except those naming one in `ours` (the records
/// before and after the change being written; cri-imaged is
/// authoritative for its own names, so a stale or duplicate entry for one of them is not
/// kept), with every blob they reach. The file is read a few times if it does not parse:
/// containers/image rewrites it in place.
pub fn foreign_entries(
    root: &Path,
    ours: &[&Records],
) -> Result<(Vec<serde_json::Value>, HashSet<Digest>), StoreError> {
    let mut attempt = 0;
    let entries = loop {
        match layout::read_index(root) {
            Err(StoreError::Corrupt { .. }) if attempt < 5 => {
                attempt += 1;
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => break other?,
        }
    };
    let mut foreign = Vec::new();
    let mut keep = HashSet::new();
    for entry in entries {
        let (raw, manifest) = match entry {
            IndexEntry::Named {
                name,
                manifest,
                raw,
                ..
            } => {
                let names_it = |r: &&Records| {
                    r.by_name(&name)
                        .is_some_and(|img| img.names.iter().any(|n| n.name == name))
                };
                if ours.iter().any(names_it) {
                    continue;
                }
                (raw, Some(manifest.digest))
            }
            IndexEntry::Foreign { raw, manifest } => (raw, manifest),
        };
        if foreign.contains(&raw) {
            continue;
        }
        if let Some(d) = manifest {
            protect(root, d, &mut keep, 4)?;
        }
        foreign.push(raw);
    }
    Ok((foreign, keep))
}

/// Deletes every file in `blobs/sha256` that `keep` does not name, and returns the bytes
/// and inodes of what stays: one walk, one `stat` per kept blob.
pub fn collect_garbage(
    root: &Path,
    keep: impl Fn(&Digest) -> bool,
) -> Result<(u64, u64), StoreError> {
    let dir = layout::blobs_dir(root);
    let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
    let (mut bytes, mut inodes) = (0, 0);
    let one = |meta: std::io::Result<std::fs::Metadata>| {
        meta.map_or((0, 0), |m| (super::blobs::allocated_bytes(&m), 1))
    };
    for entry in entries {
        let entry = entry.map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
        let path = entry.path();
        // The type from the directory entry where the file system gives it (no stat).
        let is_dir = match entry.file_type() {
            Ok(t) => t.is_dir(),
            Err(_) => path.is_dir(),
        };
        if is_dir {
            tracing::warn!(path = %path.display(), "leaving a directory that is no blob alone");
            let (b, i) = one(entry.metadata());
            let (below_b, below_i) = disk_usage(&path);
            bytes += b + below_b;
            inodes += i + below_i;
            continue;
        }
        let file = entry.file_name();
        let referenced = file
            .to_str()
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .is_some_and(|d| keep(&d));
        if referenced {
            let (b, i) = one(entry.metadata());
            bytes += b;
            inodes += i;
        } else {
            tracing::info!(path = %path.display(), "removing unreferenced blob");
            std::fs::remove_file(&path).map_err(|e| StoreError::io(root, "remove", &path, e))?;
        }
    }
    Ok((bytes, inodes))
}

/// Bytes and inodes used below `dir`.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            inodes += 1;
            bytes += super::blobs::allocated_bytes(&meta);
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    (bytes, inodes)
}
