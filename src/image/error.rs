//! Errors of the core image service. Each names the image (and the registry when one was
//! involved) and has one [`Kind`] ([`Error::kind`]): the table in `kind.rs` gives it its
//! gRPC code (`grpc::status`) and its metrics class.

use std::sync::Arc;

use crate::kind::{Code, Kind};
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
    /// A registry failure: its kind is the registry error's.
    #[error("{}", registry_message(image, source))]
    Registry {
        image: String,
        source: RegistryError,
    },
    /// Bytes a source served that do not verify against their digest or size.
    #[error("pulling image {image}: {from} served invalid content: {source}")]
    Served {
        image: String,
        /// The source, as it describes itself ("registry r.io").
        from: String,
        source: Box<StoreError>,
    },
    #[error("image {image}: {source}")]
    Store { image: String, source: StoreError },
    /// A layer that cannot be unpacked (unsafe, corrupt, not matching its diff_id).
    #[error("pulling image {image}: unpacking {source}")]
    Unpack {
        image: String,
        source: crate::snapshot::UnpackError,
    },
    /// A container snapshot was asked for, but layers are not unpacked.
    #[error("container snapshots need unpacked layers: set `unpack = true` (or --unpack true)")]
    UnpackOff,
    /// The image a container snapshot was asked for is not in the store.
    #[error("image {image:?} is not in the store (pull it first)")]
    NoSuchImage { image: String },
    #[error("{source}")]
    Container {
        source: crate::snapshot::ContainerError,
    },
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
    /// The credential helper for the image's registry could not answer.
    #[error("image {image}: {source}")]
    CredentialHelper {
        image: String,
        source: crate::registry::helper::HelperError,
    },
    /// The signature policy refused it; nothing of it was fetched but its manifest.
    #[error("image {image}: {refusal}")]
    Untrusted {
        image: String,
        refusal: Box<crate::trust::Refusal>,
    },
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

fn registry_message(image: &str, source: &RegistryError) -> String {
    match source {
        // Its text already names the image and the registry.
        RegistryError::NotFound { .. } => source.to_string(),
        RegistryError::NoPlatform { .. } => format!("image {image}: {source}"),
        // kubelet matches on the message prefix `RegistryUnavailable`.
        _ if source.kind().code() == Code::Unavailable => {
            format!("RegistryUnavailable: pulling image {image}: {source}")
        }
        _ => format!("pulling image {image}: {source}"),
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
    /// A registry failure while pulling `image`.
    pub fn from_registry(image: &impl std::fmt::Display, source: RegistryError) -> Error {
        Error::Registry {
            image: image.to_string(),
            source,
        }
    }

    /// The failure's kind: one line per variant, the lower layers' errors saying their own.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Name(_)
            | Error::EmptyName
            | Error::UnsupportedTransport { .. }
            | Error::AmbiguousShortName { .. } => Kind::InvalidArgument,
            Error::Credentials { .. } => Kind::BadCredentials,
            Error::Registry { source, .. } => source.kind(),
            Error::Served { .. } => Kind::DigestMismatch,
            Error::Store { source, .. } => source.kind(),
            Error::Unpack { source, .. } => source.kind(),
            Error::Import { source, .. } => source.kind(),
            Error::UnpackOff => Kind::Misconfigured,
            Error::NoSuchImage { .. } => Kind::NotFound,
            Error::Container { source } => source.kind(),
            Error::Blocked { source, .. } => source.kind(),
            Error::Untrusted { .. } => Kind::Untrusted,
            Error::CredentialHelper { .. } => Kind::Misconfigured,
            // The most telling failure wins: anything but "not found" beats "not found".
            Error::AllCandidatesFailed { failures, .. } => failures
                .iter()
                .map(|(_, e)| e.kind())
                .find(|k| k.code() != Code::NotFound)
                .unwrap_or(Kind::NotFound),
            Error::ShuttingDown { .. } => Kind::ShuttingDown,
            Error::Shared(inner) => inner.kind(),
            Error::Internal(_) => Kind::Internal,
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
