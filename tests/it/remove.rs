//! RemoveImage: by ID, ID prefix, tag or repo digest the whole image goes with all its
//! names; unknown images and concurrent removals are OK; unreferenced blobs are deleted
//! and shared ones kept (contract point 2).

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::future::join_all;

use crate::support::{
    Client, ImageBuilder, Setup, TestImage, eventually, hex_of, list, pull, random_layer, remove,
    status, status_of, try_remove,
};

/// Pushes `img` as `test/app:1`, `test/app:2` and `other/app:3` and pulls all three names.
/// Returns the names.
async fn pull_with_three_names(s: &Setup, c: &mut Client, img: &TestImage) -> Vec<String> {
    img.push(&s.registry, "test/app", "1").await;
    img.push(&s.registry, "test/app", "2").await;
    img.push(&s.registry, "other/app", "3").await;
    let names = vec![
        s.name("test/app:1"),
        s.name("test/app:2"),
        s.name("other/app:3"),
    ];
    for n in &names {
        assert_eq!(pull(c, n).await, img.id(), "pull {n}");
    }
    let got = status_of(c, &img.id()).await;
    assert_eq!(got.repo_tags.len(), 3, "{got:?}");
    names
}

/// The image must be gone from ImageStatus (by every name) and ListImages.
async fn assert_gone(c: &mut Client, s: &Setup, img: &TestImage, names: &[String]) {
    assert!(
        status(c, &img.id()).await.is_none(),
        "ImageStatus(<id>) after removal"
    );
    for n in names {
        assert!(
            status(c, n).await.is_none(),
            "ImageStatus({n}) after removal"
        );
    }
    for repo in ["test/app", "other/app"] {
        let d = format!("{}@{}", s.name(repo), img.manifest_digest());
        assert!(
            status(c, &d).await.is_none(),
            "ImageStatus({d}) after removal"
        );
    }
    let all = list(c, None).await;
    assert!(
        all.iter().all(|i| i.id != img.id()),
        "ListImages still shows the removed image: {all:?}"
    );
}

