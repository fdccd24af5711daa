//! The snapshot directory: `snapshots/<chain-hex>/fs`, one per layer on its parents, made
//! in `snapshots/tmp-<chain-hex>-<pid>-<n>/` and renamed into place only after the
//! layer's `diff_id` verified. Durability comes after, for all snapshots at once
//! ([`durable`](super::durable): a marker made durable before the unpack, removed after
//! one `syncfs`; no fsync per file, a real image has tens of thousands). A crash leaves a
//! `tmp-` directory or a snapshot still marked, both removed at the next start; a name
//! without `tmp-` and without a marker is always a whole, verified, durable snapshot.
//!
//! Its lock (`in_use`, the chains pulls in flight unpack or stack on) is a leaf: taken
//! alone, never while a store lock is held.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::containers::Containers;
use super::durable::{self, Syncer};
use super::{Compression, Hashing, Limits, Lowers, UnpackError, apply};
use crate::names::Digest;
use crate::oci::Descriptor;

pub const SNAPSHOTS_DIR: &str = "snapshots";
/// Beside each snapshot's `fs/`: what it takes on disk, written before its rename.
const USAGE: &str = "usage.json";
const TMP_PREFIX: &str = "tmp-";

/// The snapshots of one store root.
pub struct Snapshots {
    dir: PathBuf,
    /// The writable snapshots on top (their chains are never collected).
    containers: Containers,
    limits: Limits,
    /// Chains that pulls in flight hold (with how many pulls each): never collected.
    in_use: Mutex<HashMap<Digest, usize>>,
    /// What each snapshot takes (a leaf lock, like `in_use`).
    usage: Mutex<HashMap<Digest, Usage>>,
    /// Makes renamed snapshots durable in the background.
    syncer: Syncer,
}

/// Bytes of file content and inodes of a snapshot (or of all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub bytes: u64,
    pub inodes: u64,
}

/// What the tree at `dir` takes, walked (for a snapshot made before `usage.json` existed).
fn walk_usage(dir: &Path) -> Usage {
    // The directory itself counts, as a made snapshot counts its root.
    let mut u = Usage {
        bytes: 0,
        inodes: 1,
    };
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.path().symlink_metadata() else {
                continue;
            };
            u.inodes += 1;
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                u.bytes += meta.len();
            }
        }
    }
    u
}

/// Keeps chains from being collected while it lives.
pub struct Hold<'a> {
    snapshots: &'a Snapshots,
    chains: Vec<Digest>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        let mut map = self.snapshots.lock();
        for c in &self.chains {
            if let Some(n) = map.get_mut(c) {
                *n -= 1;
                if *n == 0 {
                    map.remove(c);
                }
            }
        }
    }
}

