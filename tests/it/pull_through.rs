//! Many nodes, one upstream: three daemons (separate roots and sockets, like three nodes)
//! pull the same image through one pull-through cache — docker-registry in proxy mode, the
//! way distribution, Harbor proxy projects and P2P agents are reached, as a registries.conf
//! mirror. The upstream's access log proves that the second and third node cost it nothing
//! and no daemon reached it itself; when the cache is gone, the upstream serves, the log
//! says why and `cri_imaged_mirror_failures_total` counts it.

use std::time::Duration;

use crate::support::{DaemonBuilder, ImageBuilder, Registry, pull, tempdir};

/// `GET /v2/<repo>/blobs/<digest>` lines in an access log, and those with cri-imaged's
/// user agent.
fn blob_gets(log: &str, repo: &str, digest: &str) -> (usize, usize) {
    let needle = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
    let ours = lines.iter().filter(|l| l.contains("\"cri-imaged/")).count();
    (lines.len(), ours)
}

fn mirror_conf(upstream: &Registry, cache: &str) -> String {
    format!(
        "[[registry]]\nlocation = \"{}\"\n[[registry.mirror]]\nlocation = \"{cache}\"\n",
        upstream.host()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_pull_through_one_cache_and_only_the_first_costs_the_upstream() {
    let upstream = Registry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[300_000, 200_000, 100_000])
        .build();
    img.push(&upstream, "team/app", "1").await;
    let cache = Registry::start_pull_through(&upstream).await;
    let name = format!("{}/team/app:1", upstream.host());

    let dirs: Vec<_> = (0..3).map(|_| tempdir()).collect();
    let mut daemons = Vec::new();
    for dir in &dirs {
        let b = DaemonBuilder::new(dir.path());
        std::fs::write(b.registries_conf(), mirror_conf(&upstream, &cache.host())).unwrap();
        daemons.push(b.start().await);
    }
    // The first node warms the cache; once the cache has stored every blob, the other two
    // pull at once.
    let mut first = daemons[0].client();
    assert_eq!(pull(&mut first, &name).await, img.id());
    let stored = crate::support::eventually(Duration::from_secs(20), || async {
        img.blob_digests().iter().all(|d| cache.stores_blob(d))
    })
    .await;
    assert!(stored, "the cache never stored the image's blobs");
    upstream.flush_access_log().await;
    let after_one: Vec<usize> = img
        .blob_digests()
        .iter()
        .map(|d| blob_gets(&upstream.log(), "team/app", d).0)
        .collect();
    let (mut a, mut b) = (daemons[1].client(), daemons[2].client());
    let (ia, ib) = tokio::join!(pull(&mut a, &name), pull(&mut b, &name));
    assert_eq!((ia, ib), (img.id(), img.id()));

    upstream.flush_access_log().await;
    cache.flush_access_log().await;
    let (up_log, cache_log) = (upstream.log(), cache.log());
    for (digest, one) in img.blob_digests().iter().zip(after_one) {
        let (total, ours) = blob_gets(&up_log, "team/app", digest);
        assert_eq!(
            ours, 0,
            "a daemon fetched {digest} from the upstream itself"
        );
        assert_eq!(
            total, one,
            "nodes 2 and 3 cost the upstream nothing for {digest}"
        );
        // docker-registry 2.8's proxy fetches a blob it does not hold twice: once to store
        // it, once to stream it to the first client (registry/proxy/proxyblobstore.go).
        assert!(
            (1..=2).contains(&total),
            "the upstream served {digest} {total} times:\n{up_log}"
        );
        let (_, at_cache) = blob_gets(&cache_log, "team/app", digest);
        assert_eq!(
            at_cache, 3,
            "each node fetched {digest} from the cache once"
        );
    }
    for d in &daemons {
        assert!(
            d.output().contains("pulling through mirror"),
            "{}",
            d.output()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_that_is_gone_falls_back_to_the_upstream_logged_and_counted() {
    let upstream = Registry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[5000]).build();
    img.push(&upstream, "team/app", "1").await;
    let cache = Registry::start_pull_through(&upstream).await;
    let cache_host = cache.host();
    drop(cache);

    let dir = tempdir();
    let port = crate::support::registry::closed_port();
    let b = DaemonBuilder::new(dir.path())
        .arg("--metrics-address")
        .arg(&format!("127.0.0.1:{port}"));
    std::fs::write(b.registries_conf(), mirror_conf(&upstream, &cache_host)).unwrap();
    let d = b.start().await;
    let mut c = d.client();
    assert_eq!(
        pull(&mut c, &format!("{}/team/app:1", upstream.host())).await,
        img.id()
    );
    let log = d.output();
    assert!(
        log.lines()
            .any(|l| l.contains("source failed; trying the next")
                && l.contains(&cache_host)
                && l.contains(&format!("next={}", upstream.host()))
                && l.contains("error=")),
        "the fallback and its reason are logged:\n{log}"
    );
    let metrics = crate::observe::scrape(port).await;
    let series = format!(
        "cri_imaged_mirror_failures_total{{mirror=\"{cache_host}\",error_class=\"network\"}}"
    );
    assert_eq!(
        crate::observe::sample(&metrics, &series),
        1.0,
        "{series} in:\n{metrics}"
    );
}
