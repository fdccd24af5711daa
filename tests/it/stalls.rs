//! Stalls and cancels: a blob that stops sending (or trickles below `pull_min_rate`) fails
//! the pull after `pull_progress_timeout` with an error naming the image, the blob and the
//! setting; a client that goes away cancels its download (partial file deleted) unless
//! another caller still waits for the same image.

use std::path::Path;
use std::time::Duration;

use tonic::Code;

use crate::support::fake::{BlobBehavior, FakeRegistry};
use crate::support::{
    Client, Daemon, DaemonBuilder, ImageBuilder, TestImage, eventually, ingest_files, list, pull,
    spec, tempdir, try_pull,
};
use cri_imaged::proto::PullImageRequest;

/// Upper bound for the daemon to reach a state the test polls for.
const STATE_LIMIT: Duration = Duration::from_secs(30);

async fn daemon(dir: &Path, fake: &FakeRegistry, args: &[&str]) -> Daemon {
    let mut b = DaemonBuilder::new(dir).registry(&fake.host());
    for a in args {
        b = b.arg(a);
    }
    b.start().await
}

async fn one_layer(behavior: BlobBehavior) -> (FakeRegistry, TestImage, String) {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[128 * 1024]).build();
    let layer = img.layer_digests()[0].clone();
    fake.add_image("test/app", "1", &img);
    fake.set_blob(&layer, behavior);
    (fake, img, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_that_stops_sending_fails_after_the_progress_timeout_naming_it() {
    let (fake, _img, layer) = one_layer(BlobBehavior::Stall { after: 1000 }).await;
    let dir = tempdir();
    let d = daemon(dir.path(), &fake, &["--pull-progress-timeout", "2s"]).await;
    let name = format!("{}/test/app:1", fake.host());
    let mut c = d.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a stalled blob must fail the pull");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for part in [
        &name,
        &layer,
        "2s",
        "pull_progress_timeout",
        "RegistryUnavailable",
    ] {
        assert!(
            err.message().contains(part),
            "the message must name {part}: {}",
            err.message()
        );
    }
    assert_eq!(
        fake.blob_requests("test/app", &layer),
        1,
        "a stall is not retried"
    );
    assert!(list(&mut c, None).await.is_empty());
    let root = d.root.clone();
    assert!(
        eventually(STATE_LIMIT, || {
            let empty = ingest_files(&root).is_empty();
            async move { empty }
        })
        .await,
        "the stalled download's partial file is deleted: {:?}",
        ingest_files(&root)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickle_below_pull_min_rate_counts_as_a_stall() {
    let (fake, _img, layer) = one_layer(BlobBehavior::Trickle).await;
    let dir = tempdir();
    let d = daemon(
        dir.path(),
        &fake,
        &["--pull-progress-timeout", "1s", "--pull-min-rate", "1000"],
    )
    .await;
    let name = format!("{}/test/app:1", fake.host());
    let mut c = d.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("10 bytes/s is below a 1000 bytes/s floor");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    for part in [name.as_str(), layer.as_str(), "pull_min_rate 1000"] {
        assert!(
            err.message().contains(part),
            "the message must name {part}: {}",
            err.message()
        );
    }
    assert!(
        fake.served_bytes(&layer) > 0,
        "bytes did arrive, just too few"
    );
}

/// PullImage(`image`) on `client`, given up (the request dropped, as crictl's Ctrl-C or
/// a kubelet deadline does) after `after`.
async fn pull_given_up_after(mut client: Client, image: String, after: Duration) {
    let req = PullImageRequest {
        image: Some(spec(&image)),
        auth: None,
        sandbox_config: None,
    };
    let r = tokio::time::timeout(after, client.pull_image(req)).await;
    assert!(
        r.is_err(),
        "the pull must still be running when given up: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_cancels_its_download_unless_another_caller_waits() {
    let (fake, img, layer) = one_layer(BlobBehavior::Gate { after: 1000 }).await;
    let dir = tempdir();
    let d = daemon(dir.path(), &fake, &[]).await;
    let root = d.root.clone();
    let name = format!("{}/test/app:1", fake.host());

    // Alone: the download stops and its partial file goes.
    pull_given_up_after(d.client(), name.clone(), Duration::from_secs(2)).await;
    assert_eq!(
        fake.stalled(),
        1,
        "the layer was mid-body when the client left"
    );
    let cleaned = eventually(STATE_LIMIT, || {
        let empty = ingest_files(&root).is_empty();
        async move { empty }
    })
    .await;
    assert!(
        cleaned,
        "a cancelled pull's partial download is deleted: {:?}",
        ingest_files(&root)
    );

    // With a second caller waiting: the first leaving changes nothing.
    let mut waiter = d.client();
    let name2 = name.clone();
    let staying = tokio::spawn(async move { try_pull(&mut waiter, &name2).await });
    let leaving = tokio::spawn(pull_given_up_after(
        d.client(),
        name.clone(),
        Duration::from_secs(2),
    ));
    leaving.await.expect("the leaving client's task");
    assert!(!staying.is_finished(), "the staying caller still waits");
    let requests = fake.blob_requests("test/app", &layer);
    fake.open_gate();
    let got = tokio::time::timeout(Duration::from_secs(120), staying)
        .await
        .expect("the staying pull returns")
        .expect("the staying pull's task");
    assert_eq!(got.expect("the staying caller's pull succeeds"), img.id());
    assert_eq!(
        fake.blob_requests("test/app", &layer),
        requests,
        "the download the staying caller waited on was not restarted"
    );
    let mut c = d.client();
    assert_eq!(pull(&mut c, &name).await, img.id());
}

/// `max_concurrent_downloads` bounds the large blobs only: small ones (a round trip each)
/// run beside them, so 50 small layers behind a long RTT do not wait in threes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_blobs_download_beside_the_large_ones_the_limit_holds_back() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[2 << 20, 2 << 20, 16 * 1024, 16 * 1024])
        .build();
    let layers = img.layer_digests();
    fake.add_image("test/app", "1", &img);
    for l in &layers {
        fake.set_blob(l, BlobBehavior::Stall { after: 0 });
    }
    let dir = tempdir();
    let d = daemon(
        dir.path(),
        &fake,
        &[
            "--max-concurrent-downloads",
            "1",
            "--pull-progress-timeout",
            "5s",
        ],
    )
    .await;
    let name = format!("{}/test/app:1", fake.host());
    let mut c = d.client();
    let pulling = tokio::spawn(async move { try_pull(&mut c, &name).await });
    let asked = |l: &String| fake.blob_requests("test/app", l);
    let both_small = eventually(Duration::from_secs(4), || {
        let n = asked(&layers[2]).min(asked(&layers[3]));
        async move { n >= 1 }
    })
    .await;
    let large = asked(&layers[0]) + asked(&layers[1]);
    assert!(
        both_small,
        "both small layers are asked while the others stall: {} and {} requests",
        asked(&layers[2]),
        asked(&layers[3])
    );
    assert!(
        large <= 1,
        "with max_concurrent_downloads = 1, one large blob at a time: {large} asked"
    );
    let err = pulling
        .await
        .unwrap()
        .expect_err("stalled blobs fail the pull");
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
}
