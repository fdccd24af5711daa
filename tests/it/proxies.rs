//! Corporate HTTP proxies from the daemon's environment: with `HTTPS_PROXY` set, a
//! registry known by name is reached through a `CONNECT` tunnel of the test's proxy (with
//! the proxy's credentials, which never reach the log), TLS verified end to end; loopback
//! is never proxied; a `NO_PROXY` domain is reached directly.

use crate::support::forward::ForwardProxy;
use crate::support::tls::{make_ca, make_server_named};
use crate::support::{DaemonBuilder, ImageBuilder, Registry, pull, tempdir, try_pull};

const CORP_NAME: &str = "registry.corp.test";
const DIRECT_NAME: &str = "registry.direct.test";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_carries_named_registries_and_loopback_and_no_proxy_go_direct() {
    let dir = tempdir();
    let pki = dir.path().join("pki");
    std::fs::create_dir(&pki).unwrap();
    let ca = make_ca(&pki, "corp");
    let tls = make_server_named(&pki, &ca, &[CORP_NAME, DIRECT_NAME]);
    let registry = Registry::start_tls(&tls).await;
    let port: u16 = registry.host().rsplit(':').next().unwrap().parse().unwrap();
    let img = ImageBuilder::new().layer_sizes(&[200_000, 3000]).build();
    img.push(&registry, "team/app", "1").await;
    let proxy = ForwardProxy::start(port).await;

    let b = DaemonBuilder::new(dir.path());
    for host in [CORP_NAME, DIRECT_NAME, "127.0.0.1"] {
        let host_dir = b.certs_dir().join(format!("{host}:{port}"));
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::copy(&ca, host_dir.join("ca.crt")).unwrap();
    }
    let proxy_url = format!("http://proxyuser:Proxy-Pw-93c1@127.0.0.1:{}", proxy.port());
    let d = b
        .env("HTTPS_PROXY", &proxy_url)
        .env(
            "NO_PROXY",
            &format!(".direct.test,10.0.0.0/8,{CORP_NAME}:1"),
        )
        .start()
        .await;
    let mut c = d.client();

    let corp = format!("{CORP_NAME}:{port}/team/app:1");
    assert_eq!(pull(&mut c, &corp).await, img.id());
    let connects = proxy.connects();
    assert!(!connects.is_empty(), "nothing went through the proxy");
    for (target, auth) in &connects {
        assert_eq!(target, &format!("{CORP_NAME}:{port}"), "{connects:?}");
        assert!(
            auth.as_deref().is_some_and(|a| a.starts_with("Basic ")),
            "the proxy's credentials were not sent: {connects:?}"
        );
    }
    assert!(
        proxy.bytes_back() > 200_000,
        "the layer came through the tunnel: {} bytes",
        proxy.bytes_back()
    );

    // Loopback: never through the proxy.
    let before = proxy.connects().len();
    let direct = format!("127.0.0.1:{port}/team/app:1");
    assert_eq!(pull(&mut c, &direct).await, img.id());
    assert_eq!(
        proxy.connects().len(),
        before,
        "loopback went through the proxy"
    );

    // A NO_PROXY domain is dialled directly: the name resolves nowhere, so the pull fails
    // naming it, and the proxy never saw it.
    let e = try_pull(&mut c, &format!("{DIRECT_NAME}:{port}/team/app:1"))
        .await
        .expect_err("registry.direct.test does not resolve");
    assert!(e.message().contains(DIRECT_NAME), "{}", e.message());
    assert_eq!(
        proxy.connects().len(),
        before,
        "a NO_PROXY host was proxied"
    );

    let log = d.output();
    assert!(
        log.lines().any(|l| l.contains("through HTTP proxies")
            && l.contains(&format!("127.0.0.1:{}", proxy.port()))),
        "the proxy is not logged at start:\n{log}"
    );
    assert!(
        !log.contains("Proxy-Pw-93c1") && !log.contains("proxyuser"),
        "the proxy's credentials are in the log:\n{log}"
    );
}
