//! Per-registry TLS through the real socket: a registry serving HTTPS with a certificate
//! from a CA the test makes is refused while certs.d holds another CA for it, and accepted
//! once its own CA is there (swapped in by SIGHUP); a registry requiring a client
//! certificate opens to the certs.d pair its CA signed, and only to it; pinned images are
//! reported as such.

use std::time::Duration;

use tonic::Code;

use crate::support::registry::{ClientCerts, TlsFiles};
use crate::support::tls::{make_ca, make_client, make_server};
use crate::support::token::TokenServer;
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, eventually, pull, status_of, tempdir, try_pull,
    try_pull_with,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_registry_is_refused_without_its_ca_and_accepted_with_it_in_certs_d() {
    let dir = tempdir();
    let certs = dir.path().join("pki");
    std::fs::create_dir(&certs).unwrap();
    let ca = make_ca(&certs, "right");
    let other_ca = make_ca(&certs, "other");
    let tls: TlsFiles = make_server(&certs, &ca);
    let registry = Registry::start_tls(&tls).await;
    let img = ImageBuilder::new().layer_sizes(&[3000]).build();
    img.push(&registry, "secure/app", "1").await;

    let b = DaemonBuilder::new(dir.path());
    let host_dir = b.certs_dir().join(registry.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    // A CA in certs.d means "verify this host", even on loopback: with the wrong one, the
    // handshake fails.
    std::fs::copy(&other_ca, host_dir.join("ca.crt")).unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/secure/app:1", registry.host());
    let e = try_pull(&mut c, &name)
        .await
        .expect_err("an unknown CA must be refused");
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains(&registry.host()), "{}", e.message());

    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    d.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || async {
            d.output().matches("registry configuration loaded").count() > 1
        })
        .await,
        "no reload:\n{}",
        d.output()
    );
    assert_eq!(pull(&mut c, &name).await, img.id());
}

/// oci-client would send a username and password to any token realm the registry names,
/// plain HTTP included; cri-imaged refuses an `http://` realm of a verified HTTPS registry
/// before any credential leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_is_never_sent_to_a_plain_http_token_realm() {
    let dir = tempdir();
    let certs = dir.path().join("pki");
    std::fs::create_dir(&certs).unwrap();
    let ca = make_ca(&certs, "right");
    let tls: TlsFiles = make_server(&certs, &ca);
    let tokens = TokenServer::start("rt-unused-5d1").await;
    let registry =
        Registry::start_tls_with_token_auth(&tls, &tokens.registry_auth("secure/app")).await;
    let img = ImageBuilder::new().layer_sizes(&[3000]).build();
    img.push(&registry, "secure/app", "1").await;

    let b = DaemonBuilder::new(dir.path());
    let host_dir = b.certs_dir().join(registry.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/secure/app:1", registry.host());
    let password = "pw-9c41-never-in-cleartext";
    let auth = cri_imaged::proto::AuthConfig {
        username: "alice".into(),
        password: password.into(),
        ..Default::default()
    };
    let e = try_pull_with(&mut c, &name, Some(auth))
        .await
        .expect_err("a password must not go to an http:// realm");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains(&registry.host()), "{}", e.message());
    assert!(e.message().contains("over http"), "{}", e.message());
    assert_eq!(
        tokens.authorized_gets(),
        0,
        "the token server received credentials"
    );
    assert!(!d.output().contains(password), "the password was logged");
}

