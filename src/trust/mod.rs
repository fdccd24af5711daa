//! Which images the node trusts: containers-policy.json and its signatures, the way
//! containers/image (and so CRI-O) defines them, so an operator's existing files work.
//! Knows nothing of gRPC or the store; the pull path (`image/trust.rs`) hands it the
//! image and a source of signatures.
//!
//! # Files
//! `policy` parses a policy file, `scope` picks the scope that applies, `identity` is
//! `signedIdentity`; `registries_d` says where signatures are; `payload` is the
//! simple-signing document, `gpg` and `sigstore` verify the two signature kinds with the
//! keys `keys` loaded; `node` is the whole configuration (global and per-namespace
//! policies, registries.d) a reload swaps; `check` runs one image through it;
//! `sig_error` says why a signature did not count; `strict_json` refuses a key given
//! twice.

mod check;
pub mod gpg;
mod identity;
mod keys;
mod node;
pub mod payload;
pub mod policy;
mod registries_d;
mod scope;
mod sig_error;
pub mod sigstore;
mod strict_json;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use check::{Accepted, NoSignatures, Refusal, Signatures, Why, check};
pub use gpg::MAX_SIGNATURE;
pub use node::{Loaded, NodeTrust, Paths};
pub use policy::{KeySource, Policy, PolicyError, Requirement, SignedIdentity};
pub use registries_d::{RegistriesD, SignatureSources, signature_url};
pub use scope::Applied;
pub use sig_error::SignatureError;
