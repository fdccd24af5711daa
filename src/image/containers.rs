//! The mount API's core: a container snapshot (a writable layer) prepared on top of an
//! image's snapshots, with the overlay mount a runtime mounts as its root filesystem;
//! removed again; listed. A layer snapshot the image lacks (pulled while `unpack` was off,
//! or lost) is unpacked from its verified blob first. While a container snapshot exists,
//! the snapshots under it stay, even after its image is removed.

use serde::{Deserialize, Serialize};

use super::{Error, ImageService, unpack};
use crate::oci;
use crate::snapshot::ContainerRecord;

/// One mount, as containerd's snapshotter API and the OCI runtime spec write it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mount {
    #[serde(rename = "type")]
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// A prepared container snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Prepared {
    pub key: String,
    /// The image's ID.
    pub image: String,
    /// What to mount as the container's root filesystem.
    pub mounts: Vec<Mount>,
    /// The image's config document (OCI image config), for the runtime spec.
    pub image_config: serde_json::Value,
}

impl ImageService {
    /// Prepares container snapshot `key` on the image `image` names.
    pub async fn prepare_container(&self, key: &str, image: &str) -> Result<Prepared, Error> {
        let snapshots = self.inner.snapshots.clone().ok_or(Error::UnpackOff)?;
        let record = self.find(image)?.ok_or_else(|| Error::NoSuchImage {
            image: image.to_owned(),
        })?;
        let manifest = record
            .manifests
            .first()
            .ok_or_else(|| Error::Internal(format!("image {} has no manifest", record.id)))?;
        let config_bytes = self
            .inner
            .store
            .read_blob(&manifest.config.digest)
            .await
            .map_err(|source| Error::Store {
                image: record.id.to_string(),
                source,
            })?;
        let parsed = oci::manifest::parse_config(&config_bytes)
            .map_err(|e| Error::Internal(format!("image {}: its stored config: {e}", record.id)))?;
        let ids = unpack::chains_of(&parsed.diff_ids, &manifest.layers)
            .map_err(|e| Error::Internal(format!("image {}: {e}", record.id)))?;
        let chains: Vec<_> = ids.iter().map(|(_, c)| c.clone()).collect();
        let held = snapshots.hold(&chains);
        unpack::unpack_layers(&self.inner, &snapshots, image, &manifest.layers, &ids).await?;
        let container = ContainerRecord {
            key: key.to_owned(),
            image: record.id.to_string(),
            chains: chains.clone(),
        };
        let snaps = snapshots.clone();
        let made = container.clone();
        tokio::task::spawn_blocking(move || {
            // Never a container on a snapshot a crash could still take away.
            snaps
                .settle(&made.chains)
                .map_err(|source| crate::snapshot::ContainerError::Io {
                    key: made.key.clone(),
                    op: "sync its snapshots",
                    path: made.chains.first().map(|c| snaps.fs(c)).unwrap_or_default(),
                    source,
                })?;
            snaps.containers().create(&made)
        })
        .await
        .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
        .map_err(|source| Error::Container { source })?;
        drop(held);
        let lower: Vec<String> = chains
            .iter()
            .rev()
            .map(|c| snapshots.fs(c).display().to_string())
            .collect();
        let (upper, work) = snapshots.containers().upper_and_work(key);
        tracing::info!(key, image = %record.id, layers = chains.len(), "container snapshot prepared");
        Ok(Prepared {
            key: key.to_owned(),
            image: container.image,
            mounts: vec![Mount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: vec![
                    format!("lowerdir={}", lower.join(":")),
                    format!("upperdir={}", upper.display()),
                    format!("workdir={}", work.display()),
                ],
            }],
            image_config: serde_json::from_slice(&config_bytes).unwrap_or_default(),
        })
    }

    /// Removes container snapshot `key`; the snapshots only it needed go with it.
    pub async fn remove_container(&self, key: &str) -> Result<ContainerRecord, Error> {
        let snapshots = self.inner.snapshots.clone().ok_or(Error::UnpackOff)?;
        let k = key.to_owned();
        let removed = tokio::task::spawn_blocking(move || snapshots.containers().remove(&k))
            .await
            .map_err(|e| Error::Internal(format!("container task failed: {e}")))?
            .map_err(|source| Error::Container { source })?;
        tracing::info!(key, image = %removed.image, "container snapshot removed");
        self.collect_snapshots().await;
        Ok(removed)
    }

    /// Every container snapshot.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        match &self.inner.snapshots {
            Some(s) => s.containers().list(),
            None => Vec::new(),
        }
    }
}
