//! cri-imaged: a Kubernetes CRI image service.
//!
//! # Layout
//! - [`grpc`]: the wire layer (CRI `runtime.v1` over tonic), one file per RPC.
//! - [`image`]: the core `ImageService`: resolve, pull, list, status, remove, fs info.
//! - [`names`]: image names, digests, IDs, short-name resolution, insecure registries.
//! - [`oci`]: manifest, index and config formats, platform selection.
//! - [`registries`]: registries.conf (mirrors, remapping, blocking, aliases), the node's
//!   auth file and certs.d, loaded into one snapshot the image service swaps on SIGHUP.
//! - [`registry`]: the registry client (the only user of `oci-client`).
//! - [`transport`]: images from files (`oci:`, `oci-archive:`, …) through skopeo's proxy.
//! - [`trust`]: containers-policy.json, registries.d, GPG and sigstore signatures.
//! - [`store`]: the OCI-layout content store, crash-safe and verified.
//! - [`config`]: the TOML file and flags, validated into typed settings.
//! - [`daemon`]: the socket's life, serving, shutdown; [`http2`]: its connections made
//!   acceptable to h2 whatever `:authority` a client sends.
//! - [`metrics`]: the Prometheus registry; [`admin`]: `/metrics` and `/pulls` over HTTP;
//!   [`pulls`]: the `cri-imaged pulls` command, a client of `/pulls`; [`bundle`]: the
//!   `cri-imaged bundle` command, an OCI runtime bundle through the mount API.
//!
//! `ARCHITECTURE.md` says which module may depend on which.

pub mod admin;
pub mod bundle;
pub mod config;
pub mod daemon;
pub mod grpc;
pub mod http2;
pub mod image;
pub mod kind;
pub mod memory;
pub mod metrics;
pub mod names;
pub mod oci;
pub mod proto;
pub mod pulls;
pub mod registries;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod telemetry;
pub mod transport;
pub mod trust;
