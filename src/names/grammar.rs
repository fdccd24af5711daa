//! The docker reference grammar (distribution/reference), hand-written.
//!
//! ```text
//! reference := name [ ":" tag ] [ "@" digest ]
//! name      := [ domain "/" ] path              (at most 255 characters)
//! domain    := host [ ":" port ]
//! host      := component ( "." component )*  |  "[" ipv6 "]"
//! component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]
//! port      := [0-9]+                           (we also require it to fit in 16 bits)
//! path      := path-part ( "/" path-part )*
//! path-part := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
//! tag       := [\w][\w.-]{0,127}
//! ```
//!
//! The first `/`-separated part is a domain only when it contains `.` or `:`, is
//! `localhost`, or is a bracketed IPv6 literal, and a `/` follows it. Every function here
//! returns a human-readable reason on failure; callers wrap it in a `NameError`.
//! Digests are left to `Digest::parse`.

use std::net::Ipv6Addr;

/// Longest `domain/path`, as in distribution/reference.
pub(super) const NAME_TOTAL_MAX: usize = 255;
/// Longest tag.
pub(super) const TAG_MAX: usize = 128;

/// A reference cut into its textual parts. Everything but the digest is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RawReference<'a> {
    pub domain: Option<&'a str>,
    pub path: &'a str,
    pub tag: Option<&'a str>,
    pub digest: Option<&'a str>,
}

/// A validated `domain`: the host (without brackets) and the port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HostPort<'a> {
    pub host: &'a str,
    /// The host was a bracketed IPv6 literal.
    pub ipv6: bool,
    pub port: Option<u16>,
}

/// Cuts `s` into domain, path, tag and digest, validating all but the digest.
pub(super) fn split_reference(s: &str) -> Result<RawReference<'_>, String> {
    if s.is_empty() {
        return Err("empty".to_owned());
    }
    if let Some(i) = s.find("://") {
        return Err(format!(
            "transport prefix {:?} is not accepted here: give a plain image reference",
            &s[..i + 3]
        ));
    }
    let (name_tag, digest) = match s.split_once('@') {
        Some((name_tag, digest)) => (name_tag, Some(digest)),
        None => (s, None),
    };
    let (name, tag) = split_tag(name_tag);
    let (domain, path) = split_domain(name);
    if let Some(domain) = domain {
        parse_domain(domain)?;
    }
    validate_path(path)?;
    if let Some(tag) = tag {
        validate_tag(tag)?;
    }
    check_name_length(name)?;
    if digest == Some("") {
        return Err("empty digest after \"@\"".to_owned());
    }
    Ok(RawReference {
        domain,
        path,
        tag,
        digest,
    })
}

/// The tag is what follows the last `:`, when no `/` comes after that `:`.
fn split_tag(name_tag: &str) -> (&str, Option<&str>) {
    match name_tag.rfind(':') {
        Some(i) if !name_tag[i..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    }
}

/// Splits off the domain when the first part looks like one (see the module doc).
fn split_domain(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest)) if looks_like_domain(first) => (Some(first), rest),
        _ => (None, name),
    }
}

fn looks_like_domain(first: &str) -> bool {
    first.contains(['.', ':']) || first == "localhost" || first.starts_with('[')
}

pub(super) fn check_name_length(name: &str) -> Result<(), String> {
    if name.len() > NAME_TOTAL_MAX {
        return Err(format!(
            "repository name must not be more than {NAME_TOTAL_MAX} characters, got {}",
            name.len()
        ));
    }
    Ok(())
}

/// Validates `host[:port]` or `[ipv6][:port]`.
pub(super) fn parse_domain(domain: &str) -> Result<HostPort<'_>, String> {
    if domain.is_empty() {
        return Err("empty registry host".to_owned());
    }
    let (host, ipv6, rest) = if let Some(bracketed) = domain.strip_prefix('[') {
        let Some(end) = bracketed.find(']') else {
            return Err(format!("unterminated \"[\" in registry {domain:?}"));
        };
        let inner = &bracketed[..end];
        let charset_ok =
            !inner.is_empty() && inner.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
        if !charset_ok || inner.parse::<Ipv6Addr>().is_err() {
            return Err(format!("invalid IPv6 address {inner:?} in registry"));
        }
        (inner, true, &bracketed[end + 1..])
    } else {
        let (host, rest) = match domain.find(':') {
            Some(i) => domain.split_at(i),
            None => (domain, ""),
        };
        validate_host(host)?;
        (host, false, rest)
    };
    let port = if rest.is_empty() {
        None
    } else if let Some(port) = rest.strip_prefix(':') {
        Some(parse_port(port)?)
    } else {
        return Err(format!(
            "unexpected {rest:?} after the IPv6 address in registry {domain:?}"
        ));
    };
    Ok(HostPort { host, ipv6, port })
}

