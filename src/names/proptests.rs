//! Property tests of the name and digest parsers: they never panic, whatever the input;
//! an accepted name prints to a string that parses back to the same name; and nothing
//! accepted holds what a file path or a registry URL must not (whitespace, `..`, an
//! upper-case repository, a digest other than 64 lowercase hex). Regression seeds
//! proptest finds are kept in `proptest-regressions/names/proptests.txt`; hand-picked
//! inputs are unit cases below.

use proptest::prelude::*;

use super::{Digest, ImageId, ImageName, Reference, resolve, short_name};

/// Strings shaped like image names, so many are valid and the rest are near misses.
fn name_like() -> impl Strategy<Value = String> {
    let domain = "([a-zA-Z0-9-]{1,8}(\\.[a-zA-Z0-9-]{1,8}){0,2}|localhost|\\[::1\\])(:[0-9]{1,6})?";
    let path = "[a-zA-Z0-9._/ -]{1,24}";
    let tag = "(:[A-Za-z0-9_.-]{0,20})?";
    let digest = "(@(sha256|sha512|SHA256)?:?[0-9a-fA-F./]{0,66})?";
    (
        proptest::string::string_regex(&format!("({domain}/)?")).expect("domain regex"),
        proptest::string::string_regex(path).expect("path regex"),
        proptest::string::string_regex(tag).expect("tag regex"),
        proptest::string::string_regex(digest).expect("digest regex"),
    )
        .prop_map(|(d, p, t, g)| format!("{d}{p}{t}{g}"))
}

/// What every accepted name must satisfy.
fn check_accepted(input: &str, n: &ImageName) {
    let shown = n.to_string();
    assert_eq!(
        ImageName::parse_qualified(&shown).as_ref(),
        Ok(n),
        "{input:?} → {shown:?} must parse back to the same name"
    );
    assert!(
        !shown.chars().any(char::is_whitespace),
        "{input:?}: whitespace in {shown:?}"
    );
    let repo = n.repository();
    assert!(
        !repo.is_empty()
            && repo
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."),
        "{input:?}: repository {repo:?} has an empty, . or .. component"
    );
    assert!(
        !repo.chars().any(|c| c.is_ascii_uppercase()),
        "{input:?}: upper case in repository {repo:?}"
    );
    assert!(
        !n.registry().contains('/') && !n.registry().is_empty(),
        "{input:?}: registry {:?}",
        n.registry()
    );
    match n.reference() {
        Reference::Tag(t) => assert!(
            !t.is_empty()
                && t.len() <= 128
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !t.starts_with(['.', '-']),
            "{input:?}: tag {t:?}"
        ),
        Reference::Digest(d) => check_digest(d),
    }
}

fn check_digest(d: &Digest) {
    let hex = d.as_str().strip_prefix("sha256:").expect("sha256 prefix");
    assert_eq!(hex.len(), 64, "{d}");
    assert!(
        hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
        "{d}"
    );
}

fn check_name_input(input: &str) {
    if let Ok(n) = ImageName::parse_qualified(input) {
        check_accepted(input, &n);
    }
    // Short-name expansion and resolution never panic either; what they produce is valid.
    let resolved = resolve(input, &["docker.io".to_owned()], |_| None);
    if let Ok(super::Resolved::Names(names)) = resolved {
        for n in &names {
            check_accepted(input, n);
        }
    }
    if let Some(short) = short_name(input) {
        assert!(!short.path.chars().any(char::is_whitespace), "{input:?}");
    }
    if let Ok(d) = Digest::parse(input) {
        check_digest(&d);
    }
    if let Ok(id) = ImageId::parse(input) {
        check_digest(id.digest());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_string_is_parsed_without_panic(s in "\\PC{0,80}") {
        check_name_input(&s);
    }

    #[test]
    fn name_like_strings_round_trip_when_accepted(s in name_like()) {
        check_name_input(&s);
    }

    #[test]
    fn valid_names_are_accepted_and_round_trip(
        host in "[a-z0-9]{1,8}\\.[a-z]{2,4}",
        port in proptest::option::of(1u16..),
        path in "[a-z0-9]{1,8}(/[a-z0-9]{1,8}){0,3}",
        tag in "[A-Za-z0-9_][A-Za-z0-9_.-]{0,30}",
    ) {
        let port = port.map(|p| format!(":{p}")).unwrap_or_default();
        let s = format!("{host}{port}/{path}:{tag}");
        let n = ImageName::parse_qualified(&s).expect("a valid name");
        check_accepted(&s, &n);
        prop_assert_eq!(n.to_string(), s);
    }
}

#[test]
fn hand_picked_names() {
    let refused = [
        "",
        " ",
        "example.com/",
        "example.com//x",
        "example.com/../x",
        "example.com/a/../b",
        "example.com/a/./b",
        "example.com/a b",
        "example.com/A",
        "example.com/a\n:1",
        "example.com/a:",
        "example.com/a:-x",
        "example.com/a@sha256:../../x",
        "example.com/a@sha256:/etc",
        "example.com/a@sha256:",
        "example.com/a@sha512:00",
        "example.com/a@SHA256:0000000000000000000000000000000000000000000000000000000000000000",
        "example.com/a@sha256:000000000000000000000000000000000000000000000000000000000000000A",
        "example.com:99999999999999999999/a",
        "[::1/a",
        "x/y",
    ];
    for s in refused {
        assert!(
            ImageName::parse_qualified(s).is_err(),
            "{s:?} must be refused"
        );
        check_name_input(s);
    }
    for s in [
        "localhost/a:1",
        "[::1]:5000/a/b:c",
        "127.0.0.1:5000/a__b/c-d.e:T_1.0",
        "index.docker.io/busybox",
        "example.com/a@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ] {
        let n = ImageName::parse_qualified(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        check_accepted(s, &n);
    }
    for s in [
        "sha256:../../x",
        "sha256:/etc",
        "sha256:",
        "../../x",
        "/etc/passwd",
    ] {
        assert!(Digest::parse(s).is_err(), "{s:?}");
        assert!(ImageId::parse(s).is_err(), "{s:?}");
    }
}
