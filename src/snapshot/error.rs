//! Errors of unpacking a layer; each names the layer and, where there is one, the entry.

use crate::kind::Kind;
use crate::names::Digest;

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The layer asks for something no layer may do (escape its root, write a `..`).
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Unsafe {
        layer: Digest,
        entry: String,
        reason: String,
    },
    /// An entry cri-imaged cannot apply (an unknown type, a device without root).
    #[error("layer {layer}: entry {entry:?}: {reason}")]
    Unsupported {
        layer: Digest,
        entry: String,
        reason: String,
    },
    /// The tar or its compression is broken (truncated, not a tar).
    #[error("layer {layer}: {reason}")]
    Corrupt { layer: Digest, reason: String },
    /// The uncompressed layer does not hash to the config's `rootfs.diff_ids` entry.
    #[error(
        "layer {layer}: uncompressed content has digest {actual}, the image config says {expected}"
    )]
    DiffIdMismatch {
        layer: Digest,
        expected: Digest,
        actual: Digest,
    },
    #[error("layer {layer}: {op} {entry:?}: {source}")]
    Io {
        layer: Digest,
        entry: String,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl UnpackError {
    /// The failure's kind (see `kind.rs`).
    pub fn kind(&self) -> Kind {
        match self {
            UnpackError::Unsafe { .. } | UnpackError::Corrupt { .. } => Kind::InvalidContent,
            UnpackError::Unsupported { .. } => Kind::Unsupported,
            UnpackError::DiffIdMismatch { .. } => Kind::DigestMismatch,
            UnpackError::Io { source, .. } if crate::kind::is_no_space(source) => Kind::NoSpace,
            UnpackError::Io { .. } => Kind::StoreFailed,
        }
    }
}