/// Removes the image named `by` (after giving it three names), checks it is all gone and
/// that a second image is untouched.
async fn check_removal_by(by: impl Fn(&Setup, &TestImage) -> String) {
    let s = Setup::new().await;
    let mut c = s.client();
    let img = ImageBuilder::new().build();
    let keep = ImageBuilder::new().build();
    keep.push(&s.registry, "keep/app", "1").await;
    assert_eq!(pull(&mut c, &s.name("keep/app:1")).await, keep.id());
    let kept_before = status_of(&mut c, &keep.id()).await;
    let names = pull_with_three_names(&s, &mut c, &img).await;

    let target = by(&s, &img);
    remove(&mut c, &target).await;
    assert_gone(&mut c, &s, &img, &names).await;
    assert_eq!(
        list(&mut c, None).await,
        vec![kept_before],
        "removing {target} must leave the other image as it was"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_id_removes_the_image_with_all_names() {
    check_removal_by(|_, img| img.id()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_one_tag_removes_the_image_with_all_names() {
    check_removal_by(|s, _| s.name("test/app:2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_repo_digest_removes_the_image_with_all_names() {
    check_removal_by(|s, img| format!("{}@{}", s.name("other/app"), img.manifest_digest())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_truncated_id_removes_the_image_with_all_names() {
    check_removal_by(|_, img| hex_of(&img.id())[..12].to_owned()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_by_prefixed_truncated_id_removes_the_image_with_all_names() {
    check_removal_by(|_, img| format!("sha256:{}", &hex_of(&img.id())[..16])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_unknown_or_already_removed_images_is_ok() {
    let s = Setup::new().await;
    let mut c = s.client();
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let name = s.name("test/app:1");
    assert_eq!(pull(&mut c, &name).await, img.id());

    for unknown in [
        "0".repeat(64),
        format!("sha256:{}", "0".repeat(64)),
        "busybox".to_owned(),
        s.name("test/app:2"),
        s.name("test/none:1"),
    ] {
        if let Err(e) = try_remove(&mut c, &unknown).await {
            panic!(
                "RemoveImage({unknown}) must be OK, got {:?}: {}",
                e.code(),
                e.message()
            );
        }
    }
    // The unrelated image is still there.
    assert_eq!(status_of(&mut c, &name).await.id, img.id());

    remove(&mut c, &name).await;
    // Repeated removals, by every name, stay OK.
    for again in [name.clone(), img.id(), hex_of(&img.id()).to_owned()] {
        if let Err(e) = try_remove(&mut c, &again).await {
            panic!(
                "repeated RemoveImage({again}) must be OK, got {:?}: {}",
                e.code(),
                e.message()
            );
        }
    }
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_concurrent_removals_all_succeed_and_the_image_is_gone() {
    let s = Setup::new().await;
    let mut c = s.client();
    let img = ImageBuilder::new().build();
    let names = pull_with_three_names(&s, &mut c, &img).await;

    let targets = [
        img.id(),
        names[0].clone(),
        names[1].clone(),
        names[2].clone(),
        img.id(),
    ];
    let removals = targets.iter().map(|t| {
        let mut c = s.client();
        let t = t.clone();
        async move { (t.clone(), try_remove(&mut c, &t).await) }
    });
    for (t, r) in join_all(removals).await {
        if let Err(e) = r {
            panic!(
                "concurrent RemoveImage({t}) must be OK, got {:?}: {}",
                e.code(),
                e.message()
            );
        }
    }
    assert_gone(&mut c, &s, &img, &names).await;
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs").join("sha256").join(hex_of(digest))
}

/// Waits (bounded) until none of `digests` is in the store; returns those still there.
async fn wait_blobs_deleted(root: &Path, digests: &[String]) -> Vec<String> {
    let deleted = eventually(Duration::from_secs(10), || async {
        digests.iter().all(|d| !blob_path(root, d).exists())
    })
    .await;
    if deleted {
        Vec::new()
    } else {
        digests
            .iter()
            .filter(|d| blob_path(root, d).exists())
            .cloned()
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_deletes_unreferenced_blobs_and_keeps_shared_layers() {
    let s = Setup::new().await;
    let root = s.daemon.root.clone();
    let mut c = s.client();
    let shared = random_layer(16 * 1024);
    let a = ImageBuilder::new()
        .layers(vec![shared.clone(), random_layer(8 * 1024)])
        .build();
    let b = ImageBuilder::new()
        .layers(vec![shared.clone(), random_layer(8 * 1024)])
        .build();
    a.push(&s.registry, "test/a", "1").await;
    b.push(&s.registry, "test/b", "1").await;
    assert_eq!(pull(&mut c, &s.name("test/a:1")).await, a.id());
    assert_eq!(pull(&mut c, &s.name("test/b:1")).await, b.id());

    let own = |img: &TestImage| {
        vec![
            img.manifest_digest(),
            img.id(),
            img.layers[1].blob.digest.clone(),
        ]
    };
    for d in own(&a)
        .iter()
        .chain(own(&b).iter())
        .chain([&shared.blob.digest])
    {
        assert!(
            blob_path(&root, d).is_file(),
            "blob {d} must be in the store after the pulls"
        );
    }

    remove(&mut c, &a.id()).await;
    let left = wait_blobs_deleted(&root, &own(&a)).await;
    assert!(
        left.is_empty(),
        "blobs only the removed image used must be deleted: {left:?}"
    );
    for d in own(&b).iter().chain([&shared.blob.digest]) {
        assert!(
            blob_path(&root, d).is_file(),
            "blob {d} is used by the remaining image and must be kept"
        );
    }
    assert_eq!(status_of(&mut c, &s.name("test/b:1")).await.id, b.id());

    remove(&mut c, &b.id()).await;
    let mut all_b = own(&b);
    all_b.push(shared.blob.digest.clone());
    let left = wait_blobs_deleted(&root, &all_b).await;
    assert!(
        left.is_empty(),
        "after the last image is removed its blobs must go: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_image_can_be_pulled_again() {
    let s = Setup::new().await;
    let mut c = s.client();
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let name = s.name("test/app:1");
    assert_eq!(pull(&mut c, &name).await, img.id());
    let before = status_of(&mut c, &name).await;
    remove(&mut c, &name).await;
    assert!(status(&mut c, &name).await.is_none());
    assert_eq!(pull(&mut c, &name).await, img.id());
    assert_eq!(status_of(&mut c, &name).await, before);
}
