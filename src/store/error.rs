//! Errors of the content store.

use std::path::PathBuf;

use crate::kind::Kind;
use crate::names::Digest;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {root}: another cri-imaged already uses this root (lock {lock} is held)")]
    Locked { root: PathBuf, lock: PathBuf },
    #[error("store {}: {op} {}: {source}", root.display(), path.display())]
    Io {
        root: PathBuf,
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store {}: no space left while writing {}", root.display(), path.display())]
    NoSpace { root: PathBuf, path: PathBuf },
    #[error("blob {expected}: content has digest {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("blob {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        digest: Digest,
        expected: u64,
        actual: u64,
    },
    #[error("store {}: {} is corrupt: {reason}", root.display(), path.display())]
    Corrupt {
        root: PathBuf,
        path: PathBuf,
        reason: String,
    },
    #[error("blob {digest} is not in the store")]
    MissingBlob { digest: Digest },
}

impl StoreError {
    /// The failure's kind (the io error kind decided `NoSpace` where the error arose).
    pub fn kind(&self) -> Kind {
        match self {
            StoreError::NoSpace { .. } => Kind::NoSpace,
            StoreError::Locked { .. } => Kind::StoreLocked,
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
                Kind::StoreDamaged
            }
            StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::MissingBlob { .. } => {
                Kind::StoreFailed
            }
        }
    }

    /// Whether the content written did not verify (the source's fault, not the store's).
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. }
        )
    }

    /// The same error again, for each caller of a failed group commit (an I/O source is
    /// rebuilt from its kind and message: `std::io::Error` is not `Clone`).
    pub(crate) fn duplicate(&self) -> Self {
        match self {
            StoreError::Locked { root, lock } => StoreError::Locked {
                root: root.clone(),
                lock: lock.clone(),
            },
            StoreError::Io {
                root,
                op,
                path,
                source,
            } => StoreError::Io {
                root: root.clone(),
                op,
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            StoreError::NoSpace { root, path } => StoreError::NoSpace {
                root: root.clone(),
                path: path.clone(),
            },
            StoreError::DigestMismatch { expected, actual } => StoreError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            StoreError::SizeMismatch {
                digest,
                expected,
                actual,
            } => StoreError::SizeMismatch {
                digest: digest.clone(),
                expected: *expected,
                actual: *actual,
            },
            StoreError::Corrupt { root, path, reason } => StoreError::Corrupt {
                root: root.clone(),
                path: path.clone(),
                reason: reason.clone(),
            },
            StoreError::MissingBlob { digest } => StoreError::MissingBlob {
                digest: digest.clone(),
            },
        }
    }

    pub(crate) fn io(
        root: &std::path::Path,
        op: &'static str,
        path: &std::path::Path,
        source: std::io::Error,
    ) -> Self {
        if crate::kind::is_no_space(&source) {
            return StoreError::NoSpace {
                root: root.to_owned(),
                path: path.to_owned(),
            };
        }
        StoreError::Io {
            root: root.to_owned(),
            op,
            path: path.to_owned(),
            source,
        }
    }
}
