//! Architecture invariants from ARCHITECTURE.md, checked on the source text.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn sources() -> Vec<(String, String)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn offenders(allowed: &[&str], needles: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(rel, _)| !allowed.iter().any(|a| rel.starts_with(a)))
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n)))
        .map(|(rel, _)| rel)
        .collect()
}

/// Files under any of `dirs` whose text contains any of `needles`.
fn users(dirs: &[&str], needles: &[&str]) -> Vec<String> {
    sources()
        .into_iter()
        .filter(|(rel, _)| dirs.iter().any(|d| rel.starts_with(d)))
        .filter(|(_, text)| needles.iter().any(|n| text.contains(n)))
        .map(|(rel, _)| rel)
        .collect()
}

#[test]
fn grpc_types_stay_in_the_wire_layer() {
    let bad = offenders(
        &["grpc/", "daemon.rs", "proto.rs", "lib.rs"],
        &["tonic::", "crate::proto", "use tonic"],
    );
    assert!(
        bad.is_empty(),
        "tonic/proto used outside grpc/, daemon.rs, proto.rs: {bad:?}"
    );
}

#[test]
fn oci_client_stays_in_the_registry_module() {
    let bad = offenders(&["registry/"], &["oci_client", "reqwest::", "rustls::"]);
    assert!(
        bad.is_empty(),
        "oci_client/reqwest/rustls used outside registry/: {bad:?}"
    );
}

#[test]
fn names_is_a_leaf() {
    let bad = users(
        &["names/"],
        &[
            "crate::store",
            "crate::registry",
            "crate::image",
            "crate::oci",
            "crate::grpc",
            "std::fs",
            "tokio::",
        ],
    );
    assert!(
        bad.is_empty(),
        "names/ must not depend on other modules or do I/O: {bad:?}"
    );
}

#[test]
fn skopeo_stays_in_the_transport_module() {
    let bad = offenders(&["transport/"], &["containers_image_proxy", "skopeo_cmd"]);
    assert!(
        bad.is_empty(),
        "containers_image_proxy used outside transport/: {bad:?}"
    );
    let unsafe_users = offenders(&["transport/proxy.rs", "memory.rs"], &["unsafe "]);
    assert!(
        unsafe_users.is_empty(),
        "unsafe outside transport/proxy.rs and memory.rs: {unsafe_users:?}"
    );
}

#[test]
fn anyhow_only_in_main() {
    let bad = offenders(&["main.rs"], &["anyhow"]);
    assert!(bad.is_empty(), "anyhow used outside main.rs: {bad:?}");
}

#[test]
fn every_module_has_a_doc_comment() {
    let missing: Vec<String> = sources()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| rel)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a //! module doc: {missing:?}"
    );
}

#[test]
fn status_mapping_has_no_wildcard_arm() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grpc/status.rs"))
            .unwrap();
    assert!(
        !text.contains("_ =>"),
        "grpc/status.rs must map every error variant explicitly"
    );
}

#[test]
fn prometheus_types_stay_in_the_metrics_module() {
    let bad = offenders(&["metrics/"], &["prometheus_client"]);
    assert!(
        bad.is_empty(),
        "prometheus_client used outside metrics/: {bad:?}"
    );
}

#[test]
fn http_servers_and_terminal_ui_stay_in_their_modules() {
    let bad = offenders(&["admin/"], &["axum", "hyper"]);
    assert!(bad.is_empty(), "axum/hyper used outside admin/: {bad:?}");
    let bad = offenders(&["pulls/"], &["indicatif"]);
    assert!(bad.is_empty(), "indicatif used outside pulls/: {bad:?}");
}

#[test]
fn the_core_reads_no_admin_or_cli_code() {
    let bad = users(
        &["image/", "store/"],
        &["crate::admin", "crate::pulls", "crate::grpc"],
    );
    assert!(
        bad.is_empty(),
        "image/ and store/ must not depend on admin/, pulls/ or grpc/: {bad:?}"
    );
}

#[test]
fn registries_reads_files_but_knows_no_images_or_network() {
    let bad = users(
        &["registries/"],
        &[
            "crate::image",
            "crate::store",
            "crate::grpc",
            "crate::oci",
            "tokio::",
            "oci_client",
        ],
    );
    assert!(
        bad.is_empty(),
        "registries/ may use only names and registry's credential types: {bad:?}"
    );
}

#[test]
fn errors_are_never_classified_by_their_text() {
    // A failure's kind comes from an HTTP status, an io error kind or an error type where
    // it arises (kind.rs), never from what its message says.
    let needles = [
        ".contains(\"HTTP ",
        "reason.contains(",
        "message.contains(",
        ".to_string().contains(\"",
        "starts_with(\"HTTP",
    ];
    let found: Vec<String> = sources()
        .into_iter()
        .filter(|(rel, _)| {
            !["tests.rs", "proptests.rs", "testing.rs"]
                .iter()
                .any(|t| rel.ends_with(t))
        })
        .flat_map(|(rel, text)| {
            // Unit tests may look at messages; the code they test may not.
            let code = text.split("#[cfg(test)]").next().unwrap_or("").to_owned();
            needles
                .iter()
                .filter(|n| code.contains(*n))
                .map(|n| format!("{rel}: {n}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        found.is_empty(),
        "classification by message text: {found:?}"
    );
}

#[test]
fn kinds_come_from_one_table() {
    // The gRPC map reads the kind's code; no error variant is matched there.
    let status =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/grpc/status.rs"))
            .unwrap();
    assert!(status.contains("kind().code()") || status.contains("kind.code()"));
    for variant in [
        "Error::Registry",
        "Error::Store",
        "StoreError::",
        "RegistryError::",
    ] {
        assert!(
            !status.contains(variant),
            "grpc/status.rs matches {variant} itself"
        );
    }
    let observe =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/image/observe.rs"))
            .unwrap();
    assert!(
        observe.contains("kind().class()"),
        "the metrics class comes from the kind"
    );
}
