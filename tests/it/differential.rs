//! Differential unpacking: an image with every layer feature cri-imaged handles (owners,
//! setuid/setgid/sticky, xattrs incl. `security.capability`, devices, a FIFO, GNU long
//! names and long link targets, absolute and relative symlinks, hard links in a layer and
//! into the layer below, whiteouts of a file and of a directory, an opaque directory, a
//! file replaced, a directory's mode changed above) is pulled from the test registry with
//! `unpack` on; its snapshots, stacked by overlayfs, must show exactly the tree Debian's
//! `umoci unpack` makes of the same image read from cri-imaged's own OCI layout — entry
//! by entry: type, mode, owner, size and content, link target, device number, xattrs and
//! mtime (of non-directories). Needs root and umoci (`apt-get install umoci`).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::support::images::{Blob, Layer, sha256_digest};
use crate::support::{DaemonBuilder, ImageBuilder, Registry, pull, run_tool, tempdir};

const UMOCI: &str = "/usr/bin/umoci";
const MTIME: u64 = 1_600_000_000;

/// A layer written entry by entry with full headers.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn head(kind: tar::EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_size(size);
        h.set_mtime(MTIME);
        h
    }

    fn dir(mut self, name: &str, mode: u32, uid: u64, gid: u64) -> Tar {
        let mut h = Tar::head(tar::EntryType::Directory, mode, uid, gid, 0);
        self.0.append_data(&mut h, name, &[][..]).unwrap();
        self
    }

    fn file(mut self, name: &str, mode: u32, uid: u64, gid: u64, data: &[u8]) -> Tar {
        let mut h = Tar::head(tar::EntryType::Regular, mode, uid, gid, data.len() as u64);
        self.0.append_data(&mut h, name, data).unwrap();
        self
    }

    fn xattr_file(mut self, name: &str, xattrs: &[(&str, &[u8])], data: &[u8]) -> Tar {
        let pax: Vec<(String, &[u8])> = xattrs
            .iter()
            .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
            .collect();
        self.0
            .append_pax_extensions(pax.iter().map(|(k, v)| (k.as_str(), *v)))
            .unwrap();
        self.file(name, 0o644, 0, 0, data)
    }

    fn link(mut self, kind: tar::EntryType, name: &str, target: &str) -> Tar {
        let mut h = Tar::head(kind, 0o777, 0, 0, 0);
        self.0.append_link(&mut h, name, target).unwrap();
        self
    }

    fn device(mut self, kind: tar::EntryType, name: &str, major: u32, minor: u32) -> Tar {
        let mut h = Tar::head(kind, 0o666, 0, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, name, &[][..]).unwrap();
        self
    }

    fn gzip(self) -> Layer {
        use std::io::Write;
        let tar = self.0.into_inner().unwrap();
        let diff_id = sha256_digest(&tar);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        Layer {
            blob: Blob::new(gz.finish().unwrap()),
            diff_id,
        }
    }
}

/// A file capability (VFS_CAP_REVISION_2, effective): CAP_NET_BIND_SERVICE permitted.
fn capability() -> Vec<u8> {
    let mut v = 0x0200_0001u32.to_le_bytes().to_vec();
    for word in [1u32 << 10, 0, 0, 0] {
        v.extend_from_slice(&word.to_le_bytes());
    }
    v
}

