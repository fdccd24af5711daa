//! A full disk during a blob write: the store root on a 3 MiB tmpfs (real ENOSPC; the
//! tests run as root, which `mount` needs), and the daemon under a 2 MiB file-size limit
//! (`prlimit --fsize`, EFBIG and SIGXFSZ). Either way the pull of a 4 MiB layer fails with
//! ResourceExhausted naming the store, the partial file is removed, `cri-imaged check`
//! passes, and the store still takes an image that fits.

use std::path::{Path, PathBuf};
use std::process::Command;

use tonic::Code;

use crate::support::fake::FakeRegistry;
use crate::support::{
    DaemonBuilder, ImageBuilder, assert_check_passes, eventually, list, pull, tempdir, try_pull,
};

const MIB: usize = 1 << 20;

/// A tmpfs mounted for the test, unmounted (by its path) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    fn mount(path: &Path, bytes: usize) -> Tmpfs {
        std::fs::create_dir_all(path).expect("create the mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("run mount (util-linux)");
        assert!(
            out.status.success(),
            "mount -t tmpfs on {} failed ({}): {}; this test needs root (or CAP_SYS_ADMIN)",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            path: path.to_owned(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (a process not yet gone): detach it now, freed when released.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Pulls a 4 MiB layer through `builder` (root nearly full or limited), then checks the
/// refusal and that the store stays sound and usable.
async fn too_big_for_the_store_is_resource_exhausted(builder: DaemonBuilder, dir: &Path) {
    let fake = FakeRegistry::start().await;
    let big = ImageBuilder::new().layer_sizes(&[4 * MIB]).build();
    let small = ImageBuilder::new().layer_sizes(&[64 * 1024]).build();
    fake.add_image("test/big", "1", &big);
    fake.add_image("test/small", "1", &small);
    let builder = builder.registry(&fake.host());
    let root = builder.root_path().to_owned();
    let daemon = builder.start().await;
    let mut c = daemon.client();

    let name = format!("{}/test/big:1", fake.host());
    let err = try_pull(&mut c, &name)
        .await
        .expect_err("a layer larger than the space left cannot be stored");
    assert_eq!(
        err.code(),
        Code::ResourceExhausted,
        "{}; daemon output:\n{}",
        err.message(),
        daemon.output()
    );
    for part in [name.as_str(), &root.display().to_string(), "no space left"] {
        assert!(
            err.message().contains(part),
            "the message must name {part:?}: {}",
            err.message()
        );
    }
    let cleaned = eventually(std::time::Duration::from_secs(10), || {
        let empty = files_in(&root.join("ingest")).is_empty();
        async move { empty }
    })
    .await;
    assert!(
        cleaned,
        "the partial file is removed: ingest/ holds {:?}",
        files_in(&root.join("ingest"))
    );
    assert!(list(&mut c, None).await.is_empty(), "nothing is listed");
    assert_eq!(
        pull(&mut c, &format!("{}/test/small:1", fake.host())).await,
        small.id(),
        "an image that fits is still pulled"
    );
    drop(c);
    drop(daemon);
    assert_check_passes(dir, &root, "after the failed write and a good pull");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_during_a_blob_write_is_resource_exhausted_and_leaves_a_sound_store() {
    let dir = tempdir();
    let builder = DaemonBuilder::new(dir.path());
    let _mount = Tmpfs::mount(builder.root_path(), 3 * MIB);
    too_big_for_the_store_is_resource_exhausted(builder, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_during_a_blob_write_is_resource_exhausted_too() {
    let dir = tempdir();
    let limit = (2 * MIB).to_string();
    let builder =
        DaemonBuilder::new(dir.path()).wrapped("prlimit", &[&format!("--fsize={limit}"), "--"]);
    too_big_for_the_store_is_resource_exhausted(builder, dir.path()).await;
}
