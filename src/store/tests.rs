//! Store behaviour on a real directory: locking, verified ingest, atomic records, and the
//! start-up recovery of what a crash can leave behind.

use super::testing::{desc, name_image, put_image};
use super::*;
use crate::names::ImageName;
use crate::oci::media;
use bytes::Bytes;

/// Puts an image (config, one layer, manifest) and names it; returns its blobs.
async fn add_image(store: &Store, name: &str, layer: &[u8]) -> ManifestBlobs {
    let config = format!(r#"{{"os":"linux","architecture":"amd64","n":"{name}"}}"#);
    let (blobs, _lease) = put_image(store, &config, layer).await;
    name_image(store, &blobs, name).await;
    blobs
}

#[test]
fn a_second_store_on_the_same_root_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path())
        .err()
        .expect("second open must fail");
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains(&dir.path().display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn ingest_refuses_wrong_digest_and_wrong_size_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = desc(b"hello", "x");
    let mut wrong = store.ingest(&d).await.unwrap();
    wrong.write(Bytes::from_static(b"jello")).await.unwrap();
    assert!(matches!(
        store.commit(wrong).await,
        Err(StoreError::DigestMismatch { .. })
    ));
    let mut long = store.ingest(&d).await.unwrap();
    assert!(matches!(
        long.write(Bytes::from_static(b"hello!")).await,
        Err(StoreError::SizeMismatch { .. })
    ));
    drop(long);
    let mut short = store.ingest(&d).await.unwrap();
    short.write(Bytes::from_static(b"hell")).await.unwrap();
    assert!(matches!(
        store.commit(short).await,
        Err(StoreError::SizeMismatch { .. })
    ));
    assert!(!store.has_blob(&d).await);
    // Dropped ingests are deleted on blocking threads; `close` waits for them.
    store.close().await;
    assert_eq!(
        std::fs::read_dir(dir.path().join(layout::INGEST_DIR))
            .unwrap()
            .count(),
        0
    );
    let _lease = store.lease([d.digest.clone()]);
    store.put_blob(&d, b"hello").await.unwrap();
    assert!(store.has_blob(&d).await);
}

#[tokio::test]
async fn records_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = {
        let store = Store::open(dir.path()).unwrap();
        add_image(&store, "r.io/a:1", b"layer-a").await
    };
    let store = Store::open(dir.path()).unwrap();
    let id = ImageId::new(blobs.config.digest.clone());
    let records = store.records();
    let img = records.get(&id).expect("image kept");
    assert_eq!(img.names[0].name.to_string(), "r.io/a:1");
    assert_eq!(img.size, blobs.config.size + blobs.layers[0].size);
}

#[tokio::test]
async fn recovery_cleans_partial_downloads_and_unreferenced_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let kept = {
        let store = Store::open(dir.path()).unwrap();
        add_image(&store, "r.io/a:1", b"layer-a").await
    };
    // What a crash can leave: a partial ingest, a committed blob no record names, a
    // half-written index.
    std::fs::write(dir.path().join(layout::INGEST_DIR).join("partial"), b"par").unwrap();
    let orphan = desc(b"orphan", "x");
    std::fs::write(layout::blob_path(dir.path(), &orphan.digest), b"orphan").unwrap();
    std::fs::write(dir.path().join("index.json.tmp"), b"{").unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(
        std::fs::read_dir(dir.path().join(layout::INGEST_DIR))
            .unwrap()
            .count(),
        0
    );
    assert!(!layout::blob_path(dir.path(), &orphan.digest).exists());
    assert!(!dir.path().join("index.json.tmp").exists());
    for d in kept.all() {
        assert!(store.has_blob(d).await, "referenced blob {} kept", d.digest);
    }
}

