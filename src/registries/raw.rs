//! containers-registries.conf(5) version 2, as written: serde structs for one file. Keys
//! cri-imaged does not act on are collected (not refused) so a file written for CRI-O or
//! podman still loads; `conf.rs` turns them into warnings.

use std::collections::BTreeMap;

use serde::Deserialize;

/// One registries.conf (or drop-in) file.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawFile {
    #[serde(rename = "unqualified-search-registries")]
    pub unqualified_search_registries: Option<Vec<String>>,
    #[serde(rename = "short-name-mode")]
    pub short_name_mode: Option<String>,
    pub registry: Option<Vec<RawRegistry>>,
    pub aliases: Option<BTreeMap<String, String>>,
    #[serde(rename = "credential-helpers")]
    pub credential_helpers: Option<Vec<String>>,
    /// Keys not acted on (`additional-layer-store-auth-helper`, v1 `[registries.*]`
    /// tables, …).
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// A `[[registry]]` table.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawRegistry {
    pub prefix: Option<String>,
    pub location: Option<String>,
    pub insecure: Option<bool>,
    pub blocked: Option<bool>,
    #[serde(rename = "mirror-by-digest-only")]
    pub mirror_by_digest_only: Option<bool>,
    pub mirror: Option<Vec<RawMirror>>,
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}

/// A `[[registry.mirror]]` table.
#[derive(Debug, Default, Deserialize)]
pub(super) struct RawMirror {
    pub location: Option<String>,
    pub insecure: Option<bool>,
    #[serde(rename = "pull-from-mirror")]
    pub pull_from_mirror: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Value>,
}
