//! Unpacking (`--unpack true`): a pulled image's layers become overlay-ready snapshots
//! under ROOT/snapshots/<chain-id>/fs — whiteouts as 0/0 character devices, opaque
//! directories marked, a hard link into the lower layer copied up, modes and setuid bits
//! kept — the image is listed only once they are made, a layer whose content does not
//! match its diff_id leaves no snapshot and no image, and removing the image removes its
//! snapshots. Needs root (whiteouts are device nodes), as the daemon on a node.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tonic::Code;

use crate::support::images::{Layer, sha256_digest};
use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, assert_check_passes, list, pull, remove, tempdir,
    try_pull,
};

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h
}

/// A gzip layer from `(kind, name, link target or content, mode)` entries, written raw
/// (whiteout names included).
pub(crate) fn layer(entries: &[(tar::EntryType, &str, &[u8], u32)]) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, name, data, mode) in entries {
        match kind {
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let mut h = header(*kind, *mode, 0);
                b.append_link(&mut h, name, std::str::from_utf8(data).unwrap())
                    .unwrap();
            }
            _ => {
                let mut h = header(*kind, *mode, data.len() as u64);
                b.append_data(&mut h, name, *data).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let diff_id = sha256_digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    Layer {
        blob: crate::support::images::Blob::new(gz.finish().unwrap()),
        diff_id,
    }
}

fn chain(parent: Option<&str>, diff: &str) -> String {
    match parent {
        None => diff.to_owned(),
        Some(p) => sha256_digest(format!("{p} {diff}").as_bytes()),
    }
}

fn snapshot(root: &Path, chain: &str) -> std::path::PathBuf {
    root.join("snapshots")
        .join(chain.trim_start_matches("sha256:"))
        .join("fs")
}

/// Unpack tests make whiteouts (device nodes), set owners and mount: root, as on a node.
fn need_root() {
    assert!(
        rustix::process::geteuid().is_root(),
        "unpack tests make whiteout device nodes and mounts: run them as root (CI does)"
    );
}

/// `n` files of `size` random bytes, `dir/f0`…, with their tar entries' names.
fn random_files(dir: &str, n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let data: Vec<u8> = (0..size).map(|_| rand::random::<u8>()).collect();
            (format!("{dir}/f{i}"), data)
        })
        .collect()
}

/// `path` is an overlay whiteout: a 0/0 character device.
fn assert_whiteout(path: &Path) {
    let wh = std::fs::symlink_metadata(path).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "whiteout {}",
        path.display()
    );
}

/// `path` is an opaque directory for overlayfs.
fn assert_opaque(path: &Path) {
    let mut buf = [0u8; 2];
    let n = rustix::fs::getxattr(path, "trusted.overlay.opaque", &mut buf[..])
        .unwrap_or_else(|e| panic!("opaque marker on {}: {e}", path.display()));
    assert_eq!(&buf[..n], b"y");
}

