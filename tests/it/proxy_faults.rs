//! Faults injected by the loopback proxy (`support/proxy.rs`) between the daemon and a
//! real Debian docker-registry: a layer body reset or cut short resumes with
//! `Range: bytes=N-` (each layer fetched less than twice), 5xx answers are retried and a
//! lasting one fails after bounded tries, a 429 on the manifest waits its `Retry-After`,
//! a stalled or trickling layer fails after the progress timeout naming it, wrong bytes
//! are `DataLoss` with nothing stored, and a SIGKILL mid-layer leaves a partial file the
//! next daemon resumes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;
use tonic::Code;

use crate::support::proxy::{Fault, Proxy, range_start};
use crate::support::{
    Daemon, DaemonBuilder, ImageBuilder, Registry, TestImage, assert_check_passes, eventually,
    hex_of, ingest_files, ingest_len, list, pull, status, status_of, tempdir, try_pull,
};

/// Tries per blob download (the daemon's default retry policy).
const ATTEMPTS: usize = 5;
/// Upper bound for the daemon to reach a state the test polls for, or to exit.
const STATE_LIMIT: Duration = Duration::from_secs(30);
/// The daemon's ingest write buffer: at most this much received data is not yet on disk.
const WRITE_BUFFER: u64 = 1 << 20;

/// Fields drop in order: daemon, proxy, registry, directory.
struct Fixture {
    daemon: Daemon,
    proxy: Proxy,
    registry: Registry,
    img: TestImage,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A registry holding `test/app:1` with layers of `sizes`, a proxy in front of it, and
    /// a daemon (with `args`) whose registry is the proxy.
    async fn start(sizes: &[usize], args: &[&str]) -> Fixture {
        let registry = Registry::start().await;
        let img = ImageBuilder::new().layer_sizes(sizes).build();
        img.push(&registry, "test/app", "1").await;
        let proxy = Proxy::start(&registry).await;
        let dir = tempdir();
        let mut b = DaemonBuilder::new(dir.path()).registry(&proxy.host());
        for a in args {
            b = b.arg(a);
        }
        let daemon = b.start().await;
        Fixture {
            daemon,
            proxy,
            registry,
            img,
            dir,
        }
    }

    /// `<proxy>/<rest>`: an image name pulled through the proxy.
    fn name(&self, rest: &str) -> String {
        format!("{}/{rest}", self.proxy.host())
    }

    fn layer(&self, i: usize) -> (String, u64) {
        let l = &self.img.layers[i].blob;
        (l.digest.clone(), l.len())
    }
}

fn blob_file(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs").join("sha256").join(hex_of(digest))
}

/// Waits (bounded) until `<root>/ingest/` is empty: clean-up may finish just after the
/// failed call returns.
async fn assert_no_partial_file_left(root: &Path) {
    assert!(
        eventually(STATE_LIMIT, || {
            let empty = ingest_files(root).is_empty();
            async move { empty }
        })
        .await,
        "the partial file is deleted: {:?}",
        ingest_files(root)
    );
}

