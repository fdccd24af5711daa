//! Manifests, indexes and image configs: parsed with serde, then validated into types whose
//! digests are known to be well formed.

use serde::{Deserialize, Serialize};

use super::media;
use crate::names::{Digest, NameError};

/// Largest manifest, index or config document accepted.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("document is {size} bytes, more than the {MAX_DOCUMENT_BYTES} accepted")]
    TooLarge { size: usize },
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("unsupported schema version {0}")]
    SchemaVersion(u32),
    #[error("unsupported media type {0:?}")]
    MediaType(String),
    #[error("layer {digest} has media type {media_type:?}, not an image layer cri-imaged supports")]
    LayerMediaType { digest: Digest, media_type: String },
    #[error(transparent)]
    Digest(#[from] NameError),
    #[error("{0}")]
    Invalid(String),
}

/// A content descriptor whose digest has been validated.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// A known type is a `&'static str` ([`media::intern`]): a store of 20,000 images
    /// keeps four descriptors per image, and their types are a handful of strings.
    pub media_type: std::borrow::Cow<'static, str>,
    pub digest: Digest,
    pub size: u64,
}

#[derive(Deserialize, Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct RawDescriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: i64,
    #[serde(default)]
    platform: Option<RawPlatform>,
}

#[derive(Deserialize, Serialize, Debug, Clone, Default)]
struct RawPlatform {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RawDocument {
    schema_version: Option<u32>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<RawDescriptor>,
    #[serde(default)]
    layers: Option<Vec<RawDescriptor>>,
    #[serde(default)]
    manifests: Option<Vec<RawDescriptor>>,
}

/// An image manifest: one config and its layers.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl Manifest {
    /// Bytes of config and layers (the manifest's own size is not included).
    pub fn content_size(&self) -> u64 {
        self.config.size + self.layers.iter().map(|l| l.size).sum::<u64>()
    }
}

/// One entry of an index, with its platform when given.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub descriptor: Descriptor,
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

/// An OCI image index or Docker manifest list.
#[derive(Debug, Clone)]
pub struct Index {
    pub media_type: String,
    pub manifests: Vec<IndexEntry>,
}

/// A parsed manifest document: either an image manifest or an index.
#[derive(Debug, Clone)]
pub enum Parsed {
    Manifest(Manifest),
    Index(Index),
}

fn descriptor(raw: &RawDescriptor) -> Result<Descriptor, FormatError> {
    let digest = Digest::parse(&raw.digest)?;
    let size = u64::try_from(raw.size)
        .map_err(|_| FormatError::Invalid(format!("negative size for {}", raw.digest)))?;
    Ok(Descriptor {
        media_type: media::intern(&raw.media_type),
        digest,
        size,
    })
}

/// Parses a manifest or index. `header_type` is the Content-Type it was served with (or
/// the descriptor's media type); the document's own `mediaType` wins when present.
pub fn parse(bytes: &[u8], header_type: Option<&str>) -> Result<Parsed, FormatError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(FormatError::TooLarge { size: bytes.len() });
    }
    let raw: RawDocument = serde_json::from_slice(bytes)?;
    match raw.schema_version {
        Some(2) => {}
        Some(v) => return Err(FormatError::SchemaVersion(v)),
        None => return Err(FormatError::Invalid("missing schemaVersion".into())),
    }
    let media_type = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| {
            header_type
                .map(str::to_owned)
                .filter(|m| media::is_index(m) || media::is_manifest(m))
        })
        .unwrap_or_else(|| {
            // An OCI document may omit mediaType: its shape tells.
            if raw.manifests.is_some() {
                media::OCI_INDEX.to_owned()
            } else {
                media::OCI_MANIFEST.to_owned()
            }
        });
    if media::is_index(&media_type) {
        let entries = raw
            .manifests
            .as_ref()
            .ok_or_else(|| FormatError::Invalid("index without manifests".into()))?;
        let manifests = entries
            .iter()
            .map(|e| {
                let p = e.platform.clone().unwrap_or_default();
                Ok(IndexEntry {
                    descriptor: descriptor(e)?,
                    os: p.os,
                    architecture: p.architecture,
                    variant: p.variant.filter(|v| !v.is_empty()),
                })
            })
            .collect::<Result<Vec<_>, FormatError>>()?;
        return Ok(Parsed::Index(Index {
            media_type,
            manifests,
        }));
    }
    if !media::is_manifest(&media_type) {
        return Err(FormatError::MediaType(media_type));
    }
    let config = raw
        .config
        .as_ref()
        .ok_or_else(|| FormatError::Invalid("manifest without config".into()))?;
    let config = descriptor(config)?;
    if !config.media_type.is_empty() && !media::is_config(&config.media_type) {
        return Err(FormatError::MediaType(config.media_type.into_owned()));
    }
    let layers = raw
        .layers
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(descriptor)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Parsed::Manifest(Manifest {
        media_type,
        config,
        layers,
    }))
}

