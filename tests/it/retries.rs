//! Retries and resumes against the fake registry's one-off faults: bodies cut short or
//! reset mid-blob resume with `Range` from the bytes already received (each byte fetched
//! once), a registry ignoring `Range` is fetched whole again, 5xx and 429 are retried with
//! backoff, a 401 gets one re-authentication, and a fault that does not go away ends the
//! pull with a clear error after a bounded number of tries.

use tonic::Code;

use crate::support::fake::{FakeRegistry, Fault};
use crate::support::{
    Daemon, DaemonBuilder, ImageBuilder, TestImage, list, pull, status_of, tempdir, try_pull,
};

/// Tries per blob download (the daemon's default retry policy).
const ATTEMPTS: usize = 5;

struct Fixture {
    daemon: Daemon,
    fake: FakeRegistry,
    _dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(fake: FakeRegistry) -> Fixture {
        let dir = tempdir();
        let daemon = DaemonBuilder::new(dir.path())
            .registry(&fake.host())
            .start()
            .await;
        Fixture {
            daemon,
            fake,
            _dir: dir,
        }
    }
    fn name(&self, rest: &str) -> String {
        format!("{}/{rest}", self.fake.host())
    }
}

/// A fake serving `test/app:1`: two layers of about 256 KiB and 128 KiB.
async fn serving() -> (FakeRegistry, TestImage) {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[256 * 1024, 128 * 1024])
        .build();
    fake.add_image("test/app", "1", &img);
    (fake, img)
}

fn cut(after: usize) -> Fault {
    Fault::Cut { after }
}