#[tokio::test]
async fn an_image_with_a_missing_or_truncated_blob_is_dropped_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (broken, intact) = {
        let store = Store::open(dir.path()).unwrap();
        (
            add_image(&store, "r.io/a:1", b"layer-a").await,
            add_image(&store, "r.io/b:1", b"layer-b").await,
        )
    };
    std::fs::write(
        layout::blob_path(dir.path(), &broken.layers[0].digest),
        b"lay",
    )
    .unwrap();
    let store = Store::open(dir.path()).unwrap();
    let records = store.records();
    assert!(
        records
            .get(&ImageId::new(broken.config.digest.clone()))
            .is_none()
    );
    assert!(
        records
            .get(&ImageId::new(intact.config.digest.clone()))
            .is_some()
    );
    // The drop was persisted, and the broken image's own blobs were collected.
    let text = std::fs::read_to_string(dir.path().join(layout::INDEX_FILE)).unwrap();
    assert!(
        !text.contains("r.io/a:1") && text.contains("r.io/b:1"),
        "{text}"
    );
    assert!(!store.has_blob(&broken.config).await);
}

#[tokio::test]
async fn a_leased_blob_survives_the_removal_of_its_last_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let blobs = add_image(&store, "r.io/a:1", b"layer-a").await;
    let lease = store.lease([blobs.layers[0].digest.clone()]);
    assert!(
        store
            .remove_image(&ImageId::new(blobs.config.digest.clone()))
            .await
            .unwrap()
    );
    assert!(store.has_blob(&blobs.layers[0]).await, "leased layer kept");
    assert!(
        !store.has_blob(&blobs.config).await,
        "unleased config deleted"
    );
    drop(lease);
    assert!(
        eventually_gone(&store, &blobs.layers[0]).await,
        "deleted once its last lease went"
    );
}

/// Polls (bounded) until a blob is gone: lease clean-up runs on a blocking thread.
async fn eventually_gone(store: &Store, d: &Descriptor) -> bool {
    for _ in 0..200 {
        if !store.has_blob(d).await {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn blobs_of_a_pull_that_never_recorded_its_image_go_with_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let kept = add_image(&store, "r.io/a:1", b"shared").await;
    let fresh = desc(b"fresh", "x");
    let lease = store.lease([fresh.digest.clone(), kept.layers[0].digest.clone()]);
    store.put_blob(&fresh, b"fresh").await.unwrap();
    drop(lease);
    assert!(
        eventually_gone(&store, &fresh).await,
        "a blob no image references goes"
    );
    assert!(
        store.has_blob(&kept.layers[0]).await,
        "a referenced blob stays"
    );
}

#[tokio::test]
async fn a_blob_committed_twice_at_once_is_counted_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = store.usage();
    let d = desc(&[9u8; 8192], "x");
    let _lease = store.lease([d.digest.clone()]);
    let mut a = store.ingest(&d).await.unwrap();
    let mut b = store.ingest(&d).await.unwrap();
    a.write(Bytes::from(vec![9u8; 8192])).await.unwrap();
    b.write(Bytes::from(vec![9u8; 8192])).await.unwrap();
    store.commit(a).await.unwrap();
    store.commit(b).await.unwrap();
    assert_eq!(store.usage().inodes, before.inodes + 1);
    assert_eq!(
        std::fs::read_dir(dir.path().join(layout::INGEST_DIR))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn usage_follows_blobs_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let empty = store.usage();
    let blobs = add_image(&store, "r.io/a:1", &vec![7u8; 256 * 1024]).await;
    let full = store.usage();
    assert!(
        full.bytes >= empty.bytes + 256 * 1024,
        "{empty:?} -> {full:?}"
    );
    assert_eq!(full.inodes, empty.inodes + 3, "three blobs");
    store
        .remove_image(&ImageId::new(blobs.config.digest.clone()))
        .await
        .unwrap();
    let after = store.usage();
    assert_eq!(after.inodes, empty.inodes, "the three blobs are gone");
    assert!(after.bytes < full.bytes);
}

#[tokio::test]
async fn an_index_entry_written_by_another_tool_is_kept_with_all_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    // An image's blobs and an index over them, named the way
    // `skopeo copy --all ... oci:<root>:docker.io/library/x:1` would; index.json is then
    // rewritten to hold only that index entry.
    let store = Store::open(dir.path()).unwrap();
    let child = add_image(&store, "r.io/child:1", b"child-layer").await;
    let index_bytes = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","manifests":[{{"mediaType":"{}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
        media::OCI_INDEX,
        media::OCI_MANIFEST,
        child.manifest.digest,
        child.manifest.size
    );
    let index = desc(index_bytes.as_bytes(), media::OCI_INDEX);
    drop(store);
    // Written by the other tool, straight into the layout.
    std::fs::write(layout::blob_path(dir.path(), &index.digest), &index_bytes).unwrap();
    let path = dir.path().join(layout::INDEX_FILE);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["manifests"] = serde_json::json!([{
        "mediaType": media::OCI_INDEX,
        "digest": index.digest.to_string(),
        "size": index.size,
        "annotations": {layout::REF_NAME: "docker.io/library/x:1"},
    }]);
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.records().is_empty(),
        "an index entry is not one of our images"
    );
    for d in std::iter::once(&index).chain(child.all()) {
        assert!(
            store.has_blob(d).await,
            "blob {} of the foreign index kept",
            d.digest
        );
    }
    add_image(&store, "r.io/other:1", b"other").await;
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("docker.io/library/x:1"),
        "the foreign entry survives rewrites: {text}"
    );
}

