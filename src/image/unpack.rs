//! The unpack stage (when `unpack` is on): every layer of a pulled image becomes a
//! snapshot keyed by its chain ID (`snapshot::Snapshots`), bottom layer first (a hard link
//! into a lower layer needs that layer), each checked against the config's `diff_ids`;
//! and the collection of snapshots no image needs, after a removal and at start.

use std::collections::HashSet;
use std::sync::Arc;

use super::{Error, Inner};
use crate::names::Digest;
use crate::oci::{self, Descriptor};
use crate::snapshot::{Snapshots, chain_ids};
use crate::store::{Store, layout};

/// The chain IDs of an image whose config lists `diff_ids` for `layers`; `Err` names what
/// is wrong with them.
pub(super) fn chains_of(
    diff_ids: &[String],
    layers: &[Descriptor],
) -> Result<Vec<(Digest, Digest)>, String> {
    if diff_ids.len() != layers.len() {
        return Err(format!(
            "the config lists {} diff_ids for {} layers",
            diff_ids.len(),
            layers.len()
        ));
    }
    let diffs = diff_ids
        .iter()
        .map(|d| Digest::parse(d).map_err(|e| format!("rootfs.diff_ids: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let chains = chain_ids(&diffs);
    Ok(diffs.into_iter().zip(chains).collect())
}

/// Unpacks `layers` (all in the store) as snapshots, in order. `image` names the image in
/// errors.
pub(super) async fn unpack_layers(
    inner: &Inner,
    snapshots: &Arc<Snapshots>,
    image: &str,
    layers: &[Descriptor],
    ids: &[(Digest, Digest)],
) -> Result<(), Error> {
    let mut lowers = Vec::new();
    for (layer, (diff_id, chain)) in layers.iter().zip(ids) {
        let (snaps, layer2, diff2, chain2, below) = (
            snapshots.clone(),
            layer.clone(),
            diff_id.clone(),
            chain.clone(),
            lowers.iter().rev().cloned().collect::<Vec<_>>(),
        );
        let blob = layout::blob_path(inner.store.root(), &layer.digest);
        let started = std::time::Instant::now();
        let made = tokio::task::spawn_blocking(move || {
            snaps.unpack(&layer2, &blob, &diff2, &chain2, &below)
        })
        .await
        .map_err(|e| Error::Internal(format!("unpack task failed: {e}")))?
        .map_err(|source| Error::Unpack {
            image: image.to_owned(),
            source,
        })?;
        if made {
            tracing::debug!(image, layer = %layer.digest, chain = %chain, ms = started.elapsed().as_millis() as u64, "unpacked layer");
        }
        lowers.push(snapshots.fs(chain));
    }
    Ok(())
}

/// Removes the snapshots no recorded image needs (reading each image's config).
pub(super) fn collect(store: &Store, snapshots: &Snapshots) -> usize {
    let records = store.records();
    let mut keep = HashSet::new();
    for image in records.images() {
        for m in &image.manifests {
            let Ok(bytes) = std::fs::read(layout::blob_path(store.root(), &m.config.digest)) else {
                continue;
            };
            let Ok(config) = oci::manifest::parse_config(&bytes) else {
                continue;
            };
            if let Ok(ids) = chains_of(&config.diff_ids, &m.layers) {
                keep.extend(ids.into_iter().map(|(_, c)| c));
            }
        }
    }
    snapshots.retain(&keep)
}
