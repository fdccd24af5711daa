//! The policy check of one image, after its manifest is chosen and before any blob is
//! fetched: the requirements of the scope that applies must all hold. `signedBy` and
//! `sigstoreSigned` hold when at least one signature verifies with one of the
//! requirement's keys, signs the manifest digest being pulled, and names an identity the
//! requirement's `signedIdentity` accepts. Signatures come from a [`Signatures`] source
//! (the registry and lookaside of the image, fetched only when a requirement needs them).

use std::future::Future;

use super::keys::Keys;
use super::node::Loaded;
use super::payload::Payload;
use super::policy::{Requirement, SignedIdentity};
use super::sig_error::SignatureError;
use super::{gpg, sigstore};
use crate::names::{Digest, ImageName};

/// Where an image's signatures come from.
pub trait Signatures: Sync {
    /// The GPG simple signatures of the manifest (each file's bytes).
    fn gpg(&self) -> impl Future<Output = Result<Vec<Vec<u8>>, SignatureError>> + Send;
    /// The sigstore signatures: each payload and its base64 signature.
    fn sigstore(
        &self,
    ) -> impl Future<Output = Result<Vec<(Vec<u8>, String)>, SignatureError>> + Send;
}

/// A source with no signatures (local transports).
pub struct NoSignatures;

impl Signatures for NoSignatures {
    async fn gpg(&self) -> Result<Vec<Vec<u8>>, SignatureError> {
        Ok(Vec::new())
    }
    async fn sigstore(&self) -> Result<Vec<(Vec<u8>, String)>, SignatureError> {
        Ok(Vec::new())
    }
}

/// Why the policy refused an image.
#[derive(Debug, thiserror::Error)]
pub enum Why {
    #[error("the policy rejects it")]
    Rejected,
    #[error("no {kind} signature{}", if *.local { " (local transports carry none)" } else { "" })]
    NoSignature { kind: &'static str, local: bool },
    #[error("{kind} signature refused: {source}")]
    Signature {
        kind: &'static str,
        #[source]
        source: SignatureError,
    },
}

impl Why {
    /// The metrics label of the reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Why::Rejected => "rejected",
            Why::NoSignature { .. } => "no_signature",
            Why::Signature { source, .. } => source.reason(),
        }
    }
}

/// A refusal: which file and scope decided, and why.
#[derive(Debug, thiserror::Error)]
#[error("refused by signature policy {file}, scope {scope}: {why}")]
pub struct Refusal {
    pub file: String,
    pub scope: String,
    #[source]
    pub why: Why,
}

/// What decided an accepted image.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub file: String,
    pub scope: String,
}

/// Checks `pulled` (a registry image; `None` for a local transport, named by `reference`)
/// of manifest `digest` against `loaded` for `transport`.
pub async fn check<S: Signatures>(
    loaded: &Loaded,
    transport: &str,
    reference: &str,
    pulled: Option<&ImageName>,
    digest: &Digest,
    signatures: &S,
) -> Result<Accepted, Refusal> {
    let applied = loaded.policy.requirements_for(transport, reference);
    let refuse = |why: Why| Refusal {
        file: loaded.file.clone(),
        scope: applied.scope.clone(),
        why,
    };
    let mut gpg_sigs: Option<Vec<Vec<u8>>> = None;
    let mut sigstore_sigs: Option<Vec<(Vec<u8>, String)>> = None;
    for r in applied.requirements {
        let (kind, identity) = match r {
            Requirement::InsecureAcceptAnything => continue,
            Requirement::Reject => return Err(refuse(Why::Rejected)),
            Requirement::SignedBy {
                signed_identity, ..
            } => ("GPG", signed_identity),
            Requirement::SigstoreSigned {
                signed_identity, ..
            } => ("sigstore", signed_identity),
        };
        let Some(pulled) = pulled else {
            return Err(refuse(Why::NoSignature { kind, local: true }));
        };
        let failed = |source| refuse(Why::Signature { kind, source });
        let verdicts: Vec<Result<Payload, SignatureError>> = match loaded.keys(r) {
            Some(Keys::Gpg(ring)) => {
                if gpg_sigs.is_none() {
                    gpg_sigs = Some(signatures.gpg().await.map_err(failed)?);
                }
                let sigs = gpg_sigs.as_deref().unwrap_or_default();
                sigs.iter().map(|s| gpg::verify(ring, s)).collect()
            }
            Some(Keys::Sigstore(keys)) => {
                if sigstore_sigs.is_none() {
                    sigstore_sigs = Some(signatures.sigstore().await.map_err(failed)?);
                }
                let sigs = sigstore_sigs.as_deref().unwrap_or_default();
                sigs.iter()
                    .map(|(payload, sig)| sigstore::verify(keys, payload, sig))
                    .collect()
            }
            None => {
                return Err(failed(SignatureError::Key {
                    name: "policy".into(),
                    why: "the requirement's keys were not loaded".into(),
                }));
            }
        };
        if verdicts.is_empty() {
            return Err(refuse(Why::NoSignature { kind, local: false }));
        }
        let mut best: Option<SignatureError> = None;
        let mut held = false;
        for v in verdicts {
            match v.and_then(|p| vouches(&p, pulled, digest, identity)) {
                Ok(()) => {
                    held = true;
                    break;
                }
                // A signature by a trusted key that is for something else says more than
                // one by a key we do not know.
                Err(e) => {
                    if best
                        .as_ref()
                        .is_none_or(|b| matches!(b, SignatureError::OtherKey))
                    {
                        best = Some(e);
                    }
                }
            }
        }
        if !held {
            return Err(failed(best.unwrap_or(SignatureError::OtherKey)));
        }
    }
    Ok(Accepted {
        file: loaded.file.clone(),
        scope: applied.scope,
    })
}

/// Whether a verified payload vouches for `pulled` at `digest` under `identity`.
fn vouches(
    p: &Payload,
    pulled: &ImageName,
    digest: &Digest,
    identity: &SignedIdentity,
) -> Result<(), SignatureError> {
    if &p.manifest_digest != digest {
        return Err(SignatureError::OtherDigest {
            signed: p.manifest_digest.to_string(),
            pulled: digest.to_string(),
        });
    }
    if !identity.matches(pulled, &p.docker_reference) {
        return Err(SignatureError::OtherIdentity {
            signed: p.docker_reference.clone(),
            pulled: pulled.to_string(),
            rule: identity.to_string(),
        });
    }
    Ok(())
}
