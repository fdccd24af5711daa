//! The one place core errors become gRPC statuses. No wildcard arm: a new error variant
//! must be given its code here. Internal errors are logged once, here.

use tonic::{Code, Status};

use crate::image::Error;
use crate::names::NameError;
use crate::registries::LookupError;
use crate::store::StoreError;
use crate::transport::TransportError;

fn code(e: &Error) -> Code {
    match e {
        Error::Name(n) => match n {
            NameError::InvalidName { .. }
            | NameError::InvalidDigest { .. }
            | NameError::UnknownImageId { .. }
            | NameError::NoRegistries { .. }
            | NameError::InvalidInsecureEntry { .. } => Code::InvalidArgument,
        },
        Error::EmptyName
        | Error::UnsupportedTransport { .. }
        | Error::Credentials { .. }
        | Error::AmbiguousShortName { .. } => Code::InvalidArgument,
        Error::Blocked { source, .. } => match source {
            LookupError::Blocked { .. } => Code::PermissionDenied,
            LookupError::Remap { .. } => Code::FailedPrecondition,
        },
        Error::NotFound { .. } => Code::NotFound,
        Error::RegistryUnavailable { .. } => Code::Unavailable,
        Error::Unauthorized { .. } => Code::Unauthenticated,
        Error::Denied { .. } => Code::PermissionDenied,
        Error::InvalidContent { .. } => Code::DataLoss,
        Error::Unsupported { .. } => Code::FailedPrecondition,
        Error::Registry { .. } => Code::Unknown,
        Error::Store { source, .. } => match source {
            StoreError::NoSpace { .. } => Code::ResourceExhausted,
            StoreError::Locked { .. } => Code::FailedPrecondition,
            StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => Code::DataLoss,
            StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::MissingBlob { .. } => {
                Code::Internal
            }
        },
        // The most telling failure wins: anything but "not found" beats "not found".
        Error::AllCandidatesFailed { failures, .. } => failures
            .iter()
            .map(|(_, e)| code(e))
            .find(|c| *c != Code::NotFound)
            .unwrap_or(Code::NotFound),
        Error::Import { source, .. } => match source {
            TransportError::InvalidReference { .. }
            | TransportError::RelativePath { .. }
            | TransportError::ColonInPath { .. }
            | TransportError::Unnamed { .. } => Code::InvalidArgument,
            TransportError::Disabled { .. }
            | TransportError::OutsideImportDirs { .. }
            | TransportError::UnsafeSource { .. } => Code::PermissionDenied,
            TransportError::NotFound { .. } | TransportError::NoSuchImage { .. } => Code::NotFound,
            TransportError::SkopeoMissing { .. } => Code::FailedPrecondition,
            TransportError::Unreadable { .. } => Code::Unknown,
            TransportError::InvalidContent { .. } => Code::DataLoss,
        },
        Error::ShuttingDown { .. } => Code::Unavailable,
        Error::Shared(inner) => code(inner),
        Error::Internal(_) => Code::Internal,
    }
}

/// Maps a core error to a status whose message names the image and registry involved.
pub fn from_error(e: Error) -> Status {
    let code = code(&e);
    // kubelet matches on the message prefix `RegistryUnavailable`.
    let mut message = e.to_string();
    if code == Code::Unavailable
        && !message.starts_with("RegistryUnavailable")
        && !matches!(e.root(), Error::ShuttingDown { .. })
    {
        message = format!("RegistryUnavailable: {message}");
    }
    let server_side = matches!(
        code,
        Code::Internal | Code::Unknown | Code::DataLoss | Code::ResourceExhausted
    );
    if server_side {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request refused");
    }
    Status::new(code, message)
}