fn validate_host(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty registry host".to_owned());
    }
    for component in host.split('.') {
        let ok = !component.is_empty()
            && component
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !component.starts_with('-')
            && !component.ends_with('-');
        if !ok {
            return Err(format!(
                "invalid registry host {host:?}: each dot-separated part must be letters, digits \
                 and inner hyphens"
            ));
        }
    }
    Ok(())
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("invalid registry port {port:?}: expected digits"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("registry port {port} is out of range"))
}

/// Validates a repository path: lowercase components separated by single `/`.
pub(super) fn validate_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("missing repository name".to_owned());
    }
    if path.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!("repository name {path:?} must be lowercase"));
    }
    path.split('/').try_for_each(validate_path_component)
}

/// `[a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*`
fn validate_path_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err(
            "empty path component: \"//\", or a leading or trailing \"/\" in the repository"
                .to_owned(),
        );
    }
    if let Some(c) = component
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
    {
        return Err(format!(
            "invalid character {c:?} in repository path component {component:?}"
        ));
    }
    let is_alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !component.starts_with(is_alnum) || !component.ends_with(is_alnum) {
        return Err(format!(
            "repository path component {component:?} must start and end with a lowercase \
             letter or digit"
        ));
    }
    // Only alphanumerics and separators remain; check each run of separators.
    for run in component.split(is_alnum).filter(|run| !run.is_empty()) {
        let ok = matches!(run, "." | "_" | "__") || run.chars().all(|c| c == '-');
        if !ok {
            return Err(format!(
                "invalid separator {run:?} in repository path component {component:?}"
            ));
        }
    }
    Ok(())
}