#[tokio::test]
async fn a_caller_that_goes_away_while_its_image_is_recorded_leaves_a_complete_image() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (blobs, lease) = put_image(&store, r#"{"os":"linux"}"#, b"layer").await;
    let id = ImageId::new(blobs.config.digest.clone());
    let record = NameRecord {
        name: ImageName::parse_qualified("r.io/a:1").unwrap(),
        manifest: blobs.manifest.clone(),
        pulled_by: blobs.manifest.digest.clone(),
    };
    {
        // Polled once (the change starts), then dropped: a cancelled pull.
        let fut = store.add_name(&id, &blobs, record, lease);
        tokio::pin!(fut);
        assert!(futures_util::poll!(fut.as_mut()).is_pending());
    }
    for _ in 0..200 {
        if store.records().get(&id).is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(store.records().get(&id).is_some(), "the change completed");
    // Give a wrongly released lease's clean-up the time to run, then check nothing went.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for d in blobs.all() {
        assert!(
            store.has_blob(d).await,
            "blob {} of the recorded image kept",
            d.digest
        );
    }
}

#[tokio::test]
async fn a_damaged_blob_in_place_is_replaced_by_verified_content() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let d = desc(b"the real content", "x");
    std::fs::write(layout::blob_path(dir.path(), &d.digest), b"trunc").unwrap();
    assert!(
        !store.has_blob(&d).await,
        "a wrong-size file is not the blob"
    );
    let _lease = store.lease([d.digest.clone()]);
    store.put_blob(&d, b"the real content").await.unwrap();
    assert!(store.has_blob(&d).await);
    assert_eq!(
        std::fs::read(layout::blob_path(dir.path(), &d.digest)).unwrap(),
        b"the real content"
    );
}

