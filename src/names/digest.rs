//! [`Digest`] (`sha256:<64 lowercase hex>`) and [`ImageId`] (the digest of an image's
//! config blob). Only sha256 exists here: it is what registries and the store use, and
//! refusing the rest keeps every comparison a plain string comparison.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::NameError;

const ALGORITHM: &str = "sha256";
const PREFIX: &str = "sha256:";
const HEX_LEN: usize = 64;

/// A content digest, always `sha256:` followed by 64 lowercase hex characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Digest(String);

impl Digest {
    /// Parses `sha256:<64 lowercase hex>`. Other algorithms, other lengths, upper-case or
    /// non-hex characters are refused.
    pub fn parse(s: &str) -> Result<Digest, NameError> {
        let invalid = |reason: String| NameError::InvalidDigest {
            digest: s.to_owned(),
            reason,
        };
        let Some((algorithm, hex)) = s.split_once(':') else {
            return Err(invalid(format!(
                "missing algorithm: expected \"{PREFIX}<{HEX_LEN} hex>\""
            )));
        };
        if algorithm != ALGORITHM {
            return Err(invalid(format!(
                "unsupported algorithm {algorithm:?}: only sha256 is supported"
            )));
        }
        check_hex(hex).map_err(invalid)?;
        Ok(Digest(s.to_owned()))
    }

    /// The sha256 digest of `bytes` (a document held in memory).
    pub fn of(bytes: &[u8]) -> Digest {
        use sha2::Digest as _;
        Digest::from_sha256(sha2::Sha256::digest(bytes).into())
    }

    /// The digest of finished sha256 output.
    pub fn from_sha256(bytes: [u8; 32]) -> Digest {
        Digest(format!("{PREFIX}{}", hex::encode(bytes)))
    }

    /// The whole digest, `sha256:…`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 32 bytes of the sha256 (a compact key for sets of many digests).
    pub fn sha256(&self) -> [u8; 32] {
        let mut out = [0; 32];
        // Parsed or computed: always 64 lowercase hex characters.
        hex::decode_to_slice(self.hex(), &mut out).expect("a Digest holds 64 hex characters");
        out
    }

    /// The 64 hex characters, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[PREFIX.len()..]
    }

    /// Always `sha256`.
    pub fn algorithm(&self) -> &str {
        ALGORITHM
    }
}

/// Checks that `hex` is exactly 64 lowercase hex characters; the error is a reason.
pub(super) fn check_hex(hex: &str) -> Result<(), String> {
    if hex.len() != HEX_LEN {
        return Err(format!(
            "expected {HEX_LEN} hex characters, got {}",
            hex.chars().count()
        ));
    }
    if let Some(c) = hex.chars().find(|c| !matches!(c, '0'..='9' | 'a'..='f')) {
        return Err(if c.is_ascii_hexdigit() {
            "hex must be lower-case".to_owned()
        } else {
            format!("invalid character {c:?} in hex")
        });
    }
    Ok(())
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Digest {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The ID of an image: the digest of its config blob.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ImageId(Digest);

impl ImageId {
    pub fn new(d: Digest) -> Self {
        ImageId(d)
    }

    /// Parses a full ID, `sha256:<64 hex>` or the bare 64 hex characters (the form the
    /// CRI and `crictl` print). Truncated IDs are for [`super::resolve`], not for this.
    pub fn parse(s: &str) -> Result<ImageId, NameError> {
        if s.contains(':') {
            Digest::parse(s).map(ImageId)
        } else {
            Digest::parse(&format!("{PREFIX}{s}"))
                .map(ImageId)
                .map_err(|e| match e {
                    NameError::InvalidDigest { reason, .. } => NameError::InvalidDigest {
                        digest: s.to_owned(),
                        reason,
                    },
                    other => other,
                })
        }
    }

    pub fn digest(&self) -> &Digest {
        &self.0
    }

    /// `sha256:…`.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The 64 hex characters.
    pub fn hex(&self) -> &str {
        self.0.hex()
    }
}

impl From<Digest> for ImageId {
    fn from(d: Digest) -> Self {
        ImageId(d)
    }
}

impl fmt::Display for ImageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ImageId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageId::parse(s)
    }
}

