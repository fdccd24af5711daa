//! GPG simple signatures (`signedBy` with `keyType: GPGKeys`), verified with rPGP (the
//! `pgp` crate: MIT/Apache-2.0, pure Rust; GPGME, which containers/image uses, is LGPL and
//! C). A signature is an OpenPGP signed message, usually compressed, as `gpg --sign` and
//! `skopeo copy --sign-by` write it; its literal data is the simple-signing payload of
//! type [`payload::ATOMIC`]. Keys are keyrings, binary (`gpg --export`) or armored
//! (`gpg --export --armor`), one key or several; a key whose self-signatures do not verify
//! is refused when the policy is loaded, and a signature by any of a key's subkeys counts.

use std::io::{BufReader, Read as _};

use pgp::composed::{Deserializable as _, Message, SignedPublicKey};

use super::payload::{self, Payload};
use super::sig_error::SignatureError;

/// The largest signature file read (containers/image: 4 MiB).
pub const MAX_SIGNATURE: u64 = 4 << 20;

/// The trusted keys of one requirement.
#[derive(Clone, Debug, Default)]
pub struct Keyring(Vec<SignedPublicKey>);

impl Keyring {
    /// Parses a keyring (binary or armored); `name` (its file, or "keyData") names it in
    /// errors.
    pub fn parse(bytes: &[u8], name: &str) -> Result<Keyring, SignatureError> {
        let bad = |why: String| SignatureError::Key {
            name: name.to_owned(),
            why,
        };
        let armored = bytes
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .is_some_and(|i| bytes[i..].starts_with(b"-----BEGIN"));
        let keys: Vec<SignedPublicKey> = if armored {
            SignedPublicKey::from_armor_many(bytes)
                .map_err(|e| bad(format!("not an OpenPGP public key: {e}")))?
                .0
                .collect::<Result<_, _>>()
        } else {
            SignedPublicKey::from_bytes_many(bytes)
                .map_err(|e| bad(format!("not an OpenPGP public key: {e}")))?
                .collect::<Result<_, _>>()
        }
        .map_err(|e| bad(format!("not an OpenPGP public key: {e}")))?;
        if keys.is_empty() {
            return Err(bad("holds no public key".into()));
        }
        for k in &keys {
            k.verify_bindings()
                .map_err(|e| bad(format!("a key's self-signature does not verify: {e}")))?;
        }
        Ok(Keyring(keys))
    }

    pub fn extend(&mut self, other: Keyring) {
        self.0.extend(other.0);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Verifies one signature file's bytes with any key of `ring`, then parses its payload.
pub fn verify(ring: &Keyring, signature: &[u8]) -> Result<Payload, SignatureError> {
    let malformed = |e: &dyn std::fmt::Display| {
        SignatureError::Malformed(format!("not an OpenPGP signed message: {e}"))
    };
    let parse = || -> Result<Message<'_>, SignatureError> {
        let msg = Message::from_bytes(BufReader::new(signature)).map_err(|e| malformed(&e))?;
        let msg = if msg.is_compressed() {
            msg.decompress().map_err(|e| malformed(&e))?
        } else {
            msg
        };
        if !msg.is_signed() {
            return Err(SignatureError::Malformed(
                "an OpenPGP message without a signature".into(),
            ));
        }
        Ok(msg)
    };
    for key in &ring.0 {
        // The message is a stream: read it again for each candidate key.
        let mut msg = parse()?;
        let mut data = Vec::new();
        (&mut msg)
            .take(payload::MAX_PAYLOAD)
            .read_to_end(&mut data)
            .map_err(|e| malformed(&e))?;
        if data.len() as u64 >= payload::MAX_PAYLOAD {
            return Err(SignatureError::Malformed("the payload is too large".into()));
        }
        let by_primary = msg.verify(key).is_ok();
        let by_subkey = || key.public_subkeys.iter().any(|s| msg.verify(s).is_ok());
        if by_primary || by_subkey() {
            return payload::parse(&data, payload::ATOMIC);
        }
    }
    // Parsed at least once to tell a malformed file from another key's.
    parse()?;
    Err(SignatureError::OtherKey)
}
