//! Media types cri-imaged accepts, in the OCI and Docker schema 2 flavours.

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// What a registry may answer for a manifest request, most preferred first.
pub const MANIFEST_ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

pub fn is_config(media_type: &str) -> bool {
    media_type == OCI_CONFIG || media_type == DOCKER_CONFIG
}

/// Layer types a container runtime unpacks (OCI, with the nondistributable variants, and
/// Docker schema 2).
pub const LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

pub fn is_layer(media_type: &str) -> bool {
    LAYERS.contains(&media_type)
}

/// `media_type` as a `&'static str` when it is one of the types above, else a copy.
pub fn intern(media_type: &str) -> std::borrow::Cow<'static, str> {
    const OTHERS: &[&str] = &[
        OCI_MANIFEST,
        OCI_INDEX,
        OCI_CONFIG,
        DOCKER_MANIFEST,
        DOCKER_LIST,
        DOCKER_CONFIG,
    ];
    match OTHERS.iter().chain(LAYERS).find(|t| **t == media_type) {
        Some(t) => std::borrow::Cow::Borrowed(t),
        None => std::borrow::Cow::Owned(media_type.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_are_shared_and_others_kept_as_given() {
        for t in [OCI_CONFIG, LAYERS[1], DOCKER_MANIFEST] {
            assert!(matches!(intern(t), std::borrow::Cow::Borrowed(b) if b == t));
        }
        let other = "application/vnd.example.thing+json";
        assert!(matches!(intern(other), std::borrow::Cow::Owned(o) if o == other));
        assert_eq!(intern(""), "");
    }
}
