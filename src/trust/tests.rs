//! Unit tests of the policy language: parsing (real-world files, every requirement type
//! and signedIdentity, every refusal naming file and place), scope precedence, and
//! `signedIdentity` matching.

use super::policy::{KeySource, Policy, Requirement, SignedIdentity};
use crate::names::ImageName;

fn parse(text: &str) -> Policy {
    Policy::parse("policy.json", text.as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn parse_err(text: &str) -> String {
    Policy::parse("policy.json", text.as_bytes())
        .expect_err(text)
        .to_string()
}

#[test]
fn the_files_distributions_ship_parse() {
    let fedora = parse(
        r#"{"default":[{"type":"insecureAcceptAnything"}],"transports":{"docker-daemon":{"":[{"type":"insecureAcceptAnything"}]}}}"#,
    );
    assert_eq!(fedora.default, vec![Requirement::InsecureAcceptAnything]);
    let rhel = parse(
        r#"{
  "default": [{"type": "insecureAcceptAnything"}],
  "transports": {
    "docker": {
      "registry.access.redhat.com": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"}],
      "registry.redhat.io": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release"}]
    },
    "docker-daemon": {"": [{"type": "insecureAcceptAnything"}]}
  }
}"#,
    );
    let applied = rhel.requirements_for("docker", "registry.redhat.io/ubi9/ubi:latest");
    assert_eq!(applied.scope, "docker:registry.redhat.io");
    assert!(matches!(
        &applied.requirements[0],
        Requirement::SignedBy { keys, signed_identity: SignedIdentity::MatchRepoDigestOrExact }
            if keys == &[KeySource::Path("/etc/pki/rpm-gpg/RPM-GPG-KEY-redhat-release".into())]
    ));
}

#[test]
fn every_requirement_and_identity_parses() {
    let p = parse(
        r#"{"default":[{"type":"reject"}],"transports":{"docker":{
  "a.io/one": [{"type":"signedBy","keyType":"GPGKeys","keyPaths":["/k1","/k2"],"signedIdentity":{"type":"matchExact"}}],
  "a.io/two": [{"type":"sigstoreSigned","keyData":"aGVsbG8=","signedIdentity":{"type":"matchRepository"}}],
  "a.io/three": [{"type":"sigstoreSigned","keyPath":"/c.pub","signedIdentity":{"type":"exactReference","dockerReference":"b.io/x:1"}}],
  "a.io/four": [{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"exactRepository","dockerRepository":"b.io/x"}}],
  "a.io/five": [{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"remapIdentity","prefix":"a.io/five","signedPrefix":"b.io/five"}}],
  "a.io/six": [{"type":"insecureAcceptAnything"},{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"matchRepoDigestOrExact"}}]
}}}"#,
    );
    let req = |repo: &str| {
        p.requirements_for("docker", &format!("a.io/{repo}:1"))
            .requirements
            .to_vec()
    };
    assert!(
        matches!(&req("one")[0], Requirement::SignedBy { keys, signed_identity: SignedIdentity::MatchExact } if keys.len() == 2)
    );
    assert!(
        matches!(&req("two")[0], Requirement::SigstoreSigned { keys, signed_identity: SignedIdentity::MatchRepository } if keys == &[KeySource::Data(b"hello".to_vec())])
    );
    assert!(matches!(
        &req("three")[0],
        Requirement::SigstoreSigned {
            signed_identity: SignedIdentity::ExactReference { .. },
            ..
        }
    ));
    assert!(matches!(
        &req("four")[0],
        Requirement::SignedBy {
            signed_identity: SignedIdentity::ExactRepository { .. },
            ..
        }
    ));
    assert!(matches!(
        &req("five")[0],
        Requirement::SignedBy {
            signed_identity: SignedIdentity::RemapIdentity { .. },
            ..
        }
    ));
    assert_eq!(req("six").len(), 2);
}

