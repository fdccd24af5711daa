//! ImageFsInfo: one filesystem entry for images and the same for containers, timestamp,
//! mountpoint, used bytes and inodes, and usage that follows pulls and removals
//! (contract points 4, 9).

use std::cell::Cell;
use std::path::Path;
use std::time::Duration;

use cri_imaged::proto::{FilesystemUsage, ImageFsInfoResponse};

use crate::support::{ImageBuilder, Setup, eventually, fs_info, pull, remove};

/// Checks the shape of a response and returns its single image filesystem entry.
fn single_entry(r: &ImageFsInfoResponse, root: &Path) -> FilesystemUsage {
    assert_eq!(r.image_filesystems.len(), 1, "one image filesystem: {r:?}");
    assert_eq!(
        r.container_filesystems.len(),
        1,
        "one container filesystem: {r:?}"
    );
    let img = r.image_filesystems[0].clone();
    let ctr = &r.container_filesystems[0];
    assert!(img.timestamp > 0, "timestamp must be > 0: {img:?}");
    let mount = img
        .fs_id
        .as_ref()
        .map(|f| f.mountpoint.clone())
        .expect("fs_id must be set");
    assert_eq!(
        mount,
        root.display().to_string(),
        "mountpoint is the store root as given"
    );
    assert!(
        Path::new(&mount).is_dir(),
        "mountpoint {mount} must be a directory"
    );
    assert!(
        img.used_bytes.is_some(),
        "used_bytes must be set (kubelet dereferences it)"
    );
    assert!(img.inodes_used.is_some(), "inodes_used must be set");
    assert_eq!(
        ctr.fs_id, img.fs_id,
        "container filesystem is the image filesystem"
    );
    assert!(
        ctr.timestamp > 0,
        "container entry timestamp must be > 0: {ctr:?}"
    );
    assert!(
        ctr.used_bytes.is_some(),
        "container entry used_bytes must be set"
    );
    assert!(
        ctr.inodes_used.is_some(),
        "container entry inodes_used must be set"
    );
    img
}

fn used(u: &FilesystemUsage) -> u64 {
    u.used_bytes.as_ref().map(|v| v.value).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fs_info_on_an_empty_store_reports_the_root_filesystem() {
    let s = Setup::new().await;
    let mut c = s.client();
    // Clients call ImageFsInfo right after connecting, before any image exists.
    let r = fs_info(&mut c).await;
    single_entry(&r, &s.daemon.root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn used_bytes_grow_after_a_pull_and_shrink_after_a_removal() {
    let s = Setup::new().await;
    let mut c = s.client();
    let root = s.daemon.root.clone();
    let empty = single_entry(&fs_info(&mut c).await, &root);

    let img = ImageBuilder::new()
        .layer_sizes(&[512 * 1024, 256 * 1024])
        .build();
    img.push(&s.registry, "test/big", "1").await;
    assert_eq!(pull(&mut c, &s.name("test/big:1")).await, img.id());

    let full = single_entry(&fs_info(&mut c).await, &root);
    assert!(
        used(&full) >= used(&empty) + img.size() - img.config.len(),
        "used_bytes must grow by at least the layer bytes: {} -> {} (layers {})",
        used(&empty),
        used(&full),
        img.size()
    );
    assert!(full.timestamp >= empty.timestamp, "timestamps move forward");

    remove(&mut c, &img.id()).await;
    // The API allows space to be freed after the call; bound the wait.
    let last = Cell::new(used(&full));
    let target = used(&full).saturating_sub(img.size() / 2);
    let (last_ref, root_ref, client) = (&last, &root, &c);
    let shrank = eventually(Duration::from_secs(10), move || {
        let mut c = client.clone();
        async move {
            let now = single_entry(&fs_info(&mut c).await, root_ref);
            last_ref.set(used(&now));
            used(&now) <= target
        }
    })
    .await;
    assert!(
        shrank,
        "used_bytes must shrink after the removal: {} after the pull, {} after removing",
        used(&full),
        last.get()
    );
}