fn status(code: u16) -> Fault {
    Fault::Status {
        code,
        retry_after: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_bodies_resume_from_the_bytes_received_and_each_byte_is_fetched_once() {
    let (fake, img) = serving().await;
    let (l0, l1) = (img.layers[0].blob.clone(), img.layers[1].blob.clone());
    // Layer 0: cut twice mid-body; layer 1: reset (RST) mid-body, then 5xx twice.
    fake.push_faults(&l0.digest, [cut(10_000), cut(30_000)]);
    fake.push_faults(
        &l1.digest,
        [Fault::Reset { after: 20_000 }, status(502), status(500)],
    );
    // The config: 503, then 429 with Retry-After.
    fake.push_faults(
        &img.config.digest,
        [
            status(503),
            Fault::Status {
                code: 429,
                retry_after: Some(1),
            },
        ],
    );
    let f = Fixture::start(fake).await;
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    assert_eq!(pull(&mut c, &name).await, img.id());
    for d in img.blob_digests() {
        assert_eq!(f.fake.faults_left(&d), 0, "every fault of {d} was met");
    }
    assert_eq!(
        f.fake.range_starts(&l0.digest),
        vec![0, 10_000, 40_000],
        "layer 0 resumed where each cut body ended"
    );
    assert_eq!(
        f.fake.served_bytes(&l0.digest),
        l0.len(),
        "no byte of layer 0 was fetched twice"
    );
    let l1_starts = f.fake.range_starts(&l1.digest);
    assert_eq!(
        l1_starts.len(),
        4,
        "layer 1: reset, 502, 500, then the rest"
    );
    assert!(
        l1_starts[1] > 0 && l1_starts[1] <= 20_000,
        "layer 1 resumed after the reset from the bytes received: {l1_starts:?}"
    );
    assert_eq!(
        l1_starts[1..]
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len(),
        1,
        "the 5xx answers did not lose the bytes received: {l1_starts:?}"
    );
    assert_eq!(f.fake.range_starts(&img.config.digest), vec![0, 0, 0]);
    let got = status_of(&mut c, &name).await;
    assert_eq!(got.id, img.id());
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_ignores_range_is_fetched_whole_again_after_a_break() {
    let (fake, img) = serving().await;
    fake.ignore_range();
    let l0 = img.layers[0].blob.clone();
    fake.push_faults(&l0.digest, [cut(50_000)]);
    let f = Fixture::start(fake).await;
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    assert_eq!(pull(&mut c, &name).await, img.id());
    assert_eq!(f.fake.range_starts(&l0.digest), vec![0, 50_000]);
    assert_eq!(
        f.fake.served_bytes(&l0.digest),
        50_000 + l0.len(),
        "the 200 answer to the resume brought the whole layer again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_5xx_is_retried() {
    let (fake, img) = serving().await;
    fake.push_faults("1", [status(503), status(502)]);
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();
    assert_eq!(pull(&mut c, &f.name("test/app:1")).await, img.id());
    assert_eq!(f.fake.faults_left("1"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lasting_503_fails_after_bounded_tries_as_registry_unavailable() {
    let (fake, img) = serving().await;
    let l0 = img.layer_digests()[0].clone();
    fake.push_faults(&l0, std::iter::repeat_n(status(503), 100));
    let f = Fixture::start(fake).await;
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a blob that always answers 503 cannot be pulled");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().starts_with("RegistryUnavailable") && err.message().contains(&name),
        "kubelet's prefix and the image: {}",
        err.message()
    );
    assert_eq!(
        f.fake.blob_requests("test/app", &l0),
        ATTEMPTS,
        "tries are bounded by the retry policy"
    );
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_401_mid_pull_re_authenticates_and_a_lasting_401_is_unauthenticated() {
    let (fake, img) = serving().await;
    let l0 = img.layer_digests()[0].clone();
    fake.push_faults(&l0, [status(401)]);
    let other = ImageBuilder::new().build();
    fake.add_image("test/other", "1", &other);
    let o0 = other.layer_digests()[0].clone();
    fake.push_faults(&o0, std::iter::repeat_n(status(401), 10));
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();

    assert_eq!(pull(&mut c, &f.name("test/app:1")).await, img.id());
    assert_eq!(
        f.fake.blob_requests("test/app", &l0),
        2,
        "one 401, one retry"
    );

    let err = try_pull(&mut c, &f.name("test/other:1"))
        .await
        .expect_err("a registry that keeps refusing must fail the pull");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    assert_eq!(
        f.fake.blob_requests("test/other", &o0),
        2,
        "re-authentication is tried once, not in a loop"
    );
}

/// `Retry-After` on manifest and blob answers: a manifest 429 asking for 1 s and a blob 503
/// asking for 2 s are retried after exactly that (the daemon logs the delay); one asking
/// for more than the policy's 10 s cap fails at once instead of holding the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_or_503_waits_its_retry_after_and_one_beyond_the_cap_fails_at_once() {
    let (fake, img) = serving().await;
    fake.add_image("test/app", "2", &img);
    let asks = |secs| Fault::Status {
        code: 429,
        retry_after: Some(secs),
    };
    fake.push_faults("1", [asks(1)]);
    fake.push_faults("2", [asks(60), asks(60)]);
    let layer = img.layers[1].blob.digest.clone();
    fake.push_faults(
        &layer,
        [Fault::Status {
            code: 503,
            retry_after: Some(2),
        }],
    );
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();

    assert_eq!(pull(&mut c, &f.name("test/app:1")).await, img.id());
    assert_eq!(f.fake.faults_left("1"), 0);
    assert_eq!(
        f.fake.requests("/v2/test/app/manifests/1"),
        2,
        "one 429, one retry"
    );
    let log = f.daemon.output();
    assert!(
        log.lines()
            .any(|l| l.contains("fetching the manifest failed; retrying")
                && l.contains("delay_ms=1000")),
        "the retry waited the 1 s the registry asked for; daemon output:\n{log}"
    );
    assert_eq!(f.fake.faults_left(&layer), 0);
    assert!(
        log.lines()
            .any(|l| l.contains("blob download broke; retrying")
                && l.contains(&layer)
                && l.contains("delay_ms=2000")),
        "the blob retry waited the 2 s its 503 asked for; daemon output:\n{log}"
    );

    let name = f.name("test/app:2");
    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a registry asking for a minute is not waited for inside the pull");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().starts_with("RegistryUnavailable")
            && err.message().contains(&name)
            && err.message().contains("retry after 60s"),
        "{}",
        err.message()
    );
    assert_eq!(
        f.fake.requests("/v2/test/app/manifests/2"),
        1,
        "not retried within the pull"
    );
}

/// Requests per pull on a registry without authentication: the first pull asks `GET /v2/`
/// once, then the manifest, the config and each layer once; a second image pulled on the
/// kept session asks `GET /v2/` no more (what it answered is known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_registry_is_asked_v2_once_per_session_and_each_blob_once() {
    let (fake, img) = serving().await;
    let other = ImageBuilder::new().layer_sizes(&[4096]).build();
    fake.add_image("test/other", "1", &other);
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();
    assert_eq!(pull(&mut c, &f.name("test/app:1")).await, img.id());
    assert_eq!(f.fake.requests("/v2/"), 1, "one GET /v2/ for the session");
    assert_eq!(f.fake.requests("/v2/test/app/manifests/1"), 1);
    for d in img.blob_digests() {
        assert_eq!(f.fake.blob_requests("test/app", &d), 1, "{d} asked once");
    }
    assert_eq!(pull(&mut c, &f.name("test/other:1")).await, other.id());
    assert_eq!(f.fake.requests("/v2/"), 1, "the kept session asks no more");
}

/// The config comes beside the layers, not before them: with the config's body held
/// open, every layer is still asked for; opening it finishes the pull.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_and_the_layers_are_asked_at_once() {
    config_and_layers_at_once("false").await;
}

/// With unpacking too: the layers download while the config (whose diff_ids the unpacks
/// need) is held back, and their unpacks follow the downloads once it is in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unpack_the_layers_are_asked_before_the_config_is_in() {
    config_and_layers_at_once("true").await;
}

async fn config_and_layers_at_once(unpack: &str) {
    use crate::support::fake::BlobBehavior;
    let (fake, img) = serving().await;
    fake.set_blob(&img.config.digest, BlobBehavior::Gate { after: 10 });
    let dir = tempdir();
    let daemon = DaemonBuilder::new(dir.path())
        .registry(&fake.host())
        .arg("--unpack")
        .arg(unpack)
        .start()
        .await;
    let f = Fixture {
        daemon,
        fake,
        _dir: dir,
    };
    let mut c = f.daemon.client();
    let name = f.name("test/app:1");
    let pulling = tokio::spawn(async move { pull(&mut c, &name).await });
    let layers: Vec<String> = img.layers.iter().map(|l| l.blob.digest.clone()).collect();
    let asked = crate::support::eventually(std::time::Duration::from_secs(20), || async {
        layers
            .iter()
            .all(|l| f.fake.blob_requests("test/app", l) == 1)
    })
    .await;
    assert!(asked, "the layers waited for the config");
    f.fake.open_gate();
    assert_eq!(pulling.await.unwrap(), img.id());
}
