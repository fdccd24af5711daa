//! Property tests of the manifest, index and config parsers: arbitrary bytes and
//! arbitrary JSON shaped like manifests and indexes (with valid, invalid and path-like
//! digests, odd sizes and media types) never make them panic, and whatever they accept
//! holds only 64-lowercase-hex sha256 digests and supported media types. Regression seeds
//! proptest finds are kept in `proptest-regressions/oci/proptests.txt`; hand-picked inputs
//! are unit cases below.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::manifest::{Parsed, check_layer_types, parse, parse_config};
use super::media;

const GOOD: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn digest() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(GOOD)),
        Just(json!("sha256:../../../etc/passwd")),
        Just(json!("sha256:/etc")),
        Just(json!(GOOD.to_uppercase())),
        Just(json!(format!("sha512:{}", &GOOD[7..]))),
        "sha256:[0-9a-fA-F./]{0,70}".prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(Value::Null),
    ]
}

fn media_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(media::OCI_MANIFEST)),
        Just(json!(media::OCI_INDEX)),
        Just(json!(media::DOCKER_MANIFEST)),
        Just(json!(media::DOCKER_LIST)),
        Just(json!(media::OCI_CONFIG)),
        Just(json!("application/vnd.oci.image.layer.v1.tar+gzip")),
        Just(json!(
            "application/vnd.oci.image.layer.v1.tar+gzip+encrypted"
        )),
        "\\PC{0,12}".prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
    ]
}

fn size() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..1 << 20).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        Just(json!("12")),
    ]
}

fn descriptor() -> impl Strategy<Value = Value> {
    (
        media_type(),
        digest(),
        size(),
        proptest::option::of(("\\PC{0,6}", "\\PC{0,6}", proptest::option::of("\\PC{0,3}"))),
    )
        .prop_map(|(m, d, s, p)| {
            let mut v = json!({"mediaType": m, "digest": d, "size": s});
            if let Some((os, arch, variant)) = p {
                v["platform"] = json!({"os": os, "architecture": arch, "variant": variant});
            }
            v
        })
}

/// JSON objects with the keys manifests and indexes use, each present or not.
fn document() -> impl Strategy<Value = Value> {
    (
        proptest::option::of(prop_oneof![
            Just(json!(2)),
            Just(json!(1)),
            any::<i64>().prop_map(Value::from)
        ]),
        proptest::option::of(media_type()),
        proptest::option::of(descriptor()),
        proptest::option::of(proptest::collection::vec(descriptor(), 0..4)),
        proptest::option::of(proptest::collection::vec(descriptor(), 0..4)),
    )
        .prop_map(|(v, m, c, l, ms)| {
            let mut doc = serde_json::Map::new();
            let mut put = |k: &str, x: Option<Value>| {
                if let Some(x) = x {
                    doc.insert(k.to_owned(), x);
                }
            };
            put("schemaVersion", v);
            put("mediaType", m);
            put("config", c);
            put("layers", l.map(Value::from));
            put("manifests", ms.map(Value::from));
            Value::Object(doc)
        })
}

/// What every accepted document must satisfy.
fn check(bytes: &[u8]) {
    let Ok(parsed) = parse(bytes, None) else {
        return;
    };
    let hex_ok = |d: &crate::names::Digest| {
        let hex = d.as_str().strip_prefix("sha256:").expect("sha256 prefix");
        assert!(
            hex.len() == 64 && hex.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')),
            "accepted digest {d}"
        );
    };
    match parsed {
        Parsed::Manifest(m) => {
            assert!(media::is_manifest(&m.media_type), "{}", m.media_type);
            hex_ok(&m.config.digest);
            m.layers.iter().for_each(|l| hex_ok(&l.digest));
            if check_layer_types(&m).is_ok() {
                assert!(m.layers.iter().all(|l| media::is_layer(&l.media_type)));
            }
        }
        Parsed::Index(i) => {
            assert!(media::is_index(&i.media_type), "{}", i.media_type);
            i.manifests
                .iter()
                .for_each(|e| hex_ok(&e.descriptor.digest));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        check(&bytes);
        let _ = parse_config(&bytes);
    }

    #[test]
    fn manifest_shaped_json_never_panics_and_accepts_only_valid_digests(doc in document()) {
        let bytes = serde_json::to_vec(&doc).expect("serialize");
        check(&bytes);
        let _ = parse_config(&bytes);
    }
}

#[test]
fn hand_picked_documents() {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let cases: &[&str] = &[
        "",
        "null",
        "[]",
        "{}",
        "\"x\"",
        "{\"schemaVersion\":2}",
        "{\"schemaVersion\":18446744073709551616}",
        "{\"schemaVersion\":-2}",
        "{\"schemaVersion\":2,\"manifests\":null}",
        "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:../../x\",\"size\":1}}",
        "{\"schemaVersion\":2,\"config\":{\"digest\":\"sha256:/etc\",\"size\":1}}",
        "{\"schemaVersion\":2,\"manifests\":[{\"digest\":\"sha256:../x\",\"size\":1}]}",
        "{\"schemaVersion\":2,\"config\":{\"digest\":\"\",\"size\":1e400}}",
        &deep,
    ];
    for c in cases {
        check(c.as_bytes());
        let _ = parse_config(c.as_bytes());
    }
    for bad in [
        "sha256:../../x",
        "sha256:/etc",
        "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789",
    ] {
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{GOOD}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{bad}","size":1}}]}}"#
        );
        assert!(parse(doc.as_bytes(), None).is_err(), "{bad}");
    }
}
