//! Why a signature did not vouch for an image, and why a key could not be used: each
//! reason a refused pull names (and counts, by [`SignatureError::reason`]).

/// One signature's failure, or a key's.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// The signature verified, but its payload is not a valid simple-signing document.
    #[error("invalid signature payload: {0}")]
    Payload(String),
    /// The signature is malformed (not base64, not DER, not OpenPGP).
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// No trusted key made this signature.
    #[error("signed by another key")]
    OtherKey,
    /// The signature is for another manifest than the one pulled.
    #[error("signature for another image: it signs manifest {signed}, not {pulled}")]
    OtherDigest { signed: String, pulled: String },
    /// The signature names an identity the policy's `signedIdentity` does not accept.
    #[error(
        "signature for another image: it names {signed}, which does not match {pulled} ({rule})"
    )]
    OtherIdentity {
        signed: String,
        pulled: String,
        rule: String,
    },
    /// A key file or keyData that cannot be used.
    #[error("key {name}: {why}")]
    Key { name: String, why: String },
    /// Fetching signatures failed (lookaside or registry).
    #[error("fetching signatures: {0}")]
    Fetch(String),
}

impl SignatureError {
    /// The metrics label of the reason.
    pub fn reason(&self) -> &'static str {
        match self {
            SignatureError::Payload(_) | SignatureError::Malformed(_) => "invalid_signature",
            SignatureError::OtherKey => "other_key",
            SignatureError::OtherDigest { .. } | SignatureError::OtherIdentity { .. } => {
                "other_image"
            }
            SignatureError::Key { .. } => "bad_key",
            SignatureError::Fetch(_) => "fetch_failed",
        }
    }
}
