//! PullImage: image_ref is the config digest, names recorded, short-name resolution,
//! multi-platform selection, one image per config, de-duplicated concurrent downloads, and
//! the error codes kubelet relies on (contract points 3, 6, 10, 13).

use cri_imaged::proto::{Image, ImageSpec, PodSandboxConfig, PodSandboxMetadata, PullImageRequest};
use futures_util::future::join_all;
use tonic::Code;

use crate::support::registry::closed_port;
use crate::support::{
    DaemonBuilder, Format, ImageBuilder, Registry, Setup, TestImage, TestIndex, list, pull, sorted,
    status, status_of, tempdir, try_pull,
};

/// Asserts `img` is `expected` known by exactly `tags` and `digests` (in any order).
fn assert_image(img: &Image, expected: &TestImage, tags: &[String], digests: &[String]) {
    assert_eq!(img.id, expected.id(), "Image.id must be the config digest");
    assert_eq!(
        sorted(&img.repo_tags),
        sorted(tags),
        "repo_tags of {}",
        img.id
    );
    assert_eq!(
        sorted(&img.repo_digests),
        sorted(digests),
        "repo_digests of {}",
        img.id
    );
    assert_eq!(
        img.size,
        expected.size(),
        "Image.size must be config + layer bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_oci_returns_config_digest_and_records_tag_and_digest() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().format(Format::Oci).build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();

    let name = s.name("test/app:1");
    let image_ref = pull(&mut c, &name).await;
    assert_eq!(image_ref, img.id(), "PullImageResponse.image_ref");

    let got = status_of(&mut c, &name).await;
    assert_image(
        &got,
        &img,
        std::slice::from_ref(&name),
        &[format!("{}@{}", s.name("test/app"), img.manifest_digest())],
    );
    assert_eq!(got.id, image_ref, "Image.id == PullImageResponse.image_ref");
    let all = list(&mut c, None).await;
    assert_eq!(all, vec![got], "the store holds exactly the pulled image");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_tag_docker_schema2() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().format(Format::Docker).build();
    img.push(&s.registry, "test/docker", "v2").await;
    let mut c = s.client();

    let name = s.name("test/docker:v2");
    assert_eq!(pull(&mut c, &name).await, img.id());
    let got = status_of(&mut c, &img.id()).await;
    assert_image(
        &got,
        &img,
        &[name],
        &[format!(
            "{}@{}",
            s.name("test/docker"),
            img.manifest_digest()
        )],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_by_digest_records_no_tag_and_only_that_digest() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();

    let by_digest = format!("{}@{}", s.name("test/app"), img.manifest_digest());
    assert_eq!(pull(&mut c, &by_digest).await, img.id());
    let got = status_of(&mut c, &img.id()).await;
    assert_image(&got, &img, &[], std::slice::from_ref(&by_digest));

    // Pulling the tag afterwards adds the tag to the same image, not a second image.
    let tag = s.name("test/app:1");
    assert_eq!(pull(&mut c, &tag).await, img.id());
    let got = status_of(&mut c, &img.id()).await;
    assert_image(&got, &img, &[tag], &[by_digest]);
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulling_a_present_image_again_changes_nothing() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    let name = s.name("test/app:1");

    assert_eq!(pull(&mut c, &name).await, img.id());
    let before = status_of(&mut c, &name).await;
    // kubelet re-pulls present images (KubeletEnsureSecretPulledImages).
    assert_eq!(pull(&mut c, &name).await, img.id());
    assert_eq!(pull(&mut c, "test/app:1").await, img.id());
    let after = status_of(&mut c, &name).await;
    assert_eq!(before, after, "a second pull must not change the image");
    assert_eq!(list(&mut c, None).await, vec![after]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_names_resolve_against_registries_in_order() {
    let first = Registry::start().await;
    let second = Registry::start().await;
    let in_both_first = ImageBuilder::new().build();
    let in_both_second = ImageBuilder::new().build();
    let only_second = ImageBuilder::new().build();
    let bare = ImageBuilder::new().build();
    let solo = ImageBuilder::new().build();
    in_both_first.push(&first, "test/app", "1").await;
    in_both_second.push(&second, "test/app", "1").await;
    only_second.push(&second, "test/only", "1").await;
    bare.push(&first, "test/bare", "latest").await;
    solo.push(&first, "solo", "1").await;

    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path())
        .registry(&first.host())
        .registry(&second.host())
        .start()
        .await;
    let mut c = d.client();
    let (h1, h2) = (first.host(), second.host());

    // Found in the first registry: the first one wins.
    assert_eq!(pull(&mut c, "test/app:1").await, in_both_first.id());
    let got = status_of(&mut c, &in_both_first.id()).await;
    assert_eq!(got.repo_tags, vec![format!("{h1}/test/app:1")]);
    assert!(
        status(&mut c, &format!("{h2}/test/app:1")).await.is_none(),
        "the second registry's test/app:1 must not be pulled"
    );
    assert!(status(&mut c, &in_both_second.id()).await.is_none());

    // Missing from the first registry: the second one is tried.
    assert_eq!(pull(&mut c, "test/only:1").await, only_second.id());
    let got = status_of(&mut c, &only_second.id()).await;
    assert_eq!(got.repo_tags, vec![format!("{h2}/test/only:1")]);

    // A bare name means :latest.
    assert_eq!(pull(&mut c, "test/bare").await, bare.id());
    let got = status_of(&mut c, &bare.id()).await;
    assert_eq!(got.repo_tags, vec![format!("{h1}/test/bare:latest")]);

    // A single-component name gets no "library/" on a registry other than docker.io.
    assert_eq!(pull(&mut c, "solo:1").await, solo.id());
    let got = status_of(&mut c, &solo.id()).await;
    assert_eq!(got.repo_tags, vec![format!("{h1}/solo:1")]);

    // A short name with a digest.
    let by_digest = format!("test/app@{}", in_both_first.manifest_digest());
    assert_eq!(pull(&mut c, &by_digest).await, in_both_first.id());
    let got = status_of(&mut c, &in_both_first.id()).await;
    assert_eq!(
        got.repo_digests,
        vec![format!("{h1}/test/app@{}", in_both_first.manifest_digest())]
    );
    assert_eq!(list(&mut c, None).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_name_without_registries_is_invalid_argument() {
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path()).start().await;
    let mut c = d.client();
    let err = try_pull(&mut c, "test/app:1")
        .await
        .expect_err("a short name with no registries configured must fail");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("test/app:1"),
        "message must name the image: {}",
        err.message()
    );
}

/// Pulls a multi-platform image by digest, then by tag, and checks the node's platform
/// was chosen and the list's digest recorded.
async fn check_multi_platform(format: Format) {
    let s = Setup::new().await;
    let index = TestIndex::build(format);
    index.push(&s.registry, "test/multi", "1").await;
    let native = index.native();
    let mut c = s.client();

    let by_digest = format!("{}@{}", s.name("test/multi"), index.digest());
    assert_eq!(
        pull(&mut c, &by_digest).await,
        native.id(),
        "the image ID is the config digest of the node's platform ({})",
        native.arch
    );
    let got = status_of(&mut c, &native.id()).await;
    assert!(
        got.repo_tags.is_empty(),
        "pull by digest records no tag: {:?}",
        got.repo_tags
    );
    assert_eq!(
        got.repo_digests,
        vec![by_digest.clone()],
        "repo_digests show the list's digest, not the platform manifest's"
    );

    let tag = s.name("test/multi:1");
    assert_eq!(pull(&mut c, &tag).await, native.id());
    let got = status_of(&mut c, &tag).await;
    assert_eq!(got.id, native.id());
    assert_eq!(got.repo_tags, vec![tag]);
    assert_eq!(got.repo_digests, vec![by_digest]);
    assert!(
        got.size >= native.size() && got.size <= native.size() + index.index.len(),
        "size {} must count the platform manifest, config and layers ({})",
        got.size,
        native.size()
    );
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "only the node's platform is stored: {all:?}");
    for other in index.children.iter().filter(|c| c.id() != native.id()) {
        assert!(
            all.iter().all(|i| i.id != other.id()),
            "the {} image must not be stored",
            other.arch
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_index_pull_selects_node_platform_and_records_index_digest() {
    check_multi_platform(Format::Oci).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_manifest_list_pull_selects_node_platform_and_records_list_digest() {
    check_multi_platform(Format::Docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_image_under_three_tags_is_one_image_with_three_tags() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    for tag in ["1", "2", "latest"] {
        img.push(&s.registry, "test/app", tag).await;
    }
    let mut c = s.client();
    let names: Vec<String> = ["1", "2", "latest"]
        .iter()
        .map(|t| s.name(&format!("test/app:{t}")))
        .collect();
    for n in &names {
        assert_eq!(pull(&mut c, n).await, img.id(), "pull {n}");
    }
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one config is one image: {all:?}");
    assert_image(
        &all[0],
        &img,
        &names,
        &[format!("{}@{}", s.name("test/app"), img.manifest_digest())],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_config_in_two_repositories_and_registries_is_one_image() {
    let s = Setup::new().await;
    let other = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    img.push(&s.registry, "mirror/app", "2").await;
    img.push(&other, "elsewhere/app", "3").await;
    let mut c = s.client();
    let tags = vec![
        s.name("test/app:1"),
        s.name("mirror/app:2"),
        format!("{}/elsewhere/app:3", other.host()),
    ];
    for n in &tags {
        assert_eq!(pull(&mut c, n).await, img.id(), "pull {n}");
    }
    let digests = vec![
        format!("{}@{}", s.name("test/app"), img.manifest_digest()),
        format!("{}@{}", s.name("mirror/app"), img.manifest_digest()),
        format!("{}/elsewhere/app@{}", other.host(), img.manifest_digest()),
    ];
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one config is one image: {all:?}");
    assert_image(&all[0], &img, &tags, &digests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_pulls_return_one_ref_and_fetch_each_blob_once() {
    let s = Setup::new().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[256 * 1024, 256 * 1024, 128 * 1024])
        .build();
    img.push(&s.registry, "test/app", "1").await;
    let name = s.name("test/app:1");

    let pulls = (0..8).map(|_| {
        let mut c = s.client();
        let name = name.clone();
        async move { try_pull(&mut c, &name).await }
    });
    let results = join_all(pulls).await;
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(image_ref) => assert_eq!(image_ref, &img.id(), "pull #{i}"),
            Err(e) => panic!("pull #{i} failed: {:?}: {}", e.code(), e.message()),
        }
    }

    s.registry.flush_access_log().await;
    for digest in img.blob_digests() {
        let n = s.registry.blob_get_count("test/app", &digest);
        assert_eq!(
            n, 1,
            "blob {digest} must be downloaded exactly once by 8 concurrent pulls, was {n} times"
        );
    }
    let mut c = s.client();
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_name_is_invalid_argument_naming_it() {
    let s = Setup::new().await;
    let mut c = s.client();
    let host = s.registry.host();
    let bad = [
        format!("{host}/test//app:1"),
        format!("{host}/Test/App:1"),
        format!("{host}/test/app:bad tag"),
        format!("{host}/test/app@sha256:1234"),
        "test/app:1:2".to_owned(),
    ];
    for name in &bad {
        let err = try_pull(&mut c, name)
            .await
            .expect_err(&format!("pulling {name:?} must fail"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{name:?}: {}",
            err.message()
        );
        assert!(
            err.message().contains(name.as_str()),
            "message must contain {name:?}: {}",
            err.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_missing_from_registry_is_not_found_naming_it() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    for name in [
        s.name("test/nothing:1"),
        s.name("test/app:2"),
        "test/nothing:1".to_owned(),
    ] {
        let err = try_pull(&mut c, &name)
            .await
            .expect_err(&format!("pulling {name} must fail"));
        assert_eq!(err.code(), Code::NotFound, "{name}: {}", err.message());
        assert!(
            err.message().contains(&name),
            "message must contain {name}: {}",
            err.message()
        );
    }
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_registry_is_unavailable_with_registry_unavailable_message() {
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path()).start().await;
    let mut c = d.client();
    let name = format!("127.0.0.1:{}/test/app:1", closed_port());
    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a closed port cannot serve a pull");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().starts_with("RegistryUnavailable"),
        "kubelet matches the prefix RegistryUnavailable: {}",
        err.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_of_unknown_image_id_is_invalid_argument() {
    let s = Setup::new().await;
    let mut c = s.client();
    let id = "4f".repeat(32);
    let err = try_pull(&mut c, &id)
        .await
        .expect_err("a bare image ID cannot be pulled");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_style_pull_with_sandbox_config_and_annotations_works() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    // kubelet sends pod annotations in the spec and always a sandbox config.
    let req = PullImageRequest {
        image: Some(ImageSpec {
            image: "test/app:1".into(),
            annotations: [("io.kubernetes.pod.name".to_owned(), "web-0".to_owned())]
                .into_iter()
                .collect(),
            ..Default::default()
        }),
        auth: None,
        sandbox_config: Some(PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web-0".into(),
                uid: "6f1c0f5e-0000-4000-8000-000000000001".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: "/var/log/pods/default_web-0".into(),
            ..Default::default()
        }),
    };
    let r = tokio::time::timeout(std::time::Duration::from_secs(120), c.pull_image(req))
        .await
        .expect("PullImage within 120 s");
    match r {
        Ok(r) => assert_eq!(r.into_inner().image_ref, img.id()),
        Err(e) => panic!("PullImage failed: {:?}: {}", e.code(), e.message()),
    }
    assert_eq!(status_of(&mut c, "test/app:1").await.id, img.id());
}
