//! The signed payload both signature kinds carry: containers/image's "simple signing"
//! JSON (`critical.identity.docker-reference`, `critical.image.docker-manifest-digest`,
//! `critical.type`). Parsed strictly, as containers/image does: `critical` must hold
//! exactly those three, with the type the signature kind says; anything else is refused.

use serde_json::Value;

use super::sig_error::SignatureError;
use crate::names::Digest;

/// The `critical.type` of a GPG simple signature.
pub const ATOMIC: &str = "atomic container signature";
/// The `critical.type` of a cosign (sigstore) signature.
pub const COSIGN: &str = "cosign container image signature";

/// The largest payload read (containers/image allows 4 MiB for a signature).
pub const MAX_PAYLOAD: u64 = 4 << 20;

/// What a signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The image name the signer signed (`critical.identity.docker-reference`).
    pub docker_reference: String,
    /// The manifest it signed (`critical.image.docker-manifest-digest`).
    pub manifest_digest: Digest,
}

/// Parses a verified payload of the kind whose `critical.type` is `kind`.
pub fn parse(bytes: &[u8], kind: &str) -> Result<Payload, SignatureError> {
    let bad = |why: String| SignatureError::Payload(why);
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let critical = v
        .get("critical")
        .and_then(Value::as_object)
        .ok_or_else(|| bad("no \"critical\" object".into()))?;
    for k in critical.keys() {
        if !matches!(k.as_str(), "identity" | "image" | "type") {
            return Err(bad(format!("unknown field critical.{k}")));
        }
    }
    let ty = critical.get("type").and_then(Value::as_str).unwrap_or("");
    if ty != kind {
        return Err(bad(format!("critical.type is {ty:?}, not {kind:?}")));
    }
    let field = |obj: &str, key: &str| -> Result<String, SignatureError> {
        let o = critical
            .get(obj)
            .and_then(Value::as_object)
            .ok_or_else(|| bad(format!("no critical.{obj} object")))?;
        if let Some(k) = o.keys().find(|k| k.as_str() != key) {
            return Err(bad(format!("unknown field critical.{obj}.{k}")));
        }
        o.get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| bad(format!("no critical.{obj}.{key} string")))
    };
    let docker_reference = field("identity", "docker-reference")?;
    let digest = field("image", "docker-manifest-digest")?;
    let manifest_digest = Digest::parse(&digest)
        .map_err(|e| bad(format!("critical.image.docker-manifest-digest: {e}")))?;
    Ok(Payload {
        docker_reference,
        manifest_digest,
    })
}

/// A payload of `kind` for `reference` and `digest` (what signers write; tests sign it).
pub fn make(reference: &str, digest: &Digest, kind: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()},
            "type": kind,
        },
        "optional": {"creator": "cri-imaged"},
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap()
    }

    #[test]
    fn round_trips_and_checks_the_type() {
        let p = make("example.com/a/b:1", &digest(), COSIGN);
        let got = parse(&p, COSIGN).unwrap();
        assert_eq!(got.docker_reference, "example.com/a/b:1");
        assert_eq!(got.manifest_digest, digest());
        let e = parse(&p, ATOMIC).unwrap_err().to_string();
        assert!(e.contains("critical.type"), "{e}");
    }

    #[test]
    fn refuses_what_containers_image_refuses() {
        for (bytes, want) in [
            (&b"nope"[..], "not JSON"),
            (br#"{}"#, "no \"critical\""),
            (
                br#"{"critical":{"type":"cosign container image signature","identity":{"docker-reference":"a"},"image":{"docker-manifest-digest":"sha256:x"}}}"#,
                "docker-manifest-digest",
            ),
            (
                br#"{"critical":{"type":"cosign container image signature","extra":1}}"#,
                "critical.extra",
            ),
            (
                br#"{"critical":{"type":"cosign container image signature","identity":{"docker-reference":"a","x":1}}}"#,
                "critical.identity.x",
            ),
        ] {
            let e = parse(bytes, COSIGN).unwrap_err().to_string();
            assert!(e.contains(want), "{e} should name {want}");
        }
    }
}
