//! registries.conf through the real socket: mirrors (the mirror's content recorded under
//! the requested name; a mirror that is down; digest-only mirrors), blocked registries,
//! aliases and enforcing short-name mode, and SIGHUP reloads.

use std::time::Duration;

use tonic::Code;

use crate::support::registry::closed_port;
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, eventually, pull, status_of, tempdir, try_pull,
};

/// A registry holding a fresh image at `repo:tag`; returns the registry and the image ID.
async fn registry_with(repo: &str, tag: &str) -> (Registry, crate::support::TestImage) {
    let r = Registry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[2000, 3000, 4000]).build();
    img.push(&r, repo, tag).await;
    (r, img)
}

/// The access-log lines of requests cri-imaged made (its user agent), not the test's.
fn daemon_requests(registry_log: &str) -> Vec<&str> {
    registry_log
        .lines()
        .filter(|l| l.starts_with("127.0.0.1 - ") && l.contains("\"cri-imaged/"))
        .collect()
}

/// How many times the daemon logged `needle`.
fn count(output: &str, needle: &str) -> usize {
    output.matches(needle).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_the_pull_and_the_image_keeps_the_requested_name() {
    let (primary, primary_img) = registry_with("x/y", "1").await;
    let (mirror, mirror_img) = registry_with("cache/x/y", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nprefix = \"gcr.example.com\"\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}/cache\"\n",
            primary.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let id = pull(&mut c, "gcr.example.com/x/y:1").await;
    assert_eq!(id, mirror_img.id(), "the mirror's image arrives");
    assert_ne!(id, primary_img.id());
    let img = status_of(&mut c, "gcr.example.com/x/y:1").await;
    assert_eq!(img.repo_tags, ["gcr.example.com/x/y:1"]);
    let log = d.output();
    assert!(
        log.contains("pulling through mirror") && log.contains(&mirror.host()),
        "the log names the mirror:\n{log}"
    );
    primary.flush_access_log().await;
    let asked = daemon_requests(&primary.log()).len();
    assert_eq!(asked, 0, "the primary was not asked:\n{}", primary.log());
    mirror.flush_access_log().await;
    assert!(
        !daemon_requests(&mirror.log()).is_empty(),
        "the check sees the daemon's requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_that_is_down_costs_one_attempt_then_the_primary_serves() {
    let (primary, primary_img) = registry_with("x/y", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"127.0.0.1:{}\"\n",
            primary.host(),
            closed_port()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/x/y:1", primary.host());
    assert_eq!(pull(&mut c, &name).await, primary_img.id());
    // Three layers and a config, but the dead mirror was given up once, at the manifest.
    assert_eq!(
        count(&d.output(), "source failed; trying the next"),
        1,
        "{}",
        d.output()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_digest_only_mirror_serves_digests_but_not_tags() {
    let (primary, primary_img) = registry_with("x/y", "1").await;
    let (mirror, mirror_img) = registry_with("x/y", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\npull-from-mirror = \"digest-only\"\n",
            primary.host(),
            mirror.host()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let tag = format!("{}/x/y:1", primary.host());
    assert_eq!(
        pull(&mut c, &tag).await,
        primary_img.id(),
        "tags skip the mirror"
    );
    // The mirror's image exists only there: by digest it comes through the mirror.
    let by_digest = format!("{}/x/y@{}", primary.host(), mirror_img.manifest_digest());
    assert_eq!(pull(&mut c, &by_digest).await, mirror_img.id());
    mirror.flush_access_log().await;
    assert_eq!(
        count(&mirror.log(), "GET /v2/x/y/manifests/1 "),
        0,
        "the tag was never asked of the mirror"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_registry_is_refused_without_contacting_it() {
    let (primary, _img) = registry_with("blocked/app", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nprefix = \"{}/blocked\"\nblocked = true\n",
            primary.host()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    let e = try_pull(&mut c, &format!("{}/blocked/app:1", primary.host()))
        .await
        .expect_err("a blocked registry must be refused");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
    assert!(
        e.message().contains(&format!("{}/blocked", primary.host()))
            && e.message().contains("registries.conf"),
        "the error names the registry and the file: {}",
        e.message()
    );
    primary.flush_access_log().await;
    assert_eq!(daemon_requests(&primary.log()), Vec::<&str>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aliases_resolve_and_enforcing_mode_refuses_ambiguous_short_names() {
    let (r, img) = registry_with("lib/box", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "unqualified-search-registries = [\"registry.example.com\", \"{h}\"]\nshort-name-mode = \"enforcing\"\n[aliases]\n\"box\" = \"{h}/lib/box\"\n",
            h = r.host()
        ),
    )
    .unwrap();
    let d = b.start().await;
    let mut c = d.client();
    assert_eq!(pull(&mut c, "box:1").await, img.id());
    let status = status_of(&mut c, "box:1").await;
    assert_eq!(status.repo_tags, [format!("{}/lib/box:1", r.host())]);
    let e = try_pull(&mut c, "other:1")
        .await
        .expect_err("an ambiguous short name is refused in enforcing mode");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    for candidate in [
        "registry.example.com/other:1".to_owned(),
        format!("{}/other:1", r.host()),
    ] {
        assert!(
            e.message().contains(&candidate),
            "{} lacks {candidate}",
            e.message()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_registries_conf_and_a_bad_file_keeps_the_old_one() {
    let (r, img) = registry_with("app", "1").await;
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    let d = b.start().await;
    let mut c = d.client();
    let name = format!("{}/app:1", r.host());
    assert_eq!(pull(&mut c, &name).await, img.id());
    let loaded = "registry configuration loaded";
    let reload = |n: usize| {
        d.signal(rustix::process::Signal::HUP);
        let d = &d;
        async move {
            assert!(
                eventually(Duration::from_secs(20), || async {
                    count(&d.output(), "SIGHUP received") >= n
                        && (count(&d.output(), loaded) > n
                            || count(&d.output(), "keeping the previous") >= 1)
                })
                .await,
                "reload {n} never finished:\n{}",
                d.output()
            )
        }
    };
    std::fs::write(
        b.registries_conf(),
        format!("[[registry]]\nprefix = \"{}\"\nblocked = true\n", r.host()),
    )
    .unwrap();
    reload(1).await;
    let e = try_pull(&mut c, &name)
        .await
        .expect_err("blocked after the reload");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());

    std::fs::write(b.registries_conf(), "short-name-mode = \"sometimes\"\n").unwrap();
    reload(2).await;
    assert!(
        d.output().contains("short-name-mode"),
        "the bad reload says why:\n{}",
        d.output()
    );
    let e = try_pull(&mut c, &name)
        .await
        .expect_err("the old configuration stays");
    assert_eq!(e.code(), Code::PermissionDenied, "{}", e.message());
}