/// `[\w][\w.-]{0,127}`
pub(super) fn validate_tag(tag: &str) -> Result<(), String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    if tag.is_empty() {
        return Err("empty tag".to_owned());
    }
    if tag.len() > TAG_MAX {
        return Err(format!(
            "tag is longer than {TAG_MAX} characters ({})",
            tag.len()
        ));
    }
    if !tag.starts_with(word) {
        return Err(format!(
            "tag {tag:?} must start with a letter, a digit or \"_\""
        ));
    }
    if let Some(c) = tag.chars().find(|&c| !(word(c) || c == '.' || c == '-')) {
        return Err(format!("invalid character {c:?} in tag {tag:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw<'a>(
        domain: Option<&'a str>,
        path: &'a str,
        tag: Option<&'a str>,
        digest: Option<&'a str>,
    ) -> RawReference<'a> {
        RawReference {
            domain,
            path,
            tag,
            digest,
        }
    }

    #[test]
    fn references_split_into_domain_path_tag_and_digest() {
        let cases = [
            ("busybox", raw(None, "busybox", None, None)),
            ("busybox:1.36", raw(None, "busybox", Some("1.36"), None)),
            ("library/busybox", raw(None, "library/busybox", None, None)),
            (
                "docker.io/busybox",
                raw(Some("docker.io"), "busybox", None, None),
            ),
            ("localhost/foo", raw(Some("localhost"), "foo", None, None)),
            (
                "myreg:5000/a/b:t",
                raw(Some("myreg:5000"), "a/b", Some("t"), None),
            ),
            ("[::1]:5000/foo", raw(Some("[::1]:5000"), "foo", None, None)),
            (
                "[fe80::1]/foo:v1",
                raw(Some("[fe80::1]"), "foo", Some("v1"), None),
            ),
            ("a/b@sha256:x", raw(None, "a/b", None, Some("sha256:x"))),
            (
                "q.io/a:t@sha256:x",
                raw(Some("q.io"), "a", Some("t"), Some("sha256:x")),
            ),
            // A first part without '.' or ':' is a path component, not a domain.
            ("myreg/foo", raw(None, "myreg/foo", None, None)),
            // No '/' after it: "localhost:5000" is the name "localhost" with tag "5000".
            ("localhost:5000", raw(None, "localhost", Some("5000"), None)),
            ("localhost", raw(None, "localhost", None, None)),
            // Path components may contain dots, but the first one is then a domain.
            ("a/b.c", raw(None, "a/b.c", None, None)),
            (
                "Registry.IO/app",
                raw(Some("Registry.IO"), "app", None, None),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(split_reference(input), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn invalid_references_give_the_reason() {
        let long_tag = format!("busybox:{}", "a".repeat(129));
        let long_name = format!("{}/b", "a".repeat(254));
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("Busybox", "must be lowercase"),
            ("docker.io/Library/busybox", "must be lowercase"),
            ("busy box", "invalid character ' '"),
            (" busybox", "invalid character ' '"),
            ("busybox ", "invalid character ' '"),
            ("a//b", "empty path component"),
            ("a/b/", "empty path component"),
            ("/a", "empty path component"),
            ("quay.io/", "missing repository name"),
            (":tag", "missing repository name"),
            ("busybox:", "empty tag"),
            ("busybox:-x", "must start with"),
            ("busybox:a+b", "invalid character '+' in tag"),
            ("busybox:a/b", "invalid registry port"),
            (&long_tag, "longer than 128"),
            (&long_name, "more than 255"),
            ("-busybox", "must start and end"),
            ("busybox-", "must start and end"),
            ("a..b", "invalid separator \"..\""),
            ("a___b", "invalid separator \"___\""),
            ("a.-b", "invalid separator \".-\""),
            ("a@", "empty digest"),
            ("docker://busybox", "transport prefix \"docker://\""),
            ("oci-archive://x/y", "transport prefix"),
            ("-bad.io/foo", "invalid registry host"),
            ("bad-.io/foo", "invalid registry host"),
            ("a..io/foo", "invalid registry host"),
            ("bad_host.io/foo", "invalid registry host"),
            ("myreg:/foo", "invalid registry port"),
            ("myreg:50x0/foo", "invalid registry port"),
            ("myreg:70000/foo", "out of range"),
            ("[::1/foo", "unterminated"),
            ("[zz::1]/foo", "invalid IPv6"),
            ("[1.2.3.4]/foo", "invalid IPv6"),
            ("[]/foo", "invalid IPv6"),
            ("[::1]x/foo", "unexpected \"x\""),
            ("a/b:c:d", "invalid character ':'"),
        ];
        for (input, want) in cases {
            match split_reference(input) {
                Err(reason) => assert!(
                    reason.contains(want),
                    "{input:?}: reason {reason:?} lacks {want:?}"
                ),
                Ok(r) => panic!("{input:?}: expected an error, got {r:?}"),
            }
        }
    }

    #[test]
    fn valid_separators_and_tags_are_accepted() {
        for input in [
            "a.b",
            "a_b",
            "a__b",
            "a-b",
            "a---b",
            "a1.b2_c3__d4-e5",
            "0",
            "9x",
            "a:_",
            "a:V1.0-RC_2",
            "a:latest",
        ] {
            assert!(split_reference(input).is_ok(), "{input:?}");
        }
        let longest_tag = format!("a:{}", "t".repeat(128));
        assert!(split_reference(&longest_tag).is_ok());
        let longest_name = format!("{}/b", "a".repeat(253));
        assert!(split_reference(&longest_name).is_ok());
    }

    #[test]
    fn domains_parse_into_host_and_port() {
        let cases = [
            ("docker.io", ("docker.io", false, None)),
            ("localhost:5000", ("localhost", false, Some(5000))),
            ("127.0.0.1:5000", ("127.0.0.1", false, Some(5000))),
            ("[::1]", ("::1", true, None)),
            ("[fd00::a:1]:443", ("fd00::a:1", true, Some(443))),
            ("My-Reg.example.COM", ("My-Reg.example.COM", false, None)),
        ];
        for (input, (host, ipv6, port)) in cases {
            assert_eq!(
                parse_domain(input),
                Ok(HostPort { host, ipv6, port }),
                "{input:?}"
            );
        }
    }
}
