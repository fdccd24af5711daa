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

/// Why a name's content cannot be used.
enum Problem {
    /// Missing, truncated or corrupt: the name is dropped.
    Incomplete(String),
    /// The disk answered with an error: the store refuses to open rather than guess.
    Io(StoreError),
}

/// Reads a manifest or index blob and checks it hashes to its name.
fn read_document(root: &Path, digest: &Digest) -> Result<Parsed, Problem> {
    let path = layout::blob_path(root, digest);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Problem::Incomplete(format!("manifest {digest} is missing")));
        }
        Err(e) => return Err(Problem::Io(StoreError::io(root, "read", &path, e))),
    };
    let actual = Digest::from_sha256(Sha256::digest(&bytes).into());
    if &actual != digest {
        return Err(Problem::Incomplete(format!(
            "manifest {digest} is corrupt (content hashes to {actual})"
        )));
    }
    oci::manifest::parse(&bytes, None)
        .map_err(|e| Problem::Incomplete(format!("manifest {digest}: {e}")))
}

fn check_present(root: &Path, d: &oci::Descriptor) -> Result<(), Problem> {
    let path = layout::blob_path(root, &d.digest);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == d.size => Ok(()),
        Ok(m) => Err(Problem::Incomplete(format!(
            "blob {} has {} bytes, expected {}",
            d.digest,
            m.len(),
            d.size
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(Problem::Incomplete(format!("blob {} is missing", d.digest)))
        }
        Err(e) => Err(Problem::Io(StoreError::io(root, "stat", &path, e))),
    }
}

/// The blobs a named entry needs, all present and the manifest intact.
fn check_named(root: &Path, manifest: &oci::Descriptor) -> Result<ManifestBlobs, Problem> {
    let Parsed::Manifest(m) = read_document(root, &manifest.digest)? else {
        return Err(Problem::Incomplete(format!(
            "manifest {} is an index",
            manifest.digest
        )));
    };
    let blobs = ManifestBlobs {
        manifest: manifest.clone(),
        config: m.config,
        layers: m.layers,
    };
    blobs
        .all()
        .skip(1)
        .try_for_each(|d| check_present(root, d))?;
    Ok(blobs)
}

/// Adds a foreign entry's blobs to `keep`: the document, and for a manifest its config and
/// layers, for an index each child, recursively (to a bounded depth).
fn protect(root: &Path, digest: Digest, keep: &mut HashSet<Digest>, depth: usize) {
    let parsed = read_document(root, &digest);
    keep.insert(digest);
    match parsed {
        Ok(Parsed::Manifest(m)) => {
            keep.insert(m.config.digest);
            keep.extend(m.layers.into_iter().map(|l| l.digest));
        }
        Ok(Parsed::Index(i)) if depth > 0 => {
            for child in i.manifests {
                protect(root, child.descriptor.digest, keep, depth - 1);
            }
        }
        Ok(Parsed::Index(_)) | Err(_) => {}
    }
}

/// Rebuilds the records from `index.json`, dropping names whose content is incomplete.
pub fn load(root: &Path) -> Result<Recovered, StoreError> {
    let mut named = Vec::new();
    let mut foreign = Vec::new();
    let mut protected = HashSet::new();
    let mut dirty = false;
    for entry in layout::read_index(root)? {
        match entry {
            IndexEntry::Named {
                name,
                manifest,
                pulled_by,
            } => match check_named(root, &manifest) {
                Ok(blobs) => named.push((
                    NameRecord {
                        name,
                        manifest,
                        pulled_by,
                    },
                    blobs,
                )),
                Err(Problem::Incomplete(reason)) => {
                    tracing::error!(%name, %reason, "dropping image name whose content is incomplete");
                    dirty = true;
                }
                Err(Problem::Io(e)) => return Err(e),
            },
            IndexEntry::Foreign { raw, manifest } => {
                if let Some(d) = manifest {
                    protect(root, d, &mut protected, 4);
                }
                foreign.push(raw);
            }
        }
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
