//! Runnable images: `cri-imaged bundle IMAGE DIR` makes an OCI runtime bundle through the
//! mount API on the admin socket, and Debian's `runc run` runs it. The container's own
//! output proves what the layers meant: a whiteout hid a file, an opaque directory hid
//! the lower one's entries, a hard link into the lower layer works, the setuid bit is
//! kept, the image's User (by name, from its own /etc/passwd and /etc/group), Env and
//! WorkingDir apply. Then: rmi while the bundle exists keeps its snapshots,
//! `bundle --remove` frees them, and the store ends empty. Needs root, `runc` and a
//! static busybox (`apt-get install runc busybox-static`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use crate::support::{
    DaemonBuilder, ImageBuilder, Registry, ToolOutput, list, pull, remove, run_tool, tempdir,
};
use crate::unpack::layer;

const RUNC: &str = "/usr/sbin/runc";
const BUSYBOX: &str = "/usr/bin/busybox";
const HINT: &str = "apt-get install runc busybox-static (scripts/test.sh does)";

fn require() -> Vec<u8> {
    assert!(
        rustix::process::geteuid().is_root(),
        "bundle tests need root (overlay mounts, runc), as the daemon on a node: run as root"
    );
    assert!(
        Path::new(RUNC).is_file(),
        "runc not found at {RUNC}: {HINT}"
    );
    let busybox = std::fs::read(BUSYBOX)
        .unwrap_or_else(|e| panic!("busybox not found at {BUSYBOX} ({e}): {HINT}"));
    assert!(
        !has_interpreter(&busybox),
        "{BUSYBOX} is not statically linked: {HINT}"
    );
    busybox
}

/// Whether a 64-bit little-endian ELF file asks for a program interpreter (PT_INTERP):
/// a dynamically linked program, which cannot run alone in the test image.
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(
        &elf[..6],
        b"\x7fELF\x02\x01",
        "a 64-bit little-endian ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (size, count) = (u16_at(0x36), u16_at(0x38));
    (0..count).any(|i| {
        let at = phoff + i * size;
        u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) == 3
    })
}

