//! [`resolve`]: what a user-supplied image string means, as a pure function.
//!
//! The rules are design.md's "Resolving a name to pull" (CRI-O's `ResolveNames`):
//! 1. A lowercase hex string of at least [`MIN_TRUNCATED_ID_LEN`] characters (optionally
//!    `sha256:`-prefixed) that starts the ID of an image in the store is that image's ID.
//!    A truncated ID is therefore never sent to a registry.
//! 2. A full 64-hex ID that no image has is an error, never a name.
//! 3. Anything else must be a valid docker reference.
//! 4. A qualified name is the only candidate.
//! 5. A short name becomes one candidate per configured registry, in order, duplicates
//!    removed; `library/` is added only on docker.io and only to one-component names.
//! 6. A short name with no registries configured is an error.
//!
//! The store lookup is passed in, so this module does no I/O.

use super::NameError;
use super::digest::{Digest, ImageId};
use super::grammar::split_reference;
use super::reference::{ImageName, Reference, build, reference_of};

/// Shortest hex string taken as a truncated image ID.
pub const MIN_TRUNCATED_ID_LEN: usize = 3;
const ID_PREFIX: &str = "sha256:";
const FULL_ID_LEN: usize = 64;

/// What a user-supplied string resolves to.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Resolved {
    /// The string is (a prefix of) the ID of an image in the store.
    Id(ImageId),
    /// Candidate names to try, in order (one when the input was qualified).
    Names(Vec<ImageName>),
}

/// Resolves `input` against the store (`find_id`) and the unqualified-search `registries`.
///
/// `find_id` gets the input without its optional `sha256:` prefix, only when that is
/// lowercase hex of at least [`MIN_TRUNCATED_ID_LEN`] characters, and returns the full ID
/// of the one image whose ID starts with it (`None` when no image or several do). An answer
/// whose hex does not start with the string it was given is ignored.
///
/// A `registries` entry is `host[:port]`, optionally followed by `/namespace`, which is
/// put in front of the repository (`quay.io/org` + `app` → `quay.io/org/app`).
pub fn resolve(
    input: &str,
    registries: &[String],
    find_id: impl Fn(&str) -> Option<ImageId>,
) -> Result<Resolved, NameError> {
    let invalid = |reason: String| NameError::InvalidName {
        name: input.to_owned(),
        reason,
    };
    if input.is_empty() {
        return Err(invalid("empty".to_owned()));
    }

    let (prefixed, hex) = match input.strip_prefix(ID_PREFIX) {
        Some(hex) => (true, hex),
        None => (false, input),
    };
    let lower_hex = !hex.is_empty() && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if lower_hex && hex.len() >= MIN_TRUNCATED_ID_LEN {
        if let Some(id) = find_id(hex).filter(|id| id.hex().starts_with(hex)) {
            return Ok(Resolved::Id(id));
        }
        if hex.len() == FULL_ID_LEN {
            return Err(NameError::UnknownImageId {
                input: input.to_owned(),
            });
        }
    }
    if prefixed {
        // "sha256:" announces an ID; whatever follows is not a full one (that case returned
        // above), so say what is wrong with it as a digest.
        return Err(Digest::parse(input)
            .err()
            .unwrap_or_else(|| NameError::UnknownImageId {
                input: input.to_owned(),
            }));
    }

    let raw = split_reference(input).map_err(invalid)?;
    let reference = reference_of(&raw).map_err(invalid)?;
    if let Some(domain) = raw.domain {
        let name = build(domain, raw.path, reference).map_err(invalid)?;
        return Ok(Resolved::Names(vec![name]));
    }
    if registries.is_empty() {
        return Err(NameError::NoRegistries {
            name: input.to_owned(),
        });
    }
    let mut names: Vec<ImageName> = Vec::with_capacity(registries.len());
    for entry in registries {
        let (domain, repository) = match entry.split_once('/') {
            Some((domain, namespace)) => (domain, format!("{namespace}/{}", raw.path)),
            None => (entry.as_str(), raw.path.to_owned()),
        };
        let name = build(domain, &repository, reference.clone())
            .map_err(|reason| invalid(format!("with configured registry {entry:?}: {reason}")))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(Resolved::Names(names))
}

/// A short (unqualified) name, split into its repository path and tag-or-digest.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ShortName {
    /// The repository path as written (`busybox`, `org/app`): no `library/` added.
    pub path: String,
    /// The tag (default `latest`) or digest.
    pub reference: Reference,
}

