//! Crash safety: the real daemon killed with SIGKILL at many points of a pull (chosen by
//! the bytes the fake registry has sent: the fake stops sending at that byte and the test
//! kills the daemon there), restarted on the same root: `cri-imaged check` passes, nothing
//! half-pulled is listed, and the pull then succeeds, resuming the partial layer file the
//! crash left (the bytes fetched again after the restart are the image's size minus what
//! was on disk). Each round ends by removing the image, so removal runs between crashes.
//!
//! Five points run every time; `CRI_IMAGED_HEAVY_TESTS=1` runs 22.

use std::time::Duration;

use rustix::process::Signal;

use crate::support::fake::{BlobBehavior, FakeRegistry};
use crate::support::{
    DaemonBuilder, ImageBuilder, TestImage, assert_check_passes, eventually, ingest_len, list,
    pull, remove, tempdir, try_pull,
};

/// Upper bound for the daemon to reach a state the test polls for, or to exit.
const STATE_LIMIT: Duration = Duration::from_secs(30);
/// The daemon's ingest write buffer: at most this much received data is not yet on disk.
const WRITE_BUFFER: u64 = 1 << 20;

/// Where the daemon is killed: blob `blob` (index into config + layers) after `after`
/// body bytes.
#[derive(Clone, Copy, Debug)]
struct Point {
    blob: usize,
    after: usize,
}

fn points(img: &TestImage) -> Vec<Point> {
    let big = img.layers[0].blob.len() as usize;
    let heavy = std::env::var("CRI_IMAGED_HEAVY_TESTS").is_ok_and(|v| v == "1");
    let mut p = vec![
        Point { blob: 0, after: 10 },
        Point {
            blob: 2,
            after: 100 * 1024,
        },
    ];
    if heavy {
        p.extend((0..20).map(|i| Point {
            blob: 1,
            after: big * i / 20,
        }));
    } else {
        p.extend([0, big * 2 / 5, big * 4 / 5].map(|after| Point { blob: 1, after }));
    }
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_many_points_of_a_pull_leaves_a_sound_store_and_the_next_pull_resumes() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new()
        .layer_sizes(&[4 << 20, 256 * 1024])
        .build();
    fake.add_image("test/app", "1", &img);
    let blobs = img.blob_digests();
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path()).registry(&fake.host());
    let root = builder.root_path().to_owned();
    let name = format!("{}/test/app:1", fake.host());
    let mut report = Vec::new();

    for point in points(&img) {
        let digest = &blobs[point.blob];
        let hex = digest.trim_start_matches("sha256:");
        let mut daemon = builder.start().await;
        fake.set_blob(digest, BlobBehavior::Stall { after: point.after });
        let stalled_before = fake.stalled();
        let mut c = daemon.client();
        let name2 = name.clone();
        let task = tokio::spawn(async move { try_pull(&mut c, &name2).await });
        let reached = eventually(STATE_LIMIT, || {
            let r = fake.stalled() > stalled_before;
            async move { r }
        })
        .await;
        assert!(
            reached,
            "{point:?}: the pull reached the kill point; output:\n{}",
            daemon.output()
        );
        // Let what was received reach the file (all but the write buffer).
        let want = (point.after as u64).saturating_sub(WRITE_BUFFER + 64 * 1024);
        let written = eventually(STATE_LIMIT, || {
            let r = ingest_len(&root, hex) >= want;
            async move { r }
        })
        .await;
        assert!(written, "{point:?}: {want} bytes reached the partial file");
        daemon.signal(Signal::KILL);
        daemon
            .wait_exit(STATE_LIMIT)
            .await
            .expect("the daemon dies on SIGKILL");
        let r = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the killed daemon's pull returns")
            .expect("pull task");
        assert!(r.is_err(), "{point:?}: a killed pull cannot succeed");
        let partial = ingest_len(&root, hex);
        assert_on_disk_after_kill(&root, &blobs, point, partial, want);

        fake.set_blob(digest, BlobBehavior::Normal);
        fake.reset_served();
        let daemon = builder.start().await;
        assert_check_passes(dir.path(), &root, &format!("{point:?}: after the restart"));
        let mut c = daemon.client();
        assert!(
            list(&mut c, None).await.is_empty(),
            "{point:?}: nothing half-pulled is listed"
        );
        assert_eq!(pull(&mut c, &name).await, img.id(), "{point:?}");
        let refetched: u64 = blobs.iter().map(|d| fake.served_bytes(d)).sum();
        let blob_len = if point.blob == 0 {
            img.config.len()
        } else {
            img.layers[point.blob - 1].blob.len()
        };
        assert_eq!(
            fake.served_bytes(digest),
            blob_len - partial,
            "{point:?}: the blob resumed from the {partial} bytes on disk"
        );
        if point.blob == 1 && point.after as u64 >= 2 * WRITE_BUFFER {
            assert!(
                partial > 0,
                "{point:?}: the partial layer survived the crash"
            );
            assert!(
                refetched < img.size(),
                "{point:?}: {refetched} bytes fetched again, image is {}",
                img.size()
            );
        }
        report.push(format!(
            "{point:?}: partial {partial}, refetched {refetched} of {}",
            img.size()
        ));
        remove(&mut c, &name).await;
        drop(daemon);
        assert_check_passes(dir.path(), &root, &format!("{point:?}: after the removal"));
    }
    eprintln!("crash points:\n  {}", report.join("\n  "));
}

