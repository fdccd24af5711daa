//! OCI and Docker image formats: media types, descriptors, manifests, indexes, the parts of
//! an image config cri-imaged reads, and platform selection.
//!
//! A leaf next to `names`: pure parsing and validation, no I/O. Every digest is validated
//! through [`Digest`](crate::names::Digest) before anything else may use it (a file path in
//! the store is built only from a validated digest).

pub mod convert;
pub mod manifest;
pub mod media;
pub mod platform;
#[cfg(test)]
mod proptests;

pub use manifest::{Descriptor, FormatError, ImageConfig, Index, Manifest, Parsed};
pub use platform::Platform;
