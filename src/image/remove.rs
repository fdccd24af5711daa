//! RemoveImage and untag.
//!
//! CRI RemoveImage (since Kubernetes 1.36): by ID, ID prefix or any name, the whole image
//! goes with all its names; an unknown image is not an error. Untag (CRI-O's `UntagImage`)
//! removes one name and the image only with its last name.

use super::{Error, ImageService};
use crate::names::Resolved;

impl ImageService {
    /// Removes the image `name` refers to with all its names. Idempotent.
    pub async fn remove(&self, name: &str) -> Result<(), Error> {
        let Some(record) = self.find(name)? else {
            return Ok(());
        };
        let chains = self.chains_of(&record).await;
        self.inner
            .store
            .remove_image(&record.id)
            .await
            .map_err(|source| Error::Store {
                image: name.to_owned(),
                source,
            })?;
        self.inner.cache.retain(|id| id != &record.id);
        self.collect_removed(chains).await;
        tracing::info!(image = %name, id = %record.id, "removed image");
        Ok(())
    }

    /// Removes one name; an ID (or ID prefix) removes the image. Idempotent.
    pub async fn untag(&self, name: &str) -> Result<(), Error> {
        let Some(record) = self.find(name)? else {
            return Ok(());
        };
        let chains = self.chains_of(&record).await;
        let input = super::strip_transport(name);
        let records = self.inner.store.records();
        let resolved = self.resolve_input(
            &self.node(),
            input,
            |p| records.by_id_prefix(p).map(|i| i.id.clone()),
            false,
        );
        let result = match resolved {
            Ok(Resolved::Id(_)) => self.inner.store.remove_image(&record.id).await,
            Ok(Resolved::Names(candidates)) => {
                match candidates
                    .iter()
                    .find(|c| records.by_name(c).is_some_and(|r| r.id == record.id))
                {
                    Some(n) => self.inner.store.untag(n).await,
                    None => Ok(false),
                }
            }
            Err(_) => Ok(false),
        };
        result.map_err(|source| Error::Store {
            image: name.to_owned(),
            source,
        })?;
        if self.inner.store.records().get(&record.id).is_none() {
            self.collect_removed(chains).await;
        }
        Ok(())
    }

    /// The snapshot chains of `record`'s layers (empty when unpacking is off).
    async fn chains_of(
        &self,
        record: &crate::store::ImageRecord,
    ) -> std::collections::HashSet<crate::names::Digest> {
        if self.inner.snapshots.is_none() {
            return Default::default();
        }
        let (inner, record) = (self.inner.clone(), record.clone());
        tokio::task::spawn_blocking(move || {
            super::unpack::chains_of_image(&inner.store, &inner.chains, &record)
        })
        .await
        .unwrap_or_default()
    }

    /// Removes the snapshots of `chains` no image needs now (after a removal).
    async fn collect_removed(&self, chains: std::collections::HashSet<crate::names::Digest>) {
        let Some(snapshots) = self.inner.snapshots.clone() else {
            return;
        };
        if chains.is_empty() {
            return;
        }
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            super::unpack::collect_removed(&inner.store, &snapshots, &inner.chains, chains)
        })
        .await;
    }

    /// Removes the snapshots no image needs any more (when unpacking is on).
    pub(super) async fn collect_snapshots(&self) {
        let Some(snapshots) = self.inner.snapshots.clone() else {
            return;
        };
        let inner = self.inner.clone();
        let _ = tokio::task::spawn_blocking(move || {
            super::unpack::collect(&inner.store, &snapshots, &inner.chains, &inner.cache)
        })
        .await;
    }
}