/// What must be on disk right after a SIGKILL at `point` (before any restart): no image
/// recorded, the pull's note naming its blobs, every blob before the killed one whole and
/// verified under its name, the killed one only as a partial file in `ingest/` holding at
/// least `want` and at most the bytes sent, nothing half-written under `blobs/`.
fn assert_on_disk_after_kill(
    root: &std::path::Path,
    blobs: &[String],
    point: Point,
    partial: u64,
    want: u64,
) {
    let index: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("index.json")).expect("index.json is there"),
    )
    .expect("index.json is whole JSON");
    assert_eq!(
        index["manifests"].as_array().map(Vec::len),
        Some(0),
        "{point:?}: no image is recorded: {index}"
    );
    let notes: Vec<String> = std::fs::read_dir(root.join("intents"))
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        notes.len(),
        1,
        "{point:?}: the pull's note is on disk: {notes:?}"
    );
    let note = std::fs::read_to_string(root.join("intents").join(&notes[0])).unwrap();
    for d in blobs {
        assert!(
            note.contains(d.as_str()),
            "{point:?}: the note names {d}: {note}"
        );
    }
    let blob_dir = root.join("blobs").join("sha256");
    for (i, d) in blobs.iter().enumerate() {
        let path = blob_dir.join(d.trim_start_matches("sha256:"));
        if i < point.blob && i == 0 {
            // The config comes before every layer: whole and verified by now.
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{point:?}: config {d} is whole: {e}"));
            assert_eq!(
                crate::support::images::sha256_digest(&bytes),
                *d,
                "{point:?}: {d} verifies"
            );
        }
        if i == point.blob {
            assert!(
                !path.exists(),
                "{point:?}: the killed blob {d} is not named as done"
            );
        }
    }
    for e in std::fs::read_dir(&blob_dir).unwrap().flatten() {
        let name = e.file_name().into_string().unwrap();
        let bytes = std::fs::read(e.path()).unwrap();
        assert_eq!(
            crate::support::images::sha256_digest(&bytes),
            format!("sha256:{name}"),
            "{point:?}: every file under blobs/ is a whole, verified blob"
        );
    }
    assert!(
        partial >= want && partial <= point.after as u64,
        "{point:?}: the partial file holds {partial} bytes: at least {want}, at most the {} sent",
        point.after
    );
}