/// Refuses layers a container runtime cannot unpack: unknown types (artifacts, Helm
/// charts, Wasm), encrypted layers, a missing type. Applied to what a registry serves; a
/// stored image passed it when it was pulled, so recovery and `check` do not repeat it.
pub fn check_layer_types(manifest: &Manifest) -> Result<(), FormatError> {
    match manifest
        .layers
        .iter()
        .find(|l| !media::is_layer(&l.media_type))
    {
        Some(l) => Err(FormatError::LayerMediaType {
            digest: l.digest.clone(),
            media_type: l.media_type.to_string(),
        }),
        None => Ok(()),
    }
}

/// The parts of an image config cri-imaged reads.
#[derive(Debug, Clone, Default)]
pub struct ImageConfig {
    /// `config.User` as written in the image ("1002", "www-data:1004", "").
    pub user: String,
    pub os: String,
    pub architecture: String,
    /// `rootfs.diff_ids` as written (validated where they are used: unpacking).
    pub diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    os: String,
    #[serde(default)]
    config: Option<RawRunConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawRunConfig {
    #[serde(rename = "User", default)]
    user: Option<String>,
}

/// Parses an image config (OCI or Docker).
pub fn parse_config(bytes: &[u8]) -> Result<ImageConfig, FormatError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(FormatError::TooLarge { size: bytes.len() });
    }
    let raw: RawConfig = serde_json::from_slice(bytes)?;
    Ok(ImageConfig {
        user: raw.config.and_then(|c| c.user).unwrap_or_default(),
        os: raw.os,
        architecture: raw.architecture,
        diff_ids: raw.rootfs.map(|r| r.diff_ids).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn docker_manifest_parses() {
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{D1}","size":7}},"layers":[{{"mediaType":"x","digest":"{D2}","size":9}}]}}"#,
            media::DOCKER_MANIFEST,
            media::DOCKER_CONFIG
        );
        let Parsed::Manifest(m) = parse(doc.as_bytes(), None).unwrap() else {
            panic!("not a manifest")
        };
        assert_eq!(m.config.digest.as_str(), D1);
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.content_size(), 16);
    }

    #[test]
    fn oci_index_without_media_type_is_detected_by_shape() {
        let doc = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"{}","digest":"{D1}","size":7,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#,
            media::OCI_MANIFEST
        );
        let Parsed::Index(i) = parse(doc.as_bytes(), None).unwrap() else {
            panic!("not an index")
        };
        assert_eq!(i.manifests[0].variant.as_deref(), Some("v8"));
    }

    #[test]
    fn path_like_digest_is_refused() {
        let doc = r#"{"schemaVersion":2,"config":{"digest":"sha256:../../etc/passwd","size":1},"layers":[]}"#;
        assert!(matches!(
            parse(doc.as_bytes(), None),
            Err(FormatError::Digest(_))
        ));
    }

    #[test]
    fn schema_one_and_unknown_types_are_refused() {
        assert!(matches!(
            parse(br#"{"schemaVersion":1}"#, None),
            Err(FormatError::SchemaVersion(1))
        ));
        let doc = format!(
            r#"{{"schemaVersion":2,"mediaType":"text/plain","config":{{"digest":"{D1}","size":1}}}}"#
        );
        assert!(matches!(
            parse(doc.as_bytes(), None),
            Err(FormatError::MediaType(_))
        ));
    }

    #[test]
    fn negative_size_is_refused() {
        let doc =
            format!(r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":-1}},"layers":[]}}"#);
        assert!(matches!(
            parse(doc.as_bytes(), None),
            Err(FormatError::Invalid(_))
        ));
    }

    #[test]
    fn oversized_documents_are_refused() {
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            parse(&big, None),
            Err(FormatError::TooLarge { .. })
        ));
    }

    #[test]
    fn config_user_is_read() {
        let c = parse_config(
            br#"{"architecture":"amd64","os":"linux","config":{"User":"www-data:1004"}}"#,
        )
        .unwrap();
        assert_eq!(c.user, "www-data:1004");
        assert_eq!(parse_config(br#"{"os":"linux"}"#).unwrap().user, "");
    }
}
