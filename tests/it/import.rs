//! PullImage from files (README, "Preloading images from files"): `oci:`, `oci-archive:`,
//! `docker-archive:` and `dir:` sources written by the test (support/layout.rs) or by the
//! real `skopeo copy`, read by the daemon through its own skopeo proxy. Checked: the names
//! recorded, the ID (the config digest, equal to the same image pulled from the registry),
//! size and uid, platform choice in a multi-arch layout, a corrupted blob refused without a
//! trace, every refusal's code and message, no skopeo process outliving a cancelled pull,
//! and concurrent pulls of one source.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_imaged::proto::{Image, PullImageRequest};
use flate2::read::GzDecoder;
use tokio::task::JoinHandle;
use tonic::{Code, Status};

use crate::support::layout::{OciLayout, SKOPEO, corrupt, skopeo_copy, tar_layout};
use crate::support::{
    Client, Daemon, DaemonBuilder, Format, ImageBuilder, Registry, TestImage, TestIndex,
    eventually, hex_of, list, pull, require_tool, spec, status_of, tempdir, try_pull,
};

/// Every local transport.
const ALL_TRANSPORTS: [&str; 4] = ["oci", "oci-archive", "docker-archive", "dir"];
/// Bound for work the contract allows to finish just after a call returns (clean-up, the
/// skopeo child being reaped).
const CLEANUP_LIMIT: Duration = Duration::from_secs(10);
/// Bound for a pull to reach a given point (skopeo started, blocked on a blob).
const REACH_LIMIT: Duration = Duration::from_secs(30);

/// A registry, and a daemon with the given local transports reading from `<dir>/imports`.
/// Fields drop in order: daemon, registry, then the directory.
struct Fixture {
    daemon: Daemon,
    registry: Registry,
    imports: PathBuf,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// All four local transports on.
    async fn start() -> Fixture {
        Self::with(&ALL_TRANSPORTS, &[]).await
    }

    async fn with(transports: &[&str], extra: &[&str]) -> Fixture {
        require_tool(SKOPEO, "skopeo");
        let registry = Registry::start().await;
        let dir = tempdir();
        let imports = dir.path().join("imports");
        std::fs::create_dir(&imports).expect("create the import directory");
        let mut b = DaemonBuilder::new(dir.path()).registry(&registry.host());
        for t in transports {
            b = b.arg("--transport").arg(t);
        }
        b = b.arg("--import-dir").arg(&imports.display().to_string());
        for a in extra {
            b = b.arg(a);
        }
        let daemon = b.start().await;
        Fixture {
            daemon,
            registry,
            imports,
            dir,
        }
    }

    fn client(&self) -> Client {
        self.daemon.client()
    }

    /// `<imports>/<rel>`.
    fn import_path(&self, rel: &str) -> PathBuf {
        self.imports.join(rel)
    }

    /// A directory outside the import directory, for staging and for refused sources.
    fn outside(&self, rel: &str) -> PathBuf {
        let p = self.dir.path().join("outside").join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("create outside dir");
        p
    }

    /// `127.0.0.1:<port>/<rest>` on the fixture's registry.
    fn reg_name(&self, rest: &str) -> String {
        format!("{}/{rest}", self.registry.host())
    }
}

/// `transport:path[:reference]`.
fn source(transport: &str, path: &Path, reference: Option<&str>) -> String {
    let mut s = format!("{transport}:{}", path.display());
    if let Some(r) = reference {
        s.push(':');
        s.push_str(r);
    }
    s
}

fn uid_of(img: &Image) -> Option<i64> {
    img.uid.as_ref().map(|u| u.value)
}

/// Asserts `img` is `expected`'s ID known by exactly `tags` and `digests`, of `size` bytes
/// and with uid `uid`.
fn assert_image(img: &Image, id: &str, tags: &[&str], digests: &[String], size: u64, uid: i64) {
    assert_eq!(img.id, id, "Image.id must be the config digest");
    let mut got_tags = img.repo_tags.clone();
    got_tags.sort();
    let mut want_tags: Vec<String> = tags.iter().map(|t| (*t).to_owned()).collect();
    want_tags.sort();
    assert_eq!(got_tags, want_tags, "repo_tags of {id}");
    let mut got_digests = img.repo_digests.clone();
    got_digests.sort();
    let mut want_digests = digests.to_vec();
    want_digests.sort();
    assert_eq!(got_digests, want_digests, "repo_digests of {id}");
    assert_eq!(img.size, size, "Image.size of {id}");
    assert_eq!(uid_of(img), Some(uid), "Image.uid of {id} (config User)");
}

