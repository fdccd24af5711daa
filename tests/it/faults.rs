//! Faults a well-behaved registry never makes, served by the in-process fake registry
//! (`support::fake`): a blob that stalls mid-body (then SIGTERM or SIGKILL of the daemon),
//! a blob whose bytes do not match its digest, a manifest that is not an image, a manifest
//! that does not hash to the digest it was pinned by; and names PullImage must refuse.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::support::fake::{BlobBehavior, FakeRegistry};
use crate::support::images::sha256_digest;
use crate::support::{
    Daemon, DaemonBuilder, ImageBuilder, TestImage, eventually, hex_of, list, pull, status,
    status_of, tempdir, try_pull,
};

/// Upper bound for a pull the test waits on in a task (the call itself is bounded too).
const JOIN_LIMIT: Duration = Duration::from_secs(150);
/// Upper bound for the daemon to reach a state the test polls for, or to exit.
const STATE_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for a failed pull's partial downloads to be deleted after the call returns.
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);
/// Bytes of a stalled layer sent before the fake holds still.
const STALL_AFTER: usize = 1000;

/// A daemon whose `--registry` is a fake registry. Fields drop in order: daemon, fake
/// (aborting its connections), directory.
struct Fixture {
    daemon: Daemon,
    fake: FakeRegistry,
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(fake: FakeRegistry) -> Fixture {
        let dir = tempdir();
        let daemon = Self::builder(dir.path(), &fake).start().await;
        Fixture { daemon, fake, dir }
    }

    fn builder(dir: &Path, fake: &FakeRegistry) -> DaemonBuilder {
        DaemonBuilder::new(dir).registry(&fake.host())
    }

    /// A new daemon on the same root and socket (the old one must have exited).
    async fn restart(&mut self) {
        self.daemon = Self::builder(self.dir.path(), &self.fake).start().await;
    }

    /// `127.0.0.1:<port>/<rest>` on the fake registry.
    fn name(&self, rest: &str) -> String {
        format!("{}/{rest}", self.fake.host())
    }

    fn root(&self) -> PathBuf {
        self.daemon.root.clone()
    }
}

