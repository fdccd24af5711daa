//! Docker schema 2 manifests rewritten as OCI manifests for the OCI layout.
//!
//! Readers of OCI layouts (containers/image, so skopeo and podman) only look at index
//! entries whose media type is OCI, so cri-imaged stores a Docker manifest the way
//! `podman save --format oci-archive` does: the same config and layers, with OCI media
//! types. The config and layer blobs (and so the image ID) are unchanged; the registry's
//! manifest digest stays recorded as the digest the name was pulled by.

use serde_json::Value;

use super::manifest::{Descriptor, FormatError};
use super::media;
use crate::names::Digest;

fn oci_layer_type(docker: &str) -> Option<&'static str> {
    match docker {
        "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Some("application/vnd.oci.image.layer.v1.tar+gzip")
        }
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => {
            Some("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip")
        }
        "application/vnd.docker.image.rootfs.diff.tar" => {
            Some("application/vnd.oci.image.layer.v1.tar")
        }
        _ => None,
    }
}

/// The manifest as it is stored: OCI manifests unchanged, Docker ones converted. Returns
/// the stored descriptor and bytes.
pub fn for_layout(
    descriptor: &Descriptor,
    bytes: &[u8],
) -> Result<(Descriptor, Vec<u8>), FormatError> {
    if descriptor.media_type != media::DOCKER_MANIFEST {
        return Ok((descriptor.clone(), bytes.to_vec()));
    }
    let mut doc: Value = serde_json::from_slice(bytes)?;
    let obj = doc
        .as_object_mut()
        .ok_or_else(|| FormatError::Invalid("manifest is not a JSON object".into()))?;
    obj.insert("mediaType".into(), media::OCI_MANIFEST.into());
    if let Some(config) = obj.get_mut("config").and_then(Value::as_object_mut) {
        config.insert("mediaType".into(), media::OCI_CONFIG.into());
    }
    if let Some(layers) = obj.get_mut("layers").and_then(Value::as_array_mut) {
        for layer in layers.iter_mut().filter_map(Value::as_object_mut) {
            let oci = layer
                .get("mediaType")
                .and_then(Value::as_str)
                .and_then(oci_layer_type);
            if let Some(oci) = oci {
                layer.insert("mediaType".into(), oci.into());
            }
        }
    }
    let out = serde_json::to_vec(&doc)?;
    let digest = Digest::of(&out);
    let size = out.len() as u64;
    Ok((
        Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest,
            size,
        },
        out,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::manifest::{Parsed, parse};

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_manifest_becomes_oci_with_the_same_blobs() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D1}","size":7}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":9}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG
        );
        let original = Descriptor {
            media_type: media::DOCKER_MANIFEST.into(),
            digest: Digest::parse(D1).unwrap(),
            size: 1,
        };
        let (d, bytes) = for_layout(&original, doc.as_bytes()).unwrap();
        assert_eq!(d.media_type, media::OCI_MANIFEST);
        assert_eq!(d.size, bytes.len() as u64);
        let Parsed::Manifest(m) = parse(&bytes, None).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert_eq!(m.config.digest.as_str(), D1);
        assert_eq!(m.config.media_type, media::OCI_CONFIG);
        assert_eq!(
            m.layers[0].media_type,
            "application/vnd.oci.image.layer.v1.tar+gzip"
        );
        assert_eq!(m.layers[0].digest.as_str(), D2);
        // Deterministic: the same input gives the same stored manifest.
        assert_eq!(for_layout(&original, doc.as_bytes()).unwrap().0, d);
    }

    #[test]
    fn oci_manifest_is_stored_as_is() {
        let original = Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: Digest::parse(D1).unwrap(),
            size: 2,
        };
        let (d, bytes) = for_layout(&original, b"{}").unwrap();
        assert_eq!(d, original);
        assert_eq!(bytes, b"{}");
    }
}