fn snapshots(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(root.join("snapshots"))
        .map(|e| {
            e.flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_become_overlay_snapshots_and_go_with_their_image() {
    need_root();
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
    let base = layer(&[
        (D, "etc", b"", 0o755),
        (F, "etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644),
        (F, "bin/tool", b"#!/bin/sh\necho tool\n", 0o4755),
        (S, "bin/abs", b"/etc/passwd", 0o777),
        (F, "gone.txt", b"deleted above", 0o644),
        (D, "opaque", b"", 0o755),
        (F, "opaque/old", b"hidden above", 0o644),
    ]);
    let top = layer(&[
        (F, ".wh.gone.txt", b"", 0o644),
        (F, "opaque/.wh..wh..opq", b"", 0o644),
        (F, "opaque/new", b"new", 0o644),
        (H, "bin/tool2", b"bin/tool", 0o755),
    ]);
    let (c1, c2) = {
        let c1 = chain(None, &base.diff_id);
        let c2 = chain(Some(&c1), &top.diff_id);
        (c1, c2)
    };
    let registry = Registry::start().await;
    let img = ImageBuilder::new().layers(vec![base, top]).build();
    img.push(&registry, "test/run", "1").await;
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let mut c = daemon.client();
    let name = format!("{}/test/run:1", registry.host());
    assert_eq!(pull(&mut c, &name).await, img.id());

    let (lower, upper) = (snapshot(&root, &c1), snapshot(&root, &c2));
    assert_eq!(
        std::fs::read(lower.join("etc/passwd")).unwrap(),
        b"root:x:0:0::/root:/bin/sh\n"
    );
    let tool = std::fs::metadata(lower.join("bin/tool")).unwrap();
    assert_eq!(tool.permissions().mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        std::fs::read_link(lower.join("bin/abs")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_whiteout(&upper.join("gone.txt"));
    assert_opaque(&upper.join("opaque"));
    let (t2, t1) = (
        std::fs::metadata(upper.join("bin/tool2")).unwrap(),
        std::fs::metadata(upper.join("bin/tool")).unwrap(),
    );
    assert_eq!(
        t2.ino(),
        t1.ino(),
        "the link's lower target was copied up and linked"
    );
    assert_eq!(
        std::fs::read(upper.join("bin/tool2")).unwrap(),
        b"#!/bin/sh\necho tool\n"
    );
    assert_eq!(snapshots(&root).len(), 2, "{:?}", snapshots(&root));

    // Restarted, the snapshots of a recorded image stay; check is clean.
    daemon.stop().await;
    assert_check_passes(dir.path(), &root, "with snapshots");
    let daemon = builder.start().await;
    let mut c = daemon.client();
    assert_eq!(snapshots(&root).len(), 2);
    remove(&mut c, &name).await;
    assert!(
        snapshots(&root).is_empty(),
        "removed with the image: {:?}",
        snapshots(&root)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_that_does_not_match_its_diff_id_leaves_no_snapshot_and_no_image() {
    need_root();
    let mut bad = layer(&[(tar::EntryType::Regular, "f", b"content", 0o644)]);
    bad.diff_id = sha256_digest(b"something else");
    let registry = Registry::start().await;
    let img = ImageBuilder::new().layers(vec![bad]).build();
    img.push(&registry, "test/lie", "1").await;
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let daemon = builder.start().await;
    let mut c = daemon.client();
    let e = try_pull(&mut c, &format!("{}/test/lie:1", registry.host()))
        .await
        .expect_err("a lying diff_id");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert!(
        e.message().contains("diff_ids") || e.message().contains("the image config says"),
        "{}",
        e.message()
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        snapshots(&root).is_empty(),
        "nothing of that layer is kept: {:?}",
        snapshots(&root)
    );
}

/// Layers unpack while they download, in parallel: behind a slow link the big bottom
/// layer arrives last, unpacked from its download's bytes as they come; the top layer (a
/// whiteout of a bottom file) is made before it, from its own download too; the middle
/// layer (a hard link to a bottom file, a whiteout, an opaque directory) cannot wait for
/// the bottom mid-download, so it is made from its blob once the bottom is done. The
/// result is what sequential unpacking makes: no whiteout lost (the bug of containerd's
/// first parallel unpack, #13030), the link's target copied up whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_unpack_in_parallel_and_a_hard_link_waits_for_the_layer_below() {
    need_root();
    use tar::EntryType::{Directory as D, Link as H, Regular as F};
    let files = random_files("big", 300, 5000);
    let mut entries: Vec<(tar::EntryType, &str, &[u8], u32)> = vec![
        (D, "big", b"", 0o755),
        (D, "keep", b"", 0o755),
        (F, "keep/target", b"payload", 0o644),
        (F, "gone", b"deleted in the middle", 0o644),
        (D, "opq", b"", 0o755),
        (F, "opq/old", b"hidden by the middle", 0o644),
    ];
    entries.extend(
        files
            .iter()
            .map(|(n, d)| (F, n.as_str(), d.as_slice(), 0o644)),
    );
    let bottom = layer(&entries);
    let middle = layer(&[
        (D, "mid", b"", 0o755),
        (H, "mid/link", b"keep/target", 0o644),
        (F, ".wh.gone", b"", 0o644),
        (D, "opq", b"", 0o755),
        (F, "opq/.wh..wh..opq", b"", 0o644),
        (F, "opq/new", b"new", 0o644),
    ]);
    let top = layer(&[
        (D, "big", b"", 0o755),
        (F, "big/.wh.f0", b"", 0o644),
        (F, "top", b"top", 0o644),
    ]);
    let (c0, c1, c2) = {
        let c0 = chain(None, &bottom.diff_id);
        let c1 = chain(Some(&c0), &middle.diff_id);
        let c2 = chain(Some(&c1), &top.diff_id);
        (c0, c1, c2)
    };
    let registry = Registry::start().await;
    let img = ImageBuilder::new()
        .layers(vec![bottom, middle, top])
        .build();
    img.push(&registry, "test/parallel", "1").await;
    // 1.5 MB of bottom layer at 1 MiB/s: it arrives well after the small ones.
    let proxy = crate::support::proxy::Proxy::start(&registry).await;
    proxy.limit_rate(1 << 20);
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&proxy.host())
        .unpacking()
        .arg("--log-level")
        .arg("cri_imaged=debug");
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let name = format!("{}/test/parallel:1", proxy.host());
    let admin = cri_imaged::config::default_admin_socket(&daemon.socket);
    let pulling = tokio::spawn({
        let (mut c, name) = (daemon.client(), name.clone());
        async move { pull(&mut c, &name).await }
    });
    // `cri-imaged pulls` shows the layers' unpacking while the pull runs: the top one
    // made while the bottom one is still to come.
    let seen = crate::support::eventually(std::time::Duration::from_secs(30), || {
        let admin = admin.clone();
        async move {
            let Ok(r) = cri_imaged::admin::client::pulls(&admin).await else {
                return false;
            };
            r.pulls.iter().any(|p| {
                let u: Vec<_> = p.blobs.iter().filter_map(|b| b.unpacked).collect();
                u.len() == 3 && u.contains(&true) && u.contains(&false)
            })
        }
    })
    .await;
    assert!(seen, "a pull with layers unpacked and to unpack in /pulls");
    assert_eq!(pulling.await.unwrap(), img.id());
    let metrics = cri_imaged::admin::client::get(&admin, "/metrics")
        .await
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics);
    for how in ["streamed", "blob"] {
        assert!(
            metrics.contains(&format!(
                "cri_imaged_layer_unpack_duration_seconds_count{{how=\"{how}\"}}"
            )),
            "{how} in:\n{metrics}"
        );
    }

    let (s0, s1, s2) = (
        snapshot(&root, &c0),
        snapshot(&root, &c1),
        snapshot(&root, &c2),
    );
    assert_eq!(std::fs::read_dir(s0.join("big")).unwrap().count(), 300);
    let link = std::fs::metadata(s1.join("mid/link")).unwrap();
    assert_eq!(std::fs::read(s1.join("mid/link")).unwrap(), b"payload");
    assert_eq!(link.nlink(), 2, "linked to its copied-up target");
    assert_whiteout(&s1.join("gone"));
    assert_whiteout(&s2.join("big/f0"));
    assert_opaque(&s1.join("opq"));
    daemon.stop().await;
    // The order the layers were made in: the top one before the bottom one.
    let log = daemon.output();
    let made_at = |layer: usize| {
        log.lines()
            .position(|l| l.contains("unpacked layer") && l.contains(&format!("layer={layer} ")))
            .unwrap_or_else(|| panic!("no 'unpacked layer' line for layer {layer}:\n{log}"))
    };
    // The top and bottom layers were unpacked from their downloads' own bytes; the middle
    // one could not wait for the bottom mid-download, so it was unpacked from its blob.
    let line = |layer: usize| log.lines().nth(made_at(layer)).unwrap_or_default();
    for (layer, streamed) in [(0, true), (1, false), (2, true)] {
        assert!(
            line(layer).contains(&format!("streamed={streamed}")),
            "layer {layer}: {}",
            line(layer)
        );
    }
    assert!(made_at(2) < made_at(0), "top before bottom:\n{log}");
    assert!(
        made_at(0) < made_at(1),
        "the middle waited for the bottom:\n{log}"
    );
    assert_check_passes(dir.path(), &root, "after a parallel unpack");
}

fn used(r: &cri_imaged::proto::ImageFsInfoResponse) -> (u64, u64) {
    let fs = &r.image_filesystems[0];
    (
        fs.used_bytes.as_ref().map_or(0, |v| v.value),
        fs.inodes_used.as_ref().map_or(0, |v| v.value),
    )
}

/// ImageFsInfo counts the snapshots beside the blobs: their file bytes and inodes, the
/// same after a restart (read from each snapshot's usage.json, or walked when that is
/// missing), and gone with the image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_fs_info_counts_the_snapshots_too() {
    use crate::support::fs_info;
    need_root();
    use tar::EntryType::{Directory as D, Regular as F};
    let content: Vec<u8> = (0..300_000).map(|_| rand::random::<u8>()).collect();
    let files = layer(&[
        (D, "data", b"", 0o755),
        (F, "data/a", &content, 0o644),
        (F, "data/b", &content[..100_000], 0o644),
    ]);
    let registry = Registry::start().await;
    let img = ImageBuilder::new().layers(vec![files]).build();
    img.push(&registry, "test/usage", "1").await;
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let mut c = daemon.client();
    let (empty_bytes, empty_inodes) = used(&fs_info(&mut c).await);
    let name = format!("{}/test/usage:1", registry.host());
    pull(&mut c, &name).await;
    let (bytes, inodes) = used(&fs_info(&mut c).await);
    assert!(
        bytes >= empty_bytes + img.size() + 400_000,
        "blobs ({}) and the snapshot's 400,000 bytes of files: {empty_bytes} -> {bytes}",
        img.size()
    );
    assert!(
        inodes >= empty_inodes + 3 + 4,
        "the blobs' and the snapshot's inodes: {empty_inodes} -> {inodes}"
    );
    for (what, forget) in [("usage.json read", false), ("usage.json missing", true)] {
        daemon.stop().await;
        if forget {
            for s in snapshots(&root) {
                std::fs::remove_file(root.join("snapshots").join(s).join("usage.json")).unwrap();
            }
        }
        daemon = builder.start().await;
        c = daemon.client();
        assert_eq!(
            used(&fs_info(&mut c).await),
            (bytes, inodes),
            "after a restart, {what}"
        );
    }
    remove(&mut c, &name).await;
    assert!(snapshots(&root).is_empty());
    let (after, _) = used(&fs_info(&mut c).await);
    assert!(
        after + 400_000 <= bytes,
        "the snapshot's bytes went: {bytes} -> {after}"
    );
}

/// SIGKILL while a layer is being unpacked (its `tmp-` directory exists): `check` on the
/// crashed store passes, the restart removes the half-made snapshot, and the next pull
/// unpacks it again, whole — nothing half made is ever named done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_during_unpack_leaves_no_half_snapshot_and_the_next_pull_finishes() {
    use std::time::Duration;
    use tar::EntryType::{Directory as D, Regular as F};
    need_root();
    let names: Vec<String> = (0..12_000)
        .map(|i| format!("many/d{}/f{i}", i % 50))
        .collect();
    let dirs: Vec<String> = (0..50).map(|d| format!("many/d{d}")).collect();
    let mut entries: Vec<(tar::EntryType, &str, &[u8], u32)> = vec![(D, "many", b"", 0o755)];
    entries.extend(dirs.iter().map(|d| (D, d.as_str(), &b""[..], 0o755)));
    entries.extend(names.iter().map(|n| (F, n.as_str(), &b"x"[..], 0o644)));
    let big = layer(&entries);
    let registry = Registry::start().await;
    let img = ImageBuilder::new().layers(vec![big]).build();
    img.push(&registry, "test/crash-unpack", "1").await;
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let name = format!("{}/test/crash-unpack:1", registry.host());
    let mut daemon = builder.start().await;
    let mut c = daemon.client();
    let pulling = tokio::spawn({
        let name = name.clone();
        async move { try_pull(&mut c, &name).await }
    });
    let unpacking = crate::support::eventually(Duration::from_secs(60), || {
        let r = snapshots(&root).iter().any(|s| s.starts_with("tmp-"));
        async move { r }
    })
    .await;
    assert!(unpacking, "the unpack started: {:?}", snapshots(&root));
    daemon.signal(rustix::process::Signal::KILL);
    daemon
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the daemon dies on SIGKILL");
    let r = tokio::time::timeout(Duration::from_secs(60), pulling)
        .await
        .expect("the killed daemon's pull returns")
        .expect("pull task");
    assert!(r.is_err(), "a killed pull cannot succeed");
    assert!(
        snapshots(&root).iter().all(|s| s.starts_with("tmp-")),
        "no snapshot named done: {:?}",
        snapshots(&root)
    );
    let checked = crate::support::run_check(dir.path(), &root, false);
    assert!(
        checked.status.success(),
        "check after a SIGKILL during unpack:\n{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("note: snapshots/tmp-")
            && checked.stdout.contains("removed at its next start"),
        "the half-made snapshot is a note: {}",
        checked.stdout
    );

    let daemon = builder.start().await;
    assert!(snapshots(&root).is_empty(), "{:?}", snapshots(&root));
    let mut c = daemon.client();
    assert_eq!(pull(&mut c, &name).await, img.id());
    let made = snapshots(&root);
    assert_eq!(made.len(), 1, "{made:?}");
    let fs = root.join("snapshots").join(&made[0]).join("fs");
    let count: usize = (0..50)
        .map(|d| {
            std::fs::read_dir(fs.join(format!("many/d{d}")))
                .unwrap()
                .count()
        })
        .sum();
    assert_eq!(count, 12_000, "every file of the layer");
    assert_eq!(list(&mut c, None).await.len(), 1);
}

/// `check` on snapshots no daemon could have made: each a problem naming it (exit 1); a
/// snapshot without its fs/ is removed at the next start rather than stacked on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_the_snapshots_no_daemon_makes() {
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path()).unpacking();
    let root = builder.root_path().to_owned();
    builder.start().await.stop().await;
    let chain = "ab".repeat(32);
    std::fs::create_dir_all(root.join("snapshots").join(&chain)).unwrap();
    std::fs::create_dir_all(root.join("snapshots/not-a-chain/fs")).unwrap();
    std::fs::create_dir_all(root.join("containers/norecord/upper")).unwrap();
    std::fs::create_dir_all(root.join("containers/dangling")).unwrap();
    let missing = format!("sha256:{}", "cd".repeat(32));
    std::fs::write(
        root.join("containers/dangling/container.json"),
        format!(
            r#"{{"key":"dangling","image":"sha256:{}","chains":["{missing}"]}}"#,
            "ef".repeat(32)
        ),
    )
    .unwrap();
    let out = crate::support::run_check(dir.path(), &root, false);
    assert!(!out.status.success(), "{}", out.stdout);
    for want in [
        format!("problem: snapshots/{chain}: a snapshot without its fs/ directory"),
        "problem: snapshots/not-a-chain: not a snapshot".to_owned(),
        "problem: containers/norecord: no readable container.json".to_owned(),
        format!("problem: containers/dangling: stacked on snapshot {missing}, which is missing"),
    ] {
        assert!(out.stdout.contains(&want), "{want:?} in:\n{}", out.stdout);
    }
    assert!(out.stdout.contains("4 problem(s)"), "{}", out.stdout);
    let mut daemon = builder.start().await;
    assert!(
        !root.join("snapshots").join(&chain).exists(),
        "removed at start"
    );
    daemon.stop().await;
}

/// The unpacking of a layer while it downloads follows the download: a body broken
/// mid-layer and resumed with `Range` keeps feeding the same unpack (streamed, one
/// snapshot, every byte right); a registry that ignores `Range` makes the download start
/// over, so the unpack starts over from the blob once it is in (not streamed). Both end
/// in the layer as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_unpacked_while_it_downloads_follows_resumes_and_restarts() {
    use crate::support::fake::{FakeRegistry, Fault as FakeFault};
    use crate::support::proxy::{Fault, Proxy};
    use tar::EntryType::{Directory as D, Regular as F};
    need_root();
    let files = random_files("data", 40, 30_000);
    let mut entries: Vec<(tar::EntryType, &str, &[u8], u32)> = vec![(D, "data", b"", 0o755)];
    entries.extend(
        files
            .iter()
            .map(|(n, d)| (F, n.as_str(), d.as_slice(), 0o644)),
    );
    let img = ImageBuilder::new().layers(vec![layer(&entries)]).build();
    let digest = img.layers[0].blob.digest.clone();
    let chain0 = chain(None, &img.layers[0].diff_id);
    let check_tree = |root: &Path| {
        let fs = snapshot(root, &chain0);
        for (name, data) in &files {
            assert_eq!(&std::fs::read(fs.join(name)).unwrap(), data, "{name}");
        }
    };
    // A real registry behind a proxy that breaks the layer's body after 300,000 bytes.
    let registry = Registry::start().await;
    img.push(&registry, "test/resume", "1").await;
    let proxy = Proxy::start(&registry).await;
    proxy.fault(&digest, Fault::Reset { after: 300_000 }, 1);
    let (_dir, root, line) = pull_logging_unpack(&proxy.host(), "test/resume", &img.id()).await;
    assert_eq!(proxy.ranges(&digest).len(), 2, "broken once, resumed once");
    assert!(
        line.contains("streamed=true"),
        "fed across the resume: {line}"
    );
    check_tree(&root);

    // A registry that cuts the body, then ignores `Range`: the download starts over.
    let fake = FakeRegistry::start().await;
    fake.add_image("test/restart", "1", &img);
    fake.ignore_range();
    fake.push_faults(&digest, [FakeFault::Cut { after: 300_000 }]);
    let (_dir, root, line) = pull_logging_unpack(&fake.host(), "test/restart", &img.id()).await;
    assert!(
        line.contains("streamed=false"),
        "started over from the blob: {line}"
    );
    check_tree(&root);
    assert_eq!(snapshots(&root).len(), 1, "{:?}", snapshots(&root));

    // Wrong bytes for the layer: the pull fails as DataLoss and no snapshot is left, not
    // even the one its unpack began while the bytes came.
    proxy.fault(&digest, Fault::WrongBytes, 1);
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&proxy.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let daemon = builder.start().await;
    let name = format!("{}/test/resume:1", proxy.host());
    let e = try_pull(&mut daemon.client(), &name)
        .await
        .expect_err("wrong bytes");
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    let clean = crate::support::eventually(std::time::Duration::from_secs(10), || {
        let r = snapshots(&root).is_empty();
        async move { r }
    })
    .await;
    assert!(clean, "no snapshot left: {:?}", snapshots(&root));
    assert!(list(&mut daemon.client(), None).await.is_empty());
}

