//! The signature policy in the pull path (`trust/` decides; this file fetches): the
//! signatures of a registry image — GPG simple signatures from the lookaside that
//! registries.d names for it (`file://` read here, `http(s)://` through the session's TLS
//! settings), sigstore signatures from the image's `sha256-<hex>.sig` tag when
//! registries.d says `use-sigstore-attachments` — each capped in count and size. The
//! check runs after the manifest is chosen and before any blob is fetched; a refusal is
//! counted by reason and logged with the policy file that decided.

use tokio::io::AsyncReadExt as _;

use super::{Error, Inner};
use crate::names::{Digest, ImageName};
use crate::registry::Session;
use crate::trust::{self, Loaded, SignatureError, Signatures};

/// Signatures read per image at most (containers/image: 128 lookaside files).
const MAX_SIGNATURES: usize = 64;

/// The signatures of `name` at `digest`, fetched through `session` (the source the
/// manifest came from).
pub(super) struct RegistrySignatures<'a> {
    pub session: &'a Session,
    /// The image as the source serves it (a mirror's name for a mirrored pull).
    pub served_as: &'a ImageName,
    pub digest: &'a Digest,
    pub sources: trust::SignatureSources,
}

impl Signatures for RegistrySignatures<'_> {
    async fn gpg(&self) -> Result<Vec<Vec<u8>>, SignatureError> {
        let mut out = Vec::new();
        for n in 1..=MAX_SIGNATURES {
            let url = trust::signature_url(
                &self.sources.lookaside,
                self.served_as.repository(),
                self.digest,
                n,
            );
            let got = if let Some(path) = url.strip_prefix("file://") {
                read_capped(path).await?
            } else if url.starts_with("https://") || url.starts_with("http://") {
                self.session
                    .fetch_lookaside(&url, trust::MAX_SIGNATURE)
                    .await
                    .map_err(|e| SignatureError::Fetch(e.to_string()))?
                    .map(|b| b.to_vec())
            } else {
                return Err(SignatureError::Fetch(format!(
                    "lookaside {}: only file://, http:// and https:// are supported",
                    self.sources.lookaside
                )));
            };
            match got {
                Some(bytes) => out.push(bytes),
                None => break,
            }
        }
        Ok(out)
    }

    async fn sigstore(&self) -> Result<Vec<(Vec<u8>, String)>, SignatureError> {
        if !self.sources.use_sigstore_attachments {
            return Ok(Vec::new());
        }
        let fetch_err = |e: crate::registry::RegistryError| SignatureError::Fetch(e.to_string());
        let tag = trust::sigstore::signature_tag(self.digest);
        let Some(manifest) = self
            .session
            .fetch_tagged_manifest(self.served_as, &tag)
            .await
            .map_err(fetch_err)?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for (layer, signature) in trust::sigstore::signature_layers(&manifest)?
            .into_iter()
            .take(MAX_SIGNATURES)
        {
            let payload = self
                .session
                .fetch_small_blob(self.served_as, &layer, trust::sigstore::MAX_PAYLOAD)
                .await
                .map_err(fetch_err)?;
            out.push((payload.to_vec(), signature));
        }
        Ok(out)
    }
}

/// A lookaside file; `None`: it does not exist (no more signatures). Read off the async
/// workers (up to 64 files of 4 MiB per image).
async fn read_capped(path: &str) -> Result<Option<Vec<u8>>, SignatureError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(SignatureError::Fetch(format!("{path}: {e}"))),
    };
    let mut bytes = Vec::new();
    file.take(trust::MAX_SIGNATURE + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| SignatureError::Fetch(format!("{path}: {e}")))?;
    if bytes.len() as u64 > trust::MAX_SIGNATURE {
        return Err(SignatureError::Fetch(format!(
            "{path}: larger than {} bytes",
            trust::MAX_SIGNATURE
        )));
    }
    Ok(Some(bytes))
}

/// Checks `image` (pulled as `reference` over `transport`) against `policy`; a refusal
/// is counted, logged and returned as the pull's error.
pub(super) async fn enforce<S: Signatures>(
    inner: &Inner,
    policy: &Loaded,
    transport: &str,
    reference: &str,
    pulled: Option<&ImageName>,
    digest: &Digest,
    signatures: &S,
) -> Result<(), Error> {
    match trust::check(policy, transport, reference, pulled, digest, signatures).await {
        Ok(accepted) => {
            tracing::debug!(image = %reference, policy = %accepted.file, scope = %accepted.scope, "signature policy accepts the image");
            Ok(())
        }
        Err(refusal) => {
            inner.metrics.refused(refusal.why.reason());
            tracing::warn!(image = %reference, policy = %refusal.file, scope = %refusal.scope, reason = %refusal.why, "signature policy refused the image");
            Err(Error::Untrusted {
                image: reference.to_owned(),
                refusal: Box::new(refusal),
            })
        }
    }
}
