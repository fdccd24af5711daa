//! Container snapshots: the writable layer a runtime puts on top of an image's snapshots
//! (containerd's "active" snapshots). Each is `containers/<key>/` holding `upper/` and
//! `work/` for overlayfs and `container.json` naming the image and the chains it stacks
//! on; made in `containers/tmp-…` and renamed into place, so a name without `tmp-` is
//! always whole. While it exists its chains are never collected, even when its image is
//! removed; removing it lets them go.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::kind::Kind;
use crate::names::Digest;

pub const CONTAINERS_DIR: &str = "containers";
const TMP_PREFIX: &str = "tmp-";
pub(super) const RECORD: &str = "container.json";
/// The longest key.
const MAX_KEY: usize = 128;

/// What `container.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ContainerRecord {
    pub key: String,
    /// The image's ID.
    pub image: String,
    /// The chains below the writable layer, bottom first.
    pub chains: Vec<Digest>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(
        "container key {key:?} is not valid: 1 to {MAX_KEY} of [A-Za-z0-9_.-], not starting with '.' or '-' or \"tmp-\""
    )]
    InvalidKey { key: String },
    #[error("container {key:?} exists already")]
    Exists { key: String },
    #[error("no container {key:?}")]
    NotFound { key: String },
    #[error("container {key:?}: {op} {}: {source}", path.display())]
    Io {
        key: String,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ContainerError {
    pub fn kind(&self) -> Kind {
        match self {
            ContainerError::InvalidKey { .. } => Kind::InvalidArgument,
            ContainerError::Exists { .. } => Kind::Exists,
            ContainerError::NotFound { .. } => Kind::NotFound,
            ContainerError::Io { source, .. } if crate::kind::is_no_space(source) => Kind::NoSpace,
            ContainerError::Io { .. } => Kind::StoreFailed,
        }
    }
}

/// The container snapshots of one store root.
pub struct Containers {
    dir: PathBuf,
    next: AtomicU64,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && !key.starts_with(['.', '-'])
        && !key.starts_with(TMP_PREFIX)
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl Containers {
    /// Opens (creating) `root/containers`, removing what a crash left half made or half
    /// removed.
    pub fn open(root: &Path) -> std::io::Result<Containers> {
        let dir = root.join(CONTAINERS_DIR);
        std::fs::create_dir_all(&dir)?;
        super::spread::spread_trees(&dir);
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                tracing::info!(path = %e.path().display(), "removing a container snapshot a crash left unfinished");
                std::fs::remove_dir_all(e.path())?;
            }
        }
        Ok(Containers {
            dir,
            next: AtomicU64::new(0),
        })
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// The `upper/` and `work/` directories of container `key`.
    pub fn upper_and_work(&self, key: &str) -> (PathBuf, PathBuf) {
        (self.path(key).join("upper"), self.path(key).join("work"))
    }

    /// Makes container `key` on `chains` of `image`. Blocking.
    pub fn create(&self, record: &ContainerRecord) -> Result<(), ContainerError> {
        let key = &record.key;
        if !valid_key(key) {
            return Err(ContainerError::InvalidKey { key: key.clone() });
        }
        let io = |op, path: &Path| {
            let (key, path) = (key.clone(), path.to_owned());
            move |source| ContainerError::Io {
                key,
                op,
                path,
                source,
            }
        };
        let target = self.path(key);
        if target.exists() {
            return Err(ContainerError::Exists { key: key.clone() });
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!("{TMP_PREFIX}{key}-{}-{n}", std::process::id()));
        let made = (|| {
            for sub in ["upper", "work"] {
                std::fs::create_dir_all(tmp.join(sub)).map_err(io("create", &tmp.join(sub)))?;
            }
            let json = serde_json::to_vec_pretty(record).unwrap_or_default();
            let file = tmp.join(RECORD);
            let mut f = std::fs::File::create(&file).map_err(io("create", &file))?;
            f.write_all(&json).map_err(io("write", &file))?;
            f.sync_all().map_err(io("sync", &file))?;
            // No rename over an existing name: two creates of one key race to here.
            rustix::fs::renameat_with(
                rustix::fs::CWD,
                &tmp,
                rustix::fs::CWD,
                &target,
                rustix::fs::RenameFlags::NOREPLACE,
            )
            .map_err(|e| {
                if e == rustix::io::Errno::EXIST || e == rustix::io::Errno::NOTEMPTY {
                    ContainerError::Exists { key: key.clone() }
                } else {
                    io("rename", &tmp)(e.into())
                }
            })?;
            std::fs::File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", &self.dir))
        })();
        if made.is_err() && tmp.exists() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        made
    }

    /// Removes container `key` (its upper layer with it). Blocking.
    pub fn remove(&self, key: &str) -> Result<ContainerRecord, ContainerError> {
        if !valid_key(key) {
            return Err(ContainerError::InvalidKey {
                key: key.to_owned(),
            });
        }
        let record = self.get(key)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let doomed = self
            .dir
            .join(format!("{TMP_PREFIX}gone-{key}-{}-{n}", std::process::id()));
        std::fs::rename(self.path(key), &doomed).map_err(|source| ContainerError::Io {
            key: key.to_owned(),
            op: "rename",
            path: self.path(key),
            source,
        })?;
        if let Err(e) = std::fs::remove_dir_all(&doomed) {
            tracing::warn!(key, error = %e, "could not remove a container snapshot; it goes at next start");
        }
        Ok(record)
    }

    /// The record of container `key`.
    pub fn get(&self, key: &str) -> Result<ContainerRecord, ContainerError> {
        let file = self.path(key).join(RECORD);
        let bytes = std::fs::read(&file).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ContainerError::NotFound {
                    key: key.to_owned(),
                }
            } else {
                ContainerError::Io {
                    key: key.to_owned(),
                    op: "read",
                    path: file.clone(),
                    source,
                }
            }
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ContainerError::Io {
            key: key.to_owned(),
            op: "parse",
            path: file,
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        })
    }

    /// Every container, by key.
    pub fn list(&self) -> Vec<ContainerRecord> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut all: Vec<ContainerRecord> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                if !valid_key(&name) {
                    return None;
                }
                match self.get(&name) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable container snapshot");
                        None
                    }
                }
            })
            .collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// The chains some container stacks on.
    pub fn chains_in_use(&self) -> HashSet<Digest> {
        self.list().into_iter().flat_map(|r| r.chains).collect()
    }
}
