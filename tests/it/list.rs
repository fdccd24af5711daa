//! ListImages and StreamImages: no filter or an empty filter lists everything, a name, ID
//! or prefix selects one image, an unknown name gives an empty list (contract points 8, 12).

use std::collections::HashSet;

use crate::support::{
    ImageBuilder, Setup, TestImage, by_id, hex_of, list, pull, status_of, stream,
};

/// A setup with two images pulled: `test/one:1` and `test/two:1`.
async fn two_images() -> (Setup, TestImage, TestImage) {
    let s = Setup::new().await;
    let one = ImageBuilder::new().build();
    let two = ImageBuilder::new().build();
    one.push(&s.registry, "test/one", "1").await;
    two.push(&s.registry, "test/two", "1").await;
    let mut c = s.client();
    assert_eq!(pull(&mut c, &s.name("test/one:1")).await, one.id());
    assert_eq!(pull(&mut c, &s.name("test/two:1")).await, two.id());
    (s, one, two)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_on_an_empty_store_is_empty() {
    let s = Setup::new().await;
    let mut c = s.client();
    assert!(list(&mut c, None).await.is_empty());
    assert!(list(&mut c, Some("")).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_filter_and_empty_filter_list_every_image() {
    let (s, one, two) = two_images().await;
    let mut c = s.client();
    let all = by_id(list(&mut c, None).await);
    let mut want = vec![one.id(), two.id()];
    want.sort();
    assert_eq!(all.iter().map(|i| i.id.clone()).collect::<Vec<_>>(), want);
    // crictl always sends a filter, with an empty image for "all".
    let with_empty_filter = by_id(list(&mut c, Some("")).await);
    assert_eq!(with_empty_filter, all);
    // Every listed image is what ImageStatus says about it.
    for img in &all {
        assert_eq!(&status_of(&mut c, &img.id).await, img);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_by_tag_digest_id_or_prefix_selects_that_image() {
    let (s, one, two) = two_images().await;
    let mut c = s.client();
    for (img, repo) in [(&one, "test/one"), (&two, "test/two")] {
        let expected = status_of(&mut c, &img.id()).await;
        let filters = [
            s.name(&format!("{repo}:1")),
            format!("{}@{}", s.name(repo), img.manifest_digest()),
            img.id(),
            hex_of(&img.id()).to_owned(),
            hex_of(&img.id())[..12].to_owned(),
            format!("sha256:{}", &hex_of(&img.id())[..12]),
            format!("{repo}:1"),
        ];
        for f in &filters {
            let got = list(&mut c, Some(f)).await;
            assert_eq!(got, vec![expected.clone()], "ListImages filtered by {f}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_by_unknown_name_or_id_is_an_empty_list() {
    let (s, _one, _two) = two_images().await;
    let mut c = s.client();
    for f in [
        s.name("test/none:1"),
        s.name("test/one:2"),
        "busybox".to_owned(),
        "0".repeat(64),
        format!("sha256:{}", "0".repeat(64)),
    ] {
        assert!(
            list(&mut c, Some(&f)).await.is_empty(),
            "ListImages filtered by {f}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_images_streams_what_list_images_lists() {
    let (s, one, _two) = two_images().await;
    let mut c = s.client();

    let listed = by_id(list(&mut c, None).await);
    let chunks = stream(&mut c, None).await;
    let streamed: Vec<_> = chunks.into_iter().flatten().collect();
    let ids: Vec<&str> = streamed.iter().map(|i| i.id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(
        ids.len(),
        unique.len(),
        "every image in exactly one chunk: {ids:?}"
    );
    assert_eq!(by_id(streamed), listed);

    let streamed_empty_filter: Vec<_> = stream(&mut c, Some(""))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(by_id(streamed_empty_filter), listed);

    let filtered: Vec<_> = stream(&mut c, Some(&s.name("test/one:1")))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(filtered, list(&mut c, Some(&one.id())).await);
    assert_eq!(filtered.len(), 1);

    let unknown: Vec<_> = stream(&mut c, Some(&s.name("test/none:1")))
        .await
        .into_iter()
        .flatten()
        .collect();
    assert!(unknown.is_empty());
}

/// The full listing is answered from bytes kept between calls: each pull, tag and removal
/// shows in the next call, and calls in between answer the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_listing_follows_every_pull_tag_and_removal() {
    let (s, one, two) = two_images().await;
    let mut c = s.client();
    let ids = |images: Vec<cri_imaged::proto::Image>| {
        by_id(images).into_iter().map(|i| i.id).collect::<Vec<_>>()
    };
    let mut both = vec![one.id(), two.id()];
    both.sort();
    assert_eq!(ids(list(&mut c, None).await), both);
    assert_eq!(
        ids(list(&mut c, None).await),
        both,
        "asked again, unchanged"
    );
    // A second tag of `one`: same images, one more tag.
    one.push(&s.registry, "test/one", "2").await;
    pull(&mut c, &s.name("test/one:2")).await;
    let listed = list(&mut c, None).await;
    let tags: HashSet<String> = listed.iter().flat_map(|i| i.repo_tags.clone()).collect();
    assert!(tags.contains(&s.name("test/one:2")), "{tags:?}");
    crate::support::remove(&mut c, &two.id()).await;
    assert_eq!(ids(list(&mut c, None).await), vec![one.id()]);
    let three = ImageBuilder::new().build();
    three.push(&s.registry, "test/three", "1").await;
    pull(&mut c, &s.name("test/three:1")).await;
    let mut want = vec![one.id(), three.id()];
    want.sort();
    assert_eq!(ids(list(&mut c, None).await), want);
}
