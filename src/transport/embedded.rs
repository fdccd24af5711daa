//! The names an image source carries, read from its own metadata (skopeo's proxy does not
//! report them): an OCI layout's `index.json` (`org.opencontainers.image.ref.name`), a
//! docker archive's `manifest.json` (`RepoTags`). Also the digest of the index a layout
//! entry points at, so a multi-arch image keeps its index digest as repo digest (the
//! proxy of skopeo 1.9 reports only the platform manifest's digest).
//!
//! Naming rules (README, "Preloading images from files"):
//! - a fully qualified name (registry host first) is recorded as it is;
//! - docker-archive repo tags are Docker's names: `busybox:1` is `docker.io/library/busybox:1`,
//!   as `docker load` reads it;
//! - an OCI reference that is not fully qualified is local: a bare tag `v1` names
//!   `localhost/<stem>:v1`, anything else `localhost/<ref>` (podman's convention);
//! - a source with no name at all is `localhost/<stem>:latest`, where `<stem>` is the file
//!   or directory name without `.tar`, lower-cased.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

use super::{LocalTransport, SourceRef, TransportError};
use crate::names::{Digest, ImageName};
use crate::oci::{self, Descriptor, manifest::MAX_DOCUMENT_BYTES, media};

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What the source's own metadata says about the image a reference selects.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Embedded {
    pub names: Vec<ImageName>,
    /// The digest of the image index the layout entry is, when it is one.
    pub index_digest: Option<Digest>,
    /// For OCI layouts: the digests the manifest skopeo returns may have (the entry's, or
    /// for an index its children's). skopeo 1.9 does not check a layout manifest against
    /// its digest; cri-imaged does.
    pub manifest_digests: Option<Vec<Digest>>,
    /// For Docker-format sources (docker-archive, a `dir:` with a Docker manifest): the
    /// original config. skopeo 1.9's proxy converts their manifest to OCI with a
    /// re-encoded config that is no blob of the source and changes the image ID; the
    /// original keeps the ID Docker and the registry gave the image.
    pub original_config: Option<Descriptor>,
}

#[derive(Deserialize)]
struct OciIndex {
    #[serde(default)]
    manifests: Vec<OciEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: u64,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
}

#[derive(Deserialize)]
struct DockerEntry {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
}

/// Reads the names of the image `src` selects (blocking: run off the async workers).
pub fn read(src: &SourceRef) -> Result<Embedded, TransportError> {
    let mut out = Embedded::default();
    let local_ref = match src.transport {
        LocalTransport::Oci | LocalTransport::OciArchive => read_layout(src, &mut out)?,
        LocalTransport::DockerArchive => {
            read_docker_archive(src, &mut out)?;
            None
        }
        LocalTransport::Dir => {
            read_dir_source(src, &mut out)?;
            None
        }
    };
    if let Some(r) = local_ref {
        out.names.push(local_name(src, &r)?);
    }
    if out.names.is_empty() {
        out.names.push(local_name(src, "latest")?);
    }
    Ok(out)
}

fn unreadable(src: &SourceRef) -> impl Fn(String) -> TransportError + Copy + '_ {
    |reason| TransportError::Unreadable {
        source_ref: src.to_string(),
        reason,
    }
}

fn invalid(src: &SourceRef) -> impl Fn(String) -> TransportError + Copy + '_ {
    |reason| TransportError::InvalidContent {
        source_ref: src.to_string(),
        reason,
    }
}