/// Asserts a refusal's code and that its message names every string in `names`.
fn assert_refused(image: &str, r: Result<String, Status>, code: Code, names: &[&str]) {
    let e = match r {
        Ok(id) => panic!("PullImage({image}) must be refused with {code:?}, got image {id}"),
        Err(e) => e,
    };
    assert_eq!(e.code(), code, "PullImage({image}): {}", e.message());
    for n in names {
        assert!(
            e.message().contains(n),
            "PullImage({image}): the message must name {n:?}: {}",
            e.message()
        );
    }
}

/// The bytes of `img`'s layers after gunzip: what a docker archive stores.
fn uncompressed_layers_size(img: &TestImage) -> u64 {
    img.layers
        .iter()
        .map(|l| {
            let mut out = Vec::new();
            GzDecoder::new(l.blob.data.as_slice())
                .read_to_end(&mut out)
                .expect("gunzip a test layer");
            out.len() as u64
        })
        .sum()
}

/// File names in the store's `blobs/sha256` directory (a missing directory has none).
fn store_blobs(root: &Path) -> Vec<String> {
    let dir = root.join("blobs").join("sha256");
    match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("blobs dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read {}: {e}", dir.display()),
    }
}

/// Asserts (bounded) that the store's `ingest/` directory is empty: no partial blob left.
async fn assert_no_ingest_files(root: &Path, when: &str) {
    let dir = root.join("ingest");
    let files = |dir: &Path| -> Vec<String> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| {
                    e.expect("ingest entry")
                        .file_name()
                        .to_string_lossy()
                        .into_owned()
                })
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => panic!("read {}: {e}", dir.display()),
        }
    };
    let empty = eventually(CLEANUP_LIMIT, || {
        let none = files(&dir).is_empty();
        async move { none }
    })
    .await;
    assert!(
        empty,
        "{when}: {} still holds {:?} after {CLEANUP_LIMIT:?}",
        dir.display(),
        files(&dir)
    );
}

/// A process whose parent is the daemon.
#[derive(Clone)]
struct ChildProc {
    pid: i32,
    comm: String,
    state: String,
}

impl std::fmt::Debug for ChildProc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) state {}", self.pid, self.comm, self.state)
    }
}

/// Every process whose parent is `ppid`, from `/proc/*/stat` (zombies included: a child
/// killed but never reaped still counts).
fn children_of(ppid: i32) -> Vec<ChildProc> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc") {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may exit between listing and reading.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next().unwrap_or("?").to_owned();
        if rest.next().and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            out.push(ChildProc {
                pid,
                comm: stat[open + 1..close].to_owned(),
                state,
            });
        }
    }
    out
}

fn daemon_pid(d: &Daemon) -> i32 {
    d.pid().as_raw_nonzero().get()
}

/// Starts PullImage(`image`) in a task on its own client.
fn spawn_pull(daemon: &Daemon, image: &str) -> JoinHandle<Result<String, Status>> {
    let mut c = daemon.client();
    let image = image.to_owned();
    tokio::spawn(async move { try_pull(&mut c, &image).await })
}

/// Opens `fifo` for writing without blocking: succeeds only once a reader (skopeo, blocked
/// opening the layer) has it open. Holding the returned end open without writing keeps
/// that reader blocked.
fn open_fifo_writer(fifo: &Path) -> Option<OwnedFd> {
    use rustix::fs::{Mode, OFlags, open};
    match open(
        fifo,
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => Some(fd),
        Err(rustix::io::Errno::NXIO) => None,
        Err(e) => panic!("open {} for writing: {e}", fifo.display()),
    }
}

/// Asserts (bounded) that the daemon has no child process left.
async fn assert_no_children(d: &Daemon, when: &str) {
    let pid = daemon_pid(d);
    let gone = eventually(CLEANUP_LIMIT, || {
        let none = children_of(pid).is_empty();
        async move { none }
    })
    .await;
    assert!(
        gone,
        "{when}: the daemon (pid {pid}) still has child processes after {CLEANUP_LIMIT:?}: {:?}",
        children_of(pid)
    );
}

