//! `cri-imaged check [--repair]` on a store the real daemon filled from the real registry:
//! a sound store passes; a corrupt layer, an unreferenced blob and a stray ingest file are
//! each reported (exit 1); `--repair` is refused while the daemon runs, and afterwards
//! removes what cannot be trusted, so the check passes, the daemon starts, and the image
//! can be pulled again.

use crate::support::{
    DaemonBuilder, ImageBuilder, Setup, assert_check_passes, hex_of, list, pull, run_check,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reports_damage_and_repair_removes_it_only_while_no_daemon_runs() {
    let mut s = Setup::new().await;
    let img = ImageBuilder::new().layer_sizes(&[64 * 1024]).build();
    img.push(&s.registry, "test/app", "1").await;
    let name = s.name("test/app:1");
    let mut c = s.client();
    assert_eq!(pull(&mut c, &name).await, img.id());
    let root = s.daemon.root.clone();
    let dir = s.dir.path().to_owned();

    let out = run_check(&dir, &root, false);
    assert!(
        out.status.success(),
        "a sound store passes while the daemon runs: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("0 problem(s)"), "{}", out.stdout);

    // Damage: flip a byte of the layer, add an unreferenced blob and a stray ingest file.
    let layer = img.layer_digests()[0].clone();
    let layer_path = root.join("blobs/sha256").join(hex_of(&layer));
    let mut bytes = std::fs::read(&layer_path).expect("read the stored layer");
    bytes[100] ^= 0x01;
    std::fs::write(&layer_path, &bytes).expect("corrupt the layer");
    let stray = root.join("blobs/sha256").join("ab".repeat(32));
    std::fs::write(&stray, b"not what its name says").expect("write a stray blob");
    std::fs::write(root.join("ingest").join("leftover"), b"x").expect("write a stray file");

    let out = run_check(&dir, &root, false);
    assert_eq!(
        out.status.code(),
        Some(1),
        "damage fails the check: {}",
        out.stdout
    );
    for part in [
        format!("blob {layer} is corrupt"),
        format!("image {name}"),
        format!("blob sha256:{} is corrupt", "ab".repeat(32)),
    ] {
        assert!(
            out.stdout.contains(&part),
            "{part} missing in:\n{}",
            out.stdout
        );
    }

    let out = run_check(&dir, &root, true);
    assert!(
        !out.status.success(),
        "repair must refuse while the daemon runs"
    );
    assert!(
        out.stderr.contains("refusing") && out.stderr.contains("lock"),
        "{}",
        out.stderr
    );
    assert!(layer_path.exists(), "a refused repair changes nothing");

    s.daemon.stop().await;
    let out = run_check(&dir, &root, false);
    assert!(
        out.stdout.contains("ingest/leftover"),
        "with no daemon, stray ingest files are problems: {}",
        out.stdout
    );
    let out = run_check(&dir, &root, true);
    assert!(
        out.status.success(),
        "repair leaves a sound store: {}\n{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("repaired:"), "{}", out.stdout);
    assert!(!layer_path.exists() && !stray.exists());
    assert_check_passes(&dir, &root, "after repair");

    s.daemon = DaemonBuilder::new(&dir)
        .registry(&s.registry.host())
        .start()
        .await;
    let mut c = s.client();
    assert!(
        list(&mut c, None).await.is_empty(),
        "the image with the corrupt layer is gone"
    );
    assert_eq!(pull(&mut c, &name).await, img.id());
    assert_check_passes(&dir, &root, "after pulling again");
}
