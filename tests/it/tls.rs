//! Per-registry TLS through the real socket: a registry serving HTTPS with a certificate
//! from a CA the test makes is refused while certs.d holds another CA for it, and accepted
//! once its own CA is there (swapped in by SIGHUP); pinned images are reported as such.

use std::time::Duration;

use tonic::Code;

use crate::support::registry::TlsFiles;
use crate::support::tls::{make_ca, make_server};
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, eventually, pull, status_of, tempdir, try_pull,
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
