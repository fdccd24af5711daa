//! Errors of reading images from files; each names the source or path it is about.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("source {reference:?} is invalid: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error(
        "transport {transport:?} is disabled: enable it in the `transports` setting (and list the directories images may come from in `import_dirs`)"
    )]
    Disabled { transport: String },
    #[error("path {path:?} must be absolute")]
    RelativePath { path: PathBuf },
    #[error(
        "path {path:?} is not inside an import directory (setting `import_dirs`: {dirs:?}; symlinks are resolved before the check)"
    )]
    OutsideImportDirs { path: PathBuf, dirs: Vec<PathBuf> },
    #[error("path {path:?} cannot be imported: {reason}")]
    UnsafeSource { path: PathBuf, reason: String },
    #[error("path {path:?} does not exist")]
    NotFound { path: PathBuf },
    #[error(
        "path {path:?} resolves to {resolved:?}, which contains ':' and cannot be named to skopeo"
    )]
    ColonInPath { path: PathBuf, resolved: PathBuf },
    #[error(
        "cannot run {skopeo:?}: {reason}; install the Debian package `skopeo` (apt-get install skopeo) or set the `skopeo` setting"
    )]
    SkopeoMissing { skopeo: PathBuf, reason: String },
    #[error("{source_ref}: no such image in the source: {reason}")]
    NoSuchImage { source_ref: String, reason: String },
    #[error("{source_ref}: cannot read the source: {reason}")]
    Unreadable { source_ref: String, reason: String },
    #[error("{source_ref}: invalid content: {reason}")]
    InvalidContent { source_ref: String, reason: String },
    #[error(
        "{source_ref}: the source carries no image name and none can be derived from {path:?}; name it in the reference (e.g. oci-archive:FILE:registry.example/app:1)"
    )]
    Unnamed { source_ref: String, path: PathBuf },
}

impl TransportError {
    /// The failure's kind: one line per variant.
    pub fn kind(&self) -> crate::kind::Kind {
        use crate::kind::Kind;
        match self {
            TransportError::InvalidReference { .. }
            | TransportError::RelativePath { .. }
            | TransportError::ColonInPath { .. }
            | TransportError::Unnamed { .. } => Kind::InvalidArgument,
            TransportError::Disabled { .. }
            | TransportError::OutsideImportDirs { .. }
            | TransportError::UnsafeSource { .. } => Kind::Denied,
            TransportError::NotFound { .. } | TransportError::NoSuchImage { .. } => Kind::NotFound,
            TransportError::SkopeoMissing { .. } => Kind::ImporterMissing,
            TransportError::Unreadable { .. } => Kind::ImportFailed,
            TransportError::InvalidContent { .. } => Kind::InvalidContent,
        }
    }
}