/// An OCI layout (directory or archive): the entry the reference selects, its digests, and
/// its ref name (returned: the caller turns it into a local name).
fn read_layout(src: &SourceRef, out: &mut Embedded) -> Result<Option<String>, TransportError> {
    let (unreadable, invalid) = (unreadable(src), invalid(src));
    let bytes = if src.transport == LocalTransport::Oci {
        read_capped(&src.path.join("index.json")).map_err(unreadable)?
    } else {
        archive_member(&src.path, "index.json").map_err(unreadable)?
    };
    let index: OciIndex =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("index.json: {e}")))?;
    let entry = match &src.reference {
        Some(r) => index
            .manifests
            .iter()
            .find(|m| m.annotations.get(REF_NAME) == Some(r)),
        None if index.manifests.len() <= 1 => index.manifests.first(),
        None => {
            let refs: Vec<_> = index
                .manifests
                .iter()
                .filter_map(|m| m.annotations.get(REF_NAME))
                .collect();
            return Err(TransportError::InvalidReference {
                reference: src.to_string(),
                reason: format!(
                    "the layout holds {} images; name one with :REF (ref names: {refs:?})",
                    index.manifests.len()
                ),
            });
        }
    };
    if let Some(entry) = entry {
        // The proxy reads a manifest whole: refuse an oversized one first.
        if entry.size > MAX_DOCUMENT_BYTES as u64 {
            return Err(invalid(format!(
                "{} is {} bytes, more than {MAX_DOCUMENT_BYTES}",
                entry.digest, entry.size
            )));
        }
        let digest =
            Digest::parse(&entry.digest).map_err(|e| invalid(format!("index.json: {e}")))?;
        if entry.media_type == media::OCI_INDEX || entry.media_type == media::DOCKER_LIST {
            let bytes = if src.transport == LocalTransport::Oci {
                read_capped(&src.path.join(blob_member(&digest))).map_err(unreadable)?
            } else {
                archive_member(&src.path, &blob_member(&digest)).map_err(unreadable)?
            };
            if Digest::of(&bytes) != digest {
                return Err(invalid(format!("index {digest} does not match its digest")));
            }
            let children = match oci::manifest::parse(&bytes, Some(&entry.media_type)) {
                Ok(oci::Parsed::Index(i)) => i.manifests,
                Ok(oci::Parsed::Manifest(_)) => Vec::new(),
                Err(e) => return Err(invalid(format!("index {digest}: {e}"))),
            };
            out.manifest_digests =
                Some(children.into_iter().map(|c| c.descriptor.digest).collect());
            out.index_digest = Some(digest);
        } else {
            out.manifest_digests = Some(vec![digest]);
        }
        return Ok(entry.annotations.get(REF_NAME).cloned());
    }
    Ok(None)
}

/// A docker archive: the entry the reference selects (by name or `@N`), its repo tags as
/// names, its original config.
fn read_docker_archive(src: &SourceRef, out: &mut Embedded) -> Result<(), TransportError> {
    let (unreadable, invalid) = (unreadable(src), invalid(src));
    let bytes = archive_member(&src.path, "manifest.json").map_err(unreadable)?;
    let entries: Vec<DockerEntry> =
        serde_json::from_slice(&bytes).map_err(|e| invalid(format!("manifest.json: {e}")))?;
    let explicit = src.reference.as_deref().filter(|r| !r.starts_with('@'));
    let explicit = explicit
        .map(|r| {
            docker_name(r).ok_or_else(|| TransportError::InvalidReference {
                reference: src.to_string(),
                reason: format!("{r:?} is not an image name"),
            })
        })
        .transpose()?;
    let entry = match (&explicit, src.reference.as_deref()) {
        (Some(name), _) => entries.iter().find(|e| {
            e.repo_tags
                .iter()
                .flatten()
                .any(|t| docker_name(t).as_ref() == Some(name))
        }),
        (None, Some(r)) => {
            let i = r[1..]
                .parse::<usize>()
                .map_err(|_| TransportError::InvalidReference {
                    reference: src.to_string(),
                    reason: format!("{r:?} is neither an image name nor @N"),
                })?;
            Some(entries.get(i).ok_or_else(|| TransportError::NoSuchImage {
                source_ref: src.to_string(),
                reason: format!("the archive holds {} images", entries.len()),
            })?)
        }
        (None, None) if entries.len() <= 1 => entries.first(),
        (None, None) => {
            return Err(TransportError::InvalidReference {
                reference: src.to_string(),
                reason: format!(
                    "the archive holds {} images; name one with :NAME or :@N",
                    entries.len()
                ),
            });
        }
    };
    if let Some(name) = explicit {
        out.names.push(name);
    } else {
        for tag in entry.and_then(|e| e.repo_tags.clone()).unwrap_or_default() {
            match docker_name(&tag) {
                Some(n) if !out.names.contains(&n) => out.names.push(n),
                Some(_) => {}
                None => tracing::warn!(source = %src, tag, "ignoring an invalid repo tag"),
            }
        }
    }
    if let Some(entry) = entry {
        let bytes = archive_member(&src.path, &entry.config).map_err(unreadable)?;
        out.original_config = Some(config_descriptor(&bytes));
    }
    Ok(())
}

