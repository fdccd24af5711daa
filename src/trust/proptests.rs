//! Property tests of the policy and registries.d parsers: whatever the bytes, no panic,
//! and an error names the file; scope lookup never panics on any reference.

use proptest::prelude::*;

use super::policy::Policy;

const VALID: &str = r#"{"default":[{"type":"reject"}],"transports":{"docker":{"a.io/x":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k","signedIdentity":{"type":"remapIdentity","prefix":"a.io","signedPrefix":"b.io"}}],"*.b.io":[{"type":"sigstoreSigned","keyData":"AA=="}]},"oci":{"/x":[{"type":"insecureAcceptAnything"}]}}}"#;

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = Policy::parse("p.json", &bytes) {
            prop_assert!(e.to_string().contains("p.json"));
        }
    }

    #[test]
    fn mutated_valid_policies_never_panic(at in 0usize..VALID.len(), with in "[ -~]{0,3}", cut in 0usize..8) {
        let mut s = VALID.to_owned();
        let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
        let end = (at + cut).min(s.len());
        let end = (end..=s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(s.len());
        s.replace_range(at..end, &with);
        if let Err(e) = Policy::parse("p.json", s.as_bytes()) {
            prop_assert!(e.to_string().contains("p.json"));
        }
    }

    #[test]
    fn scope_lookup_never_panics(reference in "[a-z0-9./:@*_-]{0,40}") {
        let p = Policy::parse("p.json", VALID.as_bytes()).unwrap();
        let _ = p.requirements_for("docker", &reference);
        let _ = p.requirements_for("oci", &reference);
    }

    #[test]
    fn registries_d_text_never_panics(text in "[ -~\n]{0,200}") {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x.yaml"), &text).unwrap();
        if let Err(e) = super::registries_d::RegistriesD::load(dir.path()) {
            prop_assert!(e.contains("x.yaml"));
        }
    }
}
