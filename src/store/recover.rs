//! Start-up recovery: what a crash may have left behind is cleaned before the store opens.
//!
//! - unfinished ingests and a half-written `index.json.tmp` are deleted;
//! - a name whose manifest, config or layers are missing, truncated or (for the manifest)
//!   corrupt is dropped, so every listed image is complete;
//! - blobs no name references any more (a crash between a removal's index update and its
//!   deletes, or between a blob commit and the index update) are deleted.

use std::collections::HashSet;
use std::path::Path;

use sha2::{Digest as _, Sha256};

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

pub fn clear_dir(root: &Path, dir: &Path) -> Result<(), StoreError> {
    let entries = std::fs::read_dir(dir).map_err(|e| StoreError::io(root, "read dir", dir, e))?;
    for entry in entries.flatten() {
        let path = entry.path();
        tracing::info!(path = %path.display(), "removing unfinished download");
        std::fs::remove_file(&path).map_err(|e| StoreError::io(root, "remove", &path, e))?;
    }
    Ok(())
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

/// A blob's bytes; `None` when it does not exist.
fn read_blob(root: &Path, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
    let path = layout::blob_path(root, digest);
    match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(root, "read", &path, e)),
    }
}

/// The blobs a named entry needs, all present and the manifest intact.
fn check_named(root: &Path, manifest: &oci::Descriptor) -> Result<ManifestBlobs, Problem> {
    let digest = &manifest.digest;
    let bytes = read_blob(root, digest)
        .map_err(Problem::Io)?
        .ok_or_else(|| Problem::Incomplete(format!("manifest {digest} is missing")))?;
    let actual = Digest::from_sha256(Sha256::digest(&bytes).into());
    if &actual != digest {
        return Err(Problem::Incomplete(format!(
            "manifest {digest} is corrupt (content hashes to {actual})"
        )));
    }
    let m = match oci::manifest::parse(&bytes, None) {
        Ok(Parsed::Manifest(m)) => m,
        Ok(Parsed::Index(_)) => return Err(Problem::NotOurs(format!("{digest} is an index"))),
        Err(e @ (oci::FormatError::MediaType(_) | oci::FormatError::SchemaVersion(_))) => {
            return Err(Problem::NotOurs(format!("manifest {digest}: {e}")));
        }
        Err(e) => return Err(Problem::Incomplete(format!("manifest {digest}: {e}"))),
    };
    let blobs = ManifestBlobs {
        manifest: manifest.clone(),
        config: m.config,
        layers: m.layers,
    };
    for d in blobs.all().skip(1) {
        let path = layout::blob_path(root, &d.digest);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == d.size => {}
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
fn protect(
    root: &Path,
    digest: Digest,
    keep: &mut HashSet<Digest>,
    depth: usize,
) -> Result<(), StoreError> {
    let bytes = read_blob(root, &digest)?;
    keep.insert(digest);
    let Some(bytes) = bytes.filter(|b| b.len() <= oci::manifest::MAX_DOCUMENT_BYTES) else {
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

/// Rebuilds the records from `index.json`, dropping names whose content is incomplete.
pub fn load(root: &Path) -> Result<Recovered, StoreError> {
    let mut named = Vec::new();
    let mut foreign = Vec::new();
    let mut protected = HashSet::new();
    let mut dirty = false;
    for entry in layout::read_index(root)? {
        let (raw, manifest) = match entry {
            IndexEntry::Named {
                name,
                manifest,
                pulled_by,
                raw,
            } => match check_named(root, &manifest) {
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
            IndexEntry::Foreign { raw, manifest } => (raw, manifest),
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

/// Deletes every file in `blobs/sha256` that is not in `keep`.
pub fn collect_garbage(root: &Path, keep: &HashSet<Digest>) -> Result<(), StoreError> {
    let dir = layout::blobs_dir(root);
    let entries = std::fs::read_dir(&dir).map_err(|e| StoreError::io(root, "read dir", &dir, e))?;
    for entry in entries.flatten() {
        let file = entry.file_name();
        let referenced = file
            .to_str()
            .and_then(|hex| Digest::parse(&format!("sha256:{hex}")).ok())
            .is_some_and(|d| keep.contains(&d));
        if !referenced {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing unreferenced blob");
            std::fs::remove_file(&path).map_err(|e| StoreError::io(root, "remove", &path, e))?;
        }
    }
    Ok(())
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
