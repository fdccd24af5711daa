//! Image names, digests and IDs, and the pure decisions made about them.
//!
//! This module owns:
//! - the typed values [`Digest`], [`ImageId`] and [`ImageName`] (a fully qualified name
//!   holding a tag xor a digest), each with a validating constructor, parsed by a
//!   hand-written implementation of the docker reference grammar (`grammar.rs`);
//! - [`resolve`]: what a user-supplied string means (a truncated image ID, a qualified name,
//!   or a short name expanded against the configured registries), as an ordered list;
//! - [`InsecureRegistries`]: which registries are contacted without TLS verification.
//!
//! It is a leaf: it depends on no other module of the crate, does no I/O and never asks DNS
//! anything. Looking up images in the store is passed in as a closure.

mod digest;
mod error;
mod grammar;
mod insecure;
mod reference;
mod resolve;

pub use digest::{Digest, ImageId};
pub use error::NameError;
pub use insecure::InsecureRegistries;
pub use reference::{DEFAULT_TAG, DOCKER_IO, ImageName, Reference};
pub use resolve::{MIN_TRUNCATED_ID_LEN, Resolved, ShortName, resolve, short_name};
