//! Bad input from a registry, served by the fake registry: manifests, indexes and configs
//! over 4 MiB are refused before they are read whole (a manifest that announces 5 MiB and
//! then sends nothing is refused at once; one that never says its size is cut off after
//! 4 MiB); invalid or path-like digests, unknown media types and sizes that do not match
//! are refused naming the image and the bad value. In every case nothing is fetched that
//! the bad document names, nothing is written, and `cri-imaged check` passes.

use serde_json::{Value, json};
use tonic::Code;

use crate::support::fake::{FakeRegistry, Oversize};
use crate::support::images::{node_arch, sha256_digest};
use crate::support::{
    Daemon, DaemonBuilder, ImageBuilder, assert_check_passes, list, pull, tempdir, try_pull,
};

const MIB: u64 = 1 << 20;
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn descriptor(media_type: &str, digest: &str, size: i64) -> Value {
    json!({"mediaType": media_type, "digest": digest, "size": size})
}

fn manifest(config: Value, layers: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": layers,
    }))
    .expect("serialize manifest")
}

/// An index with one entry, for the node's platform.
fn index(entry: Value) -> Vec<u8> {
    let mut entry = entry;
    entry["platform"] = json!({"os": "linux", "architecture": node_arch()});
    if node_arch() == "arm64" {
        entry["platform"]["variant"] = json!("v8");
    }
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [entry],
    }))
    .expect("serialize index")
}

/// A daemon on a temporary root whose `--registry` is `fake`.
async fn start(fake: &FakeRegistry) -> (tempfile::TempDir, Daemon) {
    let dir = tempdir();
    let daemon = DaemonBuilder::new(dir.path())
        .registry(&fake.host())
        .start()
        .await;
    (dir, daemon)
}

