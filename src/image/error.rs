//! Errors of the core image service. Each names the image (and the registry when one was
//! involved); `grpc::status` maps every variant to a gRPC code.

use std::sync::Arc;

use crate::names::NameError;
use crate::registries::LookupError;
use crate::registry::{AuthError, RegistryError};
use crate::store::StoreError;
use crate::transport::TransportError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("image name must not be empty")]
    EmptyName,
    #[error(
        "image {image:?}: transport {transport:?} is not supported (supported: docker, oci, oci-archive, docker-archive, dir)"
    )]
    UnsupportedTransport { image: String, transport: String },
    #[error("image {image}: unusable credentials: {source}")]
    Credentials { image: String, source: AuthError },
    #[error("{}", not_found(image, source))]
    NotFound {
        image: String,
        source: RegistryError,
    },
    #[error("RegistryUnavailable: pulling image {image}: {source}")]
    RegistryUnavailable {
        image: String,
        source: RegistryError,
    },
    #[error("pulling image {image}: {source}")]
    Unauthorized {
        image: String,
        source: RegistryError,
    },
    #[error("pulling image {image}: {source}")]
    Denied {
        image: String,
        source: RegistryError,
    },
    #[error("pulling image {image}: {source}")]
    InvalidContent {
        image: String,
        source: RegistryError,
    },
    #[error("pulling image {image}: {source}")]
    Unsupported {
        image: String,
        source: RegistryError,
    },
    #[error("pulling image {image}: {source}")]
    Registry {
        image: String,
        source: RegistryError,
    },
    #[error("image {image}: {source}")]
    Store { image: String, source: StoreError },
    #[error("importing {image:?}: {source}")]
    Import {
        image: String,
        source: TransportError,
    },
    #[error("pulling image {image}: every candidate failed: {}", list(.failures))]
    AllCandidatesFailed {
        image: String,
        failures: Vec<(String, Arc<Error>)>,
    },
    /// registries.conf blocks the registry (or cannot remap the name): nothing was
    /// contacted.
    #[error("pulling image {image}: {source}")]
    Blocked { image: String, source: LookupError },
    #[error(
        "short name {name:?} is ambiguous (short-name-mode is enforcing and it has no alias): it could be any of {}; use a fully qualified name or add an [aliases] entry to registries.conf",
        candidates.join(", ")
    )]
    AmbiguousShortName {
        name: String,
        candidates: Vec<String>,
    },
    #[error("pull of image {image} cancelled: cri-imaged is shutting down")]
    ShuttingDown { image: String },
    /// A failure shared by every caller waiting on the same pull.
    #[error(transparent)]
    Shared(Arc<Error>),
    #[error("internal error: {0}")]
    Internal(String),
}

fn not_found(image: &str, source: &RegistryError) -> String {
    match source {
        // Its text already names the image and the registry.
        RegistryError::NotFound { .. } => source.to_string(),
        other => format!("image {image}: {other}"),
    }
}

fn list(failures: &[(String, Arc<Error>)]) -> String {
    failures
        .iter()
        .map(|(name, e)| format!("{name}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// Classifies a registry failure for `image`.
    pub fn from_registry(image: &impl std::fmt::Display, source: RegistryError) -> Error {
        let image = image.to_string();
        match source {
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => {
                Error::NotFound { image, source }
            }
            RegistryError::Unavailable { .. }
            | RegistryError::RetryAfter { .. }
            | RegistryError::Timeout { .. }
            | RegistryError::Tls { .. } => Error::RegistryUnavailable { image, source },
            RegistryError::Unauthorized { .. } => Error::Unauthorized { image, source },
            RegistryError::Denied { .. } => Error::Denied { image, source },
            RegistryError::InvalidContent { .. } | RegistryError::DigestMismatch { .. } => {
                Error::InvalidContent { image, source }
            }
            RegistryError::Unsupported { .. } => Error::Unsupported { image, source },
            RegistryError::Other { .. } => Error::Registry { image, source },
        }
    }

    /// The failure's class, the `error_class` label of `cri_imaged_pulls_total`.
    pub fn class(&self) -> &'static str {
        match self {
            Error::Name(_)
            | Error::EmptyName
            | Error::UnsupportedTransport { .. }
            | Error::AmbiguousShortName { .. } => "invalid_argument",
            Error::Blocked { source, .. } => match source {
                LookupError::Blocked { .. } => "denied",
                LookupError::Remap { .. } => "config",
            },
            Error::Credentials { .. } | Error::Unauthorized { .. } => "auth",
            Error::Denied { .. } => "denied",
            Error::NotFound { .. } => "not_found",
            Error::RegistryUnavailable { source, .. } => match source {
                RegistryError::Timeout { .. } => "timeout",
                RegistryError::Tls { .. } => "tls",
                _ => "network",
            },
            Error::InvalidContent { source, .. } => match source {
                RegistryError::DigestMismatch { .. } => "digest_mismatch",
                _ => "invalid_content",
            },
            Error::Unsupported { .. } => "unsupported",
            Error::Registry { .. } => "registry",
            Error::Store { .. } => "store",
            Error::Import { source, .. } => match source {
                TransportError::InvalidReference { .. }
                | TransportError::RelativePath { .. }
                | TransportError::ColonInPath { .. }
                | TransportError::Unnamed { .. } => "invalid_argument",
                TransportError::Disabled { .. }
                | TransportError::OutsideImportDirs { .. }
                | TransportError::UnsafeSource { .. } => "denied",
                TransportError::NotFound { .. } | TransportError::NoSuchImage { .. } => "not_found",
                TransportError::SkopeoMissing { .. } | TransportError::Unreadable { .. } => {
                    "import"
                }
                TransportError::InvalidContent { .. } => "invalid_content",
            },
            // As for the gRPC code: anything but "not found" beats "not found".
            Error::AllCandidatesFailed { failures, .. } => failures
                .iter()
                .map(|(_, e)| e.class())
                .find(|c| *c != "not_found")
                .unwrap_or("not_found"),
            Error::ShuttingDown { .. } => "shutdown",
            Error::Shared(inner) => inner.class(),
            Error::Internal(_) => "internal",
        }
    }

    /// The error itself, looking through shared wrappers.
    pub fn root(&self) -> &Error {
        match self {
            Error::Shared(e) => e.root(),
            e => e,
        }
    }
}