fn layers() -> Vec<Layer> {
    use tar::EntryType::{Block, Char, Fifo, Link, Symlink};
    let long_dir = format!("data/{}", "d".repeat(120));
    let long_file = format!("{long_dir}/{}", "f".repeat(110));
    let long_target = format!("/{}", "t".repeat(200));
    let cap = capability();
    let bottom = Tar::new()
        .dir("bin", 0o755, 0, 0)
        .file("bin/suid", 0o4755, 0, 0, b"suid")
        .file("bin/sgid", 0o2755, 0, 50, b"sgid")
        .link(Link, "bin/hard", "bin/suid")
        .link(Symlink, "bin/rel", "suid")
        .dir("etc", 0o755, 0, 0)
        .file("etc/passwd", 0o644, 0, 0, b"root:x:0:0::/root:/bin/sh\n")
        .file("etc/group", 0o644, 0, 0, b"root:x:0:\n")
        .link(Symlink, "etc/abs", "/etc/passwd")
        .link(Symlink, "etc/long", &long_target)
        .dir("tmp", 0o1777, 0, 0)
        .dir("shared", 0o2775, 0, 100)
        .dir("data", 0o750, 1000, 1000)
        .file("data/owned", 0o640, 1000, 2000, b"owned")
        .xattr_file(
            "data/xattrs",
            &[("user.comment", b"hello"), ("security.capability", &cap)],
            b"with xattrs",
        )
        .file("data/gone", 0o644, 0, 0, b"deleted above")
        .dir("data/dir-gone", 0o755, 0, 0)
        .file("data/dir-gone/inner", 0o644, 0, 0, b"deleted above")
        .dir(&long_dir, 0o755, 0, 0)
        .file(&long_file, 0o644, 0, 0, b"long name")
        .dir("dev", 0o755, 0, 0)
        .device(Char, "dev/null", 1, 3)
        .device(Block, "dev/loop9", 7, 9)
        .device(Fifo, "data/fifo", 0, 0)
        .dir("opq", 0o755, 0, 0)
        .file("opq/old", 0o644, 0, 0, b"hidden by the opaque dir")
        .dir("opq/sub", 0o755, 0, 0)
        .gzip();
    let top = Tar::new()
        .dir("data", 0o700, 1000, 1000)
        .file("data/.wh.gone", 0o644, 0, 0, b"")
        .file("data/.wh.dir-gone", 0o644, 0, 0, b"")
        .link(tar::EntryType::Link, "data/link", "etc/group")
        .dir("etc", 0o755, 0, 0)
        .file("etc/passwd", 0o600, 0, 0, b"replaced\n")
        .dir("opq", 0o755, 0, 0)
        .file("opq/.wh..wh..opq", 0o644, 0, 0, b"")
        .file("opq/new", 0o644, 0, 0, b"new")
        .gzip();
    vec![bottom, top]
}

/// One entry of a tree, as compared.
#[derive(Debug, PartialEq, Eq)]
struct Entry {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    content: Option<String>,
    target: Option<PathBuf>,
    rdev: u64,
    mtime: Option<i64>,
    xattrs: BTreeMap<String, Vec<u8>>,
}

fn xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut names = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut names[..]).unwrap_or(0);
    names[..n]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        // overlayfs' own and the security module's are no part of the image.
        .filter(|n| !n.starts_with("trusted.") && n != "security.selinux")
        .map(|name| {
            let mut v = vec![0u8; 4096];
            let len = rustix::fs::lgetxattr(path, name.as_str(), &mut v[..]).unwrap();
            v.truncate(len);
            (name, v)
        })
        .collect()
}

