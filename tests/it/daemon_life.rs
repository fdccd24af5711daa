//! The daemon's life: Version, socket creation and mode, stale sockets, the store lock,
//! graceful exit on SIGTERM/SIGINT, and images kept across a restart.

use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::time::Duration;

use cri_imaged::proto::VersionRequest;
use rustix::process::Signal;

use crate::support::{DaemonBuilder, ImageBuilder, Setup, by_id, list, pull, status_of, tempdir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_reports_cri_imaged_and_api_v1() {
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path()).start().await;
    let mut rt = d.runtime_client();
    let v = tokio::time::timeout(
        Duration::from_secs(30),
        rt.version(VersionRequest {
            version: "v1".into(),
        }),
    )
    .await
    .expect("Version within 30 s")
    .expect("Version must succeed")
    .into_inner();
    assert_eq!(v.version, "0.1.0", "kubelet requires version 0.1.0");
    assert_eq!(v.runtime_name, "cri-imaged");
    assert_eq!(v.runtime_api_version, "v1");
    assert!(!v.runtime_version.is_empty(), "runtime_version must be set");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_created_with_mode_0660_in_a_new_directory() {
    let dir = tempdir();
    let listen = dir.path().join("not").join("yet").join("there.sock");
    let d = DaemonBuilder::new(dir.path()).listen(&listen).start().await;
    let meta = std::fs::symlink_metadata(&listen).expect("socket exists");
    assert!(
        meta.file_type().is_socket(),
        "{} must be a socket",
        listen.display()
    );
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o660,
        "socket mode must be 0660, is {:o}",
        meta.permissions().mode() & 0o777
    );
    drop(d);
}

async fn check_signal_exits_cleanly(sig: Signal) {
    let dir = tempdir();
    let mut d = DaemonBuilder::new(dir.path()).start().await;
    let socket = d.socket.clone();
    assert!(socket.exists());
    let st = d
        .stop_with(sig)
        .await
        .unwrap_or_else(|| panic!("the daemon ignored {sig:?} and had to be killed"));
    assert_eq!(
        st.code(),
        Some(0),
        "exit status after {sig:?}; output:\n{}",
        d.output()
    );
    assert!(
        !socket.exists(),
        "the socket must be removed on exit after {sig:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_zero_and_removes_the_socket() {
    check_signal_exits_cleanly(Signal::TERM).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_exits_zero_and_removes_the_socket() {
    check_signal_exits_cleanly(Signal::INT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_file_is_replaced() {
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    let listen = b.listen_path().to_owned();
    std::fs::create_dir_all(listen.parent().expect("socket dir")).expect("create socket dir");
    // A socket left behind by a dead process: bound, then the listener dropped.
    drop(std::os::unix::net::UnixListener::bind(&listen).expect("bind stale socket"));
    assert!(
        listen.exists(),
        "the stale socket file is there before the daemon starts"
    );
    let d = b.start().await;
    let meta = std::fs::symlink_metadata(&listen).expect("socket exists");
    assert!(meta.file_type().is_socket());
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_daemon_on_the_same_root_is_refused() {
    let dir = tempdir();
    let first = DaemonBuilder::new(dir.path()).start().await;
    let other_listen = dir.path().join("second").join("second.sock");
    let mut second = DaemonBuilder::new(dir.path()).listen(&other_listen).spawn();
    let st = second
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the second daemon must exit by itself");
    let out = second.output();
    assert!(!st.success(), "the second daemon must fail; output:\n{out}");
    assert!(
        out.contains("already"),
        "message must say the store is already in use:\n{out}"
    );
    let root = first.root.display().to_string();
    assert!(
        out.contains(&root),
        "message must name the root {root}:\n{out}"
    );
    // The first daemon keeps serving.
    let mut c = first.client();
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        first.socket.exists(),
        "the first daemon's socket must be left alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_survive_a_restart_on_the_same_root() {
    let mut s = Setup::new().await;
    let one = ImageBuilder::new().user("1002").build();
    let two = ImageBuilder::new()
        .format(crate::support::Format::Docker)
        .build();
    one.push(&s.registry, "test/one", "1").await;
    two.push(&s.registry, "test/two", "1").await;
    let mut c = s.client();
    assert_eq!(pull(&mut c, &s.name("test/one:1")).await, one.id());
    assert_eq!(pull(&mut c, &s.name("test/two:1")).await, two.id());
    let before = by_id(list(&mut c, None).await);
    assert_eq!(before.len(), 2);
    drop(c);

    let st = s.daemon.stop().await.expect("daemon stops on SIGTERM");
    assert_eq!(st.code(), Some(0));
    s.daemon = DaemonBuilder::new(s.dir.path())
        .registry(&s.registry.host())
        .start()
        .await;
    let mut c = s.client();
    assert_eq!(
        by_id(list(&mut c, None).await),
        before,
        "images kept across a restart"
    );
    for img in &before {
        assert_eq!(&status_of(&mut c, &img.id).await, img);
    }
    assert_eq!(status_of(&mut c, "test/one:1").await.id, one.id());
}