/// Files under `<root>/<sub>` (recursively), as paths relative to the root.
fn files_under(root: &std::path::Path, sub: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join(sub)];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap_or(&p).display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_manifests_indexes_and_configs_are_refused_before_they_are_read() {
    let fake = FakeRegistry::start().await;
    let big = 5 * MIB;
    fake.add_oversized_manifest("test/announced", "1", Oversize::Announced { size: big });
    // Reading this one whole would take 256 MiB.
    fake.add_oversized_manifest(
        "test/unannounced",
        "endless",
        Oversize::Unannounced { size: 256 * MIB },
    );
    // An index entry for the node whose descriptor says 5 MiB.
    let child = sha256_digest(b"a manifest that is never fetched");
    fake.add_manifest(
        "test/bigindex",
        "1",
        OCI_INDEX,
        &index(descriptor(OCI_MANIFEST, &child, big as i64)),
    );
    // A manifest whose config is 5 MiB (and really is: the fake would serve it).
    let big_config = vec![b' '; big as usize];
    let config_digest = fake.add_blob("test/bigconfig", &big_config);
    let img = ImageBuilder::new().build();
    let layer = &img.layers[0].blob;
    fake.add_blob("test/bigconfig", &layer.data);
    fake.add_manifest(
        "test/bigconfig",
        "1",
        OCI_MANIFEST,
        &manifest(
            descriptor(OCI_CONFIG, &config_digest, big as i64),
            vec![descriptor(OCI_LAYER, &layer.digest, layer.len() as i64)],
        ),
    );

    let (dir, daemon) = start(&fake).await;
    let root = daemon.root.clone();
    let mut c = daemon.client();
    let name = |rest: &str| format!("{}/{rest}", fake.host());

    let cases = [
        ("test/announced:1", vec!["5242880 bytes"]),
        ("test/unannounced:endless", vec!["more than 4194304 bytes"]),
        ("test/bigindex:1", vec![child.as_str(), "5242880 bytes"]),
        (
            "test/bigconfig:1",
            vec![config_digest.as_str(), "5242880 bytes"],
        ),
    ];
    for (rest, parts) in &cases {
        let image = name(rest);
        let err = try_pull(&mut c, &image)
            .await
            .expect_err(&format!("{image} must be refused"));
        assert_eq!(
            err.code(),
            Code::FailedPrecondition,
            "{image}: a document over 4 MiB is refused as unsupported, not read (a read would \
             wait for the body until the read timeout): {}",
            err.message()
        );
        for part in std::iter::once(image.as_str())
            .chain(parts.iter().copied())
            .chain(["more than the 4194304 accepted"])
        {
            assert!(
                err.message().contains(part),
                "{image}: the message must name {part:?}: {}",
                err.message()
            );
        }
    }
    let sent = fake.served_bytes("endless");
    assert!(
        sent < 64 * MIB,
        "the daemon stopped reading the endless manifest after 4 MiB; the fake sent {sent} bytes"
    );
    assert_eq!(
        fake.requests(&format!("/v2/test/bigindex/manifests/{child}")),
        0,
        "a 5 MiB index entry is refused before it is requested"
    );
    assert_eq!(
        fake.blob_requests("test/bigconfig", &config_digest),
        0,
        "a 5 MiB config is refused before it is requested"
    );
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert_eq!(files_under(&root, "blobs"), Vec::<String>::new());
    assert_eq!(files_under(&root, "ingest"), Vec::<String>::new());
    drop(c);
    drop(daemon);
    assert_check_passes(dir.path(), &root, "after the refusals");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_digests_media_types_and_sizes_are_refused_naming_them_and_nothing_is_written() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().build();
    fake.add_image("test/good", "1", &img);
    let config = descriptor(OCI_CONFIG, &img.config.digest, img.config.len() as i64);
    let layer = &img.layers[0].blob;
    let good_layer = descriptor(OCI_LAYER, &layer.digest, layer.len() as i64);
    let hex = layer.digest.trim_start_matches("sha256:");
    let sha512 = format!("sha512:{hex}{hex}");
    let short = format!("sha256:{}", &hex[..63]);
    let upper = format!("sha256:{}", hex.to_uppercase());
    let non_hex = format!("sha256:{}z", &hex[..63]);
    let dotdot = "sha256:../../../../etc/passwd".to_owned();
    let slash = "sha256:/etc".to_owned();

    // (repository, document, its content type, gRPC code, what the message must name)
    let mut cases: Vec<(String, Vec<u8>, &str, Code, String)> = Vec::new();
    for (i, bad) in [&sha512, &short, &upper, &non_hex, &dotdot, &slash]
        .into_iter()
        .enumerate()
    {
        cases.push((
            format!("test/layer-digest-{i}"),
            manifest(config.clone(), vec![descriptor(OCI_LAYER, bad, 10)]),
            OCI_MANIFEST,
            Code::DataLoss,
            format!("invalid digest {bad:?}"),
        ));
    }
    cases.push((
        "test/config-digest".into(),
        manifest(descriptor(OCI_CONFIG, &slash, 10), vec![good_layer.clone()]),
        OCI_MANIFEST,
        Code::DataLoss,
        format!("invalid digest {slash:?}"),
    ));
    cases.push((
        "test/index-digest".into(),
        index(descriptor(OCI_MANIFEST, &dotdot, 10)),
        OCI_INDEX,
        Code::DataLoss,
        format!("invalid digest {dotdot:?}"),
    ));
    cases.push((
        "test/manifest-type".into(),
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.example.thing.v1+json",
            "config": config.clone(),
            "layers": [good_layer.clone()],
        }))
        .expect("serialize"),
        OCI_MANIFEST,
        Code::FailedPrecondition,
        "application/vnd.example.thing.v1+json".into(),
    ));
    let helm = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
    cases.push((
        "test/layer-type".into(),
        manifest(
            config.clone(),
            vec![descriptor(helm, &layer.digest, layer.len() as i64)],
        ),
        OCI_MANIFEST,
        Code::FailedPrecondition,
        format!("layer {} has media type {helm:?}", layer.digest),
    ));
    cases.push((
        "test/config-type".into(),
        manifest(
            descriptor(
                "application/vnd.cncf.helm.config.v1+json",
                &img.config.digest,
                img.config.len() as i64,
            ),
            vec![good_layer.clone()],
        ),
        OCI_MANIFEST,
        Code::FailedPrecondition,
        "application/vnd.cncf.helm.config.v1+json".into(),
    ));
    cases.push((
        "test/negative-size".into(),
        manifest(
            config.clone(),
            vec![descriptor(OCI_LAYER, &layer.digest, -1)],
        ),
        OCI_MANIFEST,
        Code::DataLoss,
        format!("negative size for {}", layer.digest),
    ));
    // The index gives the right digest of the child manifest but a wrong size.
    let wrong_size = img.manifest.len() as i64 + 10;
    cases.push((
        "test/index-size".into(),
        index(descriptor(
            img.format.manifest_type(),
            &img.manifest.digest,
            wrong_size,
        )),
        OCI_INDEX,
        Code::DataLoss,
        format!("the index gives {wrong_size} bytes"),
    ));
    for (repo, doc, ct, _, _) in &cases {
        fake.add_manifest(repo, "1", ct, doc);
        // The index's child is served under its digest (only the sizes disagree).
        fake.add_image(repo, "child", &img);
    }

    let (dir, daemon) = start(&fake).await;
    let root = daemon.root.clone();
    let mut c = daemon.client();
    for (repo, _, _, code, part) in &cases {
        let image = format!("{}/{repo}:1", fake.host());
        let err = try_pull(&mut c, &image)
            .await
            .expect_err(&format!("{image} must be refused"));
        assert_eq!(err.code(), *code, "{image}: {}", err.message());
        for want in [&image, part] {
            assert!(
                err.message().contains(want.as_str()),
                "{image}: the message must name {want:?}: {}",
                err.message()
            );
        }
        assert_eq!(
            fake.blob_requests(repo, &img.config.digest) + fake.blob_requests(repo, &layer.digest),
            0,
            "{image}: no blob of a refused manifest is fetched"
        );
    }
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert_eq!(files_under(&root, "blobs"), Vec::<String>::new());
    assert_eq!(files_under(&root, "ingest"), Vec::<String>::new());
    assert!(
        !dir.path().join("etc").exists() && !root.join("etc").exists(),
        "no path was built from a path-like digest"
    );
    // The same registry, a sound image: pulled as usual.
    assert_eq!(
        pull(&mut c, &format!("{}/test/good:1", fake.host())).await,
        img.id()
    );
    drop(c);
    drop(daemon);
    assert_check_passes(dir.path(), &root, "after the refusals and one good pull");
}
