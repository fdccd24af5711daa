//! Core rules on a real store in a temp dir, without a registry: lookup by every handle,
//! untag versus remove, listing filters, and blob clean-up.

use super::*;
use crate::names::{Digest, InsecureRegistries};
use crate::oci::Platform;
use crate::store::testing;

struct Fixture {
    _dir: tempfile::TempDir,
    svc: ImageService,
}

fn digest_of(bytes: &[u8]) -> Digest {
    testing::desc(bytes, "x").digest
}

fn fixture(registries: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let registry = RegistryClient::new(InsecureRegistries::default(), Platform::current());
    let settings = Settings {
        registries: registries.iter().map(|r| r.to_string()).collect(),
        default_transport: "docker".into(),
        max_concurrent_downloads: 3,
        imports: Default::default(),
        node: Default::default(),
        pinned: Default::default(),
        retry: Default::default(),
        progress_timeout: None,
        min_rate: 0,
        trust: std::sync::Arc::new(crate::trust::NodeTrust::accept_anything()),
        credential_helper_cache: std::time::Duration::from_secs(60),
    };
    Fixture {
        _dir: dir,
        svc: ImageService::new(store, registry, settings),
    }
}

/// Stores an image (config with `user`, one layer) under `names`; returns its ID.
async fn add(svc: &ImageService, user: &str, layer: &[u8], names: &[&str]) -> ImageId {
    let config = format!(r#"{{"architecture":"amd64","os":"linux","config":{{"User":"{user}"}}}}"#);
    let (blobs, _lease) = testing::put_image(&svc.inner.store, &config, layer).await;
    for n in names {
        testing::name_image(&svc.inner.store, &blobs, n).await;
    }
    ImageId::new(blobs.config.digest.clone())
}

#[tokio::test]
async fn status_finds_an_image_by_every_handle() {
    let f = fixture(&["r.io"]);
    let id = add(&f.svc, "1002", b"layer", &["r.io/app:1", "q.io/other:2"]).await;
    let manifest = f
        .svc
        .status("r.io/app:1")
        .await
        .unwrap()
        .unwrap()
        .manifest_digest;
    let handles = [
        id.to_string(),
        id.hex().to_owned(),
        id.hex()[..3].to_owned(),
        format!("sha256:{}", &id.hex()[..5]),
        "r.io/app:1".into(),
        "app:1".into(),
        "docker://r.io/app:1".into(),
        "q.io/other:2".into(),
        format!("r.io/app@{manifest}"),
    ];
    let first = f.svc.status(&handles[0]).await.unwrap().unwrap();
    assert_eq!(first.user, ImageUser::Uid(1002));
    for h in &handles {
        assert_eq!(
            f.svc.status(h).await.unwrap().as_ref(),
            Some(&first),
            "handle {h}"
        );
    }
    let missing = [
        "r.io/app:2",
        "app",
        "r.io/nope:1",
        &"0".repeat(64),
        "zz",
        "other:2",
    ];
    for h in missing {
        assert_eq!(f.svc.status(h).await.unwrap(), None, "handle {h}");
    }
    assert!(matches!(f.svc.status("UPPER/x").await, Err(Error::Name(_))));
}

#[tokio::test]
async fn list_filters_and_prunes() {
    let f = fixture(&["r.io"]);
    let a = add(&f.svc, "", b"a", &["r.io/a:1"]).await;
    let b = add(&f.svc, "www-data:1", b"b", &["r.io/b:1"]).await;
    assert_eq!(f.svc.list(None).await.unwrap().len(), 2);
    assert_eq!(f.svc.list(Some("")).await.unwrap().len(), 2);
    let only_b = f.svc.list(Some("b:1")).await.unwrap();
    assert_eq!(only_b.iter().map(|i| &i.id).collect::<Vec<_>>(), vec![&b]);
    assert_eq!(only_b[0].user, ImageUser::Name("www-data".into()));
    assert!(f.svc.list(Some("r.io/c:1")).await.unwrap().is_empty());
    assert!(f.svc.list(Some("Not A Name")).await.unwrap().is_empty());
    f.svc.remove(a.as_str()).await.unwrap();
    assert!(f.svc.inner.cache.get(&a).is_none());
    assert!(f.svc.inner.cache.get(&b).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_listing_of_many_images_reads_their_configs_in_one_pass() {
    let f = fixture(&["r.io"]);
    let mut ids = Vec::new();
    for i in 0..40 {
        let user = format!("{}", 1000 + i);
        let name = format!("r.io/many:{i}");
        ids.push(add(&f.svc, &user, format!("layer-{i}").as_bytes(), &[&name]).await);
    }
    // One config that cannot be read: the listing says which image, as before.
    let broken = add(&f.svc, "0", b"broken", &["r.io/broken:1"]).await;
    let path = crate::store::layout::blob_path(f.svc.inner.store.root(), broken.digest());
    std::fs::write(&path, b"not json").unwrap();
    let err = f.svc.list(None).await.expect_err("an unreadable config");
    assert!(err.to_string().contains(broken.as_str()), "{err}");
    // Every other config was read by the one pass.
    for (i, id) in ids.iter().enumerate() {
        let meta = f.svc.inner.cache.get(id).expect("prefilled");
        assert_eq!(meta.user, format!("{}", 1000 + i));
    }
    f.svc.remove(broken.as_str()).await.unwrap();
    let listed = f.svc.list(None).await.unwrap();
    assert_eq!(listed.len(), 40);
    assert!(
        listed
            .iter()
            .all(|i| matches!(i.user, ImageUser::Uid(1000..1040)))
    );
}

#[tokio::test]
async fn untag_removes_one_name_and_the_image_with_its_last() {
    let f = fixture(&["r.io"]);
    let id = add(&f.svc, "", b"x", &["r.io/app:1", "r.io/app:2"]).await;
    f.svc.untag("app:1").await.unwrap();
    let info = f.svc.status(id.as_str()).await.unwrap().unwrap();
    assert_eq!(info.repo_tags, vec!["r.io/app:2".to_string()]);
    f.svc.untag("docker://r.io/app:2").await.unwrap();
    assert_eq!(f.svc.status(id.as_str()).await.unwrap(), None);
    // Untagging what is not there is not an error.
    f.svc.untag("r.io/app:2").await.unwrap();
}

#[tokio::test]
async fn untag_by_id_removes_the_image() {
    let f = fixture(&[]);
    let id = add(&f.svc, "", b"x", &["r.io/app:1", "r.io/app:2"]).await;
    f.svc.untag(&id.hex()[..6]).await.unwrap();
    assert!(f.svc.list(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn remove_by_a_tag_removes_every_name_and_only_unshared_blobs() {
    let f = fixture(&[]);
    let a = add(&f.svc, "a", b"shared", &["r.io/a:1", "r.io/a:2"]).await;
    let b = add(&f.svc, "b", b"shared", &["r.io/b:1"]).await;
    let blob = |d: &Digest| f.svc.root().join("blobs/sha256").join(d.hex());
    f.svc.remove("r.io/a:2").await.unwrap();
    assert_eq!(f.svc.status("r.io/a:1").await.unwrap(), None);
    assert!(
        !blob(a.digest()).exists(),
        "the removed image's config is deleted"
    );
    assert!(blob(b.digest()).exists());
    assert!(
        blob(&digest_of(b"shared")).exists(),
        "a layer another image uses stays"
    );
    f.svc.remove("r.io/b:1").await.unwrap();
    assert!(!blob(&digest_of(b"shared")).exists());
    // Idempotent.
    f.svc.remove("r.io/b:1").await.unwrap();
    f.svc.remove(&"0".repeat(64)).await.unwrap();
}

#[tokio::test]
async fn pull_by_known_id_prefix_needs_no_registry() {
    let f = fixture(&[]);
    let id = add(&f.svc, "", b"x", &["r.io/app:1"]).await;
    let req = PullRequest {
        image: id.hex()[..8].to_owned(),
        auth: None,
        namespace: None,
    };
    assert_eq!(f.svc.pull(req).await.unwrap(), id);
    let unknown = PullRequest {
        image: "f".repeat(64),
        auth: None,
        namespace: None,
    };
    assert!(matches!(f.svc.pull(unknown).await, Err(Error::Name(_))));
    let short = PullRequest {
        image: "busybox".into(),
        auth: None,
        namespace: None,
    };
    assert!(
        matches!(f.svc.pull(short).await, Err(Error::Name(_))),
        "no registries configured"
    );
}

#[tokio::test]
async fn a_start_with_snapshots_notes_each_config_s_user_as_it_reads_it_for_chains() {
    let f = fixture(&["r.io"]);
    let a = add(&f.svc, "1001", b"a", &["r.io/a:1"]).await;
    let b = add(&f.svc, "www-data", b"b", &["r.io/b:1"]).await;
    let Fixture { _dir: dir, svc } = f;
    let settings = svc.inner.settings.clone();
    svc.inner.store.close().await;
    drop(svc);
    let store = Store::open(dir.path()).unwrap();
    let snapshots =
        crate::snapshot::Snapshots::open(&dir.path().join("snap"), Default::default()).unwrap();
    let registry = RegistryClient::new(InsecureRegistries::default(), Platform::current());
    let svc = ImageService::with_snapshots(store, registry, settings, Some(snapshots));
    // The start-up collection read both configs; the first listing needs no read.
    assert_eq!(svc.inner.cache.get(&a).expect("noted").user, "1001");
    assert_eq!(svc.inner.cache.get(&b).expect("noted").user, "www-data");
}