#[tokio::test]
async fn a_blob_placed_after_its_pull_went_away_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let before = store.usage();
    let d = desc(b"orphaned", "x");
    // No lease: the pull that downloaded it is gone by the time it is placed.
    store.put_blob(&d, b"orphaned").await.unwrap();
    assert!(!store.has_blob(&d).await);
    assert_eq!(store.usage().inodes, before.inodes);
    assert_eq!(
        std::fs::read_dir(dir.path().join(layout::INGEST_DIR))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn an_artifact_named_like_an_image_is_kept_with_its_blobs() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    // What `oras push` into the layout could leave: an OCI manifest whose config is not an
    // image config, under a fully qualified name.
    let write = |bytes: &[u8], media_type: &str| {
        let d = desc(bytes, media_type);
        std::fs::write(layout::blob_path(dir.path(), &d.digest), bytes).unwrap();
        d
    };
    let config = write(b"{}", "application/vnd.oci.empty.v1+json");
    let chart = write(
        b"helm chart bytes",
        "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    );
    let manifest_json = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {"mediaType": config.media_type, "digest": config.digest.to_string(), "size": config.size},
        "layers": [{"mediaType": chart.media_type, "digest": chart.digest.to_string(), "size": chart.size}],
    })
    .to_string();
    let manifest = write(manifest_json.as_bytes(), media::OCI_MANIFEST);
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media::OCI_MANIFEST,
        "digest": manifest.digest.to_string(),
        "size": manifest.size,
        "annotations": {layout::REF_NAME: "r.io/charts/app:1"},
    }]});
    std::fs::write(dir.path().join(layout::INDEX_FILE), index.to_string()).unwrap();

    let store = Store::open(dir.path()).unwrap();
    assert!(store.records().is_empty(), "an artifact is not an image");
    for d in [&config, &chart, &manifest] {
        assert!(store.has_blob(d).await, "artifact blob {} kept", d.digest);
    }
    add_image(&store, "r.io/other:1", b"other").await;
    let text = std::fs::read_to_string(dir.path().join(layout::INDEX_FILE)).unwrap();
    assert!(
        text.contains("r.io/charts/app:1"),
        "the artifact's entry survives rewrites: {text}"
    );
}

#[test]
fn a_directory_with_blobs_but_no_index_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = layout::blobs_dir(dir.path());
    std::fs::create_dir_all(&blobs).unwrap();
    let d = desc(b"someone else's", "x");
    std::fs::write(layout::blob_path(dir.path(), &d.digest), b"someone else's").unwrap();
    std::fs::create_dir_all(dir.path().join(layout::INGEST_DIR)).unwrap();
    std::fs::write(
        dir.path().join(layout::INGEST_DIR).join("their-partial"),
        b"x",
    )
    .unwrap();
    let err = Store::open(dir.path()).err().expect("must refuse");
    assert!(err.to_string().contains("index.json"), "{err}");
    assert!(
        layout::blob_path(dir.path(), &d.digest).exists(),
        "no blob deleted"
    );
    assert!(
        dir.path()
            .join(layout::INGEST_DIR)
            .join("their-partial")
            .exists(),
        "ingest untouched"
    );
}

#[test]
fn a_new_store_gets_an_empty_index_so_a_crash_before_the_first_image_is_harmless() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    assert!(dir.path().join(layout::INDEX_FILE).exists());
    // A blob placed before the first index update, then a crash: the store still opens.
    let d = desc(b"early", "x");
    std::fs::write(layout::blob_path(dir.path(), &d.digest), b"early").unwrap();
    drop(Store::open(dir.path()).unwrap());
    assert!(
        !layout::blob_path(dir.path(), &d.digest).exists(),
        "the orphan was collected"
    );
}

#[tokio::test]
async fn an_intact_manifest_cri_imaged_cannot_parse_is_someone_elses_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let write = |bytes: &[u8]| {
        let d = desc(bytes, "x");
        std::fs::write(layout::blob_path(dir.path(), &d.digest), bytes).unwrap();
        d
    };
    let layer = write(b"layer hashed with sha512 in its descriptor");
    let manifest_json = format!(
        r#"{{"schemaVersion":2,"mediaType":"{}","config":{{"mediaType":"{}","digest":"{}","size":1}},"layers":[{{"mediaType":"x","digest":"sha512:{}","size":1}}]}}"#,
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        layer.digest,
        "ab".repeat(64)
    );
    let manifest = write(manifest_json.as_bytes());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media::OCI_MANIFEST, "digest": manifest.digest.to_string(), "size": manifest.size,
        "annotations": {layout::REF_NAME: "docker.io/library/foreign:1"},
    }]});
    std::fs::write(dir.path().join(layout::INDEX_FILE), index.to_string()).unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.records().is_empty());
    assert!(
        store.has_blob(&manifest).await && store.has_blob(&layer).await,
        "nothing of it deleted"
    );
    let text = std::fs::read_to_string(dir.path().join(layout::INDEX_FILE)).unwrap();
    assert!(text.contains("docker.io/library/foreign:1"), "{text}");
}