/// File names in `dir`, sorted; a missing directory has none.
fn files_in(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    };
    let mut names: Vec<String> = entries
        .map(|e| {
            e.unwrap_or_else(|err| panic!("read {}: {err}", dir.display()))
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn ingest_files(root: &Path) -> Vec<String> {
    files_in(&root.join("ingest"))
}

/// Asserts `<root>/ingest/` is empty; the message lists what is left and the digests of
/// `img`'s blobs (an ingest file's name starts with its blob's hex digest).
fn assert_ingest_empty(root: &Path, img: &TestImage, when: &str) {
    let left = ingest_files(root);
    assert!(
        left.is_empty(),
        "{when}: {} must be empty, holds {left:?}; the image's blobs: config {}, layers {:?}",
        root.join("ingest").display(),
        img.config.digest,
        img.layer_digests()
    );
}

fn blob_file(root: &Path, digest: &str) -> PathBuf {
    root.join("blobs").join("sha256").join(hex_of(digest))
}

/// Starts PullImage(`image`) in a task on its own client.
fn spawn_pull(daemon: &Daemon, image: &str) -> JoinHandle<Result<String, Status>> {
    let mut c = daemon.client();
    let image = image.to_owned();
    tokio::spawn(async move { try_pull(&mut c, &image).await })
}

/// The result of a pull started by [`spawn_pull`], waited for at most [`JOIN_LIMIT`].
async fn join_pull(mut task: JoinHandle<Result<String, Status>>) -> Result<String, Status> {
    match tokio::time::timeout(JOIN_LIMIT, &mut task).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Ok(Err(e)) => panic!("pull task failed: {e}"),
        Err(_) => {
            task.abort();
            panic!("the pull did not return within {JOIN_LIMIT:?}");
        }
    }
}

/// Waits (bounded) until the fake holds a stalled blob connection and `<root>/ingest/`
/// holds a file, while the pull is still running.
async fn wait_for_stall(f: &Fixture, task: &mut JoinHandle<Result<String, Status>>) -> Vec<String> {
    let root = f.root();
    let reached = eventually(STATE_LIMIT, || {
        let ready =
            task.is_finished() || (f.fake.stalled() >= 1 && !ingest_files(&root).is_empty());
        async move { ready }
    })
    .await;
    if task.is_finished() {
        let r = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a finished task joins at once");
        panic!(
            "the pull returned before the stalled layer was reached: {:?}; daemon output:\n{}",
            r.map(|r| r.map_err(|s| (s.code(), s.message().to_owned()))),
            f.daemon.output()
        );
    }
    assert!(
        reached,
        "within {STATE_LIMIT:?} the fake must hold a stalled blob (stalled: {}) and {} must hold \
         a partial download (holds {:?}); daemon output:\n{}",
        f.fake.stalled(),
        root.join("ingest").display(),
        ingest_files(&root),
        f.daemon.output()
    );
    ingest_files(&root)
}

/// A daemon and a fake registry serving `test/app:1`, whose one layer stalls mid-body.
async fn stalled_layer_fixture() -> (Fixture, TestImage, String) {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[64 * 1024]).build();
    let layer = img.layer_digests()[0].clone();
    fake.add_image("test/app", "1", &img);
    fake.set_blob(&layer, BlobBehavior::Stall { after: STALL_AFTER });
    (Fixture::start(fake).await, img, layer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cancels_an_in_flight_pull_and_cleans_its_partial_blob() {
    let (mut f, img, layer) = stalled_layer_fixture().await;
    let root = f.root();
    let socket = f.daemon.socket.clone();
    let name = f.name("test/app:1");
    // A client connected across the shutdown, as kubelet's is.
    let _idle = f.daemon.client();

    let mut task = spawn_pull(&f.daemon, &name);
    wait_for_stall(&f, &mut task).await;
    f.daemon.signal(Signal::TERM);

    let err = join_pull(task)
        .await
        .expect_err("a pull stalled at SIGTERM must not succeed");
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "a pull cancelled by shutdown: {}",
        err.message()
    );
    assert!(
        err.message().contains("shutting down"),
        "the message must say the daemon is shutting down: {}",
        err.message()
    );
    let st = f.daemon.wait_exit(STATE_LIMIT).await.unwrap_or_else(|| {
        panic!(
            "the daemon did not exit within {STATE_LIMIT:?} of SIGTERM and was killed; output:\n{}",
            f.daemon.output()
        )
    });
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after SIGTERM ({st}); output:\n{}",
        f.daemon.output()
    );
    assert!(
        !socket.exists(),
        "the socket {} must be removed on exit",
        socket.display()
    );
    assert!(
        !blob_file(&root, &layer).exists(),
        "the stalled layer {layer} must not be stored as a blob"
    );
    // The daemon has exited: nothing can clean ingest/ any more until the next start.
    assert_ingest_empty(&root, &img, "after a pull cancelled by SIGTERM");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_download_left_by_sigkill_is_cleaned_at_start_and_the_pull_then_succeeds() {
    let (mut f, img, layer) = stalled_layer_fixture().await;
    let root = f.root();
    let name = f.name("test/app:1");

    let mut task = spawn_pull(&f.daemon, &name);
    let partial = wait_for_stall(&f, &mut task).await;
    f.daemon.signal(Signal::KILL);
    let st = f
        .daemon
        .wait_exit(STATE_LIMIT)
        .await
        .expect("the daemon dies on SIGKILL");
    assert_eq!(
        st.signal(),
        Some(Signal::KILL.as_raw()),
        "the daemon was killed by SIGKILL: {st}"
    );
    let r = join_pull(task).await;
    assert!(
        r.is_err(),
        "a pull whose daemon was killed cannot succeed: {r:?}"
    );
    assert_eq!(
        ingest_files(&root),
        partial,
        "SIGKILL leaves the partial download in ingest/"
    );

    f.fake.set_blob(&layer, BlobBehavior::Normal);
    f.restart().await;
    assert_ingest_empty(
        &root,
        &img,
        "right after start on a root with partial downloads",
    );
    // The blobs the killed pull had verified are kept for the next pull (its note in
    // intents/ names them); the stalled layer was never whole.
    for d in img.blob_digests().iter().filter(|d| **d != layer) {
        assert!(
            blob_file(&root, d).exists(),
            "start-up keeps blob {d} of the interrupted pull for the next pull"
        );
    }
    assert!(
        !blob_file(&root, &layer).exists(),
        "the stalled layer is not a blob"
    );
    let mut c = f.daemon.client();
    assert!(
        list(&mut c, None).await.is_empty(),
        "nothing half-pulled is listed"
    );
    assert!(status(&mut c, &name).await.is_none());

    assert_eq!(pull(&mut c, &name).await, img.id());
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one image after the pull: {all:?}");
    assert_eq!(all[0].id, img.id());
    assert_eq!(all[0].repo_tags, vec![name.clone()]);
    let stored = std::fs::read(blob_file(&root, &layer))
        .unwrap_or_else(|e| panic!("the layer {layer} is stored after the pull: {e}"));
    assert_eq!(
        sha256_digest(&stored),
        layer,
        "the stored layer matches its digest"
    );
    assert_ingest_empty(&root, &img, "after the pull succeeded");
}

/// Pulls an image whose first layer the fake serves with wrong bytes (answering `Range`
/// with 206, or ignoring it with a whole 200 body) and checks the refusal: DataLoss naming
/// the image and the digest, nothing listed, no blob or partial file left.
async fn wrong_bytes_are_refused_as_data_loss(ignore_range: bool) {
    let fake = FakeRegistry::start().await;
    if ignore_range {
        fake.ignore_range();
    }
    let img = ImageBuilder::new().build();
    let bad = img.layer_digests()[0].clone();
    fake.add_image("test/app", "1", &img);
    fake.set_blob(&bad, BlobBehavior::WrongBytes);
    let f = Fixture::start(fake).await;
    let root = f.root();
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer that does not match its digest must fail the pull");
    assert!(
        f.fake.blob_requests("test/app", &bad) >= 1,
        "the daemon fetched the bad layer"
    );
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    for part in [&name, &bad] {
        assert!(
            err.message().contains(part.as_str()),
            "the message must name {part}: {}",
            err.message()
        );
    }
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert!(status(&mut c, &name).await.is_none());
    assert!(status(&mut c, &img.id()).await.is_none());
    assert!(
        !blob_file(&root, &bad).exists(),
        "no blob file for the refused layer {bad}"
    );
    // Clean-up may finish just after the call returns: wait for it, bounded.
    let cleaned = eventually(CLEANUP_LIMIT, || {
        let empty = ingest_files(&root).is_empty();
        async move { empty }
    })
    .await;
    if !cleaned {
        assert_ingest_empty(&root, &img, "the refused pull's downloads");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_with_wrong_bytes_is_refused_as_data_loss_and_leaves_nothing() {
    wrong_bytes_are_refused_as_data_loss(false).await;
}

/// The same with a registry that ignores `Range` and answers 200 with the whole (wrong)
/// body, as HTTP allows: still DataLoss, as the README promises for content that does not
/// match its digest, not a retryable Unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_bytes_from_a_registry_that_ignores_range_are_data_loss_too() {
    wrong_bytes_are_refused_as_data_loss(true).await;
}

/// A layer that fails verification while another layer of the same pull is still
/// downloading (stalled, so it cannot finish): the pull fails at once, and the other
/// layer's download is stopped and its partial file deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_layer_stops_the_pulls_other_downloads_and_leaves_nothing() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[256 * 1024, 64 * 1024])
        .build();
    let (bad, stalled) = (
        img.layer_digests()[0].clone(),
        img.layer_digests()[1].clone(),
    );
    fake.add_image("test/app", "1", &img);
    fake.set_blob(&bad, BlobBehavior::WrongBytes);
    fake.set_blob(&stalled, BlobBehavior::Stall { after: STALL_AFTER });
    // The bad layer is answered only once the other one is stalled mid-body.
    fake.hold_until_stalled(&bad);
    let f = Fixture::start(fake).await;
    let root = f.root();
    let name = f.name("test/app:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer that does not match its digest must fail the pull");
    assert_eq!(
        f.fake.stalled(),
        1,
        "the other layer was stalled mid-body when the bad one was refused"
    );
    assert_eq!(err.code(), Code::DataLoss, "{}", err.message());
    assert!(
        err.message().contains(&bad),
        "the message must name the digest {bad}: {}",
        err.message()
    );
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    for d in [&bad, &stalled] {
        assert!(!blob_file(&root, d).exists(), "no blob file for {d}");
    }
    let cleaned = eventually(CLEANUP_LIMIT, || {
        let empty = ingest_files(&root).is_empty();
        async move { empty }
    })
    .await;
    if !cleaned {
        assert_ingest_empty(
            &root,
            &img,
            &format!(
                "the refused pull's downloads (the fake holds {} stalled connection(s))",
                f.fake.stalled()
            ),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_name_and_unsupported_transports_are_invalid_argument() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().build();
    fake.add_image("test/app", "1", &img);
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, "")
        .await
        .expect_err("an empty name must be refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    for (image, transport) in [
        // Local files (oci:, docker-archive:, …) are tests/it/import.rs's; these two
        // containers/image transports are not offered at all.
        ("containers-storage:busybox", "containers-storage"),
        ("docker-daemon:busybox:1", "docker-daemon"),
    ] {
        let err = try_pull(&mut c, image)
            .await
            .expect_err(&format!("{image} must be refused"));
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{image}: {}",
            err.message()
        );
        assert!(
            err.message().contains(transport),
            "the message must name the transport {transport}: {}",
            err.message()
        );
    }
    assert!(list(&mut c, None).await.is_empty());

    let name = f.name("test/app:1");
    assert_eq!(
        pull(&mut c, &format!("docker://{name}")).await,
        img.id(),
        "docker:// is the default transport"
    );
    let got = status_of(&mut c, &name).await;
    assert_eq!(got.id, img.id());
    assert_eq!(
        got.repo_tags,
        vec![name.clone()],
        "the name is recorded without the transport"
    );
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_that_is_not_an_image_is_refused() {
    let fake = FakeRegistry::start().await;
    // A Docker schema 1 manifest (never an image cri-imaged can store), naming a real blob.
    let blob = fake.add_blob("test/old", b"not really a layer");
    let v1 = serde_json::json!({
        "schemaVersion": 1,
        "name": "test/old",
        "tag": "1",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": blob}],
        "history": [{"v1Compatibility": "{\"id\":\"0\"}"}],
    });
    fake.add_manifest(
        "test/old",
        "1",
        "application/vnd.docker.distribution.manifest.v1+json",
        &serde_json::to_vec(&v1).expect("serialize v1 manifest"),
    );
    let f = Fixture::start(fake).await;
    let name = f.name("test/old:1");
    let mut c = f.daemon.client();

    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a schema 1 manifest must be refused");
    assert!(
        f.fake.requests("/v2/test/old/manifests/1") >= 1,
        "the daemon fetched the manifest"
    );
    assert!(
        [
            Code::InvalidArgument,
            Code::DataLoss,
            Code::FailedPrecondition,
            Code::NotFound
        ]
        .contains(&err.code()),
        "code {:?} must say what is wrong with the image: {}",
        err.code(),
        err.message()
    );
    assert!(
        err.message().contains(&name),
        "the message must name the image {name}: {}",
        err.message()
    );
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert!(status(&mut c, &name).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_whose_digest_does_not_match_the_pinned_digest_is_refused() {
    let fake = FakeRegistry::start().await;
    let pinned = ImageBuilder::new().build();
    let served = ImageBuilder::new().build();
    // Under the pinned image's digest, the other image's manifest: once with a
    // Docker-Content-Digest that lies (claims the pinned digest), once with the true one.
    let cases = [
        ("test/lying-header", pinned.manifest_digest()),
        ("test/true-header", served.manifest_digest()),
    ];
    for (repo, header) in &cases {
        fake.add_image(repo, "pinned", &pinned);
        fake.add_image(repo, "served", &served);
        fake.add_manifest_with_digest_header(
            repo,
            &pinned.manifest_digest(),
            served.format.manifest_type(),
            &served.manifest.data,
            header,
        );
    }
    let f = Fixture::start(fake).await;
    let mut c = f.daemon.client();

    for (repo, header) in &cases {
        let name = format!("{}@{}", f.name(repo), pinned.manifest_digest());
        let err = try_pull(&mut c, &name).await.expect_err(&format!(
            "{name}: content hashing to {} (Docker-Content-Digest {header}) must be refused",
            served.manifest_digest()
        ));
        assert!(
            f.fake.requests(&format!(
                "/v2/{repo}/manifests/{}",
                pinned.manifest_digest()
            )) >= 1,
            "the daemon fetched the pinned manifest of {repo}"
        );
        // README: DataLoss when a registry serves content that does not match its digest.
        assert_eq!(err.code(), Code::DataLoss, "{name}: {}", err.message());
        assert!(
            err.message().contains(&name),
            "the message must name the image {name}: {}",
            err.message()
        );
    }
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert!(status(&mut c, &served.id()).await.is_none());
    assert!(status(&mut c, &pinned.id()).await.is_none());
}