impl Serialize for ImageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ImageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Digest::deserialize(deserializer).map(ImageId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn reason(s: &str) -> String {
        match Digest::parse(s) {
            Err(NameError::InvalidDigest { digest, reason }) => {
                assert_eq!(digest, s, "the error names the input");
                reason
            }
            other => panic!("{s:?}: expected InvalidDigest, got {other:?}"),
        }
    }

    #[test]
    fn valid_sha256_digest_parses_and_splits() {
        let s = format!("sha256:{HEX}");
        let d = Digest::parse(&s).unwrap();
        assert_eq!(d.as_str(), s);
        assert_eq!(d.hex(), HEX);
        assert_eq!(d.algorithm(), "sha256");
        assert_eq!(d.to_string(), s);
        assert_eq!(s.parse::<Digest>().unwrap(), d);
    }

    #[test]
    fn invalid_digests_are_refused_with_a_reason() {
        let upper = format!("sha256:{}", HEX.to_uppercase());
        let short = format!("sha256:{}", &HEX[..63]);
        let long = format!("sha256:{HEX}0");
        let non_hex = format!("sha256:{}g", &HEX[..63]);
        let sha512 = format!("sha512:{HEX}{HEX}");
        let cases: &[(&str, &str)] = &[
            ("", "missing algorithm"),
            (HEX, "missing algorithm"),
            ("sha256:", "expected 64 hex characters, got 0"),
            ("sha256:abc", "expected 64 hex characters, got 3"),
            (&short, "got 63"),
            (&long, "got 65"),
            (&upper, "lower-case"),
            (&non_hex, "invalid character 'g'"),
            (&sha512, "only sha256 is supported"),
            ("SHA256:abc", "only sha256 is supported"),
            (":abc", "only sha256 is supported"),
        ];
        for (input, want) in cases {
            let got = reason(input);
            assert!(
                got.contains(want),
                "{input:?}: reason {got:?} lacks {want:?}"
            );
        }
    }

    #[test]
    fn from_sha256_encodes_lowercase_hex() {
        use sha2::{Digest as _, Sha256};
        let d = Digest::from_sha256(Sha256::digest(b"").into());
        assert_eq!(
            d.as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(
            Digest::from_sha256([0xAB; 32]).hex(),
            "ab".repeat(32),
            "never upper-case"
        );
    }

    #[test]
    fn digest_serde_is_the_string_and_deserialize_validates() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"sha256:{HEX}\""));
        assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
        let err = serde_json::from_str::<Digest>("\"sha256:abc\"").unwrap_err();
        assert!(err.to_string().contains("expected 64 hex"), "{err}");
        assert!(serde_json::from_str::<Digest>("\"md5:abc\"").is_err());
    }

    #[test]
    fn image_id_wraps_a_digest() {
        let d = Digest::parse(&format!("sha256:{HEX}")).unwrap();
        let id = ImageId::new(d.clone());
        assert_eq!(id.digest(), &d);
        assert_eq!(id.as_str(), d.as_str());
        assert_eq!(id.hex(), HEX);
        assert_eq!(id.to_string(), format!("sha256:{HEX}"));
        assert_eq!(ImageId::from(d), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ImageId>(&json).unwrap(), id);
    }

    #[test]
    fn image_id_parses_with_or_without_the_algorithm() {
        let want = ImageId::new(Digest::parse(&format!("sha256:{HEX}")).unwrap());
        assert_eq!(ImageId::parse(HEX).unwrap(), want);
        assert_eq!(format!("sha256:{HEX}").parse::<ImageId>().unwrap(), want);
        for bad in ["abc", "", &HEX.to_uppercase(), "sha512:abc"] {
            assert!(
                matches!(ImageId::parse(bad), Err(NameError::InvalidDigest { ref digest, .. }) if digest == bad),
                "{bad:?}"
            );
        }
    }
}
