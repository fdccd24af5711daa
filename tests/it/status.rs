//! ImageStatus: missing is OK + None, every way of naming an image gives the identical
//! Image, verbose info is JSON, user/uid mapping, size (contract points 1, 4, 5, 7, 10, 11).

use serde_json::Value;

use crate::support::{ImageBuilder, Setup, hex_of, list, pull, status_of, status_response};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_ok_with_no_image() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    assert_eq!(pull(&mut c, &s.name("test/app:1")).await, img.id());

    for name in [
        "busybox".to_owned(),
        "busybox:latest".to_owned(),
        s.name("test/app:2"),
        s.name("test/other:1"),
        format!("{}@sha256:{}", s.name("test/app"), "1".repeat(64)),
        "0".repeat(64),
        format!("sha256:{}", "0".repeat(64)),
        "0000000000ab".to_owned(),
    ] {
        let r = status_response(&mut c, &name, false).await;
        assert!(
            r.image.is_none(),
            "ImageStatus({name}) must be None, got {:?}",
            r.image
        );
    }
    // An ID prefix needs at least 3 hex characters; 2 are a (missing) name.
    let two = hex_of(&img.id())[..2].to_owned();
    let r = status_response(&mut c, &two, false).await;
    assert!(
        r.image.is_none(),
        "ImageStatus({two}) must be None, got {:?}",
        r.image
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_by_id_prefix_tag_digest_or_short_name_is_identical() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().build();
    img.push(&s.registry, "test/app", "1").await;
    img.push(&s.registry, "test/app", "latest").await;
    let mut c = s.client();
    assert_eq!(pull(&mut c, &s.name("test/app:1")).await, img.id());
    assert_eq!(pull(&mut c, &s.name("test/app:latest")).await, img.id());

    let reference = status_of(&mut c, &img.id()).await;
    assert_eq!(reference.id, img.id());
    assert!(reference.size > 0, "size must be > 0");
    let hex = hex_of(&img.id()).to_owned();
    let ways = [
        hex.clone(),
        hex[..12].to_owned(),
        hex[..3].to_owned(),
        format!("sha256:{}", &hex[..12]),
        format!("sha256:{}", &hex[..3]),
        s.name("test/app:1"),
        s.name("test/app:latest"),
        s.name("test/app"),
        format!("{}@{}", s.name("test/app"), img.manifest_digest()),
        "test/app:1".to_owned(),
        "test/app".to_owned(),
        format!("test/app@{}", img.manifest_digest()),
    ];
    for w in &ways {
        let got = status_of(&mut c, w).await;
        assert_eq!(
            got, reference,
            "ImageStatus({w}) must equal ImageStatus(<id>)"
        );
    }
    // And ListImages reports the same Image.
    assert_eq!(list(&mut c, None).await, vec![reference]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_status_fills_info_with_json_objects() {
    let s = Setup::new().await;
    let img = ImageBuilder::new().user("1002").build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    let name = s.name("test/app:1");
    assert_eq!(pull(&mut c, &name).await, img.id());

    let quiet = status_response(&mut c, &name, false).await;
    assert!(
        quiet.info.is_empty(),
        "info only when verbose: {:?}",
        quiet.info
    );

    let verbose = status_response(&mut c, &name, true).await;
    assert_eq!(verbose.image, quiet.image, "verbose changes only info");
    assert!(
        !verbose.info.is_empty(),
        "verbose ImageStatus must fill info"
    );
    for (k, v) in &verbose.info {
        if v.starts_with('{') {
            let parsed: Value = serde_json::from_str(v)
                .unwrap_or_else(|e| panic!("info[{k}] is not valid JSON ({e}): {v}"));
            assert!(parsed.is_object(), "info[{k}] must be a JSON object: {v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_user_maps_to_uid_or_username() {
    let s = Setup::new().await;
    // (config User, expected uid, expected username)
    let cases: [(&str, Option<i64>, &str); 6] = [
        ("1002", Some(1002), ""),
        ("www-data", None, "www-data"),
        ("1003:1004", Some(1003), ""),
        ("www-data:1004", None, "www-data"),
        ("", None, ""),
        ("0", Some(0), ""),
    ];
    let mut c = s.client();
    for (i, (user, uid, username)) in cases.iter().enumerate() {
        let img = ImageBuilder::new().user(user).build();
        let repo = format!("test/user{i}");
        img.push(&s.registry, &repo, "1").await;
        let name = s.name(&format!("{repo}:1"));
        assert_eq!(pull(&mut c, &name).await, img.id());
        let got = status_of(&mut c, &name).await;
        assert_eq!(
            got.uid.as_ref().map(|u| u.value),
            *uid,
            "uid for config User {user:?}"
        );
        assert_eq!(got.username, *username, "username for config User {user:?}");
        // ListImages reports the same user fields.
        let listed = crate::support::list(&mut c, Some(&name)).await;
        assert_eq!(listed, vec![got]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_is_manifest_config_and_layer_bytes() {
    let s = Setup::new().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[100 * 1024, 3000, 1])
        .build();
    img.push(&s.registry, "test/app", "1").await;
    let mut c = s.client();
    let name = s.name("test/app:1");
    assert_eq!(pull(&mut c, &name).await, img.id());
    let got = status_of(&mut c, &name).await;
    assert!(got.size > 0);
    assert_eq!(
        got.size,
        img.size(),
        "manifest + config + compressed layers"
    );
}