fn tree(root: &Path) -> BTreeMap<String, Entry> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_owned()];
    while let Some(dir) = todo.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = e.path();
            let m = path.symlink_metadata().unwrap();
            let t = m.file_type();
            let kind = match () {
                _ if t.is_dir() => "dir",
                _ if t.is_file() => "file",
                _ if t.is_symlink() => "symlink",
                _ if t.is_char_device() => "char",
                _ if t.is_block_device() => "block",
                _ if t.is_fifo() => "fifo",
                _ => "other",
            };
            if t.is_dir() {
                todo.push(path.clone());
            }
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.insert(
                rel,
                Entry {
                    kind,
                    mode: m.mode() & 0o7777,
                    uid: m.uid(),
                    gid: m.gid(),
                    content: t
                        .is_file()
                        .then(|| hex::encode(Sha256::digest(std::fs::read(&path).unwrap()))),
                    target: t.is_symlink().then(|| std::fs::read_link(&path).unwrap()),
                    rdev: if t.is_char_device() || t.is_block_device() {
                        m.rdev()
                    } else {
                        0
                    },
                    mtime: (!t.is_dir() && !t.is_symlink()).then(|| m.mtime()),
                    xattrs: if t.is_symlink() {
                        BTreeMap::new()
                    } else {
                        xattrs(&path)
                    },
                },
            );
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_stacked_by_overlayfs_are_the_tree_umoci_unpacks() {
    assert!(
        rustix::process::geteuid().is_root(),
        "the differential unpack test makes devices and mounts overlayfs: run it as root"
    );
    assert!(
        Path::new(UMOCI).is_file(),
        "umoci not found at {UMOCI}: apt-get install umoci (scripts/test.sh does)"
    );
    let img = ImageBuilder::new().layers(layers()).build();
    let registry = Registry::start().await;
    img.push(&registry, "test/every-feature", "1").await;
    let tmp = tempdir();
    let builder = DaemonBuilder::new(tmp.path())
        .registry(&registry.host())
        .unpacking();
    let root = builder.root_path().to_owned();
    let mut daemon = builder.start().await;
    let name = format!("{}/test/every-feature:1", registry.host());
    assert_eq!(pull(&mut daemon.client(), &name).await, img.id());
    daemon.stop().await;

    // umoci reads cri-imaged's layout: its blobs, under an index naming the manifest "t".
    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    std::fs::copy(root.join("oci-layout"), layout.join("oci-layout")).unwrap();
    std::os::unix::fs::symlink(root.join("blobs"), layout.join("blobs")).unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("index.json")).unwrap()).unwrap();
    let mut entry = index["manifests"][0].clone();
    entry["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "t"});
    let one = serde_json::json!({"schemaVersion": 2, "manifests": [entry]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&one).unwrap()).unwrap();
    let bundle = tmp.path().join("umoci-bundle");
    let image = format!("{}:t", layout.display());
    let out = run_tool(
        tmp.path(),
        UMOCI,
        &["unpack", "--image", &image, bundle.to_str().unwrap()],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "umoci unpack: {}\n{}",
        out.stdout,
        out.stderr
    );

    // Ours, stacked read-only: the top snapshot first.
    let chain = |parent: Option<&str>, diff: &str| match parent {
        None => diff.to_owned(),
        Some(p) => sha256_digest(format!("{p} {diff}").as_bytes()),
    };
    let c0 = chain(None, &img.layers[0].diff_id);
    let c1 = chain(Some(&c0), &img.layers[1].diff_id);
    let fs = |c: &str| {
        root.join("snapshots")
            .join(c.trim_start_matches("sha256:"))
            .join("fs")
    };
    let merged = tmp.path().join("merged");
    std::fs::create_dir(&merged).unwrap();
    let options = format!("lowerdir={}:{}", fs(&c1).display(), fs(&c0).display());
    rustix::mount::mount(
        "overlay",
        &merged,
        "overlay",
        rustix::mount::MountFlags::RDONLY,
        std::ffi::CString::new(options).unwrap().as_c_str(),
    )
    .expect("mount the snapshots with overlayfs");
    let _mounted = crate::support::Mounted(merged.clone());

    let (ours, theirs) = (tree(&merged), tree(&bundle.join("rootfs")));
    for (path, want) in &theirs {
        assert_eq!(
            ours.get(path),
            Some(want),
            "{path}: cri-imaged (left) vs umoci (right)"
        );
    }
    let extra: Vec<&String> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
    assert!(extra.is_empty(), "only in cri-imaged's tree: {extra:?}");
    // The features are really there (a tree equal to umoci's but empty would pass above).
    for path in [
        "bin/hard",
        "data/link",
        "data/fifo",
        "dev/loop9",
        "opq/new",
        "etc/long",
    ] {
        assert!(theirs.contains_key(path), "{path} in the image");
    }
    for gone in ["data/gone", "data/dir-gone", "opq/old", "opq/sub"] {
        assert!(
            !theirs.contains_key(gone),
            "{gone} deleted by the top layer"
        );
    }
    assert_eq!(theirs["bin/suid"].mode, 0o4755);
    assert_eq!(theirs["data"].mode, 0o700, "the top layer's mode of data/");
    assert_eq!(
        theirs["data/xattrs"].xattrs.len(),
        2,
        "{:?}",
        theirs["data/xattrs"]
    );
    assert_eq!(theirs.len(), ours.len());
}
