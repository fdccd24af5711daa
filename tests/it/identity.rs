//! Identity tokens (OAuth2 refresh tokens) through the real socket, against a real
//! docker-registry with token authentication: its token server (in-process, see
//! `support/token.rs`) implements the refresh grant and signs JWTs the registry verifies.

use base64::Engine as _;
use cri_imaged::proto::AuthConfig;
use tonic::Code;

use crate::support::token::{SERVICE, TokenServer};
use crate::support::{DaemonBuilder, ImageBuilder, Registry, tempdir, try_pull, try_pull_with};

const REFRESH_TOKEN: &str = "rt-3f0c9a-identity-d41e";

fn identity(token: &str) -> Option<AuthConfig> {
    Some(AuthConfig {
        identity_token: token.to_owned(),
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_token_is_exchanged_for_a_bearer_token_and_never_logged() {
    let tokens = TokenServer::start(REFRESH_TOKEN).await;
    let registry = Registry::start_with_token_auth(&tokens.registry_auth("team/app")).await;
    let img = ImageBuilder::new().layer_sizes(&[3000, 2000]).build();
    img.push(&registry, "team/app", "1").await;
    let dir = tempdir();
    // At trace level, every crate's: where a token would leak if one did.
    let mut d = DaemonBuilder::new(dir.path())
        .arg("--log-level")
        .arg("trace")
        .start()
        .await;
    let mut c = d.client();
    let name = format!("{}/team/app:1", registry.host());

    let e = try_pull(&mut c, &name)
        .await
        .expect_err("the registry refuses anonymous pulls");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());

    let id = try_pull_with(&mut c, &name, identity(REFRESH_TOKEN))
        .await
        .expect("the right identity token pulls");
    assert_eq!(id, img.id());
    let grants = tokens.grants();
    let granted: Vec<_> = grants.iter().filter(|g| g.granted).collect();
    assert!(!granted.is_empty(), "no grant was made: {grants:?}");
    for g in &granted {
        assert_eq!(g.field("grant_type"), Some("refresh_token"));
        assert_eq!(g.field("service"), Some(SERVICE));
        assert_eq!(g.field("scope"), Some("repository:team/app:pull"));
        assert_eq!(g.field("client_id"), Some("cri-imaged"));
    }

    // The image is present now; a wrong token must still be refused at the registry.
    let wrong = "rt-wrong-77b2c0";
    let e = try_pull_with(&mut c, &name, identity(wrong))
        .await
        .expect_err("a wrong identity token must fail");
    assert_eq!(e.code(), Code::Unauthenticated, "{}", e.message());
    assert!(e.message().contains(&registry.host()), "{}", e.message());
    assert!(
        tokens
            .grants()
            .iter()
            .any(|g| !g.granted && g.field("refresh_token") == Some(wrong)),
        "the wrong token never reached the token server"
    );

    // The whole run's log, once the daemon has stopped.
    d.stop().await;
    let log = d.output();
    assert!(
        log.contains("TRACE") || log.contains("trace"),
        "trace lines were written"
    );
    let issued = tokens.issued();
    let secrets: Vec<&str> = issued
        .iter()
        .map(String::as_str)
        .chain([REFRESH_TOKEN, wrong])
        .collect();
    crate::support::leaks::assert_no_leaks("the daemon log", &log, "<token>", &secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_file_identitytoken_pulls() {
    let tokens = TokenServer::start(REFRESH_TOKEN).await;
    let registry = Registry::start_with_token_auth(&tokens.registry_auth("team/app")).await;
    let img = ImageBuilder::new().layer_sizes(&[3000]).build();
    img.push(&registry, "team/app", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    // As `docker login` writes it: the account name in `auth` with an empty password.
    let account =
        base64::engine::general_purpose::STANDARD.encode("00000000-0000-0000-0000-000000000000:");
    std::fs::write(
        b.auth_file(),
        format!(
            r#"{{"auths": {{"{}": {{"auth": "{account}", "identitytoken": "{REFRESH_TOKEN}"}}}}}}"#,
            registry.host()
        ),
    )
    .unwrap();
    let mut d = b.arg("--log-level").arg("debug").start().await;
    let mut c = d.client();
    let name = format!("{}/team/app:1", registry.host());
    let id = try_pull(&mut c, &name)
        .await
        .expect("the auth file's identity token pulls");
    assert_eq!(id, img.id());
    assert!(tokens.grants().iter().any(|g| g.granted));
    d.stop().await;
    let issued = tokens.issued();
    let secrets: Vec<&str> = issued
        .iter()
        .map(String::as_str)
        .chain([REFRESH_TOKEN])
        .collect();
    crate::support::leaks::assert_no_leaks(
        "the daemon log at debug",
        &d.output(),
        "00000000-0000-0000-0000-000000000000",
        &secrets,
    );
}