#[test]
fn the_most_specific_scope_applies() {
    let p = parse(
        r#"{"default":[{"type":"reject"}],"transports":{
  "docker":{
    "":[{"type":"insecureAcceptAnything"}],
    "*.example.com":[{"type":"reject"}],
    "*.b.example.com":[{"type":"reject"}],
    "a.b.example.com":[{"type":"reject"}],
    "a.b.example.com/ns":[{"type":"reject"}],
    "a.b.example.com/ns/repo":[{"type":"reject"}],
    "a.b.example.com/ns/repo:1":[{"type":"reject"}]
  },
  "oci":{"/images":[{"type":"reject"}],"/images/a.d":[{"type":"insecureAcceptAnything"}]}
}}"#,
    );
    let scope = |r: &str| p.requirements_for("docker", r).scope;
    assert_eq!(
        scope("a.b.example.com/ns/repo:1"),
        "docker:a.b.example.com/ns/repo:1"
    );
    assert_eq!(
        scope("a.b.example.com/ns/repo:2"),
        "docker:a.b.example.com/ns/repo"
    );
    assert_eq!(
        scope("a.b.example.com/ns/other:1"),
        "docker:a.b.example.com/ns"
    );
    assert_eq!(scope("a.b.example.com/else/x:1"), "docker:a.b.example.com");
    assert_eq!(scope("c.b.example.com/x:1"), "docker:*.b.example.com");
    assert_eq!(scope("c.example.com:5000/x:1"), "docker:*.example.com");
    assert_eq!(scope("other.org/x:1"), "docker:");
    let d = format!("a.b.example.com/ns/repo@sha256:{}", "a".repeat(64));
    assert_eq!(scope(&d), "docker:a.b.example.com/ns/repo");
    assert_eq!(
        p.requirements_for("oci", "/images/a.d").scope,
        "oci:/images/a.d"
    );
    assert_eq!(
        p.requirements_for("oci", "/images/b.d:tag").scope,
        "oci:/images"
    );
    assert_eq!(p.requirements_for("oci", "/elsewhere/x").scope, "default");
    assert_eq!(p.requirements_for("dir", "/images/a.d").scope, "default");
}

#[test]
fn bad_policies_are_refused_naming_file_and_place() {
    for (text, wants) in [
        (
            "{\n \"default\": [\n  {\"type\": }]}",
            vec!["policy.json", "line 3 column"],
        ),
        ("[]", vec!["must be a JSON object"]),
        (
            "{\"default\":[{\"type\":\"reject\"}],\n\"default\":[{\"type\":\"insecureAcceptAnything\"}]}",
            vec!["duplicate key \"default\"", "line 2"],
        ),
        (r#"{"transports":{}}"#, vec!["no \"default\""]),
        (r#"{"default":[],"x":1}"#, vec!["unknown field \"x\""]),
        (r#"{"default":[]}"#, vec!["default", "empty list"]),
        (
            r#"{"default":[{"type":"trustMe"}]}"#,
            vec!["default[0]", "unknown requirement type \"trustMe\""],
        ),
        (
            r#"{"default":[{"type":"reject","keyPath":"/k"}]}"#,
            vec!["default[0]", "keyPath"],
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"ftp":{}}}"#,
            vec!["transports.ftp", "unknown transport"],
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"Bad Host/x":[{"type":"reject"}]}}}"#,
            vec!["transports.docker.\"Bad Host/x\"", "scope"],
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io/Repo":[{"type":"reject"}]}}}"#,
            vec!["uppercase"],
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io/x*":[{"type":"reject"}]}}}"#,
            vec!["*"],
        ),
        (
            r#"{"default":[{"type":"reject"}],"transports":{"oci":{"relative":[{"type":"reject"}]}}}"#,
            vec!["absolute path"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyPath":"/k"}]}"#,
            vec!["default[0]", "keyType"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"X509Certificates","keyPath":"/k"}]}"#,
            vec!["not supported"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys"}]}"#,
            vec!["exactly one of keyPath"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","keyData":"AA=="}]}"#,
            vec!["keyPath, keyData"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyData":"%%"}]}"#,
            vec!["base64"],
        ),
        (
            r#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"k"}]}"#,
            vec!["absolute"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","fulcio":{}}]}"#,
            vec!["fulcio is not supported", "keyless"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyPath":"/r"}]}"#,
            vec!["rekorPublicKeyPath is not supported"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","pki":{}}]}"#,
            vec!["pki is not supported"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"matchEverything"}}]}"#,
            vec!["unknown signedIdentity type"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactReference","dockerReference":"a.io/x"}}]}"#,
            vec!["needs a tag or digest"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"exactRepository"}}]}"#,
            vec!["dockerRepository"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"remapIdentity","prefix":"*.a.io","signedPrefix":"b.io"}}]}"#,
            vec!["wildcard"],
        ),
        (
            r#"{"default":[{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{"type":"matchExact","extra":1}}]}"#,
            vec!["unknown field \"extra\""],
        ),
    ] {
        let e = parse_err(text);
        for w in wants.iter().chain(&["policy.json"]) {
            assert!(e.contains(w), "{text}\n  → {e}\n  should contain {w:?}");
        }
    }
}

