//! Builds test images in memory and pushes them to a [`Registry`] over its HTTP API.
//!
//! How the fixtures are made (nothing is stored in the repository):
//! - a layer is a tar of three files of random (incompressible) bytes, gzip-compressed;
//!   its diff_id is the sha256 of the uncompressed tar;
//! - the config is `{architecture, os, [variant], config: {User, Env, Labels: {nonce}},
//!   rootfs: {type: layers, diff_ids}, history}`; the random nonce label makes every
//!   config, and so every image ID, unique even when layers are shared;
//! - the manifest is OCI (`application/vnd.oci.image.manifest.v1+json`) or Docker schema 2
//!   (`application/vnd.docker.distribution.manifest.v2+json`) with matching config and
//!   layer media types;
//! - a multi-platform image is an OCI index or a Docker manifest list with linux/amd64 and
//!   linux/arm64/v8 children (plus the node's own architecture if it is neither), the
//!   node's platform listed last so a daemon that just takes the first entry is caught.

use flate2::Compression;
use flate2::write::GzEncoder;
use rand::RngCore;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Write;

use super::registry::Registry;

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// The node's architecture in OCI terms (`amd64`, `arm64`, …).
pub fn node_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The OCI variant the node's architecture is published under, if any.
fn node_variant() -> Option<&'static str> {
    match node_arch() {
        "arm64" => Some("v8"),
        _ => None,
    }
}

/// Manifest flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

impl Format {
    pub fn manifest_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.manifest.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.v2+json",
        }
    }
    pub fn config_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.config.v1+json",
            Format::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }
    pub fn layer_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Format::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }
    pub fn index_type(self) -> &'static str {
        match self {
            Format::Oci => "application/vnd.oci.image.index.v1+json",
            Format::Docker => "application/vnd.docker.distribution.manifest.list.v2+json",
        }
    }
}

/// A content-addressed blob.
#[derive(Clone, Debug)]
pub struct Blob {
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256_digest(&data),
            data,
        }
    }
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }
}

/// A gzip-compressed layer and the digest of its uncompressed tar.
#[derive(Clone, Debug)]
pub struct Layer {
    pub blob: Blob,
    pub diff_id: String,
}

/// A layer of about `bytes` bytes of random content in three files.
pub fn random_layer(bytes: usize) -> Layer {
    let mut rng = rand::rng();
    let mut tar = tar::Builder::new(Vec::new());
    let parts = [bytes / 2, bytes / 4, bytes - bytes / 2 - bytes / 4];
    for (i, len) in parts.into_iter().enumerate() {
        let mut data = vec![0u8; len];
        rng.fill_bytes(&mut data);
        let mut header = tar::Header::new_gnu();
        header.set_size(len as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, format!("data/file{i}.bin"), data.as_slice())
            .expect("append tar entry");
    }
    let tar_bytes = tar.into_inner().expect("finish tar");
    let diff_id = sha256_digest(&tar_bytes);
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(&tar_bytes).expect("gzip layer");
    let compressed = gz.finish().expect("finish gzip");
    Layer {
        blob: Blob::new(compressed),
        diff_id,
    }
}

/// Builder for one single-platform image.
#[derive(Clone, Debug)]
pub struct ImageBuilder {
    format: Format,
    user: String,
    layers: Vec<Layer>,
    arch: String,
    variant: Option<String>,
    /// Fields set in the config's `config` object over the defaults.
    process: Vec<(String, Value)>,
}

impl Default for ImageBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl ImageBuilder {
    /// OCI, the node's platform, two random 4 KiB layers, no user.
    pub fn new() -> Self {
        ImageBuilder {
            format: Format::Oci,
            user: String::new(),
            layers: vec![random_layer(4096), random_layer(4096)],
            arch: node_arch().to_owned(),
            variant: node_variant().map(str::to_owned),
            process: Vec::new(),
        }
    }
    /// Sets `config.<field>` of the image config (`Entrypoint`, `Cmd`, `Env`, `WorkingDir`).
    pub fn config_field(mut self, field: &str, value: Value) -> Self {
        self.process.push((field.to_owned(), value));
        self
    }
    pub fn format(mut self, format: Format) -> Self {
        self.format = format;
        self
    }
    /// The config's `User` (as in a Dockerfile `USER`).
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }
    /// Replaces the layers by new random ones of these sizes.
    pub fn layer_sizes(mut self, sizes: &[usize]) -> Self {
        self.layers = sizes.iter().map(|&s| random_layer(s)).collect();
        self
    }
    /// Replaces the layers by these (to share layers between images).
    pub fn layers(mut self, layers: Vec<Layer>) -> Self {
        self.layers = layers;
        self
    }
    pub fn platform(mut self, arch: &str, variant: Option<&str>) -> Self {
        self.arch = arch.to_owned();
        self.variant = variant.map(str::to_owned);
        self
    }

    pub fn build(self) -> TestImage {
        let nonce = format!("{:016x}", rand::random::<u64>());
        let diff_ids: Vec<&str> = self.layers.iter().map(|l| l.diff_id.as_str()).collect();
        let mut config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": self.arch,
            "os": "linux",
            "config": {
                "User": self.user,
                "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                "Cmd": ["/bin/sh"],
                "Labels": {"nonce": nonce},
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": self.layers.iter().map(|_| json!({
                "created": "2024-01-01T00:00:00Z",
                "created_by": "cri-imaged integration test",
            })).collect::<Vec<_>>(),
        });
        if let Some(v) = &self.variant {
            config["variant"] = json!(v);
        }
        for (field, value) in &self.process {
            config["config"][field] = value.clone();
        }
        let config = Blob::new(serde_json::to_vec(&config).expect("serialize config"));
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": self.format.manifest_type(),
            "config": {
                "mediaType": self.format.config_type(),
                "digest": config.digest,
                "size": config.len(),
            },
            "layers": self.layers.iter().map(|l| json!({
                "mediaType": self.format.layer_type(),
                "digest": l.blob.digest,
                "size": l.blob.len(),
            })).collect::<Vec<Value>>(),
        });
        let manifest = Blob::new(serde_json::to_vec(&manifest).expect("serialize manifest"));
        TestImage {
            format: self.format,
            arch: self.arch,
            variant: self.variant,
            config,
            layers: self.layers,
            manifest,
        }
    }
}

