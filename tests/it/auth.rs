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

/// Writes `docker-credential-<name>` into `bin`: a shell script with `body` (it reads
/// the server from stdin into `$server` and counts its runs in `bin/<name>.runs`).
fn credential_helper(bin: &std::path::Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir_all(bin).unwrap();
    let path = bin.join(format!("docker-credential-{name}"));
    let runs = bin.join(format!("{name}.runs"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 3\nread -r server\necho run >> {}\n{body}\n",
            runs.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// An htpasswd registry with `private/{a,b,c}:1`, a temp dir, and its `bin` for helpers.
async fn private_images_and_bin() -> (Registry, tempfile::TempDir, std::path::PathBuf) {
    let registry = Registry::start_with_auth().await;
    for repo in ["private/a", "private/b", "private/c"] {
        ImageBuilder::new()
            .layer_sizes(&[2000])
            .build()
            .push(&registry, repo, "1")
            .await;
    }
    let dir = tempdir();
    let bin = dir.path().join("bin");
    (registry, dir, bin)
}

/// `PATH` with `bin` first.
fn path_with(bin: &std::path::Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// `good`: the right answer, only for `host` (the server comes on stdin); `broken`: exits
/// 7 after printing something secret-looking.
fn good_and_broken_helpers(bin: &std::path::Path, host: &str) {
    credential_helper(
        bin,
        "good",
        &format!(
            "[ \"$server\" = \"{host}\" ] || {{ echo 'credentials not found in native keychain'; exit 1; }}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"{AUTH_USER}\",\"Secret\":\"{AUTH_PASSWORD}\"}}' \"$server\""
        ),
    );
    credential_helper(bin, "broken", "echo 'SECRET-LOOKING-OUTPUT'; exit 7");
}

fn helper_runs(bin: &std::path::Path, name: &str) -> usize {
    std::fs::read_to_string(bin.join(format!("{name}.runs")))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credential_helpers_named_by_the_auth_file_answer_and_their_failures_name_them() {
    let (registry, dir, bin) = private_images_and_bin().await;
    let host = registry.host();
    good_and_broken_helpers(&bin, &host);
    credential_helper(&bin, "garbage", "echo 'SECRET-LOOKING-GARBAGE {'");
    credential_helper(&bin, "slow", "sleep 30");
    let path = path_with(&bin);
    let b = DaemonBuilder::new(dir.path())
        .env("PATH", &path)
        .arg("--credential-helper-cache")
        .arg("1h")
        .arg("--log-level")
        .arg("trace");
    std::fs::write(
        b.auth_file(),
        format!(r#"{{"credHelpers": {{"{host}": "good"}}}}"#),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    pull(&mut c, &format!("{host}/private/a:1")).await;
    pull(&mut c, &format!("{host}/private/b:1")).await;
    assert_eq!(
        helper_runs(&bin, "good"),
        1,
        "the answer is cached per registry"
    );

    for (n, (helper, wants)) in [
        (
            "garbage",
            vec!["docker-credential-garbage", "not {\"ServerURL\""],
        ),
        ("broken", vec!["docker-credential-broken", "exited with"]),
        ("missing", vec!["docker-credential-missing", "not on PATH"]),
        (
            "slow",
            vec!["docker-credential-slow", "no answer within 10 s"],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(b.auth_file(), format!(r#"{{"credsStore": "{helper}"}}"#)).unwrap();
        reload(&d, n + 1).await;
        let e = try_pull_with(&mut c, &format!("{host}/private/c:1"), None)
            .await
            .expect_err("a failing helper fails the pull");
        assert_eq!(e.code(), Code::FailedPrecondition, "{helper}: {e:?}");
        for w in wants {
            assert!(
                e.message().contains(w),
                "{helper}: {:?} names {w:?}",
                e.message()
            );
        }
        assert!(!e.message().contains("SECRET-LOOKING"), "{}", e.message());
    }
    let log = d.output();
    assert!(
        !log.contains("SECRET-LOOKING"),
        "no helper output in the log"
    );
    assert!(!log.contains(AUTH_PASSWORD), "no secret in the log");
}

/// registries.conf's `credential-helpers`: asked in order; "credentials not found" and a
/// failing helper pass to the next; `containers-auth.json` is the auth file at its place
/// (a helper before it answers first); only when nothing answers does a failure fail the
/// pull, naming the helper.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registries_conf_credential_helpers_are_asked_in_order() {
    let (registry, dir, bin) = private_images_and_bin().await;
    let host = registry.host();
    good_and_broken_helpers(&bin, &host);
    credential_helper(
        &bin,
        "empty",
        "echo 'credentials not found in native keychain'; exit 1",
    );
    let path = path_with(&bin);
    let b = DaemonBuilder::new(dir.path())
        .env("PATH", &path)
        .arg("--credential-helper-cache")
        .arg("0s");
    std::fs::write(
        b.registries_conf(),
        "credential-helpers = [\"empty\", \"broken\", \"good\", \"containers-auth.json\"]\n",
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    pull(&mut c, &format!("{host}/private/a:1")).await;
    assert_eq!(
        ["empty", "broken", "good"].map(|h| helper_runs(&bin, h)),
        [1, 1, 1],
        "each asked once, in order, until one answered"
    );

    // A failing helper first; the auth file after it has the credentials.
    std::fs::write(
        b.registries_conf(),
        "credential-helpers = [\"broken\", \"containers-auth.json\", \"good\"]\n",
    )
    .unwrap();
    std::fs::write(b.auth_file(), auth_json(&host)).unwrap();
    reload(&d, 1).await;
    pull(&mut c, &format!("{host}/private/b:1")).await;
    assert_eq!(helper_runs(&bin, "broken"), 2);
    assert_eq!(
        helper_runs(&bin, "good"),
        1,
        "not asked after the auth file"
    );

    // Nothing answers: the failure is the pull's, naming the helper.
    std::fs::write(
        b.registries_conf(),
        "credential-helpers = [\"empty\", \"broken\"]\n",
    )
    .unwrap();
    reload(&d, 2).await;
    let e = try_pull_with(&mut c, &format!("{host}/private/c:1"), None)
        .await
        .expect_err("no helper answers");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("docker-credential-broken"),
        "{}",
        e.message()
    );
    assert!(!e.message().contains("SECRET-LOOKING"), "{}", e.message());
    assert!(
        !d.output().contains("SECRET-LOOKING"),
        "no helper output in the log"
    );
}