#[tokio::test]
async fn an_entry_another_tool_adds_while_the_store_is_open_survives() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add_image(&store, "r.io/a:1", b"a").await;
    // Another tool (say `skopeo copy ... oci:<root>:v1`) writes a blob and adds an entry.
    let theirs = desc(b"their manifest-ish blob", media::OCI_MANIFEST);
    std::fs::write(
        layout::blob_path(dir.path(), &theirs.digest),
        b"their manifest-ish blob",
    )
    .unwrap();
    let path = dir.path().join(layout::INDEX_FILE);
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["manifests"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({
            "mediaType": media::OCI_MANIFEST,
            "digest": theirs.digest.to_string(),
            "size": theirs.size,
            "annotations": {layout::REF_NAME: "v1"},
        }));
    let tmp = dir.path().join("their-index.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    add_image(&store, "r.io/b:1", b"b").await;
    let text = std::fs::read_to_string(&path).unwrap();
    for name in ["r.io/a:1", "r.io/b:1", "\"v1\""] {
        assert!(text.contains(name), "{name} in {text}");
    }
    store.close().await;
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(
        store.has_blob(&theirs).await,
        "their blob survives a restart"
    );
    assert_eq!(store.records().len(), 2);
}

#[tokio::test]
async fn foreign_entries_follow_the_file_and_never_shadow_our_names() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add_image(&store, "r.io/a:1", b"a").await;
    let path = dir.path().join(layout::INDEX_FILE);
    // Another tool rewrites index.json (atomically) with our entries plus `extra`.
    let rewrite = |extra: Vec<serde_json::Value>| {
        let mut doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let list = doc["manifests"].as_array_mut().unwrap();
        list.retain(|e| e["annotations"][layout::REF_NAME] == "r.io/a:1");
        list.extend(extra);
        let tmp = dir.path().join("their.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&doc).unwrap()).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let entry = |name: &str, bytes: &[u8]| {
        let d = desc(bytes, media::OCI_MANIFEST);
        std::fs::write(layout::blob_path(dir.path(), &d.digest), bytes).unwrap();
        serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.digest.to_string(), "size": d.size,
            "annotations": {layout::REF_NAME: name}})
    };
    rewrite(vec![entry("v1", b"first")]);
    add_image(&store, "r.io/b:1", b"b").await;
    // The tool retags v1 and also writes an entry for one of our names.
    rewrite(vec![entry("v1", b"second"), entry("r.io/a:1", b"shadow")]);
    add_image(&store, "r.io/c:1", b"c").await;
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let names: Vec<String> = doc["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e["annotations"][layout::REF_NAME]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "v1").count(), 1, "{names:?}");
    assert_eq!(
        names.iter().filter(|n| *n == "r.io/a:1").count(),
        1,
        "{names:?}"
    );
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn partial_downloads_are_kept_for_a_day_then_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let ingest = dir.path().join(layout::INGEST_DIR);
    std::fs::create_dir_all(&ingest).unwrap();
    std::fs::create_dir_all(layout::blobs_dir(dir.path())).unwrap();
    let (fresh, stale) = (desc(b"fresh", "x"), desc(b"stale", "x"));
    let fresh_path = ingest.join(format!("{}.1.0", fresh.digest.hex()));
    let stale_path = ingest.join(format!("{}.1.1", stale.digest.hex()));
    std::fs::write(&fresh_path, b"fre").unwrap();
    std::fs::write(&stale_path, b"sta").unwrap();
    let two_days = std::time::Duration::from_secs(2 * 24 * 60 * 60);
    std::fs::File::options()
        .write(true)
        .open(&stale_path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - two_days)
        .unwrap();

    let kept = recover::scan_ingest(dir.path()).unwrap();
    assert_eq!(kept.get(&fresh.digest), Some(&fresh_path));
    assert!(!kept.contains_key(&stale.digest));
    assert!(fresh_path.exists());
    assert!(
        !stale_path.exists(),
        "a partial untouched for two days is deleted"
    );
}

