//! A crash keeps what an interrupted pull already verified: the daemon is killed with
//! SIGKILL at several points of a pull of an 11-layer image behind a rate-limited proxy
//! (a slow link, so the kill lands mid-pull); after each, `cri-imaged check` passes on the
//! crashed store (its whole blobs are "kept from an interrupted pull", not a problem), the
//! daemon restarts on it, and the re-pull fetches at most the image's size minus what was
//! on disk at the kill, plus a small overlap per layer.

use std::path::Path;
use std::time::Duration;

use rustix::process::Signal;

use crate::support::proxy::Proxy;
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, assert_check_passes, eventually, pull, run_check,
    tempdir, try_pull,
};

const STATE_LIMIT: Duration = Duration::from_secs(60);
/// Bytes per second each blob body is served at.
const RATE: u64 = 3 << 20;
const LAYERS: usize = 11;
const LAYER_BYTES: usize = 1536 * 1024;
/// Bytes a re-pull may fetch again per layer beyond what was missing (a resume starts
/// where the file on disk ends; this allows for one proxy chunk).
const OVERLAP: u64 = 64 * 1024;

/// Bytes of the blobs (whole) and partial downloads on disk under `root`.
fn on_disk(root: &Path) -> (u64, u64) {
    let size = |dir: &str| -> u64 {
        std::fs::read_dir(root.join(dir))
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    (size("blobs/sha256"), size("ingest"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_pull_keeps_the_verified_blobs_for_the_next_pull() {
    let registry = Registry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[LAYER_BYTES; LAYERS])
        .build();
    img.push(&registry, "test/many", "1").await;
    let proxy = Proxy::start(&registry).await;
    proxy.limit_rate(RATE);
    let total: u64 = img.config.len() + img.layers.iter().map(|l| l.blob.len()).sum::<u64>();
    let mut report = Vec::new();

    // 3 downloads at a time at RATE each: the whole pull takes about 2 s. The kill comes
    // once this many blobs are whole in the store (more are partial by then).
    for kill_after in [1usize, 4, 8] {
        let dir = tempdir();
        let builder = DaemonBuilder::new(dir.path()).registry(&proxy.host());
        let root = builder.root_path().to_owned();
        let name = format!("{}/test/many:1", proxy.host());
        let mut daemon = builder.start().await;
        let mut c = daemon.client();
        let name2 = name.clone();
        let task = tokio::spawn(async move { try_pull(&mut c, &name2).await });
        let reached = eventually(STATE_LIMIT, || {
            let n = std::fs::read_dir(root.join("blobs/sha256")).map_or(0, |e| e.count());
            async move { n >= kill_after }
        })
        .await;
        assert!(
            reached,
            "{kill_after} blobs: the pull got there:\n{}",
            daemon.output()
        );
        daemon.signal(Signal::KILL);
        daemon
            .wait_exit(STATE_LIMIT)
            .await
            .expect("the daemon dies on SIGKILL");
        let r = tokio::time::timeout(STATE_LIMIT, task)
            .await
            .expect("the killed daemon's pull returns")
            .expect("pull task");
        assert!(
            r.is_err(),
            "{kill_after} blobs: the pull was cut by the kill"
        );
        let (whole, partial) = on_disk(&root);
        assert!(
            whole > 0,
            "{kill_after} blobs: some blob was whole at the kill"
        );

        // Before any restart: the crashed store passes `check`, its kept blobs are notes.
        let out = run_check(dir.path(), &root, false);
        assert!(
            out.status.success(),
            "{kill_after} blobs: check fails on the crashed store:\n{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("kept from an interrupted pull of"),
            "{kill_after} blobs: check names the kept blobs:\n{}",
            out.stdout
        );

        proxy.reset_counts();
        let mut daemon = builder.start().await;
        assert_check_passes(
            dir.path(),
            &root,
            &format!("{kill_after} blobs: after the restart"),
        );
        let mut c = daemon.client();
        assert_eq!(pull(&mut c, &name).await, img.id(), "{kill_after} blobs");
        let refetched = proxy.served("/blobs/");
        let bound = total - (whole + partial).min(total) + OVERLAP * (LAYERS as u64 + 1);
        assert!(
            refetched <= bound,
            "{kill_after} blobs: the re-pull fetched {refetched} bytes; the image is {total}, \
             {whole} whole + {partial} partial were on disk (bound {bound})"
        );
        report.push(format!(
            "kill after {kill_after} whole blobs: on disk {whole} whole + {partial} partial of {total}; re-pull fetched {refetched}"
        ));
        daemon.stop().await;
        assert_check_passes(
            dir.path(),
            &root,
            &format!("{kill_after} blobs: after the re-pull"),
        );
        assert!(
            std::fs::read_dir(root.join("intents"))
                .map(|e| e.count())
                .unwrap_or(0)
                == 0,
            "{kill_after} blobs: no note outlives the recorded image"
        );
    }
    eprintln!("{}", report.join("\n"));
}
