//! [`ImageName`]: a fully qualified, normalised image name (registry, repository, and a tag
//! xor a digest), and [`Reference`], its tag-or-digest part.
//!
//! Normalisation happens in every constructor, so two names for the same image compare
//! equal: `index.docker.io` becomes `docker.io`, a one-component repository on docker.io
//! gets `library/`, a name without tag or digest gets `latest`, and `name:tag@digest`
//! keeps only the digest (the digest is what gets pulled).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::NameError;
use super::digest::Digest;
use super::grammar::{
    RawReference, check_name_length, parse_domain, split_reference, validate_path, validate_tag,
};

/// The tag given to a name that has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// Docker Hub's canonical registry name.
pub const DOCKER_IO: &str = "docker.io";
const DOCKER_IO_ALIAS: &str = "index.docker.io";
const DOCKER_IO_NAMESPACE: &str = "library/";

/// The part of a name that picks one image in a repository.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

/// A fully qualified image name: registry domain, repository path, and a tag XOR a digest.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct ImageName {
    registry: String,
    repository: String,
    reference: Reference,
}

impl ImageName {
    /// Parses a name whose first component is a registry (contains `.` or `:`, is
    /// `localhost`, or is an `[ipv6]` literal). Short names are refused: expanding them is
    /// [`super::resolve`]'s job.
    pub fn parse_qualified(s: &str) -> Result<ImageName, NameError> {
        let invalid = |reason: String| NameError::InvalidName {
            name: s.to_owned(),
            reason,
        };
        let raw = split_reference(s).map_err(invalid)?;
        let Some(domain) = raw.domain else {
            return Err(invalid(
                "not fully qualified: the part before the first \"/\" must be a registry host \
                 (containing \".\" or \":\", or \"localhost\")"
                    .to_owned(),
            ));
        };
        let reference = reference_of(&raw).map_err(invalid)?;
        build(domain, raw.path, reference).map_err(invalid)
    }

    /// Builds a name from its parts, validating and normalising each (see the module doc).
    pub fn new(
        registry: &str,
        repository: &str,
        reference: Reference,
    ) -> Result<ImageName, NameError> {
        build(registry, repository, reference.clone()).map_err(|reason| NameError::InvalidName {
            name: format!("{registry}/{repository}{}", Suffix(&reference)),
            reason,
        })
    }

    /// The registry domain, with its port if any: `docker.io`, `127.0.0.1:5000`, `[::1]:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn reference(&self) -> &Reference {
        &self.reference
    }

    pub fn tag(&self) -> Option<&str> {
        match &self.reference {
            Reference::Tag(tag) => Some(tag),
            Reference::Digest(_) => None,
        }
    }

    pub fn digest(&self) -> Option<&Digest> {
        match &self.reference {
            Reference::Tag(_) => None,
            Reference::Digest(digest) => Some(digest),
        }
    }

    /// `registry/repository`, without tag or digest: `docker.io/library/busybox`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository, pinned to `d`.
    pub fn with_digest(&self, d: &Digest) -> ImageName {
        ImageName {
            registry: self.registry.clone(),
            repository: self.repository.clone(),
            reference: Reference::Digest(d.clone()),
        }
    }

    /// True for `repo@sha256:…` names.
    pub fn is_digest_name(&self) -> bool {
        matches!(self.reference, Reference::Digest(_))
    }
}

/// The tag or digest of a split reference: the digest wins, and no tag means `latest`.
pub(super) fn reference_of(raw: &RawReference<'_>) -> Result<Reference, String> {
    match raw.digest {
        Some(digest) => Digest::parse(digest)
            .map(Reference::Digest)
            .map_err(|e| e.to_string()),
        None => Ok(Reference::Tag(raw.tag.unwrap_or(DEFAULT_TAG).to_owned())),
    }
}

/// Validates and normalises the parts of a name; the error is a reason.
pub(super) fn build(
    registry: &str,
    repository: &str,
    reference: Reference,
) -> Result<ImageName, String> {
    parse_domain(registry)?;
    validate_path(repository)?;
    if let Reference::Tag(tag) = &reference {
        validate_tag(tag)?;
    }
    let registry = if registry == DOCKER_IO_ALIAS {
        DOCKER_IO
    } else {
        registry
    };
    let repository = if registry == DOCKER_IO && !repository.contains('/') {
        format!("{DOCKER_IO_NAMESPACE}{repository}")
    } else {
        repository.to_owned()
    };
    let name = ImageName {
        registry: registry.to_owned(),
        repository,
        reference,
    };
    check_name_length(&name.repo())?;
    Ok(name)
}

