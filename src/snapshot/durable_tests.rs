//! The deferred sync of snapshots (`durable`): named at once, unmarked after the sync,
//! settled before a container, and what a crash leaves marked removed at the next start.

use std::io::Write;
use std::path::Path;

use super::*;
use crate::names::Digest;
use crate::oci::Descriptor;

fn layer(files: &[(&str, &[u8])]) -> (Descriptor, Vec<u8>, Digest) {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        b.append_data(&mut h, name, *data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).unwrap();
    let gz = e.finish().unwrap();
    let desc = Descriptor {
        media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        digest: Digest::of(&gz),
        size: gz.len() as u64,
    };
    (desc, gz, Digest::of(&tar))
}

fn marked(snapshots_dir: &Path, chain: &Digest) -> usize {
    durable::markers(&snapshots_dir.join(chain.hex()))
        .unwrap()
        .len()
}

#[test]
fn a_snapshot_is_named_at_once_and_its_marker_goes_after_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
    let (desc, gz, diff_id) = layer(&[("etc/hostname", b"node\n")]);
    let made = snaps
        .unpack_from(&desc, &gz[..], &diff_id, &diff_id, &Vec::new)
        .unwrap();
    assert!(made);
    assert_eq!(
        std::fs::read(snaps.fs(&diff_id).join("etc/hostname")).unwrap(),
        b"node\n"
    );
    let sdir = dir.path().join(store::SNAPSHOTS_DIR);
    let mut waited = 0;
    while (marked(&sdir, &diff_id) > 0 || snaps.unsynced() > 0) && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(
        marked(&sdir, &diff_id),
        0,
        "unmarked within 10 s of its rename"
    );
    assert_eq!(snaps.unsynced(), 0);
}

#[test]
fn settle_and_flush_sync_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
    let sdir = dir.path().join(store::SNAPSHOTS_DIR);
    let chain = Digest::of(b"a chain");
    std::fs::create_dir_all(sdir.join(chain.hex()).join("fs")).unwrap();
    std::fs::write(sdir.join(chain.hex()).join("unsynced-1-1"), b"").unwrap();
    snaps.settle(std::slice::from_ref(&chain)).unwrap();
    assert_eq!(marked(&sdir, &chain), 0, "settle returns after the sync");
    snaps.flush().unwrap();
    assert_eq!(snaps.unsynced(), 0);
}

#[test]
fn a_start_removes_marked_snapshots_unless_a_container_stacks_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join(store::SNAPSHOTS_DIR);
    let (lone, held, whole) = (
        Digest::of(b"lone"),
        Digest::of(b"held"),
        Digest::of(b"whole"),
    );
    {
        let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
        for c in [&lone, &held, &whole] {
            std::fs::create_dir_all(sdir.join(c.hex()).join("fs/etc")).unwrap();
            std::fs::write(sdir.join(c.hex()).join("fs/etc/f"), b"x").unwrap();
        }
        snaps
            .containers()
            .create(&ContainerRecord {
                key: "c1".into(),
                image: "sha256:0".into(),
                chains: vec![held.clone()],
            })
            .unwrap();
        snaps.flush().unwrap();
    }
    // As a crash leaves them: renamed in, the sync not done.
    std::fs::write(sdir.join(lone.hex()).join("unsynced-9-1"), b"").unwrap();
    std::fs::write(sdir.join(held.hex()).join("unsynced-9-2"), b"").unwrap();
    let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
    let mut left = snaps.list();
    left.sort();
    let mut want = vec![held.clone(), whole.clone()];
    want.sort();
    assert_eq!(left, want, "the lone marked snapshot is removed");
    assert_eq!(
        marked(&sdir, &held),
        0,
        "the container's is synced and kept"
    );
    assert_eq!(std::fs::read(snaps.fs(&held).join("etc/f")).unwrap(), b"x");
    let names: Vec<_> = std::fs::read_dir(&sdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("tmp-"))
        .collect();
    assert!(names.is_empty(), "nothing half removed: {names:?}");
}

#[test]
fn a_failed_sync_keeps_its_markers_and_no_container_stands_on_them() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
    let sdir = dir.path().join(store::SNAPSHOTS_DIR);
    snaps.syncer().fail_next(1);
    let (desc, gz, diff_id) = layer(&[("f", b"x")]);
    assert!(
        snaps
            .unpack_from(&desc, &gz[..], &diff_id, &diff_id, &Vec::new)
            .unwrap()
    );
    let mut waited = 0;
    while snaps.syncer().failed() == 0 && waited < 200 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        waited += 1;
    }
    assert_eq!(snaps.syncer().failed(), 1, "the thread's sync failed");
    assert_eq!(marked(&sdir, &diff_id), 1, "its marker stays");
    // A later sync that succeeds does not vouch for it.
    let e = snaps
        .settle(std::slice::from_ref(&diff_id))
        .expect_err("no container on it");
    assert!(e.to_string().contains(diff_id.hex()), "{e}");
    snaps.flush().unwrap();
    assert_eq!(marked(&sdir, &diff_id), 1, "still marked after a flush");
    drop(snaps);
    // The next start removes it.
    let snaps = Snapshots::open(dir.path(), Limits::default()).unwrap();
    assert!(snaps.list().is_empty(), "{:?}", snaps.list());
}