/// A `dir:` source: the original config of a Docker manifest.
fn read_dir_source(src: &SourceRef, out: &mut Embedded) -> Result<(), TransportError> {
    let unreadable = unreadable(src);
    let bytes = read_capped(&src.path.join("manifest.json")).map_err(unreadable)?;
    if let Ok(oci::Parsed::Manifest(m)) = oci::manifest::parse(&bytes, None)
        && m.media_type == media::DOCKER_MANIFEST
    {
        out.original_config = Some(m.config);
    }
    Ok(())
}

/// A blob's path inside a layout, from a validated digest.
fn blob_member(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm(), d.hex())
}

/// Describes config bytes as the OCI config blob they are.
fn config_descriptor(bytes: &[u8]) -> Descriptor {
    Descriptor {
        media_type: media::OCI_CONFIG.into(),
        digest: Digest::of(bytes),
        size: bytes.len() as u64,
    }
}

/// A Docker name: qualified as written, or a Docker Hub one.
fn docker_name(s: &str) -> Option<ImageName> {
    ImageName::parse_qualified(s).ok().or_else(|| {
        let hub = if s.contains('/') {
            format!("docker.io/{s}")
        } else {
            format!("docker.io/library/{s}")
        };
        ImageName::parse_qualified(&hub).ok()
    })
}

/// An OCI reference as a name: qualified as written, else under `localhost/`.
fn local_name(src: &SourceRef, r: &str) -> Result<ImageName, TransportError> {
    if let Ok(n) = ImageName::parse_qualified(r) {
        return Ok(n);
    }
    let candidate = if r.contains('/') || r.contains(':') {
        format!("localhost/{r}")
    } else {
        format!("localhost/{}:{r}", stem(&src.path))
    };
    ImageName::parse_qualified(&candidate).map_err(|_| TransportError::Unnamed {
        source_ref: src.to_string(),
        path: src.path.clone(),
    })
}

fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    name.strip_suffix(".tar").unwrap_or(&name).to_owned()
}

fn read_capped(path: &Path) -> Result<Vec<u8>, String> {
    capped(open_regular(path)?, &path.display().to_string())
}

/// Opens a regular file for reading: not through a final symlink, and without blocking on
/// a FIFO or device someone put in its place.
fn open_regular(path: &Path) -> Result<std::fs::File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = f
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    Ok(f)
}

fn capped(r: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    r.take(MAX_DOCUMENT_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{what}: {e}"))?;
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(format!("{what} is larger than {MAX_DOCUMENT_BYTES} bytes"));
    }
    Ok(bytes)
}

/// One small file of a tar archive, found by skipping over the others' data.
fn archive_member(archive: &Path, member: &str) -> Result<Vec<u8>, String> {
    let mut tar = tar::Archive::new(open_regular(archive)?);
    let entries = tar.entries_with_seek().map_err(|e| e.to_string())?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        let path = entry.path().map_err(|e| e.to_string())?.into_owned();
        if path.strip_prefix(".").unwrap_or(&path) == Path::new(member) {
            return capped(entry, member);
        }
    }
    Err(format!("the archive has no {member}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(t: LocalTransport, path: &str, r: Option<&str>) -> SourceRef {
        SourceRef {
            transport: t,
            path: path.into(),
            reference: r.map(str::to_owned),
        }
    }

    #[test]
    fn names_follow_the_documented_rules() {
        let layout = src(LocalTransport::Oci, "/i/MyApp", None);
        let cases = [
            ("registry.example/team/app:1", "registry.example/team/app:1"),
            ("v1", "localhost/myapp:v1"),
            ("team/app:2", "localhost/team/app:2"),
        ];
        for (r, want) in cases {
            assert_eq!(local_name(&layout, r).unwrap().to_string(), want, "{r}");
        }
        let archive = src(LocalTransport::OciArchive, "/i/app.tar", None);
        assert_eq!(
            local_name(&archive, "latest").unwrap().to_string(),
            "localhost/app:latest"
        );
        assert_eq!(
            docker_name("busybox:1").unwrap().to_string(),
            "docker.io/library/busybox:1"
        );
        assert_eq!(
            docker_name("me/app").unwrap().to_string(),
            "docker.io/me/app:latest"
        );
        assert_eq!(
            docker_name("localhost:5000/a:b").unwrap().to_string(),
            "localhost:5000/a:b"
        );
        let weird = src(LocalTransport::Dir, "/i/bad name!", None);
        assert!(matches!(
            local_name(&weird, "latest"),
            Err(TransportError::Unnamed { .. })
        ));
    }
}
