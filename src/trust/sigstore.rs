//! Sigstore signatures in cosign's format, verified against public keys (no Fulcio, no
//! Rekor): the payload is a simple-signing document of type [`payload::COSIGN`], the
//! signature the base64 of an ASN.1 DER ECDSA P-256 / SHA-256 signature over the payload
//! bytes (what `cosign sign --key` writes into the `dev.cosignproject.cosign/signature`
//! annotation of each layer of the image's `sha256-<hex>.sig` manifest). Keys are PEM
//! `PUBLIC KEY` (SPKI), what `cosign generate-key-pair` writes to `cosign.pub`; other key
//! types are refused by name when the policy is loaded.

use base64::Engine as _;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey as _;

use super::payload::{self, Payload};
use super::sig_error::SignatureError;

/// The annotation of a cosign signature layer that holds the signature.
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// The media type of a cosign signature layer (its blob is the payload).
pub const PAYLOAD_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// The largest signature layer (payload) fetched.
pub use super::payload::MAX_PAYLOAD;

/// One trusted sigstore key.
#[derive(Clone, Debug)]
pub struct Key(VerifyingKey);

impl Key {
    /// Parses a PEM public key; `name` (its file, or "keyData") names it in errors.
    pub fn from_pem(bytes: &[u8], name: &str) -> Result<Key, SignatureError> {
        let bad = |why: String| SignatureError::Key {
            name: name.to_owned(),
            why,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not PEM text".into()))?;
        VerifyingKey::from_public_key_pem(text.trim())
            .map(Key)
            .map_err(|e| {
                bad(format!(
                    "not an ECDSA P-256 public key in PEM (the kind `cosign generate-key-pair` writes; other key types are not supported): {e}"
                ))
            })
    }
}

/// The tag of the cosign signature manifest of the manifest `digest` (`sha256-<hex>.sig`).
pub fn signature_tag(digest: &crate::names::Digest) -> String {
    format!("{}-{}.sig", digest.algorithm(), digest.hex())
}

/// The signature layers of a cosign `.sig` manifest: each payload blob's descriptor and
/// its base64 signature (layers of another media type, or without the annotation, are
/// not signatures and are skipped).
pub fn signature_layers(
    manifest: &[u8],
) -> Result<Vec<(crate::oci::Descriptor, String)>, SignatureError> {
    let bad = |why: String| SignatureError::Malformed(format!("signature manifest: {why}"));
    let v: serde_json::Value =
        serde_json::from_slice(manifest).map_err(|e| bad(format!("not JSON: {e}")))?;
    let layers = v
        .get("layers")
        .and_then(serde_json::Value::as_array)
        .ok_or_else(|| bad("no layers".into()))?;
    let mut out = Vec::new();
    for l in layers {
        let media_type = l.get("mediaType").and_then(serde_json::Value::as_str);
        let signature = l
            .get("annotations")
            .and_then(|a| a.get(SIGNATURE_ANNOTATION))
            .and_then(serde_json::Value::as_str);
        let (Some(PAYLOAD_MEDIA_TYPE), Some(signature)) = (media_type, signature) else {
            continue;
        };
        let digest = l
            .get("digest")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| bad("a layer without a digest".into()))?;
        let digest = crate::names::Digest::parse(digest).map_err(|e| bad(e.to_string()))?;
        let size = l
            .get("size")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| bad(format!("layer {digest} without a size")))?;
        out.push((
            crate::oci::Descriptor {
                media_type: PAYLOAD_MEDIA_TYPE.into(),
                digest,
                size,
            },
            signature.to_owned(),
        ));
    }
    Ok(out)
}

/// Verifies one signature (`signature_b64`, the annotation) of `payload_bytes` with any of
/// `keys`, then parses the payload.
pub fn verify(
    keys: &[Key],
    payload_bytes: &[u8],
    signature_b64: &str,
) -> Result<Payload, SignatureError> {
    let der = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|e| SignatureError::Malformed(format!("signature is not base64: {e}")))?;
    let sig = Signature::from_der(&der)
        .map_err(|e| SignatureError::Malformed(format!("not a DER ECDSA signature: {e}")))?;
    if !keys.iter().any(|k| k.0.verify(payload_bytes, &sig).is_ok()) {
        return Err(SignatureError::OtherKey);
    }
    payload::parse(payload_bytes, payload::COSIGN)
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;
    use p256::pkcs8::{EncodePublicKey as _, LineEnding};

    use super::*;
    use crate::names::Digest;

    fn key_pair(seed: u8) -> (SigningKey, Key) {
        let sk = SigningKey::from_slice(&[seed; 32]).unwrap();
        let pem = sk
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap();
        (sk, Key::from_pem(pem.as_bytes(), "test.pub").unwrap())
    }

    fn sign(sk: &SigningKey, payload: &[u8]) -> String {
        let sig: Signature = sk.sign(payload);
        base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes())
    }

    #[test]
    fn a_signature_by_a_trusted_key_verifies_and_another_does_not() {
        let (sk, key) = key_pair(7);
        let (other, other_key) = key_pair(9);
        let d = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap();
        let p = payload::make("example.com/a:1", &d, payload::COSIGN);
        let got = verify(std::slice::from_ref(&key), &p, &sign(&sk, &p)).unwrap();
        assert_eq!(got.manifest_digest, d);
        assert!(matches!(
            verify(std::slice::from_ref(&key), &p, &sign(&other, &p)),
            Err(SignatureError::OtherKey)
        ));
        // Either of two keys will do.
        assert!(verify(&[other_key, key.clone()], &p, &sign(&sk, &p)).is_ok());
        // A payload changed after signing.
        let mut tampered = p.clone();
        tampered[10] ^= 1;
        assert!(verify(&[key], &tampered, &sign(&sk, &p)).is_err());
    }

    #[test]
    fn malformed_signatures_and_keys_say_what_is_wrong() {
        let (_, key) = key_pair(3);
        let e = verify(std::slice::from_ref(&key), b"{}", "%%%")
            .unwrap_err()
            .to_string();
        assert!(e.contains("base64"), "{e}");
        let e = verify(&[key], b"{}", "AAAA").unwrap_err().to_string();
        assert!(e.contains("DER"), "{e}");
        let e = Key::from_pem(
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "k.pub",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("k.pub") && e.contains("P-256"), "{e}");
    }

    #[test]
    fn the_signature_tag_is_cosigns() {
        let d = Digest::parse(&format!("sha256:{}", "ef".repeat(32))).unwrap();
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", "ef".repeat(32)));
    }
}
