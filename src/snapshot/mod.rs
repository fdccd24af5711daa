//! Snapshots: each layer of an image unpacked into a directory of its own, in the form
//! overlayfs stacks (containerd's overlay snapshotter is the model), keyed by chain ID.
//! This module owns the unpacking itself: `apply` (a tar stream into a directory, safe
//! by construction), `decompress` (gzip, zstd or none, and the `diff_id` hash),
//! `chain` (chain IDs), `check` (what `cri-imaged check` says of them), `store` (`snapshots/<chain>/fs`, made in a temp directory and
//! renamed into place once verified), `durable` (their sync, after the rename and off the
//! pull's path, with a marker a crash leaves), `spread` (where their inodes go), `containers` (the writable layer a
//! runtime stacks on an image's snapshots, which holds them). It knows nothing of
//! registries or gRPC.

pub mod apply;
pub mod chain;
pub mod check;
pub mod containers;
pub mod decompress;
pub mod durable;
pub mod error;
pub mod spread;
pub mod store;

pub use apply::{Applied, Limits, Lowers, apply};
pub use chain::chain_ids;
pub use containers::{ContainerError, ContainerRecord, Containers};
pub use decompress::{Compression, Hashing};
pub use error::UnpackError;
pub use store::{Snapshots, Usage};

#[cfg(test)]
mod durable_tests;
#[cfg(test)]
mod tests;