/// A built single-platform image.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub format: Format,
    pub arch: String,
    pub variant: Option<String>,
    pub config: Blob,
    pub layers: Vec<Layer>,
    pub manifest: Blob,
}

impl TestImage {
    /// The expected image ID: the config digest.
    pub fn id(&self) -> String {
        self.config.digest.clone()
    }
    pub fn manifest_digest(&self) -> String {
        self.manifest.digest.clone()
    }
    /// Config + compressed layer bytes (what `Image.size` reports).
    pub fn size(&self) -> u64 {
        self.config.len() + self.layers.iter().map(|l| l.blob.len()).sum::<u64>()
    }
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers.iter().map(|l| l.blob.digest.clone()).collect()
    }
    /// Config and layer digests: the blobs a pull fetches with `GET /v2/<repo>/blobs/…`.
    pub fn blob_digests(&self) -> Vec<String> {
        let mut v = vec![self.config.digest.clone()];
        v.extend(self.layer_digests());
        v
    }

    async fn push_blobs(&self, reg: &Registry, repo: &str) {
        reg.put_blob(repo, &self.config.digest, &self.config.data)
            .await;
        for l in &self.layers {
            reg.put_blob(repo, &l.blob.digest, &l.blob.data).await;
        }
    }

    /// Pushes the blobs and the manifest under `repo:tag`.
    pub async fn push(&self, reg: &Registry, repo: &str, tag: &str) {
        self.push_blobs(reg, repo).await;
        reg.put_manifest(repo, tag, self.format.manifest_type(), &self.manifest.data)
            .await;
    }

    /// Pushes the blobs and the manifest by digest only (no tag).
    pub async fn push_untagged(&self, reg: &Registry, repo: &str) {
        self.push_blobs(reg, repo).await;
        reg.put_manifest(
            repo,
            &self.manifest.digest,
            self.format.manifest_type(),
            &self.manifest.data,
        )
        .await;
    }
}

/// A multi-platform image: an OCI index or a Docker manifest list.
#[derive(Clone, Debug)]
pub struct TestIndex {
    pub format: Format,
    pub index: Blob,
    pub children: Vec<TestImage>,
    native: usize,
}

impl TestIndex {
    /// linux/amd64 and linux/arm64/v8 children (plus the node's architecture if neither),
    /// the node's platform last.
    pub fn build(format: Format) -> TestIndex {
        let mut platforms: Vec<(&str, Option<&str>)> = vec![("amd64", None), ("arm64", Some("v8"))];
        if !platforms.iter().any(|(a, _)| *a == node_arch()) {
            platforms.push((node_arch(), node_variant()));
        }
        // Node platform last.
        platforms.sort_by_key(|(a, _)| *a == node_arch());
        let children: Vec<TestImage> = platforms
            .iter()
            .map(|(arch, variant)| {
                ImageBuilder::new()
                    .format(format)
                    .platform(arch, *variant)
                    .build()
            })
            .collect();
        let native = children.len() - 1;
        let manifests: Vec<Value> = children
            .iter()
            .map(|c| {
                let mut platform = json!({"architecture": c.arch, "os": "linux"});
                if let Some(v) = &c.variant {
                    platform["variant"] = json!(v);
                }
                json!({
                    "mediaType": format.manifest_type(),
                    "digest": c.manifest.digest,
                    "size": c.manifest.len(),
                    "platform": platform,
                })
            })
            .collect();
        let index = json!({
            "schemaVersion": 2,
            "mediaType": format.index_type(),
            "manifests": manifests,
        });
        TestIndex {
            format,
            index: Blob::new(serde_json::to_vec(&index).expect("serialize index")),
            children,
            native,
        }
    }

    pub fn digest(&self) -> String {
        self.index.digest.clone()
    }

    /// The child for the node's platform: its config digest is the expected image ID.
    pub fn native(&self) -> &TestImage {
        &self.children[self.native]
    }

    /// Pushes every child by digest, then the index under `repo:tag`.
    pub async fn push(&self, reg: &Registry, repo: &str, tag: &str) {
        for c in &self.children {
            c.push_untagged(reg, repo).await;
        }
        reg.put_manifest(repo, tag, self.format.index_type(), &self.index.data)
            .await;
    }
}