/// Formats a reference as the suffix of a name: `:tag` or `@sha256:…`.
struct Suffix<'a>(&'a Reference);

impl fmt::Display for Suffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Reference::Tag(tag) => write!(f, ":{tag}"),
            Reference::Digest(digest) => write!(f, "@{digest}"),
        }
    }
}

impl fmt::Display for ImageName {
    /// `registry/repository:tag` or `registry/repository@sha256:…`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}{}",
            self.registry,
            self.repository,
            Suffix(&self.reference)
        )
    }
}

impl FromStr for ImageName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ImageName::parse_qualified(s)
    }
}

impl Serialize for ImageName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ImageName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ImageName::parse_qualified(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn digest() -> Digest {
        Digest::parse(&format!("sha256:{HEX}")).unwrap()
    }

    fn parse(s: &str) -> ImageName {
        ImageName::parse_qualified(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn invalid_reason(s: &str) -> String {
        match ImageName::parse_qualified(s) {
            Err(NameError::InvalidName { name, reason }) => {
                assert_eq!(name, s, "the error names the input");
                reason
            }
            other => panic!("{s:?}: expected InvalidName, got {other:?}"),
        }
    }

    #[test]
    fn qualified_names_parse_and_normalise() {
        let d = format!("sha256:{HEX}");
        // (input, registry, repository, tag)
        let cases = [
            (
                "docker.io/busybox",
                "docker.io",
                "library/busybox",
                "latest",
            ),
            (
                "docker.io/library/busybox:1.36",
                "docker.io",
                "library/busybox",
                "1.36",
            ),
            (
                "index.docker.io/busybox",
                "docker.io",
                "library/busybox",
                "latest",
            ),
            ("index.docker.io/org/app:v1", "docker.io", "org/app", "v1"),
            ("docker.io/org/app", "docker.io", "org/app", "latest"),
            ("quay.io/busybox", "quay.io", "busybox", "latest"),
            ("quay.io/a/b/c:x_y", "quay.io", "a/b/c", "x_y"),
            ("localhost/foo", "localhost", "foo", "latest"),
            ("localhost:5000/foo:V1", "localhost:5000", "foo", "V1"),
            (
                "127.0.0.1:5000/busybox",
                "127.0.0.1:5000",
                "busybox",
                "latest",
            ),
            ("[::1]:5000/busybox:1", "[::1]:5000", "busybox", "1"),
            ("[fd00::1]/x", "[fd00::1]", "x", "latest"),
            (
                "Registry.Example.COM/app",
                "Registry.Example.COM",
                "app",
                "latest",
            ),
        ];
        for (input, registry, repository, tag) in cases {
            let n = parse(input);
            assert_eq!(n.registry(), registry, "{input:?}");
            assert_eq!(n.repository(), repository, "{input:?}");
            assert_eq!(n.tag(), Some(tag), "{input:?}");
            assert_eq!(n.digest(), None);
            assert!(!n.is_digest_name());
            assert_eq!(n.to_string(), format!("{registry}/{repository}:{tag}"));
            assert_eq!(n.repo(), format!("{registry}/{repository}"));
        }
        let n = parse(&format!("quay.io/app@{d}"));
        assert_eq!(n.reference(), &Reference::Digest(digest()));
        assert_eq!(n.to_string(), format!("quay.io/app@{d}"));
    }

    #[test]
    fn tag_and_digest_keeps_only_the_digest() {
        let n = parse(&format!("docker.io/busybox:1.36@sha256:{HEX}"));
        assert_eq!(n.tag(), None);
        assert_eq!(n.digest(), Some(&digest()));
        assert!(n.is_digest_name());
        assert_eq!(
            n.to_string(),
            format!("docker.io/library/busybox@sha256:{HEX}")
        );
    }

    #[test]
    fn unqualified_names_are_refused() {
        for input in [
            "busybox",
            "busybox:1",
            "library/busybox",
            "myreg/foo",
            "localhost",
            "localhost:5000",
        ] {
            let reason = invalid_reason(input);
            assert!(
                reason.contains("not fully qualified"),
                "{input:?}: {reason}"
            );
        }
    }

    #[test]
    fn invalid_qualified_names_are_refused_with_the_parser_reason() {
        let long_tag = format!("quay.io/a:{}", "t".repeat(129));
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("quay.io/Busybox", "must be lowercase"),
            ("quay.io/a//b", "empty path component"),
            ("quay.io/a/", "empty path component"),
            ("quay.io/a b", "invalid character ' '"),
            ("quay.io/a:b@c", "invalid digest"),
            ("quay.io/a@sha256:abc", "expected 64 hex characters"),
            ("quay.io/a@sha512:abc", "only sha256 is supported"),
            (&long_tag, "longer than 128"),
            ("docker://quay.io/a", "transport prefix"),
        ];
        for (input, want) in cases {
            let reason = invalid_reason(input);
            assert!(
                reason.contains(want),
                "{input:?}: {reason:?} lacks {want:?}"
            );
        }
        let upper = format!("quay.io/a@sha256:{}", HEX.to_uppercase());
        assert!(invalid_reason(&upper).contains("lower-case"));
    }

    #[test]
    fn whole_name_longer_than_255_is_refused_after_normalisation() {
        // 245 + "docker.io/" = 255 before normalisation, 263 after adding "library/".
        let repo = "a".repeat(245);
        assert!(invalid_reason(&format!("docker.io/{repo}")).contains("more than 255"));
        assert!(ImageName::parse_qualified(&format!("quay.io/{}", "a".repeat(247))).is_ok());
        assert!(ImageName::parse_qualified(&format!("quay.io/{}", "a".repeat(248))).is_err());
    }

    #[test]
    fn new_validates_and_normalises_each_part() {
        let tag = |t: &str| Reference::Tag(t.to_owned());
        let n = ImageName::new("index.docker.io", "busybox", tag("latest")).unwrap();
        assert_eq!(n, parse("docker.io/library/busybox:latest"));
        let n = ImageName::new("[::1]:5000", "a/b", Reference::Digest(digest())).unwrap();
        assert_eq!(n.to_string(), format!("[::1]:5000/a/b@sha256:{HEX}"));

        let cases = [
            ("", "busybox", tag("latest"), "empty registry host"),
            (
                "bad host",
                "busybox",
                tag("latest"),
                "invalid registry host",
            ),
            ("quay.io", "Busybox", tag("latest"), "must be lowercase"),
            ("quay.io", "", tag("latest"), "missing repository name"),
            ("quay.io", "a//b", tag("latest"), "empty path component"),
            ("quay.io", "busybox", tag(""), "empty tag"),
            ("quay.io", "busybox", tag("a b"), "invalid character ' '"),
        ];
        for (registry, repository, reference, want) in cases {
            match ImageName::new(registry, repository, reference.clone()) {
                Err(NameError::InvalidName { name, reason }) => {
                    assert!(
                        reason.contains(want),
                        "{registry:?} {repository:?}: {reason}"
                    );
                    assert!(name.starts_with(&format!("{registry}/{repository}")));
                }
                other => panic!("{registry:?} {repository:?}: got {other:?}"),
            }
        }
    }

    #[test]
    fn with_digest_keeps_the_repository() {
        let n = parse("quay.io/org/app:v1").with_digest(&digest());
        assert_eq!(n.repo(), "quay.io/org/app");
        assert_eq!(n.digest(), Some(&digest()));
        assert_eq!(n.tag(), None);
    }

    #[test]
    fn display_round_trips_through_parse_and_serde() {
        for input in [
            "docker.io/library/busybox:latest",
            "[::1]:5000/busybox:1",
            "localhost/a/b:c",
            &format!("quay.io/app@sha256:{HEX}"),
        ] {
            let n = parse(input);
            assert_eq!(n.to_string(), input);
            assert_eq!(input.parse::<ImageName>().unwrap(), n);
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(json, format!("\"{input}\""));
            assert_eq!(serde_json::from_str::<ImageName>(&json).unwrap(), n);
        }
        assert!(serde_json::from_str::<ImageName>("\"busybox\"").is_err());
    }
}
