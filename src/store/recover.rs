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

/// Reads a manifest blob and checks it hashes to its name.
pub fn read_manifest(root: &Path, digest: &Digest) -> Result<ManifestBlobsOrIndex, String> {
    let path = layout::blob_path(root, digest);
    let bytes = std::fs::read(&path).map_err(|e| format!("manifest {digest}: {e}"))?;
    let actual = Digest::from_sha256(Sha256::digest(&bytes).into());
    if &actual != digest {
        return Err(format!(
            "manifest {digest} is corrupt (content hashes to {actual})"
        ));
    }
    match oci::manifest::parse(&bytes, None).map_err(|e| format!("manifest {digest}: {e}"))? {
        Parsed::Manifest(m) => Ok(ManifestBlobsOrIndex::Manifest(m)),
        Parsed::Index(_) => Ok(ManifestBlobsOrIndex::Index),
    }
}

pub enum ManifestBlobsOrIndex {
    Manifest(oci::Manifest),
    Index,
}

fn check_present(root: &Path, d: &oci::Descriptor) -> Result<(), String> {
    let path = layout::blob_path(root, &d.digest);
    match std::fs::metadata(&path) {
        Ok(m) if m.len() == d.size => Ok(()),
        Ok(m) => Err(format!(
            "blob {} has {} bytes, expected {}",
            d.digest,
            m.len(),
            d.size
        )),
        Err(e) => Err(format!("blob {}: {e}", d.digest)),
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
            } => {
                let checked = match read_manifest(root, &manifest.digest) {
                    Ok(ManifestBlobsOrIndex::Manifest(m)) => {
                        let blobs = ManifestBlobs {
                            manifest: manifest.clone(),
                            config: m.config,
                            layers: m.layers,
                        };
                        let present = blobs.all().skip(1).try_for_each(|d| check_present(root, d));
                        present.map(|()| blobs)
                    }
                    Ok(ManifestBlobsOrIndex::Index) => {
                        Err(format!("manifest {} is an index", manifest.digest))
                    }
                    Err(e) => Err(e),
                };
                match checked {
                    Ok(blobs) => named.push((
                        NameRecord {
                            name,
                            manifest,
                            pulled_by,
                        },
                        blobs,
                    )),
                    Err(reason) => {
                        tracing::error!(%name, %reason, "dropping image name whose content is incomplete");
                        dirty = true;
                    }
                }
            }
            IndexEntry::Foreign { raw, manifest } => {
                if let Some(d) = manifest {
                    if let Ok(ManifestBlobsOrIndex::Manifest(m)) = read_manifest(root, &d) {
                        protected.extend(
                            std::iter::once(m.config.digest)
                                .chain(m.layers.into_iter().map(|l| l.digest)),
                        );
                    }
                    protected.insert(d);
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