fn name(s: &str) -> ImageName {
    ImageName::parse_qualified(s).unwrap()
}

#[test]
fn signed_identities_match_as_containers_image_does() {
    use SignedIdentity::*;
    let d = format!("sha256:{}", "b".repeat(64));
    let by_digest = name(&format!("a.io/x@{d}"));
    let by_tag = name("a.io/x:1");
    let cases: Vec<(SignedIdentity, &ImageName, &str, bool)> = vec![
        (MatchExact, &by_tag, "a.io/x:1", true),
        (MatchExact, &by_tag, "a.io/x:2", false),
        (MatchExact, &by_tag, "a.io/y:1", false),
        (MatchRepoDigestOrExact, &by_tag, "a.io/x:1", true),
        (MatchRepoDigestOrExact, &by_tag, "a.io/x:2", false),
        (MatchRepoDigestOrExact, &by_digest, "a.io/x:anything", true),
        (MatchRepoDigestOrExact, &by_digest, "a.io/y:1", false),
        (MatchRepository, &by_tag, "a.io/x:2", true),
        (MatchRepository, &by_tag, "b.io/x:1", false),
        (
            ExactReference {
                docker_reference: "b.io/release:1".into(),
            },
            &by_tag,
            "b.io/release:1",
            true,
        ),
        (
            ExactReference {
                docker_reference: "b.io/release:1".into(),
            },
            &by_tag,
            "a.io/x:1",
            false,
        ),
        (
            ExactRepository {
                docker_repository: "b.io/release".into(),
            },
            &by_tag,
            "b.io/release:9",
            true,
        ),
        (
            ExactRepository {
                docker_repository: "b.io/release".into(),
            },
            &by_tag,
            "a.io/x:1",
            false,
        ),
        (
            RemapIdentity {
                prefix: "a.io".into(),
                signed_prefix: "b.io/mirror".into(),
            },
            &by_tag,
            "b.io/mirror/x:1",
            true,
        ),
        (
            RemapIdentity {
                prefix: "a.io".into(),
                signed_prefix: "b.io/mirror".into(),
            },
            &by_tag,
            "a.io/x:1",
            false,
        ),
        (
            RemapIdentity {
                prefix: "a.io/xx".into(),
                signed_prefix: "b.io".into(),
            },
            &by_tag,
            "a.io/x:1",
            true,
        ),
        (MatchExact, &by_tag, "Not A Name", false),
    ];
    for (identity, pulled, signed, want) in cases {
        assert_eq!(
            identity.matches(pulled, signed),
            want,
            "{identity} of {pulled} against {signed}"
        );
    }
    // Short and long forms are one name.
    assert!(MatchExact.matches(
        &name("docker.io/library/busybox:1"),
        "docker.io/library/busybox:1"
    ));
}