// ---------------------------------------------------------------------------------------
// Names, ID, size and uid per transport.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_layout_is_named_per_the_rules_and_keeps_the_registry_id() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let qualified = ImageBuilder::new().user("1234").build();
    let tagged = ImageBuilder::new().user("1234").build();
    let unnamed = ImageBuilder::new().user("1234").build();
    let app = f.import_path("app");
    OciLayout::create(&app)
        .add_image(&qualified, Some("registry.example/team/app:1.4"))
        .add_image(&tagged, Some("v1"));
    let plain = f.import_path("plain");
    OciLayout::create(&plain).add_image(&unnamed, None);

    // A fully qualified ref.name is recorded as it is.
    let src = source("oci", &app, Some("registry.example/team/app:1.4"));
    assert_eq!(pull(&mut c, &src).await, qualified.id(), "{src}");
    let got = status_of(&mut c, "registry.example/team/app:1.4").await;
    assert_image(
        &got,
        &qualified.id(),
        &["registry.example/team/app:1.4"],
        &[format!(
            "registry.example/team/app@{}",
            qualified.manifest_digest()
        )],
        qualified.size(),
        1234,
    );

    // A bare tag names localhost/<directory name>:<tag>.
    let src = source("oci", &app, Some("v1"));
    assert_eq!(pull(&mut c, &src).await, tagged.id(), "{src}");
    let got = status_of(&mut c, "localhost/app:v1").await;
    assert_image(
        &got,
        &tagged.id(),
        &["localhost/app:v1"],
        &[format!("localhost/app@{}", tagged.manifest_digest())],
        tagged.size(),
        1234,
    );

    // The only image of a layout, without a name: localhost/<directory name>:latest.
    let src = source("oci", &plain, None);
    assert_eq!(pull(&mut c, &src).await, unnamed.id(), "{src}");
    let got = status_of(&mut c, "localhost/plain:latest").await;
    assert_image(
        &got,
        &unnamed.id(),
        &["localhost/plain:latest"],
        &[format!("localhost/plain@{}", unnamed.manifest_digest())],
        unnamed.size(),
        1234,
    );

    // The same image from the registry is the same image: one ID, both names.
    qualified.push(&f.registry, "test/app", "1.4").await;
    let reg = f.reg_name("test/app:1.4");
    assert_eq!(
        pull(&mut c, &reg).await,
        qualified.id(),
        "the registry pull of the imported image must give the same ID"
    );
    let got = status_of(&mut c, &qualified.id()).await;
    assert_image(
        &got,
        &qualified.id(),
        &["registry.example/team/app:1.4", reg.as_str()],
        &[
            format!("registry.example/team/app@{}", qualified.manifest_digest()),
            format!("{}@{}", f.reg_name("test/app"), qualified.manifest_digest()),
        ],
        qualified.size(),
        1234,
    );
    assert_eq!(list(&mut c, None).await.len(), 3, "three images, no more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oci_archive_tarred_by_the_test_is_named_by_its_ref_and_keeps_the_registry_id() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let img = ImageBuilder::new().user("1234").build();
    let stage = f.outside("web");
    OciLayout::create(&stage).add_image(&img, Some("2.0"));
    let archive = f.import_path("web.tar");
    tar_layout(&stage, &archive);

    for reference in [None, Some("2.0")] {
        let src = source("oci-archive", &archive, reference);
        assert_eq!(pull(&mut c, &src).await, img.id(), "{src}");
        let got = status_of(&mut c, "localhost/web:2.0").await;
        assert_image(
            &got,
            &img.id(),
            &["localhost/web:2.0"],
            &[format!("localhost/web@{}", img.manifest_digest())],
            img.size(),
            1234,
        );
    }

    img.push(&f.registry, "test/web", "2.0").await;
    assert_eq!(
        pull(&mut c, &f.reg_name("test/web:2.0")).await,
        img.id(),
        "the registry pull of the imported image must give the same ID"
    );
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one image: {all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_archive_made_by_skopeo_keeps_its_repo_tag_and_image_id() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let img = ImageBuilder::new()
        .format(Format::Docker)
        .user("1234")
        .build();
    img.push(&f.registry, "test/dock", "1").await;
    let reg = f.reg_name("test/dock:1");
    let hub = f.import_path("hub.tar");
    let qualified = f.import_path("qualified.tar");
    skopeo_copy(
        f.dir.path(),
        &format!("docker://{reg}"),
        &format!("docker-archive:{}:dock:3", hub.display()),
    );
    skopeo_copy(
        f.dir.path(),
        &format!("docker://{reg}"),
        &format!(
            "docker-archive:{}:registry.example/team/dock:4",
            qualified.display()
        ),
    );
    // docker archives hold uncompressed layers.
    let size = img.config.len() + uncompressed_layers_size(&img);

    // A Docker Hub short name is a Docker name: docker.io/library/…; the archive's only
    // image is selected without a reference, by its repo tag, or by index.
    for reference in [None, Some("dock:3"), Some("@0")] {
        let src = source("docker-archive", &hub, reference);
        assert_eq!(pull(&mut c, &src).await, img.id(), "{src}");
        let got = status_of(&mut c, "docker.io/library/dock:3").await;
        assert_eq!(got.id, img.id(), "{src}");
        assert_eq!(got.repo_tags, ["docker.io/library/dock:3"], "{src}");
        assert_eq!(got.repo_digests.len(), 1, "{src}: {:?}", got.repo_digests);
        assert!(
            got.repo_digests[0].starts_with("docker.io/library/dock@sha256:"),
            "{src}: {:?}",
            got.repo_digests
        );
        assert_eq!(got.size, size, "{src}: config + uncompressed layers");
        assert_eq!(uid_of(&got), Some(1234), "{src}");
    }

    // A fully qualified repo tag is recorded as it is.
    let src = source("docker-archive", &qualified, None);
    assert_eq!(pull(&mut c, &src).await, img.id(), "{src}");
    let got = status_of(&mut c, "registry.example/team/dock:4").await;
    assert_eq!(got.id, img.id());

    // The registry gives the same image ID.
    assert_eq!(
        pull(&mut c, &reg).await,
        img.id(),
        "the registry pull of the archived image must give the same ID"
    );
    let all = list(&mut c, None).await;
    assert_eq!(all.len(), 1, "one image: {all:?}");
    let mut tags = all[0].repo_tags.clone();
    tags.sort();
    let mut want = vec![
        "docker.io/library/dock:3".to_owned(),
        "registry.example/team/dock:4".to_owned(),
        reg.clone(),
    ];
    want.sort();
    assert_eq!(tags, want);
    assert_eq!(uid_of(&all[0]), Some(1234));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dir_made_by_skopeo_is_localhost_dirname_latest_with_the_registry_id() {
    let f = Fixture::start().await;
    let mut c = f.client();
    for (format, dirname) in [(Format::Docker, "dockdir"), (Format::Oci, "ocidir")] {
        let img = ImageBuilder::new().format(format).user("1234").build();
        img.push(&f.registry, &format!("test/{dirname}"), "1").await;
        let reg = f.reg_name(&format!("test/{dirname}:1"));
        let dir = f.import_path(dirname);
        skopeo_copy(
            f.dir.path(),
            &format!("docker://{reg}"),
            &format!("dir:{}", dir.display()),
        );

        let src = source("dir", &dir, None);
        assert_eq!(pull(&mut c, &src).await, img.id(), "{src} ({format:?})");
        let name = format!("localhost/{dirname}:latest");
        let got = status_of(&mut c, &name).await;
        assert_eq!(got.id, img.id(), "{src}");
        assert_eq!(got.repo_tags, std::slice::from_ref(&name), "{src}");
        assert_eq!(got.size, img.size(), "{src}: config + layers as stored");
        assert_eq!(uid_of(&got), Some(1234), "{src}");

        assert_eq!(
            pull(&mut c, &reg).await,
            img.id(),
            "{format:?}: the registry pull must give the same ID as dir:"
        );
        let got = status_of(&mut c, &img.id()).await;
        let mut tags = got.repo_tags.clone();
        tags.sort();
        let mut want = vec![name, reg];
        want.sort();
        assert_eq!(tags, want, "{src}");
    }
    assert_eq!(list(&mut c, None).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_arch_layout_picks_the_node_platform_and_records_the_index_digest() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let index = TestIndex::build(Format::Oci);
    let native = index.native();
    let layout = f.import_path("multiarch");
    OciLayout::create(&layout).add_index(&index, Some("1"));

    for reference in [Some("1"), None] {
        let src = source("oci", &layout, reference);
        assert_eq!(
            pull(&mut c, &src).await,
            native.id(),
            "{src}: the node's platform ({}) must be chosen",
            native.arch
        );
        let got = status_of(&mut c, "localhost/multiarch:1").await;
        assert_eq!(got.id, native.id());
        assert_eq!(got.repo_tags, ["localhost/multiarch:1"]);
        assert_eq!(
            got.repo_digests,
            [format!("localhost/multiarch@{}", index.digest())],
            "{src}: the repo digest is the index's (manifest of the node's platform: {})",
            native.manifest_digest()
        );
        assert_eq!(got.size, native.size(), "{src}");
    }
    assert_eq!(list(&mut c, None).await.len(), 1, "one image per config");

    index.push(&f.registry, "test/multi", "1").await;
    assert_eq!(
        pull(&mut c, &f.reg_name("test/multi:1")).await,
        native.id(),
        "the registry chooses the same platform image"
    );
}

// ---------------------------------------------------------------------------------------
// Corrupted content.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_layer_is_data_loss_and_leaves_no_blob_of_the_image() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let root = f.daemon.root.clone();
    for transport in ["oci-archive", "oci"] {
        let img = ImageBuilder::new()
            .layer_sizes(&[64 * 1024, 64 * 1024])
            .build();
        // The last layer is bad, so the config and first layer are stored before it fails.
        let bad = img.layer_digests()[1].clone();
        let path = if transport == "oci" {
            let dir = f.import_path("badlayout");
            let mut layout = OciLayout::create(&dir);
            layout.add_image(&img, Some("1"));
            corrupt(&layout.blob_path(&bad));
            dir
        } else {
            let stage = f.outside("bad");
            let mut layout = OciLayout::create(&stage);
            layout.add_image(&img, Some("1"));
            corrupt(&layout.blob_path(&bad));
            let archive = f.import_path("bad.tar");
            tar_layout(&stage, &archive);
            archive
        };
        let src = source(transport, &path, None);
        assert_refused(&src, try_pull(&mut c, &src).await, Code::DataLoss, &[&bad]);

        assert!(list(&mut c, None).await.is_empty(), "{src}: nothing listed");
        let mine: Vec<String> = img
            .blob_digests()
            .iter()
            .chain(std::iter::once(&img.manifest_digest()))
            .map(|d| hex_of(d).to_owned())
            .collect();
        let clean = eventually(CLEANUP_LIMIT, || {
            let left = store_blobs(&root);
            let none = !left.iter().any(|b| mine.contains(b));
            async move { none }
        })
        .await;
        assert!(
            clean,
            "{src}: blobs/sha256 still holds blobs of the refused image after {CLEANUP_LIMIT:?}: \
             {:?} (the image's: config {}, layers {:?}, manifest {})",
            store_blobs(&root),
            img.config.digest,
            img.layer_digests(),
            img.manifest_digest()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Refusals.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_outside_the_import_dirs_relative_or_missing_are_refused() {
    let f = Fixture::with(&["oci-archive", "oci"], &[]).await;
    let mut c = f.client();
    let img = ImageBuilder::new().build();
    let stage = f.outside("layout");
    OciLayout::create(&stage).add_image(&img, Some("1"));
    let ok = f.import_path("ok.tar");
    tar_layout(&stage, &ok);
    let outside = f.outside("app.tar");
    tar_layout(&stage, &outside);
    let link = f.import_path("link.tar");
    std::os::unix::fs::symlink(&outside, &link).expect("symlink to a file outside");
    let linkdir = f.import_path("linkdir");
    std::os::unix::fs::symlink(outside.parent().unwrap(), &linkdir)
        .expect("symlink to a directory outside");
    let imports = f.imports.display().to_string();
    let dotdot = format!("{imports}/../outside/app.tar");
    let outside_s = outside.display().to_string();
    let link_s = link.display().to_string();
    let via_linkdir = format!("{}/app.tar", linkdir.display());
    let missing = f.import_path("missing.tar").display().to_string();
    let missing_layout = f.import_path("no-layout").display().to_string();

    let cases: Vec<(String, Code, Vec<&str>)> = vec![
        (
            format!("oci-archive:{outside_s}"),
            Code::PermissionDenied,
            vec![&outside_s, "import_dirs"],
        ),
        (
            format!("oci-archive:{dotdot}"),
            Code::PermissionDenied,
            vec![&dotdot, "import_dirs"],
        ),
        (
            format!("oci-archive:{link_s}"),
            Code::PermissionDenied,
            vec![&link_s, "import_dirs"],
        ),
        (
            format!("oci-archive:{via_linkdir}"),
            Code::PermissionDenied,
            vec![&via_linkdir, "import_dirs"],
        ),
        (
            format!("oci:{}", stage.display()),
            Code::PermissionDenied,
            vec!["import_dirs"],
        ),
        (
            "oci-archive:imports/ok.tar".to_owned(),
            Code::InvalidArgument,
            vec!["imports/ok.tar"],
        ),
        (
            format!("oci-archive:{missing}"),
            Code::NotFound,
            vec![&missing],
        ),
        (
            format!("oci:{missing_layout}"),
            Code::NotFound,
            vec![&missing_layout],
        ),
        // Not enabled on this daemon.
        (
            format!("docker-archive:{}", ok.display()),
            Code::PermissionDenied,
            vec!["docker-archive", "transports"],
        ),
        (
            format!("dir:{}", f.import_path("somedir").display()),
            Code::PermissionDenied,
            vec!["\"dir\"", "transports"],
        ),
    ];
    for (image, code, names) in &cases {
        let r = try_pull(&mut c, image).await;
        assert_refused(image, r, *code, names);
    }
    assert!(list(&mut c, None).await.is_empty(), "nothing was imported");

    // The same archive inside the import directory is accepted.
    let src = source("oci-archive", &ok, None);
    assert_eq!(pull(&mut c, &src).await, img.id());
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_transports_are_disabled_by_default() {
    let registry = Registry::start().await;
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path())
        .registry(&registry.host())
        .start()
        .await;
    let mut c = d.client();
    let img = ImageBuilder::new().build();
    let layout = dir.path().join("layout");
    OciLayout::create(&layout).add_image(&img, Some("1"));
    let archive = dir.path().join("app.tar");
    tar_layout(&layout, &archive);
    for (transport, path) in [
        ("oci", &layout),
        ("oci-archive", &archive),
        ("docker-archive", &archive),
        ("dir", &layout),
    ] {
        let src = source(transport, path, None);
        let quoted = format!("\"{transport}\"");
        assert_refused(
            &src,
            try_pull(&mut c, &src).await,
            Code::PermissionDenied,
            &[&quoted, "transports"],
        );
    }
    assert!(list(&mut c, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skopeo_that_cannot_run_is_failed_precondition_naming_the_package() {
    let f = Fixture::with(&["oci"], &["--skopeo", "/nonexistent/skopeo"]).await;
    let mut c = f.client();
    let img = ImageBuilder::new().build();
    let layout = f.import_path("app");
    OciLayout::create(&layout).add_image(&img, Some("1"));
    let src = source("oci", &layout, None);
    assert_refused(
        &src,
        try_pull(&mut c, &src).await,
        Code::FailedPrecondition,
        &["/nonexistent/skopeo", "apt-get install skopeo"],
    );
    assert!(list(&mut c, None).await.is_empty());
    assert!(
        children_of(daemon_pid(&f.daemon)).is_empty(),
        "no child process left"
    );
}

// ---------------------------------------------------------------------------------------
// Processes and concurrency.
// ---------------------------------------------------------------------------------------

/// Waits (bounded) until skopeo, run by the pull `task`, is blocked opening `fifo`; returns
/// the write end (holding it keeps skopeo blocked, now reading) and the daemon's children
/// seen at that moment.
async fn wait_for_blocked_skopeo(
    f: &Fixture,
    fifo: &Path,
    task: &mut JoinHandle<Result<String, Status>>,
) -> (OwnedFd, Vec<ChildProc>) {
    let deadline = tokio::time::Instant::now() + REACH_LIMIT;
    loop {
        if task.is_finished() {
            let r = task.await;
            panic!("the pull ended before skopeo reached the FIFO layer: {r:?}");
        }
        if let Some(w) = open_fifo_writer(fifo) {
            return (w, children_of(daemon_pid(&f.daemon)));
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "skopeo did not open the FIFO layer {} within {REACH_LIMIT:?}; daemon children: {:?}",
            fifo.display(),
            children_of(daemon_pid(&f.daemon))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_pull_leaves_no_skopeo_process() {
    let f = Fixture::with(&["oci"], &[]).await;
    let img = ImageBuilder::new().build();
    let layout_dir = f.import_path("fifo");
    let layout = {
        let mut l = OciLayout::create(&layout_dir);
        l.add_image(&img, Some("1"));
        l
    };
    // The first layer is a FIFO: skopeo blocks opening it until a writer comes, and then
    // reading it while the writer sends nothing.
    let fifo = layout.blob_path(&img.layer_digests()[0]);
    std::fs::remove_file(&fifo).expect("remove the layer blob");
    let out = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .output()
        .expect("run mkfifo (coreutils)");
    assert!(out.status.success(), "mkfifo failed: {out:?}");
    let src = source("oci", &layout_dir, None);
    let pid = daemon_pid(&f.daemon);
    assert!(children_of(pid).is_empty(), "no child before the pull");

    // 1. The client goes away (its request future is dropped).
    let mut task = spawn_pull(&f.daemon, &src);
    let (writer, kids) = wait_for_blocked_skopeo(&f, &fifo, &mut task).await;
    assert!(
        kids.iter().any(|k| k.comm == "skopeo"),
        "while the pull is blocked on the layer the daemon runs skopeo: children {kids:?}"
    );
    // `cri-imaged pulls` reads the same list: the import is in flight, its config done,
    // its first layer downloading, the others waiting.
    let admin = cri_imaged::config::default_admin_socket(&f.daemon.socket);
    let shown = cri_imaged::admin::client::pulls(&admin)
        .await
        .expect("GET /pulls on the admin socket")
        .pulls;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0].image, src);
    assert_eq!(shown[0].source, "oci");
    assert_eq!(shown[0].waiters, 1);
    let states: Vec<&str> = shown[0].blobs.iter().map(|b| b.state.as_str()).collect();
    let mut want = vec!["done", "downloading"];
    want.resize(1 + img.layers.len(), "waiting");
    assert_eq!(states, want, "{shown:?}");
    assert_eq!(shown[0].blobs[1].digest, img.layer_digests()[0]);
    assert_eq!(shown[0].bytes_total, img.size());
    task.abort();
    let _ = task.await;
    assert_no_children(&f.daemon, "after the client dropped the pull").await;
    assert_no_ingest_files(&f.daemon.root, "after the client dropped the pull").await;
    drop(writer);

    // 2. The client's deadline passes (as kubelet's runtime-request-timeout does).
    let mut c = f.client();
    let mut req = tonic::Request::new(PullImageRequest {
        image: Some(spec(&src)),
        auth: None,
        sandbox_config: None,
    });
    req.set_timeout(Duration::from_secs(5));
    let call = c.pull_image(req);
    tokio::pin!(call);
    let mut seen: Vec<ChildProc> = Vec::new();
    let mut writer = None;
    let result = tokio::time::timeout(REACH_LIMIT, async {
        loop {
            tokio::select! {
                r = &mut call => break r,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {
                    seen.extend(children_of(pid).into_iter().filter(|k| k.comm == "skopeo"));
                    if writer.is_none() {
                        writer = open_fifo_writer(&fifo);
                    }
                }
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("a pull with a 5 s deadline did not return within {REACH_LIMIT:?}"));
    let e = match result {
        Ok(r) => panic!(
            "a pull blocked on a FIFO layer succeeded: {:?}",
            r.into_inner()
        ),
        Err(e) => e,
    };
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{:?}: {}",
        e.code(),
        e.message()
    );
    assert!(
        !seen.is_empty(),
        "skopeo ran while the pull with a deadline was blocked"
    );
    assert!(
        writer.is_some(),
        "skopeo reached the FIFO layer before the deadline (children seen: {seen:?})"
    );
    assert_no_children(&f.daemon, "after the pull's deadline passed").await;
    assert_no_ingest_files(&f.daemon.root, "after the pull's deadline passed").await;
    drop(writer);
    let mut c = f.client();
    assert!(list(&mut c, None).await.is_empty(), "nothing was imported");

    // 3. Fed the layer's bytes, the same source imports (the FIFO was the only obstacle),
    // and skopeo exits with the pull.
    let mut task = spawn_pull(&f.daemon, &src);
    let (writer, _) = wait_for_blocked_skopeo(&f, &fifo, &mut task).await;
    rustix::fs::fcntl_setfl(&writer, rustix::fs::OFlags::empty()).expect("make the FIFO blocking");
    let data = img.layers[0].blob.data.clone();
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        std::fs::File::from(writer)
            .write_all(&data)
            .expect("write the layer into the FIFO");
    })
    .await
    .expect("FIFO writer thread");
    let r = tokio::time::timeout(REACH_LIMIT, task)
        .await
        .expect("the fed pull returns")
        .expect("pull task");
    assert_eq!(r.map_err(|e| e.message().to_owned()), Ok(img.id()));
    assert_no_children(&f.daemon, "after the pull succeeded").await;
    assert_eq!(list(&mut c, None).await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_archive_both_succeed_with_one_id() {
    let f = Fixture::with(&["oci-archive"], &[]).await;
    let img = ImageBuilder::new()
        .layer_sizes(&[256 * 1024, 128 * 1024])
        .user("1234")
        .build();
    let stage = f.outside("shared");
    OciLayout::create(&stage).add_image(&img, Some("registry.example/shared:1"));
    let archive = f.import_path("shared.tar");
    tar_layout(&stage, &archive);
    let src = source("oci-archive", &archive, None);

    let (mut a, mut b) = (f.client(), f.client());
    let (ra, rb) = tokio::join!(try_pull(&mut a, &src), try_pull(&mut b, &src));
    for (who, r) in [("first", ra), ("second", rb)] {
        match r {
            Ok(id) => assert_eq!(id, img.id(), "{who} pull"),
            Err(e) => panic!("{who} pull failed: {:?}: {}", e.code(), e.message()),
        }
    }
    let all = list(&mut a, None).await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_image(
        &all[0],
        &img.id(),
        &["registry.example/shared:1"],
        &[format!("registry.example/shared@{}", img.manifest_digest())],
        img.size(),
        1234,
    );
    assert_no_children(&f.daemon, "after both pulls").await;
}

/// A layout whose manifest blob no longer matches the digest
/// index.json gives it is refused (skopeo 1.9 does not check it), and nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_does_not_match_its_index_digest_is_data_loss() {
    let f = Fixture::with(&["oci"], &[]).await;
    let mut c = f.client();
    let img = ImageBuilder::new().build();
    let dir = f.import_path("tampered");
    let mut layout = OciLayout::create(&dir);
    layout.add_image(&img, Some("1"));
    // Same meaning, other bytes: the digest index.json names no longer matches.
    let doc: serde_json::Value = serde_json::from_slice(&img.manifest.data).unwrap();
    std::fs::write(
        layout.blob_path(&img.manifest_digest()),
        serde_json::to_vec_pretty(&doc).unwrap(),
    )
    .unwrap();
    let src = source("oci", &dir, None);
    assert_refused(
        &src,
        try_pull(&mut c, &src).await,
        Code::DataLoss,
        &[&img.manifest_digest()],
    );
    assert!(list(&mut c, None).await.is_empty());
}

/// Bad or ambiguous references get client codes, not Unknown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_bad_source_references_get_client_codes() {
    let f = Fixture::start().await;
    let mut c = f.client();
    let (a, b) = (ImageBuilder::new().build(), ImageBuilder::new().build());
    let two = f.import_path("two");
    OciLayout::create(&two)
        .add_image(&a, Some("a"))
        .add_image(&b, Some("b"));
    let docker = ImageBuilder::new().format(Format::Docker).build();
    docker.push(&f.registry, "test/d", "1").await;
    let archive = f.import_path("d.tar");
    skopeo_copy(
        f.dir.path(),
        &format!("docker://{}", f.reg_name("test/d:1")),
        &format!("docker-archive:{}:d:1", archive.display()),
    );
    for (src, code) in [
        (source("oci", &two, None), Code::InvalidArgument),
        (
            source("docker-archive", &archive, Some("@5")),
            Code::NotFound,
        ),
        (
            source("docker-archive", &archive, Some("@x")),
            Code::InvalidArgument,
        ),
    ] {
        let r = try_pull(&mut c, &src).await;
        assert_refused(&src, r, code, &[&src]);
    }
}
