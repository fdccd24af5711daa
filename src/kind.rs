//! Error kinds: what a caller can do about a failure, and the one table that gives each
//! kind its gRPC status code and its metrics class (`error_class` of
//! `cri_imaged_pulls_total`). Every error type below the wire says its kind where the
//! failure arises (from an HTTP status, an io error kind, an OCI error code), never from
//! message text; `grpc/status.rs` and `image/observe.rs` only read this table, so the code
//! and the class of a failure cannot disagree, and a new kind is one row here.
//!
//! A leaf: no dependencies, and no gRPC types — the codes are written as gRPC's numbers
//! ([`Code`]), which the wire layer turns into its own code type one to one.

/// The gRPC status codes cri-imaged answers with, numbered as gRPC numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    Unknown = 2,
    InvalidArgument = 3,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

macro_rules! kinds {
    ($($(#[$doc:meta])* $kind:ident => $code:ident, $class:literal;)*) => {
        /// What kind of failure an error is. See the module doc.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$doc])* $kind,)*
        }

        impl Kind {
            /// Every kind, in table order.
            pub const ALL: &[Kind] = &[$(Kind::$kind,)*];

            /// The gRPC status code a failure of this kind is answered with.
            pub fn code(self) -> Code {
                match self {
                    $(Kind::$kind => Code::$code,)*
                }
            }

            /// The metrics class (`error_class` label) of a failure of this kind.
            pub fn class(self) -> &'static str {
                match self {
                    $(Kind::$kind => $class,)*
                }
            }
        }
    };
}

kinds! {
    /// A request the client can fix: a bad name, digest, transport or source path.
    InvalidArgument => InvalidArgument, "invalid_argument";
    /// Credentials in the request that cannot be used at all.
    BadCredentials => InvalidArgument, "auth";
    /// The registry refused the credentials or wants some (401).
    Unauthenticated => Unauthenticated, "auth";
    /// Refused by policy: a blocked registry, a disabled transport, a 403.
    Denied => PermissionDenied, "denied";
    /// Refused by the signature policy (containers-policy.json): unsigned, signed by
    /// another key, for another image, or rejected outright.
    Untrusted => PermissionDenied, "untrusted";
    /// The node's configuration cannot serve the request (a remap that does not apply).
    Misconfigured => FailedPrecondition, "config";
    /// No such image, manifest, blob, platform or container snapshot.
    NotFound => NotFound, "not_found";
    /// A container snapshot of that key exists already.
    Exists => AlreadyExists, "exists";
    /// The registry could not be reached or broke off (reset, 5xx, 408).
    Network => Unavailable, "network";
    /// The registry asked clients to slow down (429).
    Throttled => Unavailable, "network";
    /// A connection, a read or the stall watch timed out.
    Timeout => Unavailable, "timeout";
    /// The TLS handshake failed.
    Tls => Unavailable, "tls";
    /// The source served content that is not what it claims (unparsable, inconsistent).
    InvalidContent => DataLoss, "invalid_content";
    /// The source served bytes that do not hash to (or have the size of) their digest.
    DigestMismatch => DataLoss, "digest_mismatch";
    /// Valid content cri-imaged does not take (a media type, a size over a cap).
    Unsupported => FailedPrecondition, "unsupported";
    /// A registry answer that fits no other kind.
    RegistryFailed => Unknown, "registry";
    /// The store's file system is full (ENOSPC, EFBIG).
    NoSpace => ResourceExhausted, "store";
    /// Another process holds the store's lock.
    StoreLocked => FailedPrecondition, "store";
    /// Store content that does not verify.
    StoreDamaged => DataLoss, "store";
    /// Any other store failure (io, a missing blob, a corrupt file).
    StoreFailed => Internal, "store";
    /// The importer (skopeo) is not there or cannot start.
    ImporterMissing => FailedPrecondition, "import";
    /// The importer could not read the source.
    ImportFailed => Unknown, "import";
    /// cri-imaged is stopping; the pull was cancelled.
    ShuttingDown => Unavailable, "shutdown";
    /// A bug.
    Internal => Internal, "internal";
}

impl Kind {
    /// Whether the failure is the server's (logged as an error) rather than the request's.
    pub fn is_server_side(self) -> bool {
        matches!(
            self.code(),
            Code::Internal | Code::Unknown | Code::DataLoss | Code::ResourceExhausted
        )
    }
}

/// Whether an io error means the disk (or the file-size limit) is full: ENOSPC or EFBIG,
/// which every error type of the store and the snapshots reports as [`Kind::NoSpace`].
pub fn is_no_space(e: &std::io::Error) -> bool {
    const ENOSPC: i32 = 28;
    const EFBIG: i32 = 27;
    matches!(e.raw_os_error(), Some(ENOSPC | EFBIG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_a_metrics_label() {
        for k in Kind::ALL {
            let c = k.class();
            assert!(
                !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{k:?}: {c}"
            );
        }
    }
}