/// Pulls through a layer whose first answer breaks (`fault`), and checks the retry asked
/// for the rest with `Range: bytes=N-`, N > 0, and the layer was not fetched twice.
async fn a_broken_layer_body_resumes(fault: Fault, cut_at: u64) {
    let f = Fixture::start(&[1 << 20, 64 * 1024], &[]).await;
    let (layer, len) = f.layer(0);
    f.proxy.fault(&layer, fault, 1);
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    assert_eq!(pull(&mut c, &name).await, f.img.id());
    assert_eq!(f.proxy.faults_left(&layer), 0, "the fault fired");
    let ranges = f.proxy.ranges(&layer);
    assert_eq!(ranges.len(), 2, "one broken answer, one resume: {ranges:?}");
    let resumed_at = ranges[1]
        .as_deref()
        .and_then(range_start)
        .unwrap_or_else(|| panic!("the retry must ask `Range: bytes=N-`: {ranges:?}"));
    assert!(
        resumed_at > 0 && resumed_at <= cut_at,
        "resumed from the bytes received (≤ {cut_at}): {ranges:?}"
    );
    let served = f.proxy.served(&layer);
    assert!(
        served < 2 * len,
        "resumed, not restarted: {served} bytes served for a {len}-byte layer"
    );
    assert_eq!(
        served,
        cut_at + (len - resumed_at),
        "the broken answer's bytes plus the rest from {resumed_at}"
    );
    eprintln!("{fault:?}: layer {len} bytes, resumed at {resumed_at}, {served} bytes served");
    assert_eq!(status_of(&mut c, &name).await.id, f.img.id());
    assert_check_passes(f.dir.path(), &f.daemon.root, "after the resumed pull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_reset_mid_body_resumes_with_range_through_a_real_registry() {
    a_broken_layer_body_resumes(Fault::Reset { after: 300_000 }, 300_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_body_ending_short_resumes_with_range_through_a_real_registry() {
    a_broken_layer_body_resumes(Fault::Truncate { after: 400_000 }, 400_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layer_503s_are_retried_and_a_lasting_500_fails_after_bounded_tries() {
    let f = Fixture::start(&[128 * 1024], &[]).await;
    let (layer, _) = f.layer(0);
    f.proxy.fault(&layer, Fault::Status(503), 2);
    let mut c = f.daemon.client();
    assert_eq!(pull(&mut c, &f.name("test/app:1")).await, f.img.id());
    assert_eq!(f.proxy.faults_left(&layer), 0);
    assert_eq!(f.proxy.gets(&layer), 3, "two 503s, then the layer");

    let other = ImageBuilder::new().layer_sizes(&[64 * 1024]).build();
    other.push(&f.registry, "test/other", "1").await;
    let bad = other.layer_digests()[0].clone();
    f.proxy.fault(&bad, Fault::Status(500), 100);
    let name = f.name("test/other:1");
    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer that always answers 500 cannot be pulled");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().starts_with("RegistryUnavailable") && err.message().contains(&name),
        "kubelet's prefix and the image: {}",
        err.message()
    );
    assert_eq!(
        f.proxy.gets(&bad),
        ATTEMPTS,
        "tries are bounded by the retry policy"
    );
    assert!(status(&mut c, &name).await.is_none());
    assert_eq!(list(&mut c, None).await.len(), 1, "only the first image");
}

/// A 429 means "come back later" whatever OCI error code its body carries (a registry
/// other than docker-registry may send `UNAVAILABLE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_429_with_retry_after_is_waited_for_and_retried() {
    for code in ["TOOMANYREQUESTS", "UNAVAILABLE"] {
        let f = Fixture::start(&[64 * 1024], &[]).await;
        f.proxy.fault(
            "/manifests/",
            Fault::TooMany {
                retry_after: 1,
                code,
            },
            1,
        );
        let mut c = f.daemon.client();
        assert_eq!(
            pull(&mut c, &f.name("test/app:1")).await,
            f.img.id(),
            "{code}"
        );
        assert_eq!(f.proxy.faults_left("/manifests/"), 0);
        assert!(
            f.proxy.gets("/manifests/") >= 2,
            "{code}: the 429, then the manifest"
        );
        let log = f.daemon.output();
        assert!(
            log.lines()
                .any(|l| l.contains("fetching the manifest failed; retrying")
                    && l.contains("delay_ms=1000")),
            "{code}: the retry waited the 1 s the registry asked for; daemon output:\n{log}"
        );
    }
}

/// A stall or trickle on the layer: `Unavailable` naming the image, the layer and `parts`;
/// not retried, nothing listed, the partial file deleted.
async fn a_slow_layer_fails(fault: Fault, args: &[&str], parts: &[&str]) {
    let f = Fixture::start(&[64 * 1024], args).await;
    let (layer, _) = f.layer(0);
    f.proxy.fault(&layer, fault, 100);
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer that does not come must fail the pull");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for part in [name.as_str(), layer.as_str(), "RegistryUnavailable"]
        .iter()
        .chain(parts)
    {
        assert!(
            err.message().contains(part),
            "the message must name {part}: {}",
            err.message()
        );
    }
    assert_eq!(f.proxy.gets(&layer), 1, "a stall is not retried");
    assert!(list(&mut c, None).await.is_empty());
    let root = f.daemon.root.clone();
    assert_no_partial_file_left(&root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_layer_fails_after_the_progress_timeout_naming_it() {
    a_slow_layer_fails(
        Fault::Stall { after: 0 },
        &["--pull-progress-timeout", "2s"],
        &["pull_progress_timeout", "2s"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_trickling_below_pull_min_rate_fails_naming_it() {
    a_slow_layer_fails(
        Fault::Trickle,
        &["--pull-progress-timeout", "2s", "--pull-min-rate", "1024"],
        &["pull_min_rate 1024"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_for_a_layer_are_data_loss_and_nothing_is_stored() {
    let f = Fixture::start(&[256 * 1024], &[]).await;
    let (layer, len) = f.layer(0);
    f.proxy.fault(&layer, Fault::WrongBytes, 1);
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer that does not match its digest must fail the pull");
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    for part in [&name, &layer] {
        assert!(
            err.message().contains(part.as_str()),
            "the message must name {part}: {}",
            err.message()
        );
    }
    assert_eq!(f.proxy.served(&layer), len, "the whole (wrong) layer came");
    assert_eq!(f.proxy.gets(&layer), 1, "wrong bytes are not fetched again");
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert!(status(&mut c, &name).await.is_none());
    let root = f.daemon.root.clone();
    assert_no_partial_file_left(&root).await;
    for d in f.img.blob_digests() {
        assert!(
            !blob_file(&root, &d).exists(),
            "no blob file for {d} (config or layer) of the refused image"
        );
    }
    assert_check_passes(f.dir.path(), &root, "after the refused pull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_layer_then_a_restart_resumes_the_partial_file() {
    let mut f = Fixture::start(&[4 << 20], &[]).await;
    let (layer, len) = f.layer(0);
    let half = len / 2;
    // Hold the layer after half its bytes, so the kill lands mid-layer.
    f.proxy.fault(
        &layer,
        Fault::Stall {
            after: half as usize,
        },
        1,
    );
    let name = f.name("test/app:1");
    let root = f.daemon.root.clone();
    let mut c = f.daemon.client();
    let name2 = name.clone();
    let task = tokio::spawn(async move { try_pull(&mut c, &name2).await });

    let proxy = &f.proxy;
    let reached = eventually(STATE_LIMIT, || {
        let r = proxy.served(&layer) >= half;
        async move { r }
    })
    .await;
    assert!(
        reached,
        "the proxy served half the layer ({} of {len}); daemon output:\n{}",
        f.proxy.served(&layer),
        f.daemon.output()
    );
    // Let what was received reach the file (all but the write buffer).
    let want = half.saturating_sub(WRITE_BUFFER + 64 * 1024);
    let hex = hex_of(&layer).to_owned();
    eventually(STATE_LIMIT, || {
        let r = ingest_len(&root, &hex) >= want;
        async move { r }
    })
    .await;
    f.daemon.signal(Signal::KILL);
    f.daemon
        .wait_exit(STATE_LIMIT)
        .await
        .expect("the daemon dies on SIGKILL");
    let r = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the killed daemon's pull returns")
        .expect("pull task");
    assert!(r.is_err(), "a killed pull cannot succeed");
    let partial = ingest_len(&root, &hex);
    assert!(partial > 0, "the partial layer file survived the crash");

    f.proxy.reset_counts();
    let daemon = DaemonBuilder::new(f.dir.path())
        .registry(&f.proxy.host())
        .start()
        .await;
    assert_check_passes(f.dir.path(), &root, "after the restart");
    let mut c = daemon.client();
    assert!(list(&mut c, None).await.is_empty(), "nothing half-pulled");
    assert_eq!(pull(&mut c, &name).await, f.img.id());
    let again = f.proxy.served(&layer);
    assert!(
        again < len,
        "resumed the partial file: {again} bytes of the {len}-byte layer fetched again"
    );
    assert_eq!(
        again,
        len - partial,
        "the rest after the {partial} bytes on disk"
    );
    let ranges = f.proxy.ranges(&layer);
    assert_eq!(
        ranges,
        vec![Some(format!("bytes={partial}-"))],
        "one request for the rest"
    );
    eprintln!("sigkill: layer {len}, partial {partial}, fetched again {again}");
}
