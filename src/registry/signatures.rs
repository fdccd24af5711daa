//! Signature documents a session fetches for the trust check (`trust/`): the cosign
//! `sha256-<hex>.sig` manifest of an image's repository and its payload blobs, with the
//! session's credentials and TLS; and GPG signature files from an `http(s)://` lookaside,
//! with the session's TLS settings but never its credentials (the lookaside is another
//! server). Everything is read with a size cap; "not there" is `None`, not an error.

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;

use super::{RegistryError, Session, oci_reference};
use crate::names::{Digest, ImageName, Reference};
use crate::oci::Descriptor;

impl Session {
    /// The manifest tagged `tag` in `name`'s repository, as served; `None`: no such tag.
    pub async fn fetch_tagged_manifest(
        &self,
        name: &ImageName,
        tag: &str,
    ) -> Result<Option<Bytes>, RegistryError> {
        let tagged = ImageName::new(
            name.registry(),
            name.repository(),
            Reference::Tag(tag.to_owned()),
        )
        .map_err(|e| RegistryError::Other {
            registry: self.registry.clone(),
            reason: format!("signature tag {tag}: {e}"),
        })?;
        let reference = oci_reference(&tagged, None);
        let what = format!("{}:{tag}", name.repo());
        match self.manifest_authorized(&reference, &what).await {
            Ok((bytes, _, _)) => Ok(Some(bytes)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A small blob of `name`'s repository, whole, checked against its digest and size;
    /// refused if its descriptor says more than `cap` bytes.
    pub async fn fetch_small_blob(
        &self,
        name: &ImageName,
        blob: &Descriptor,
        cap: u64,
    ) -> Result<Bytes, RegistryError> {
        let too_large = || RegistryError::InvalidContent {
            registry: self.registry.clone(),
            reason: format!("signature blob {} is larger than {cap} bytes", blob.digest),
        };
        if blob.size > cap {
            return Err(too_large());
        }
        let (mut stream, _) = self.fetch_blob(name, blob, 0).await?;
        let mut out = BytesMut::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
            if out.len() as u64 > blob.size {
                return Err(too_large());
            }
        }
        let out = out.freeze();
        if Digest::of(&out) != blob.digest || out.len() as u64 != blob.size {
            return Err(RegistryError::DigestMismatch {
                registry: self.registry.clone(),
                reason: format!("signature blob {} does not match its digest", blob.digest),
            });
        }
        Ok(out)
    }

    /// One file of an `http(s)://` lookaside; `None`: 404 (no more signatures).
    pub async fn fetch_lookaside(
        &self,
        url: &str,
        cap: u64,
    ) -> Result<Option<Bytes>, RegistryError> {
        let what = format!("signature {url}");
        let get = super::fetch::Get {
            url: url.to_owned(),
            accept: None,
            offset: 0,
        };
        let mut response = super::fetch::get(&self.http, &self.registry, None, get).await?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !response.status().is_success() {
            return Err(RegistryError::Other {
                registry: self.registry.clone(),
                reason: format!("{what}: HTTP {}", response.status()),
            });
        }
        let mut body = BytesMut::new();
        loop {
            let chunk = response.chunk().await.map_err(|e| {
                super::error::unavailable(self.registry.clone(), format!("{what}: {e}"), &e)
            });
            let Some(chunk) = chunk? else { break };
            if (body.len() + chunk.len()) as u64 > cap {
                return Err(RegistryError::InvalidContent {
                    registry: self.registry.clone(),
                    reason: format!("{what} is larger than {cap} bytes"),
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body.freeze()))
    }
}