/// Pulls `host/repo:1` (image `id`) into a new unpacking daemon that logs at debug level,
/// then stops it: its directory, root, and the "unpacked layer" log line.
async fn pull_logging_unpack(
    host: &str,
    repo: &str,
    id: &str,
) -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(host)
        .unpacking()
        .arg("--log-level")
        .arg("cri_imaged=debug");
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let name = format!("{host}/{repo}:1");
    assert_eq!(pull(&mut daemon.client(), &name).await, id);
    daemon.stop().await;
    let log = daemon.output();
    let line = log
        .lines()
        .find(|l| l.contains("unpacked layer"))
        .unwrap_or_else(|| panic!("no 'unpacked layer' line:\n{log}"))
        .to_owned();
    (dir, root, line)
}

/// `snapshot_root` puts the snapshots (and container snapshots) elsewhere than the blobs
/// — another filesystem if the operator wants: here a tmpfs mounted by the test. The
/// image's snapshots land there and nowhere under the root; `check --snapshot-root` sees
/// them; removing the image removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_can_live_on_another_filesystem() {
    need_root();
    let registry = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&registry, "test/elsewhere", "1").await;
    let dir = tempdir();
    let other = dir.path().join("other-fs");
    std::fs::create_dir(&other).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &other,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .expect("mount a tmpfs for the snapshots");
    let _mounted = crate::support::Mounted(other.clone());
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking()
        .arg("--snapshot-root")
        .arg(other.to_str().unwrap());
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let mut c = daemon.client();
    let name = format!("{}/test/elsewhere:1", registry.host());
    assert_eq!(pull(&mut c, &name).await, img.id());
    assert_eq!(snapshots(&other).len(), 2, "{:?}", snapshots(&other));
    assert!(!root.join("snapshots").exists(), "nothing under the root");
    let dev = |p: &Path| std::fs::metadata(p).unwrap().dev();
    assert_ne!(
        dev(&other.join("snapshots")),
        dev(&root),
        "another filesystem"
    );
    daemon.stop().await;
    let root_s = root.display().to_string();
    let other_s = other.display().to_string();
    let out = crate::support::run_tool(
        dir.path(),
        env!("CARGO_BIN_EXE_cri-imaged"),
        &["check", "--root", &root_s, "--snapshot-root", &other_s],
        std::time::Duration::from_secs(60),
    );
    assert!(out.status.success(), "{}", out.stdout);
    assert!(out.stdout.contains("2 snapshot(s)"), "{}", out.stdout);
    let daemon = builder.start().await;
    let mut c = daemon.client();
    remove(&mut c, &name).await;
    assert!(snapshots(&other).is_empty(), "{:?}", snapshots(&other));
}