fn bundle(dir: &Path, admin: &Path, args: &[&str]) -> ToolOutput {
    let mut argv = vec!["bundle", "--admin-socket", admin.to_str().unwrap()];
    argv.extend(args);
    run_tool(
        dir,
        env!("CARGO_BIN_EXE_cri-imaged"),
        &argv,
        Duration::from_secs(60),
    )
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Runs the bundle in `dir` with `runc run` (its own state dir under `state`); the output.
fn runc_run(tmp: &Path, state: &Path, dir: &Path, id: &str) -> ToolOutput {
    let args = [
        "--root",
        state.to_str().unwrap(),
        "run",
        "--bundle",
        dir.to_str().unwrap(),
        id,
    ];
    let out = run_tool(tmp, RUNC, &args, Duration::from_secs(60));
    // A container that failed to start may leave its state: gone before the next step.
    let _ = run_tool(
        tmp,
        RUNC,
        &["--root", state.to_str().unwrap(), "delete", "--force", id],
        Duration::from_secs(30),
    );
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_of_a_pulled_image_runs_under_runc() {
    use tar::EntryType::{Directory as D, Link as H, Regular as F, Symlink as S};
    let busybox = require();
    let base = layer(&[
        (D, "bin", b"", 0o755),
        (F, "bin/busybox", &busybox, 0o755),
        (S, "bin/sh", b"busybox", 0o777),
        (F, "bin/suid", b"#", 0o4755),
        (D, "etc", b"", 0o755),
        (
            F,
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345:app:/data:/bin/sh\n",
            0o644,
        ),
        (
            F,
            "etc/group",
            b"root:x:0:\napp:x:2345:\nextra:x:3456:other,app\n",
            0o644,
        ),
        (D, "data", b"", 0o755),
        (F, "data/gone", b"old", 0o644),
        (F, "data/target", b"payload", 0o644),
        (D, "opq", b"", 0o755),
        (F, "opq/old", b"old", 0o644),
        (D, "tmp", b"", 0o1777),
    ]);
    let top = layer(&[
        (D, "data", b"", 0o755),
        (F, "data/.wh.gone", b"", 0o644),
        (H, "data/link", b"data/target", 0o644),
        (D, "opq", b"", 0o755),
        (F, "opq/.wh..wh..opq", b"", 0o644),
        (F, "opq/new", b"new", 0o644),
    ]);
    let script = "B=/bin/busybox; \
        echo uid=$($B id -u) gid=$($B id -g) groups=$($B id -G); \
        echo cwd=$($B pwd) greeting=$GREETING; \
        echo data=$($B ls /data | $B tr '\\n' ' '); \
        echo opq=$($B ls /opq | $B tr '\\n' ' '); \
        echo suid=$($B stat -c %a /bin/suid) link=$($B cat /data/link) links=$($B stat -c %h /data/link)";
    let img = ImageBuilder::new()
        .layers(vec![base, top])
        .user("app")
        .config_field("Entrypoint", json!(["/bin/sh", "-c"]))
        .config_field("Cmd", json!([script]))
        .config_field("Env", json!(["GREETING=hello"]))
        .config_field("WorkingDir", json!("/data"))
        .build();
    let registry = Registry::start().await;
    img.push(&registry, "test/runnable", "1").await;

    let tmp = tempdir();
    let builder = DaemonBuilder::new(tmp.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let admin = cri_imaged::config::default_admin_socket(&daemon.socket);
    let mut c = daemon.client();
    let name = format!("{}/test/runnable:1", registry.host());
    assert_eq!(pull(&mut c, &name).await, img.id());

    let dir: PathBuf = tmp.path().join("bundle");
    let made = bundle(tmp.path(), &admin, &[&name, dir.to_str().unwrap()]);
    assert!(made.status.success(), "bundle: {}", made.stderr);
    assert_eq!(made.stdout.trim(), dir.display().to_string());
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"][0], "/bin/sh");
    assert_eq!(spec["process"]["user"]["uid"], 1234);
    // A second bundle in the same place is refused, naming it.
    let again = bundle(tmp.path(), &admin, &[&name, dir.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(
        again.stderr.contains("is a bundle already"),
        "{}",
        again.stderr
    );

    let state = tmp.path().join("runc-state");
    let out = runc_run(tmp.path(), &state, &dir, "cri-imaged-test-1");
    assert!(
        out.status.success(),
        "runc run: {}\n{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        vec![
            "uid=1234 gid=2345 groups=2345 3456",
            "cwd=/data greeting=hello",
            "data=link target",
            "opq=new",
            "suid=4755 link=payload links=2",
        ],
        "the container's view of the image"
    );

    // rmi while the bundle exists: the image is gone from the list at once, its
    // snapshots stay for the bundle, which still runs.
    remove(&mut c, &name).await;
    assert!(list(&mut c, None).await.is_empty());
    assert_eq!(
        entries(&root.join("snapshots")).len(),
        2,
        "kept for the bundle"
    );
    let out = runc_run(tmp.path(), &state, &dir, "cri-imaged-test-2");
    assert!(out.status.success(), "runc run after rmi: {}", out.stderr);

    let gone = bundle(tmp.path(), &admin, &["--remove", dir.to_str().unwrap()]);
    assert!(gone.status.success(), "bundle --remove: {}", gone.stderr);
    assert!(entries(&dir).is_empty(), "{:?}", entries(&dir));
    assert!(
        entries(&root.join("snapshots")).is_empty(),
        "freed with the bundle"
    );
    assert!(entries(&root.join("containers")).is_empty());
    let twice = bundle(tmp.path(), &admin, &["--remove", dir.to_str().unwrap()]);
    assert!(!twice.status.success());
    assert!(twice.stderr.contains("no container"), "{}", twice.stderr);
    daemon.stop().await;
}

fn refused(
    r: Result<impl std::fmt::Debug, cri_imaged::admin::client::ClientError>,
) -> (String, String) {
    match r {
        Err(cri_imaged::admin::client::ClientError::Refused { code, message }) => (code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// The mount API on the admin socket: what it refuses (with the code the CRI socket
/// would use and a message naming the value), a snapshot rebuilt from the blobs of an
/// image pulled while `unpack` was off, listing, removal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mount_api_refuses_what_it_cannot_do_and_rebuilds_missing_snapshots() {
    use cri_imaged::admin::client::{get, prepare_container, remove_container};
    require();
    let registry = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&registry, "test/mounts", "1").await;
    let name = format!("{}/test/mounts:1", registry.host());
    let tmp = tempdir();

    // Pulled with unpack off: blobs only, and the mount API says what to change.
    let mut daemon = DaemonBuilder::new(tmp.path())
        .registry(&registry.host())
        .arg("--unpack")
        .arg("false")
        .start()
        .await;
    let admin = cri_imaged::config::default_admin_socket(&daemon.socket);
    assert_eq!(pull(&mut daemon.client(), &name).await, img.id());
    let (code, message) = refused(prepare_container(&admin, "k1", &name).await);
    assert_eq!(code, "FailedPrecondition");
    assert!(message.contains("unpack = true"), "{message}");
    daemon.stop().await;

    let builder = DaemonBuilder::new(tmp.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    assert!(entries(&root.join("snapshots")).is_empty());
    let prepared = prepare_container(&admin, "k1", &name).await.unwrap();
    assert_eq!(prepared.image, img.id());
    assert_eq!(
        entries(&root.join("snapshots")).len(),
        2,
        "both layers unpacked from their blobs"
    );
    let options = &prepared.mounts[0].options;
    assert!(options[0].starts_with("lowerdir="), "{options:?}");
    assert_eq!(prepared.image_config["config"]["Cmd"], json!(["/bin/sh"]));

    let (code, message) = refused(prepare_container(&admin, "k1", &name).await);
    assert_eq!(
        (code.as_str(), message.contains("\"k1\"")),
        ("AlreadyExists", true),
        "{message}"
    );
    for bad in ["../x", "", "tmp-x", ".hidden", "a/b", &"k".repeat(129)] {
        let (code, message) = refused(prepare_container(&admin, bad, &name).await);
        assert_eq!(code, "InvalidArgument", "{bad:?}: {message}");
        assert!(message.contains(&format!("{bad:?}")), "{message}");
    }
    let (code, message) = refused(prepare_container(&admin, "k2", "no/such:image").await);
    assert_eq!(code, "NotFound");
    assert!(message.contains("no/such:image"), "{message}");
    let listed: serde_json::Value =
        serde_json::from_slice(&get(&admin, "/containers").await.unwrap()).unwrap();
    assert_eq!(listed["containers"][0]["key"], "k1");
    assert_eq!(listed["containers"][0]["image"], img.id());
    assert_eq!(listed["containers"].as_array().unwrap().len(), 1);

    // The image stays listed while it has a container; removing both leaves nothing.
    remove_container(&admin, "k1").await.unwrap();
    let (code, _) = refused(remove_container(&admin, "k1").await);
    assert_eq!(code, "NotFound");
    assert_eq!(
        entries(&root.join("snapshots")).len(),
        2,
        "the image still needs them"
    );
    remove(&mut daemon.client(), &name).await;
    assert!(entries(&root.join("snapshots")).is_empty());
    daemon.stop().await;
}

/// The snapshots' sync after the pull (`snapshot/durable.rs`), across the real binary: a
/// stop leaves none unsynced; one a crash caught before its sync (its marker planted, as
/// the crash leaves it) is a note for `check`, gone after the restart, and the mount API
/// unpacks it again from its blob, synced before the container stands on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_not_synced_before_a_crash_is_made_again_from_its_blob() {
    use cri_imaged::admin::client::prepare_container;
    require();
    let registry = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&registry, "test/unsynced", "1").await;
    let name = format!("{}/test/unsynced:1", registry.host());
    let tmp = tempdir();
    let builder = DaemonBuilder::new(tmp.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let snaps = root.join("snapshots");
    let markers = |chain: &str| -> Vec<String> {
        entries(&snaps.join(chain))
            .into_iter()
            .filter(|n| n.starts_with("unsynced-"))
            .collect()
    };

    let mut daemon = builder.start().await;
    assert_eq!(pull(&mut daemon.client(), &name).await, img.id());
    daemon.stop().await;
    let made = entries(&snaps);
    assert_eq!(made.len(), 2, "{made:?}");
    for chain in &made {
        assert!(markers(chain).is_empty(), "synced by the stop: {chain}");
    }

    // One snapshot as a power loss before its sync leaves it.
    let torn = made[0].clone();
    std::fs::write(snaps.join(&torn).join("unsynced-1-1"), b"").unwrap();
    let checked = crate::support::run_check(tmp.path(), &root, false);
    assert!(checked.status.success(), "{}", checked.stdout);
    assert!(
        checked.stdout.contains(&format!("snapshots/{torn}"))
            && checked.stdout.contains("its sync had not run"),
        "a note names it: {}",
        checked.stdout
    );

    let mut daemon = builder.start().await;
    assert!(
        !entries(&snaps).contains(&torn),
        "removed at the start: {:?}",
        entries(&snaps)
    );
    assert_eq!(
        list(&mut daemon.client(), None).await.len(),
        1,
        "the image stays"
    );
    let admin = cri_imaged::config::default_admin_socket(&daemon.socket);
    let prepared = prepare_container(&admin, "k1", &name).await.unwrap();
    assert_eq!(prepared.image, img.id());
    assert_eq!(entries(&snaps), made, "unpacked again from its blob");
    for chain in &made {
        assert!(
            markers(chain).is_empty(),
            "synced before the container: {chain}"
        );
    }
    daemon.stop().await;
}