/// Mutual TLS: docker-registry with `clientcas` accepts the pull whose certs.d holds a
/// client pair its CA signed; without a pair, or with one another CA signed, the pull is
/// Unauthenticated naming the registry (at once, not after a timeout); a key made readable
/// by others is refused at the next reload, naming the file, and the old set stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_requiring_a_client_certificate_opens_to_the_certs_d_pair() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempdir();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = make_ca(&pki, "server");
    let client_ca = make_ca(&pki, "client");
    let stranger_ca = make_ca(&pki, "stranger");
    let tls = make_server(&pki, &ca);
    let (client_cert, client_key) = make_client(&pki, &client_ca, "client");
    let (wrong_cert, wrong_key) = make_client(&pki, &stranger_ca, "wrong");
    let mut identity_pem = std::fs::read(&client_cert).unwrap();
    identity_pem.extend(std::fs::read(&client_key).unwrap());
    let client = ClientCerts {
        ca: client_ca,
        identity_pem,
    };
    let registry = Registry::start_mtls(&tls, &client).await;
    let img = ImageBuilder::new().layer_sizes(&[1000, 70_000]).build();
    img.push(&registry, "mtls/app", "1").await;
    let name = format!("{}/mtls/app:1", registry.host());

    let b = DaemonBuilder::new(dir.path());
    let host_dir = b.certs_dir().join(registry.host());
    std::fs::create_dir_all(&host_dir).unwrap();
    std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    let mut d = b.start().await;
    let mut c = d.client();
    let refused = |e: &tonic::Status, why: &str| {
        assert_eq!(e.code(), Code::Unauthenticated, "{why}: {}", e.message());
        assert!(e.message().contains(&registry.host()), "{}", e.message());
        assert!(
            e.message().contains("client certificate"),
            "{}",
            e.message()
        );
    };
    let started = std::time::Instant::now();
    let e = try_pull(&mut c, &name)
        .await
        .expect_err("no client certificate is presented");
    refused(&e, "without a pair");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the refusal took {:?}: it must not wait for a timeout",
        started.elapsed()
    );
    d.stop().await;

    // A pair from a CA the registry does not know.
    let key_mode = |path: &std::path::Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    std::fs::copy(&wrong_cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(&wrong_key, host_dir.join("client.key")).unwrap();
    key_mode(&host_dir.join("client.key"), 0o600);
    let mut d = b.start().await;
    let mut c = d.client();
    let e = try_pull(&mut c, &name)
        .await
        .expect_err("a certificate of another CA");
    refused(&e, "with a stranger's pair");
    d.stop().await;

    std::fs::copy(&client_cert, host_dir.join("client.cert")).unwrap();
    std::fs::copy(&client_key, host_dir.join("client.key")).unwrap();
    key_mode(&host_dir.join("client.key"), 0o600);
    let d = b.start().await;
    let mut c = d.client();
    assert_eq!(pull(&mut c, &name).await, img.id());
    assert!(
        registry.blob_get_count("mtls/app", &img.layer_digests()[1]) >= 1,
        "the layer came from the mTLS registry"
    );

    key_mode(&host_dir.join("client.key"), 0o644);
    d.signal(rustix::process::Signal::HUP);
    assert!(
        eventually(Duration::from_secs(20), || async {
            d.output().contains("keeping the previous")
        })
        .await,
        "the reload was not refused:\n{}",
        d.output()
    );
    let log = d.output();
    assert!(
        log.lines()
            .any(|l| l.contains("client.key") && l.contains("mode 0644")),
        "the refusal names the key and its mode:\n{log}"
    );
    let secret_line = std::fs::read_to_string(&client_key).unwrap();
    let secret_line = secret_line.lines().nth(1).unwrap();
    assert!(!log.contains(secret_line), "key material in the log");
    crate::support::remove(&mut c, &name).await;
    assert_eq!(
        pull(&mut c, &name).await,
        img.id(),
        "the old pair stays in use"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_images_and_the_pause_image_are_reported_pinned() {
    let registry = Registry::start().await;
    let (a, p, o) = (
        ImageBuilder::new().layer_sizes(&[1000]).build(),
        ImageBuilder::new().layer_sizes(&[1000]).build(),
        ImageBuilder::new().layer_sizes(&[1000]).build(),
    );
    a.push(&registry, "keep/a", "1").await;
    p.push(&registry, "pause", "3").await;
    o.push(&registry, "other", "1").await;
    let dir = tempdir();
    let h = registry.host();
    let d = DaemonBuilder::new(dir.path())
        .arg("--pinned-image")
        .arg(&format!("{h}/keep/*"))
        .arg("--pause-image")
        .arg(&format!("{h}/pause:3"))
        .start()
        .await;
    let mut c = d.client();
    for (n, want) in [("keep/a:1", true), ("pause:3", true), ("other:1", false)] {
        let name = format!("{h}/{n}");
        pull(&mut c, &name).await;
        assert_eq!(status_of(&mut c, &name).await.pinned, want, "{name}");
    }
}
