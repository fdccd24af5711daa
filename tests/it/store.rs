//! The store on disk: an OCI image layout that `skopeo` reads, one index.json entry per
//! image name, blobs that match their digests.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::support::{
    Format, ImageBuilder, Setup, TestImage, pull, remove, require_tool, run_tool, sorted, status_of,
};

const SKOPEO: &str = "/usr/bin/skopeo";

fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not JSON ({e}): {text}", path.display()))
}

/// The index.json entries (descriptors) whose ref.name annotation is `name`.
fn index_entries(root: &Path, name: &str) -> Vec<Value> {
    let index = read_json(&root.join("index.json"));
    index["manifests"]
        .as_array()
        .expect("index.json has a manifests array")
        .iter()
        .filter(|m| m["annotations"]["org.opencontainers.image.ref.name"] == name)
        .cloned()
        .collect()
}

/// `skopeo inspect [--raw] oci:<root>:<name>` as JSON.
fn skopeo_inspect(tmp: &Path, root: &Path, name: &str, raw: bool) -> Result<Value, String> {
    require_tool(SKOPEO, "skopeo");
    let reference = format!("oci:{}:{name}", root.display());
    let mut args = vec!["inspect"];
    if raw {
        args.push("--raw");
    }
    args.push(&reference);
    let out = run_tool(tmp, SKOPEO, &args, Duration::from_secs(60));
    if !out.status.success() {
        return Err(format!(
            "skopeo {args:?} failed ({}): {}",
            out.status, out.stderr
        ));
    }
    serde_json::from_str(&out.stdout)
        .map_err(|e| format!("skopeo output is not JSON ({e}): {}", out.stdout))
}

fn check_with_skopeo(tmp: &Path, root: &Path, name: &str, img: &TestImage) {
    let raw = skopeo_inspect(tmp, root, name, true).unwrap_or_else(|e| {
        panic!(
            "{e}\nindex.json entries named {name}: {:?}",
            index_entries(root, name)
        )
    });
    assert_eq!(
        raw["config"]["digest"],
        img.id(),
        "skopeo --raw: the stored manifest of {name} points at the pulled config"
    );
    let layers: Vec<&str> = raw["layers"]
        .as_array()
        .expect("manifest has layers")
        .iter()
        .map(|l| l["digest"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        layers,
        img.layer_digests(),
        "skopeo --raw: layers of {name}"
    );

    let cooked = skopeo_inspect(tmp, root, name, false).unwrap_or_else(|e| panic!("{e}"));
    let layers: Vec<&str> = cooked["Layers"]
        .as_array()
        .expect("skopeo inspect prints Layers")
        .iter()
        .map(|l| l.as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        layers,
        img.layer_digests(),
        "skopeo inspect: Layers of {name}"
    );
    assert_eq!(
        cooked["Architecture"], img.arch,
        "skopeo inspect: Architecture of {name}"
    );
}

/// Pulls `img` as `<repo>:1` and `<repo>:2` and checks the layout, index.json entries,
/// blobs and what skopeo reads from the store.
async fn check_store_layout(format: Format) {
    require_tool(SKOPEO, "skopeo");
    let s = Setup::new().await;
    let root = s.daemon.root.clone();
    let img = ImageBuilder::new().format(format).build();
    img.push(&s.registry, "test/app", "1").await;
    img.push(&s.registry, "test/app", "2").await;
    let mut c = s.client();
    let names = [s.name("test/app:1"), s.name("test/app:2")];
    for name in &names {
        assert_eq!(pull(&mut c, name).await, img.id());
    }

    let layout = read_json(&root.join("oci-layout"));
    assert_eq!(
        layout["imageLayoutVersion"], "1.0.0",
        "oci-layout: {layout}"
    );
    let index = read_json(&root.join("index.json"));
    assert_eq!(index["schemaVersion"], 2, "index.json: {index}");

    // Every name ImageStatus reports is an index.json entry.
    let tags = status_of(&mut c, &img.id()).await.repo_tags;
    assert_eq!(sorted(&tags), sorted(&names));
    for name in &tags {
        let entries = index_entries(&root, name);
        assert_eq!(
            entries.len(),
            1,
            "one index.json entry named {name}: {index}"
        );
        let digest = entries[0]["digest"].as_str().expect("entry digest");
        assert!(
            root.join("blobs/sha256")
                .join(&digest["sha256:".len()..])
                .is_file(),
            "the manifest {digest} of {name} is a blob"
        );
    }

    // Every blob is stored under its own digest.
    let blobs = root.join("blobs").join("sha256");
    for entry in std::fs::read_dir(&blobs).expect("read blobs/sha256") {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let data = std::fs::read(&path).expect("read blob");
        assert_eq!(
            hex::encode(Sha256::digest(&data)),
            name,
            "blob {} does not match its name",
            path.display()
        );
    }
    for d in img.blob_digests() {
        assert!(
            blobs.join(&d["sha256:".len()..]).is_file(),
            "blob {d} stored"
        );
    }

    for name in &tags {
        check_with_skopeo(s.dir.path(), &root, name, &img);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_is_an_oci_layout_that_skopeo_reads() {
    check_store_layout(Format::Oci).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_schema2_image_in_the_store_is_readable_by_skopeo() {
    check_store_layout(Format::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_names_leave_index_json() {
    require_tool(SKOPEO, "skopeo");
    let s = Setup::new().await;
    let root = s.daemon.root.clone();
    let gone = ImageBuilder::new().build();
    let kept = ImageBuilder::new().build();
    gone.push(&s.registry, "test/gone", "1").await;
    gone.push(&s.registry, "test/gone", "2").await;
    kept.push(&s.registry, "test/kept", "1").await;
    let mut c = s.client();
    for n in ["test/gone:1", "test/gone:2"] {
        assert_eq!(pull(&mut c, &s.name(n)).await, gone.id());
    }
    assert_eq!(pull(&mut c, &s.name("test/kept:1")).await, kept.id());

    remove(&mut c, &s.name("test/gone:1")).await;
    for n in ["test/gone:1", "test/gone:2"] {
        let name = s.name(n);
        assert!(
            index_entries(&root, &name).is_empty(),
            "index.json still names {name}"
        );
        assert!(
            skopeo_inspect(s.dir.path(), &root, &name, true).is_err(),
            "skopeo must no longer find {name}"
        );
    }
    assert_eq!(index_entries(&root, &s.name("test/kept:1")).len(), 1);
    check_with_skopeo(s.dir.path(), &root, &s.name("test/kept:1"), &kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_survives_restart_and_stays_readable() {
    require_tool(SKOPEO, "skopeo");
    let mut s = Setup::new().await;
    let img = ImageBuilder::new().user("www-data").build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    let name = s.name("test/app:1");
    assert_eq!(pull(&mut c, &name).await, img.id());
    let before = status_of(&mut c, &name).await;
    drop(c);
    let st = s.daemon.stop().await.expect("daemon stops on SIGTERM");
    assert_eq!(st.code(), Some(0));

    // With the daemon down, the layout alone is a valid OCI layout.
    let root = s.daemon.root.clone();
    check_with_skopeo(s.dir.path(), &root, &name, &img);

    s.daemon = crate::support::DaemonBuilder::new(s.dir.path())
        .registry(&s.registry.host())
        .start()
        .await;
    let mut c = s.client();
    assert_eq!(status_of(&mut c, &name).await, before);
}