/// Two images sharing a base layer: removing one removes only the snapshot it alone
/// needs; removing the other (by one of its two names: the image goes) leaves none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_keeps_the_snapshots_another_image_shares() {
    need_root();
    let base = crate::support::random_layer(3000);
    let (a_top, b_top) = (
        crate::support::random_layer(2000),
        crate::support::random_layer(2000),
    );
    let c_base = chain(None, &base.diff_id);
    let c_b = chain(Some(&c_base), &b_top.diff_id);
    let registry = Registry::start().await;
    let a = ImageBuilder::new()
        .layers(vec![base.clone(), a_top])
        .build();
    let b = ImageBuilder::new().layers(vec![base, b_top]).build();
    a.push(&registry, "test/a", "1").await;
    b.push(&registry, "test/b", "1").await;
    b.push(&registry, "test/b", "2").await;
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let daemon = builder.start().await;
    let mut c = daemon.client();
    let name = |r: &str| format!("{}/{r}", registry.host());
    for r in ["test/a:1", "test/b:1", "test/b:2"] {
        pull(&mut c, &name(r)).await;
    }
    assert_eq!(snapshots(&root).len(), 3, "{:?}", snapshots(&root));
    remove(&mut c, &name("test/a:1")).await;
    let mut want = vec![
        c_base.trim_start_matches("sha256:").to_owned(),
        c_b.trim_start_matches("sha256:").to_owned(),
    ];
    want.sort();
    assert_eq!(snapshots(&root), want, "only a's own snapshot went");
    remove(&mut c, &name("test/b:2")).await;
    assert!(snapshots(&root).is_empty(), "{:?}", snapshots(&root));
}