/// Copies a directory tree (what a crash leaves on disk, while the store still runs).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// Puts an image's blobs under a pull's note into a store, and leaves in `root` what a
/// crash at that point leaves: the blobs and the note, no record.
async fn interrupted_pull(root: &std::path::Path, grace: std::time::Duration) -> ManifestBlobs {
    let live = tempfile::tempdir().unwrap();
    let store = Store::open_with(
        live.path(),
        Options {
            interrupted_grace: grace,
        },
    )
    .unwrap();
    let (blobs, _lease) = put_image(&store, r#"{"os":"linux","n":"cut"}"#, b"layer-cut").await;
    let _intent = store.intend("r.io/cut:1", &blobs).await.unwrap();
    copy_tree(live.path(), root);
    blobs
}

#[tokio::test]
async fn an_interrupted_pull_keeps_its_verified_blobs_until_its_note_expires() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = interrupted_pull(dir.path(), std::time::Duration::from_secs(3600)).await;
    // Offline, the kept blobs are notes, not problems.
    let report = check::check(dir.path()).unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert!(
        report
            .notes
            .iter()
            .any(|n| n.contains("kept from an interrupted pull of r.io/cut:1")),
        "{:?}",
        report.notes
    );
    // A restart keeps them (nothing references them).
    let store = Store::open(dir.path()).unwrap();
    for d in blobs.all() {
        assert!(store.has_blob(d).await, "{} kept", d.digest);
    }
    // The next pull records the image: its note goes, the blobs are the image's.
    name_image(&store, &blobs, "r.io/cut:1").await;
    assert!(intents::read_all(dir.path()).is_empty(), "the note is gone");
    store.close().await;
    drop(store);
    assert!(check::check(dir.path()).unwrap().problems.is_empty());
}

#[tokio::test]
async fn the_blobs_of_an_expired_interrupted_pull_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = interrupted_pull(dir.path(), std::time::Duration::ZERO).await;
    let report = check::check(dir.path()).unwrap();
    assert!(
        report.notes.iter().any(|n| n.contains("expired")),
        "{:?}",
        report.notes
    );
    assert!(
        !report.problems.is_empty(),
        "past the grace the blobs are unreferenced again"
    );
    let store = Store::open(dir.path()).unwrap();
    for d in blobs.all() {
        assert!(!store.has_blob(d).await, "{} collected", d.digest);
    }
    assert!(intents::read_all(dir.path()).is_empty(), "the note is gone");
}

#[tokio::test]
async fn a_kept_interrupted_pull_is_released_when_its_note_expires_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let blobs = interrupted_pull(dir.path(), std::time::Duration::from_millis(1500)).await;
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has_blob(&blobs.config).await, "kept at start");
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if !store.has_blob(&blobs.config).await {
            gone = true;
            break;
        }
    }
    assert!(gone, "collected once the note expired");
    assert!(intents::read_all(dir.path()).is_empty());
}

#[tokio::test]
async fn a_note_that_is_not_one_is_a_problem_for_check_and_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let notes = dir.path().join(intents::INTENTS_DIR);
    std::fs::create_dir_all(&notes).unwrap();
    std::fs::write(notes.join("garbage.json"), b"{\"image\":").unwrap();
    std::fs::write(
        notes.join(format!("{}.1.2.json", "ab".repeat(32))),
        br#"{"image":"x","manifest":"sha256:../../etc","blobs":[],"expires_unix":99999999999}"#,
    )
    .unwrap();
    let report = check::check(dir.path()).unwrap();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    drop(Store::open(dir.path()).unwrap());
    assert!(intents::read_all(dir.path()).is_empty());
}