impl Snapshots {
    /// Opens (creating) `root/snapshots`, removing what a crash left half made.
    pub fn open(root: &Path, limits: Limits) -> std::io::Result<Snapshots> {
        let dir = root.join(SNAPSHOTS_DIR);
        std::fs::create_dir_all(&dir)?;
        super::spread::spread_trees(&dir);
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name();
            if name.to_string_lossy().starts_with(TMP_PREFIX) {
                tracing::info!(path = %e.path().display(), "removing a snapshot a crash left unfinished");
                std::fs::remove_dir_all(e.path())?;
            } else if e.path().is_dir() && !e.path().join("fs").is_dir() {
                // No daemon makes one: a snapshot is renamed into place with its fs/.
                tracing::warn!(path = %e.path().display(), "removing a snapshot without its fs/ directory");
                std::fs::remove_dir_all(e.path())?;
            }
        }
        let snapshots = Snapshots {
            containers: Containers::open(root)?,
            syncer: Syncer::start(&dir)?,
            dir,
            limits,
            in_use: Mutex::default(),
            usage: Mutex::default(),
        };
        snapshots.recover_unsynced()?;
        let mut usage = HashMap::new();
        for chain in snapshots.list() {
            let file = snapshots.dir.join(chain.hex()).join(USAGE);
            let u = match std::fs::read(&file)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(u) => u,
                None => {
                    let u = walk_usage(&snapshots.fs(&chain));
                    let _ = std::fs::write(&file, serde_json::to_vec(&u).unwrap_or_default());
                    u
                }
            };
            usage.insert(chain, u);
        }
        *snapshots.usage.lock().unwrap_or_else(|p| p.into_inner()) = usage;
        Ok(snapshots)
    }

    /// Snapshots a crash left marked (their files may not all be on disk): removed, to be
    /// unpacked again from their blobs when needed; a container's (made only after its
    /// snapshots synced, so only the marker's removal was lost) kept, after a sync.
    fn recover_unsynced(&self) -> std::io::Result<()> {
        let used = self.containers.chains_in_use();
        for chain in self.list() {
            let markers = durable::markers(&self.dir.join(chain.hex()))?;
            if markers.is_empty() {
                continue;
            }
            if used.contains(&chain) {
                self.syncer.settle(&[self.dir.join(chain.hex())])?;
            } else {
                tracing::warn!(chain = %chain, "removing a snapshot not known to be on disk whole after a crash; it is unpacked again from its blob when needed");
                // Never served as made: a snapshot that cannot even be renamed away stops
                // the start.
                if !self.remove(&chain) {
                    return Err(std::io::Error::other(format!(
                        "snapshot {chain} was not synced before a crash and cannot be removed"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Makes `chains` durable now where they are not yet (before a container stacks on
    /// them). Blocking.
    pub fn settle(&self, chains: &[Digest]) -> std::io::Result<()> {
        let dirs: Vec<PathBuf> = chains.iter().map(|c| self.dir.join(c.hex())).collect();
        self.syncer.settle(&dirs)
    }

    /// Makes every snapshot made so far durable (at shutdown). Blocking.
    pub fn flush(&self) -> std::io::Result<()> {
        self.syncer.flush()
    }

    /// Snapshots renamed into place and not yet synced.
    #[cfg(test)]
    pub fn unsynced(&self) -> usize {
        self.syncer.queued()
    }

    /// The background sync, for tests that make it fail.
    #[cfg(test)]
    pub(super) fn syncer(&self) -> &Syncer {
        &self.syncer
    }

    /// What all snapshots take together.
    pub fn usage(&self) -> Usage {
        let map = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        map.values().fold(Usage::default(), |a, u| Usage {
            bytes: a.bytes + u.bytes,
            inodes: a.inodes + u.inodes,
        })
    }

    fn account(&self, chain: &Digest, usage: Option<Usage>) {
        let mut map = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        match usage {
            Some(u) => map.insert(chain.clone(), u),
            None => map.remove(chain),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Digest, usize>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The container snapshots on top of these.
    pub fn containers(&self) -> &Containers {
        &self.containers
    }

    /// The directory overlayfs stacks for `chain`.
    pub fn fs(&self, chain: &Digest) -> PathBuf {
        self.dir.join(chain.hex()).join("fs")
    }

    pub fn has(&self, chain: &Digest) -> bool {
        self.dir.join(chain.hex()).is_dir()
    }

    /// Holds `chains` (a pull's) against collection until the hold drops.
    pub fn hold(&self, chains: &[Digest]) -> Hold<'_> {
        let mut map = self.lock();
        for c in chains {
            *map.entry(c.clone()).or_default() += 1;
        }
        Hold {
            snapshots: self,
            chains: chains.to_vec(),
        }
    }

    /// Unpacks `layer` (its verified blob at `blob`) as snapshot `chain` on `lowers`
    /// (the parents' `fs` directories, nearest first, asked for only if a hard link needs
    /// them), checking its `diff_id`. Blocking.
    /// Returns whether it was made (false: it existed).
    pub fn unpack(
        &self,
        layer: &Descriptor,
        blob: &Path,
        diff_id: &Digest,
        chain: &Digest,
        lowers: Lowers<'_>,
    ) -> Result<bool, UnpackError> {
        if self.has(chain) {
            return Ok(false);
        }
        let file = std::fs::File::open(blob).map_err(|e| UnpackError::Io {
            layer: layer.digest.clone(),
            entry: String::new(),
            op: "open",
            source: e,
        })?;
        let input = std::io::BufReader::with_capacity(1 << 20, file);
        self.unpack_from(layer, input, diff_id, chain, lowers)
    }

    /// [`Snapshots::unpack`] of the compressed layer read from `input` (the download's
    /// own bytes as they arrive, when it streams). Blocking.
    pub fn unpack_from(
        &self,
        layer: &Descriptor,
        input: impl std::io::Read,
        diff_id: &Digest,
        chain: &Digest,
        lowers: Lowers<'_>,
    ) -> Result<bool, UnpackError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if self.has(chain) {
            return Ok(false);
        }
        let io = |op, e| UnpackError::Io {
            layer: layer.digest.clone(),
            entry: String::new(),
            op,
            source: e,
        };
        // The media type says it is a layer; its first bytes say how it is compressed.
        Compression::of(&layer.media_type).ok_or_else(|| UnpackError::Unsupported {
            layer: layer.digest.clone(),
            entry: String::new(),
            reason: format!("media type {} is no layer", layer.media_type),
        })?;
        let tmp = self.dir.join(format!(
            "{TMP_PREFIX}{}-{}-{}",
            chain.hex(),
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let made = (|| {
            std::fs::create_dir_all(tmp.join("fs")).map_err(|e| io("create", e))?;
            let marker = durable::mark(&tmp).map_err(|e| io("mark", e))?;
            let mut input = std::io::BufReader::with_capacity(64 * 1024, input);
            let compression = Compression::sniff(
                std::io::BufRead::fill_buf(&mut input).map_err(|e| io("read", e))?,
            );
            let mut stream =
                Hashing::new(compression.reader(input).map_err(|e| io("decompress", e))?);
            let applied = apply(
                &layer.digest,
                &mut stream,
                &tmp.join("fs"),
                lowers,
                self.limits,
            )?;
            let actual = stream.finish().map_err(|e| UnpackError::Corrupt {
                layer: layer.digest.clone(),
                reason: format!("decompressing: {e}"),
            })?;
            if &actual != diff_id {
                return Err(UnpackError::DiffIdMismatch {
                    layer: layer.digest.clone(),
                    expected: diff_id.clone(),
                    actual,
                });
            }
            let usage = Usage {
                bytes: applied.bytes,
                inodes: applied.entries + 1,
            };
            std::fs::write(
                tmp.join(USAGE),
                serde_json::to_vec(&usage).unwrap_or_default(),
            )
            .map_err(|e| io("write", e))?;
            // The name now, marked; the whole tree synced in the background.
            match std::fs::rename(&tmp, self.dir.join(chain.hex())) {
                Ok(()) => {}
                // Another pull made the same snapshot meanwhile: theirs stands.
                Err(e) if self.has(chain) => {
                    tracing::debug!(chain = %chain, error = %e, "snapshot made twice; keeping the first");
                    return Ok(false);
                }
                Err(e) => return Err(io("rename", e)),
            }
            self.syncer.queue(self.dir.join(chain.hex()).join(marker));
            self.account(chain, Some(usage));
            Ok(true)
        })();
        if tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made
    }

    /// Every snapshot's chain ID.
    pub fn list(&self) -> Vec<Digest> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Digest::parse(&format!("sha256:{name}")).ok()
            })
            .collect()
    }

    /// Removes the snapshots neither `keep`, a pull in flight nor a container needs;
    /// returns how many.
    pub fn retain(&self, keep: &HashSet<Digest>) -> usize {
        let held = self.held();
        let mut removed = 0;
        for chain in self.list() {
            if keep.contains(&chain) || held.contains(&chain) {
                continue;
            }
            removed += usize::from(self.remove(&chain));
        }
        removed
    }

    /// Removes those of `candidates` that exist and neither a pull in flight nor a
    /// container needs (the caller knows no image does); returns how many.
    pub fn remove_unused(&self, candidates: &HashSet<Digest>) -> usize {
        let held = self.held();
        candidates
            .iter()
            .filter(|c| !held.contains(*c) && self.dir.join(c.hex()).exists())
            .map(|c| usize::from(self.remove(c)))
            .sum()
    }

    /// Chains a pull in flight or a container holds.
    fn held(&self) -> HashSet<Digest> {
        let mut held: HashSet<Digest> = self.lock().keys().cloned().collect();
        held.extend(self.containers.chains_in_use());
        held
    }

    /// Removes one snapshot: renamed out of its name first, so no half-removed snapshot
    /// keeps it.
    fn remove(&self, chain: &Digest) -> bool {
        let doomed = self.dir.join(format!("{TMP_PREFIX}gone-{}", chain.hex()));
        match std::fs::rename(self.dir.join(chain.hex()), &doomed) {
            Ok(()) => {
                self.account(chain, None);
                if let Err(e) = std::fs::remove_dir_all(&doomed) {
                    tracing::warn!(chain = %chain, error = %e, "could not remove a snapshot; it goes at next start");
                }
                true
            }
            Err(e) => {
                tracing::warn!(chain = %chain, error = %e, "could not remove a snapshot");
                false
            }
        }
    }
}