/// `input` as a short name, or `None` when it is qualified or not a valid name.
pub fn short_name(input: &str) -> Option<ShortName> {
    let raw = split_reference(input).ok()?;
    if raw.domain.is_some() {
        return None;
    }
    let reference = reference_of(&raw).ok()?;
    Some(ShortName {
        path: raw.path.to_owned(),
        reference,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";

    fn id(hex: &str) -> ImageId {
        ImageId::parse(hex).unwrap()
    }

    /// A store holding the images `ids`; the lookup answers only unambiguous prefixes.
    fn store(ids: &[&'static str]) -> impl Fn(&str) -> Option<ImageId> {
        let ids = ids.to_vec();
        move |prefix: &str| {
            let mut hits = ids.iter().filter(|h| h.starts_with(prefix));
            match (hits.next(), hits.next()) {
                (Some(h), None) => Some(id(h)),
                _ => None,
            }
        }
    }

    fn never_called(s: &str) -> Option<ImageId> {
        panic!("find_id must not be called, got {s:?}")
    }

    fn regs(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn names(input: &str, registries: &[&str]) -> Vec<String> {
        match resolve(input, &regs(registries), store(&[HEX])) {
            Ok(Resolved::Names(names)) => names.iter().map(ToString::to_string).collect(),
            other => panic!("{input:?}: expected names, got {other:?}"),
        }
    }

    #[test]
    fn truncated_id_expands_to_the_full_id_with_and_without_sha256_prefix() {
        let cases = [
            "012",
            "0123456789",
            HEX,
            "sha256:012",
            &format!("sha256:{HEX}"),
        ];
        for input in cases {
            let seen = RefCell::new(Vec::new());
            let lookup = |s: &str| {
                seen.borrow_mut().push(s.to_owned());
                store(&[HEX, OTHER])(s)
            };
            assert_eq!(
                resolve(input, &regs(&["docker.io"]), lookup),
                Ok(Resolved::Id(id(HEX))),
                "{input:?}"
            );
            let want = input.trim_start_matches("sha256:");
            assert_eq!(*seen.borrow(), [want], "lookup gets the bare hex");
        }
    }

    #[test]
    fn truncated_id_shorter_than_three_is_treated_as_name() {
        for (input, want) in [
            ("ab", "docker.io/library/ab:latest"),
            ("0", "docker.io/library/0:latest"),
        ] {
            assert_eq!(
                resolve(input, &regs(&["docker.io"]), never_called),
                Ok(Resolved::Names(vec![
                    ImageName::parse_qualified(want).unwrap()
                ])),
                "{input:?}"
            );
        }
    }

    #[test]
    fn lookup_is_only_asked_about_lowercase_hex() {
        for input in [
            "busybox",
            "abg",
            "ABC",
            "abc:latest",
            "quay.io/abc",
            "sha256:xyz",
        ] {
            let _ = resolve(input, &regs(&["docker.io"]), never_called);
        }
    }

    #[test]
    fn hex_prefix_of_no_image_is_treated_as_name() {
        assert_eq!(
            names("abc", &["docker.io"]),
            ["docker.io/library/abc:latest"]
        );
        // Ambiguous prefix: the lookup answers None, so it is a name too.
        let ambiguous = resolve("0123", &regs(&["quay.io"]), store(&[HEX, "0123ff"]));
        assert_eq!(
            ambiguous,
            Ok(Resolved::Names(vec![
                ImageName::parse_qualified("quay.io/0123").unwrap()
            ]))
        );
    }

    #[test]
    fn lookup_answer_not_starting_with_the_input_is_ignored() {
        let wrong = |_: &str| Some(id(OTHER));
        assert_eq!(
            resolve("abc", &regs(&["quay.io"]), wrong),
            Ok(Resolved::Names(vec![
                ImageName::parse_qualified("quay.io/abc").unwrap()
            ]))
        );
    }

    #[test]
    fn full_hex_id_of_no_image_is_unknown_image_id() {
        for input in [OTHER.to_owned(), format!("sha256:{OTHER}")] {
            assert_eq!(
                resolve(&input, &regs(&["docker.io"]), store(&[HEX])),
                Err(NameError::UnknownImageId {
                    input: input.clone()
                })
            );
        }
    }

    #[test]
    fn sha256_prefix_without_a_full_id_is_an_invalid_digest() {
        let upper = format!("sha256:{}", HEX.to_uppercase());
        let cases: &[(&str, &str)] = &[
            ("sha256:", "got 0"),
            ("sha256:ab", "got 2"),
            ("sha256:abcd", "got 4"),
            ("sha256:busybox", "got 7"),
            (&upper, "lower-case"),
        ];
        for (input, want) in cases {
            match resolve(input, &regs(&["docker.io"]), store(&[HEX])) {
                Err(NameError::InvalidDigest { digest, reason }) => {
                    assert_eq!(digest, *input);
                    assert!(reason.contains(want), "{input:?}: {reason}");
                }
                other => panic!("{input:?}: got {other:?}"),
            }
        }
    }

    #[test]
    fn invalid_names_fail_with_the_parser_reason() {
        let long_tag = format!("busybox:{}", "x".repeat(129));
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "must be lowercase"),
            (&HEX.to_uppercase(), "must be lowercase"),
            ("busy box", "invalid character ' '"),
            ("a//b", "empty path component"),
            ("a/b/", "empty path component"),
            ("busybox:bad!tag", "invalid character '!'"),
            (&long_tag, "longer than 128"),
            ("docker://busybox", "transport prefix"),
            ("docker://quay.io/busybox", "transport prefix"),
            ("busybox@sha256:abc", "expected 64 hex characters"),
            ("busybox@md5:abc", "only sha256 is supported"),
        ];
        for (input, want) in cases {
            match resolve(input, &regs(&["docker.io"]), store(&[HEX])) {
                Err(NameError::InvalidName { name, reason }) => {
                    assert_eq!(name, *input);
                    assert!(
                        reason.contains(want),
                        "{input:?}: {reason:?} lacks {want:?}"
                    );
                }
                other => panic!("{input:?}: got {other:?}"),
            }
        }
    }

    #[test]
    fn qualified_names_are_the_only_candidate_whatever_the_registries() {
        let digest = format!("quay.io/app@sha256:{HEX}");
        let cases = [
            ("quay.io/busybox", "quay.io/busybox:latest"),
            ("docker.io/busybox:1", "docker.io/library/busybox:1"),
            (
                "index.docker.io/busybox",
                "docker.io/library/busybox:latest",
            ),
            ("localhost/app:dev", "localhost/app:dev"),
            ("127.0.0.1:5000/app", "127.0.0.1:5000/app:latest"),
            ("[::1]:5000/app", "[::1]:5000/app:latest"),
            (&digest, &digest),
        ];
        for (input, want) in cases {
            for registries in [&[][..], &["docker.io", "quay.io"][..]] {
                assert_eq!(names(input, registries), [want], "{input:?}");
            }
        }
    }

    #[test]
    fn short_names_expand_against_registries_in_order() {
        let registries = ["registry.fedoraproject.org", "docker.io", "quay.io"];
        let cases: &[(&str, &[&str])] = &[
            (
                "busybox",
                &[
                    "registry.fedoraproject.org/busybox:latest",
                    "docker.io/library/busybox:latest",
                    "quay.io/busybox:latest",
                ],
            ),
            (
                "org/app:v2",
                &[
                    "registry.fedoraproject.org/org/app:v2",
                    "docker.io/org/app:v2",
                    "quay.io/org/app:v2",
                ],
            ),
            (
                "myreg/foo",
                &[
                    "registry.fedoraproject.org/myreg/foo:latest",
                    "docker.io/myreg/foo:latest",
                    "quay.io/myreg/foo:latest",
                ],
            ),
        ];
        for (input, want) in cases {
            assert_eq!(names(input, &registries), *want, "{input:?}");
        }
        let digest = format!("busybox@sha256:{HEX}");
        assert_eq!(
            names(&digest, &["docker.io", "localhost:5000"]),
            [
                format!("docker.io/library/busybox@sha256:{HEX}"),
                format!("localhost:5000/busybox@sha256:{HEX}"),
            ]
        );
    }

    #[test]
    fn duplicate_candidates_are_removed_keeping_the_first() {
        assert_eq!(
            names(
                "busybox",
                &["quay.io", "docker.io", "quay.io", "index.docker.io"]
            ),
            ["quay.io/busybox:latest", "docker.io/library/busybox:latest"]
        );
    }

    #[test]
    fn registry_with_namespace_prefixes_the_repository() {
        assert_eq!(
            names("app", &["quay.io/org", "docker.io/org"]),
            ["quay.io/org/app:latest", "docker.io/org/app:latest"]
        );
    }

    #[test]
    fn short_names_split_and_qualified_names_are_not_short() {
        let s = short_name("org/app:v1").unwrap();
        assert_eq!(s.path, "org/app");
        assert_eq!(s.reference, Reference::Tag("v1".into()));
        assert_eq!(
            short_name("busybox").unwrap().reference,
            Reference::Tag("latest".into())
        );
        assert_eq!(short_name("quay.io/app"), None);
        assert_eq!(short_name("localhost/app"), None);
        assert_eq!(short_name("Bad"), None);
    }

    #[test]
    fn short_name_without_registries_is_no_registries() {
        assert_eq!(
            resolve("busybox:1", &[], store(&[HEX])),
            Err(NameError::NoRegistries {
                name: "busybox:1".to_owned()
            })
        );
    }

    #[test]
    fn invalid_configured_registry_is_reported_with_the_name() {
        match resolve("busybox", &regs(&["quay.io", "bad host"]), store(&[])) {
            Err(NameError::InvalidName { name, reason }) => {
                assert_eq!(name, "busybox");
                assert!(reason.contains("\"bad host\""), "{reason}");
            }
            other => panic!("got {other:?}"),
        }
    }
}
