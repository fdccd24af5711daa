//! Test helpers shared by the store's and the core's unit tests: images put straight into a
//! store, without a registry.

use sha2::Digest as _;

use super::{Lease, ManifestBlobs, NameRecord, Store};
use crate::names::{Digest, ImageId, ImageName};
use crate::oci::{Descriptor, media};

/// The descriptor of `bytes`.
pub fn desc(bytes: &[u8], media_type: &str) -> Descriptor {
    Descriptor {
        media_type: media::intern(media_type),
        digest: Digest::from_sha256(sha2::Sha256::digest(bytes).into()),
        size: bytes.len() as u64,
    }
}

/// Puts an image (this config, one layer, an OCI manifest) into the store, unnamed, under
/// a lease (a blob nothing leases or references is collected at once).
pub async fn put_image(store: &Store, config_json: &str, layer: &[u8]) -> (ManifestBlobs, Lease) {
    let config = desc(config_json.as_bytes(), media::OCI_CONFIG);
    let layer_d = desc(layer, "application/vnd.oci.image.layer.v1.tar");
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": media::OCI_CONFIG, "digest": config.digest.to_string(), "size": config.size},
        "layers": [{"mediaType": layer_d.media_type, "digest": layer_d.digest.to_string(), "size": layer_d.size}],
    })
    .to_string();
    let manifest = desc(manifest_json.as_bytes(), media::OCI_MANIFEST);
    let lease = store.lease([&config, &layer_d, &manifest].map(|d| d.digest.clone()));
    store
        .put_blob(&config, config_json.as_bytes())
        .await
        .unwrap();
    store.put_blob(&layer_d, layer).await.unwrap();
    store
        .put_blob(&manifest, manifest_json.as_bytes())
        .await
        .unwrap();
    let blobs = ManifestBlobs {
        manifest,
        config,
        layers: vec![layer_d],
    };
    (blobs, lease)
}

/// Records `name` (pulled by its manifest digest) for the image `blobs` make up.
pub async fn name_image(store: &Store, blobs: &ManifestBlobs, name: &str) -> ImageId {
    let id = ImageId::new(blobs.config.digest.clone());
    let record = NameRecord {
        name: ImageName::parse_qualified(name).unwrap(),
        manifest: blobs.manifest.clone(),
        pulled_by: blobs.manifest.digest.clone(),
    };
    let lease = store.lease(blobs.all().map(|d| d.digest.clone()));
    store.add_name(&id, blobs, record, lease).await.unwrap();
    id
}
