//! Credentials through the real socket: CRI `AuthConfig`, the node's auth file, where each
//! may be sent (never to another registry, a mirror included), and a cached image never
//! handed to a caller whose credentials the registry refuses.

use std::time::Duration;

use base64::Engine as _;
use cri_imaged::proto::AuthConfig;
use tonic::Code;

use crate::support::registry::{AUTH_PASSWORD, AUTH_USER};
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, eventually, pull, tempdir, try_pull_with,
};

fn basic(user: &str, password: &str, server: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        username: user.to_owned(),
        password: password.to_owned(),
        server_address: server.to_owned(),
        ..Default::default()
    })
}

fn auth_json(key: &str) -> String {
    let b64 =
        base64::engine::general_purpose::STANDARD.encode(format!("{AUTH_USER}:{AUTH_PASSWORD}"));
    format!(r#"{{"auths": {{"{key}": {{"auth": "{b64}"}}}}}}"#)
}

/// Sends SIGHUP and waits until the daemon logged its `n`-th reload.
async fn reload(d: &crate::support::Daemon, n: usize) {
    d.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || async {
            d.output().matches("registry configuration loaded").count() > n
        })
        .await,
        "reload {n} never finished:\n{}",
        d.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_pulled_with_a_valid_secret_is_not_handed_to_a_wrong_password() {
    let registry = Registry::start_with_auth().await;
    let img = ImageBuilder::new().layer_sizes(&[3000]).build();
    img.push(&registry, "private/app", "1").await;
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path()).start().await;
    let mut c = d.client();
    let name = format!("{}/private/app:1", registry.host());
    let id = try_pull_with(&mut c, &name, basic(AUTH_USER, AUTH_PASSWORD, ""))
        .await
        .expect("the right password pulls");
    assert_eq!(id, img.id());
    let wrong = "Wrong-Pw-77aa1";
    let e = try_pull_with(&mut c, &name, basic(AUTH_USER, wrong, ""))
        .await
        .expect_err("the image is present, but a wrong password must still fail");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains(&registry.host()), "{}", e.message());
    let e = try_pull_with(&mut c, &name, None)
        .await
        .expect_err("no credentials must fail too");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    let log = d.output();
    for secret in [AUTH_PASSWORD, wrong] {
        assert!(
            !log.contains(secret),
            "the daemon logged a password:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_file_gives_credentials_and_a_secret_for_another_server_is_not_sent() {
    let registry = Registry::start_with_auth().await;
    let img = ImageBuilder::new().layer_sizes(&[3000]).build();
    img.push(&registry, "team/app", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    // Only a namespace that is not this image's: the host has no entry of its own.
    std::fs::write(
        b.auth_file(),
        auth_json(&format!("{}/other", registry.host())),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/team/app:1", registry.host());
    let e = try_pull_with(
        &mut c,
        &name,
        basic(AUTH_USER, AUTH_PASSWORD, "other.example.com"),
    )
    .await
    .expect_err("credentials for another server are not sent");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());

    std::fs::write(
        b.auth_file(),
        auth_json(&format!("{}/team", registry.host())),
    )
    .unwrap();
    reload(&d, 1).await;
    assert_eq!(
        pull(&mut c, &name).await,
        img.id(),
        "the auth file's namespace entry"
    );
    assert!(!d.output().contains(AUTH_PASSWORD));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cri_credentials_never_reach_a_mirror() {
    let primary = Registry::start().await;
    let primary_img = ImageBuilder::new().layer_sizes(&[3000]).build();
    primary_img.push(&primary, "x/app", "1").await;
    let mirror = Registry::start_with_auth().await;
    let mirror_img = ImageBuilder::new().layer_sizes(&[3000]).build();
    mirror_img.push(&mirror, "x/app", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
            primary.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/x/app:1", primary.host());
    // The caller's secret would open the mirror, but it is the primary's: the mirror
    // refuses the anonymous pull and the primary serves.
    let id = try_pull_with(&mut c, &name, basic(AUTH_USER, AUTH_PASSWORD, ""))
        .await
        .expect("the primary serves");
    assert_eq!(id, primary_img.id());
    // The auth file's entry for the mirror's host is what opens the mirror.
    std::fs::write(b.auth_file(), auth_json(&mirror.host())).unwrap();
    reload(&d, 1).await;
    assert_eq!(pull(&mut c, &name).await, mirror_img.id());
}
