//! The one error type of the `names` module. Every variant names the offending value.

/// Why a name, digest, ID or insecure-registry entry was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The string is not a valid image reference; `reason` is the parser's explanation.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName { name: String, reason: String },
    /// The string is not a `sha256:<64 lowercase hex>` digest.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest { digest: String, reason: String },
    /// A full 64-hex ID that matches no image in the store: it is never taken as a name.
    #[error(
        "cannot parse an image ID: {input:?} looks like an image ID but no image in the store has it"
    )]
    UnknownImageId { input: String },
    /// A short name, and no unqualified-search registries are configured.
    #[error(
        "cannot resolve short name {name:?}: no registries are configured for unqualified image names"
    )]
    NoRegistries { name: String },
    /// An insecure-registries entry that is neither a CIDR nor `host[:port]`.
    #[error("invalid insecure registry entry {entry:?}: {reason}")]
    InvalidInsecureEntry { entry: String, reason: String },
}