/// Images put but not yet named, each with the lease that holds its blobs.
type Puts = Vec<(ManifestBlobs, Lease)>;

/// Names each of `puts` as `REPO:i`, every one in its own task at once.
fn name_each_at_once(
    store: &Arc<Store>,
    puts: Puts,
    repo: &str,
) -> Vec<tokio::task::JoinHandle<Result<(), StoreError>>> {
    puts.into_iter()
        .enumerate()
        .map(|(i, (blobs, lease))| {
            let store = store.clone();
            let name = ImageName::parse_qualified(&format!("{repo}:{i}")).unwrap();
            tokio::spawn(async move {
                let id = ImageId::new(blobs.config.digest.clone());
                let record = NameRecord {
                    name,
                    manifest: blobs.manifest.clone(),
                    pulled_by: blobs.manifest.digest.clone(),
                };
                store.add_name(&id, &blobs, record, lease).await
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_queued_behind_a_write_are_committed_together_each_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let kept = add_image(&store, "r.io/kept:1", b"layer-kept").await;
    let mut puts = Vec::new();
    for i in 0..8 {
        let config = format!(r#"{{"os":"linux","architecture":"amd64","n":{i}}}"#);
        puts.push(put_image(&store, &config, format!("layer-{i}").as_bytes()).await);
    }
    let writes_before = store.shared.writer.lock().await.writes;
    // A write in progress: every change below queues behind it.
    let busy = store.shared.writer.lock().await;
    let calls = name_each_at_once(&store, puts, "r.io/b");
    let untag = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .untag(&ImageName::parse_qualified("r.io/kept:1").unwrap())
                .await
        })
    };
    let unknown = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .untag(&ImageName::parse_qualified("r.io/never:1").unwrap())
                .await
        })
    };
    for _ in 0..500 {
        if store.shared.queue.lock().unwrap().len() == 10 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    assert_eq!(store.shared.queue.lock().unwrap().len(), 10, "all queued");
    drop(busy);
    for call in calls {
        call.await.unwrap().expect("each add is answered as done");
    }
    assert!(untag.await.unwrap().unwrap());
    assert!(
        !unknown.await.unwrap().unwrap(),
        "a no-op is answered as one"
    );
    assert_eq!(
        store.shared.writer.lock().await.writes - writes_before,
        1,
        "ten changes, one index.json write"
    );
    // What each caller was told is on disk, in the order the changes came.
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    let records = store.records();
    assert_eq!(records.len(), 8);
    assert!(
        records
            .get(&ImageId::new(kept.config.digest.clone()))
            .is_none()
    );
    assert!(
        !store.has_blob(&kept.layers[0]).await,
        "the untagged image's blobs went"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_group_write_fails_every_change_in_it_and_publishes_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path()).unwrap());
    let mut puts = Vec::new();
    for i in 0..3 {
        let config = format!(r#"{{"os":"linux","architecture":"amd64","n":{i}}}"#);
        puts.push(put_image(&store, &config, format!("layer-{i}").as_bytes()).await);
    }
    let busy = store.shared.writer.lock().await;
    // index.json's temp file cannot be created: a directory has its name.
    std::fs::create_dir(dir.path().join("index.json.tmp")).unwrap();
    let calls = name_each_at_once(&store, puts, "r.io/f");
    for _ in 0..500 {
        if store.shared.queue.lock().unwrap().len() == 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    drop(busy);
    for call in calls {
        let err = call.await.unwrap().expect_err("the write failed");
        assert!(err.to_string().contains("index.json.tmp"), "{err}");
    }
    assert!(store.records().is_empty(), "nothing published");
    std::fs::remove_dir(dir.path().join("index.json.tmp")).unwrap();
    add_image(&store, "r.io/f:0", b"again").await;
    assert_eq!(
        store.records().len(),
        1,
        "the store writes again once it can"
    );
}
