//! Applies one layer's tar stream to an empty directory, in the form overlayfs stacks:
//! `.wh.NAME` becomes a 0/0 character device, `.wh..wh..opq` the `trusted.overlay.opaque`
//! xattr of its directory. The `tar` crate only parses; every write is ours.
//!
//! Safe by construction: a path's parent is opened with `openat2(RESOLVE_IN_ROOT)`, the
//! whole path so far from the layer directory (symlinks, absolute ones and ones with `..`
//! included, resolve inside it as if it were `/`, at any depth, so nothing outside is ever
//! reached and a link means what it means in the image), and the last component is acted
//! on with `*at` calls relative to that parent that never follow it. A `..` in a name or a hard-link
//! target is refused, an absolute name is taken relative to the root, `trusted.*` xattrs
//! from the archive are refused, and devices need root.
//!
//! A hard link whose target is not in this layer is resolved in the lower snapshots,
//! nearest first (`lowers`), and the target copied up so the link can be made (containerd
//! and containers/storage fail on such images; the image spec lets them). The lowers are
//! asked for only then ([`Lowers`]): layers unpack in parallel, and the one that needs its
//! lowers waits there until they are done.
//!
//! Ownership, then modes (after chown, so setuid bits stay), xattrs, and times (PAX
//! nanoseconds; directories last, deepest first) are applied as the archive says: owners
//! only when running as root, and only where the file we made is not already owned so.
//!
//! Few calls per entry, since a real image has tens of thousands: the parent directories
//! of the last entry stay open (a tar lists a directory's entries together; dropped after
//! anything is removed or a directory re-owned), a name is created first and cleared only
//! when something stands there, and the stream is read and file content written in 256 KiB
//! pieces (headers come from that buffer, not one inflate
//! call each). On the debian bench image (26,270 entries) this took a pull to a runnable
//! rootfs from 1.55 to 1.35 s.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use super::error::UnpackError;
use crate::names::Digest;

const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// The tar stream's read buffer and the file-content copy buffer: large enough that inflate
/// and the writes run in big pieces; a read returns what is there, never waiting to fill.
const COPY_BUF: usize = 256 * 1024;

/// Bounds on what one layer may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Entries in one layer (a tar bomb of tiny files is refused past it).
    pub max_entries: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 4_000_000,
        }
    }
}

/// What an applied layer held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    pub entries: u64,
    /// Bytes of file content written.
    pub bytes: u64,
}

/// Applies the tar stream `tar` of layer `layer` to the empty directory `dest`.
pub fn apply(
    layer: &Digest,
    tar: impl Read,
    dest: &Path,
    lowers: Lowers<'_>,
    limits: Limits,
) -> Result<Applied, UnpackError> {
    let root = rustix::fs::open(
        dest,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(layer, "/", "open", e))?;
    let root_gid = rustix::fs::fstat(&root)
        .map_err(|e| io_err(layer, "/", "stat", e))?
        .st_gid;
    let mut a = Applier {
        layer,
        root: Rc::new(root),
        root_gid,
        lowers,
        lower_dirs: std::cell::OnceCell::new(),
        as_root: rustix::process::geteuid().is_root(),
        gid: rustix::process::getegid().as_raw(),
        dirs: Vec::new(),
        done: Applied::default(),
        open: Vec::new(),
        stale: Cell::new(false),
        buf: vec![0; COPY_BUF],
    };
    // Headers are read 512 bytes at a time: from this buffer, not one inflate call each.
    let mut archive = tar::Archive::new(std::io::BufReader::with_capacity(COPY_BUF, tar));
    let entries = archive
        .entries()
        .map_err(|e| corrupt(layer, format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(layer, format!("reading the tar: {e}")))?;
        a.done.entries += 1;
        if a.done.entries > limits.max_entries {
            return Err(UnpackError::Unsupported {
                layer: layer.clone(),
                entry: String::from_utf8_lossy(&entry.path_bytes()).into_owned(),
                reason: format!("the layer holds more than {} entries", limits.max_entries),
            });
        }
        a.entry(&mut entry)?;
    }
    a.finish_dirs()
}

/// The lower snapshots' `fs` directories, nearest first; called at most once, when a hard
/// link needs a target from below (it may block until those snapshots are made).
pub type Lowers<'a> = &'a (dyn Fn() -> Vec<PathBuf> + Sync);

/// An entry's metadata, as the archive says (PAX over the header).
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: Timespec,
    xattrs: Vec<(String, Vec<u8>)>,
}

struct Applier<'a> {
    layer: &'a Digest,
    root: Rc<OwnedFd>,
    /// The layer root's group (see [`OpenDir::gid`]); the `./` entry may change it.
    root_gid: u32,
    lowers: Lowers<'a>,
    /// What `lowers` answered, once asked.
    lower_dirs: std::cell::OnceCell<Vec<PathBuf>>,
    as_root: bool,
    /// Our group: what a file we make gets where its directory's group is ours too
    /// (whatever the directory's setgid bit or the mount's `grpid` say).
    gid: u32,
    /// Directories whose times are set last (deepest first): their content changes them.
    dirs: Vec<(Vec<u8>, Timespec)>,
    done: Applied,
    /// The directories of the last entry's parent path, outermost first, kept open: a tar
    /// lists a directory's entries together, so most entries open no directory at all.
    open: Vec<OpenDir>,
    /// Set when something was removed or a directory that existed was given another
    /// owner: a kept directory may be gone (a symlink can make a kept directory the
    /// removed one's path too) or its group changed, so [`Applier::parent`] starts over.
    stale: Cell<bool>,
    /// File content passes through here.
    buf: Vec<u8>,
}

/// A directory of [`Applier::open`]: its name in its parent, and its group.
struct OpenDir {
    name: Vec<u8>,
    fd: Rc<OwnedFd>,
    /// A file made here gets this group or ours: when both are ours, it needs no chown.
    gid: u32,
}

/// A name split into its parent's components and its last one; `None`: the root itself.
type Split = Option<(Vec<Vec<u8>>, Vec<u8>)>;

impl Applier<'_> {
    fn unsafe_entry(&self, entry: &[u8], reason: impl Into<String>) -> UnpackError {
        UnpackError::Unsafe {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: reason.into(),
        }
    }

    fn io(&self, entry: &[u8], op: &'static str, e: impl Into<std::io::Error>) -> UnpackError {
        io_err(self.layer, &String::from_utf8_lossy(entry), op, e)
    }

    /// `a/./b//c` → `[a, b]`, `c`; absolute names are taken relative to the root; `..`
    /// is refused.
    fn split(&self, name: &[u8]) -> Result<Split, UnpackError> {
        let mut parts = Vec::new();
        for c in name.split(|b| *b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => return Err(self.unsafe_entry(name, "a path with `..` in it")),
                c => parts.push(c.to_vec()),
            }
        }
        Ok(parts.pop().map(|last| (parts, last)))
    }

    fn meta(&self, entry: &mut tar::Entry<'_, impl Read>) -> Result<Meta, UnpackError> {
        let name = entry.path_bytes().into_owned();
        let h = entry.header();
        let bad = |what: &str, e: std::io::Error| {
            corrupt(
                self.layer,
                format!("entry {:?}: {what}: {e}", String::from_utf8_lossy(&name)),
            )
        };
        // An empty numeric field reads as 0, as Go's archive/tar and GNU tar read it.
        let old = h.as_old();
        let num = |what: &str, v: std::io::Result<u64>, raw: &[u8]| match v {
            Ok(v) => Ok(v),
            Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
            Err(e) => Err(bad(what, e)),
        };
        let mut meta = Meta {
            mode: num("mode", h.mode().map(u64::from), &old.mode)? as u32 & 0o7777,
            uid: num("uid", h.uid(), &old.uid)? as u32,
            gid: num("gid", h.gid(), &old.gid)? as u32,
            mtime: Timespec {
                tv_sec: num("mtime", h.mtime(), &old.mtime)? as i64,
                tv_nsec: 0,
            },
            xattrs: Vec::new(),
        };
        if let Some(pax) = entry.pax_extensions().map_err(|e| bad("PAX header", e))? {
            for ext in pax {
                let ext = ext.map_err(|e| bad("PAX header", e))?;
                let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                    continue;
                };
                let text = std::str::from_utf8(value).unwrap_or("");
                match key {
                    "uid" => meta.uid = text.parse().unwrap_or(meta.uid),
                    "gid" => meta.gid = text.parse().unwrap_or(meta.gid),
                    "mtime" => {
                        if let Some(t) = pax_time(text) {
                            meta.mtime = t;
                        }
                    }
                    k if k.starts_with("SCHILY.xattr.") => {
                        let x = &k["SCHILY.xattr.".len()..];
                        if x.starts_with("trusted.") {
                            return Err(self.unsafe_entry(
                                &name,
                                format!("xattr {x} is not the archive's to set"),
                            ));
                        }
                        meta.xattrs.push((x.to_owned(), value.to_vec()));
                    }
                    _ => {}
                }
            }
        }
        Ok(meta)
    }

    /// Opens (creating missing directories, 0755 root-owned) the directory `parts` names,
    /// resolved inside the layer.
    fn open_dir(&self, entry: &[u8], parts: &[Vec<u8>]) -> Result<OwnedFd, UnpackError> {
        let mut fd = rustix::io::dup(&self.root).map_err(|e| self.io(entry, "open", e))?;
        for i in 0..parts.len() {
            fd = self.open_step(entry, &fd, &parts[..=i])?;
        }
        Ok(fd)
    }

    /// [`Applier::open_dir`] for an entry's parent, starting from the directories the
    /// previous entry's parent path left open, for as much of the path as the two share.
    /// Also says the directory's group.
    fn parent(
        &mut self,
        entry: &[u8],
        parts: &[Vec<u8>],
    ) -> Result<(Rc<OwnedFd>, u32), UnpackError> {
        if self.stale.replace(false) {
            self.open.clear();
        }
        let shared = self
            .open
            .iter()
            .zip(parts)
            .take_while(|(o, p)| o.name == **p)
            .count();
        self.open.truncate(shared);
        for i in shared..parts.len() {
            let fd = match self.open.last() {
                Some(o) => self.open_step(entry, &o.fd, &parts[..=i])?,
                None => self.open_step(entry, &self.root, &parts[..=i])?,
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| self.io(entry, "stat", e))?;
            self.open.push(OpenDir {
                name: parts[i].clone(),
                fd: Rc::new(fd),
                gid: st.st_gid,
            });
        }
        Ok(match self.open.last() {
            Some(o) => (o.fd.clone(), o.gid),
            None => (self.root.clone(), self.root_gid),
        })
    }

    /// One step of [`Applier::open_dir`]: the directory `path` (the path so far) names,
    /// resolved from the layer root as in a chroot, so a symlink met on the way, absolute
    /// or with `..`, stays inside the layer and means what it means in the image; its last
    /// component is made in `at` (the directory the path before it names) when missing.
    fn open_step(
        &self,
        entry: &[u8],
        at: &OwnedFd,
        path: &[Vec<u8>],
    ) -> Result<OwnedFd, UnpackError> {
        let part = path.last().map(Vec::as_slice).unwrap_or_default();
        let full = path.join(&b'/');
        let open = || {
            in_root(|| {
                rustix::fs::openat2(
                    &self.root,
                    OsStr::from_bytes(&full),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                )
            })
        };
        match open() {
            Ok(f) => Ok(f),
            Err(Errno::NOENT) => {
                match rustix::fs::mkdirat(at, OsStr::from_bytes(part), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(self.io(entry, "mkdir", e)),
                }
                open().map_err(|e| match e {
                    Errno::NOENT | Errno::EXIST => self.unsafe_entry(
                        entry,
                        format!(
                            "its parent {:?} is a symlink to nowhere in this layer",
                            String::from_utf8_lossy(part)
                        ),
                    ),
                    e => self.io(entry, "open", e),
                })
            }
            Err(Errno::NOTDIR) => Err(self.unsafe_entry(
                entry,
                format!(
                    "its parent {:?} is not a directory",
                    String::from_utf8_lossy(part)
                ),
            )),
            Err(e) => Err(self.io(entry, "open", e)),
        }
    }

    /// Removes whatever is at `name` in `dir` (a directory only if `dirs_too`, with
    /// everything in it).
    fn clear(
        &self,
        entry: &[u8],
        dir: &OwnedFd,
        name: &[u8],
        dirs_too: bool,
    ) -> Result<(), UnpackError> {
        let n = OsStr::from_bytes(name);
        match rustix::fs::unlinkat(dir, n, AtFlags::empty()) {
            Ok(()) => {
                self.stale.set(true);
                Ok(())
            }
            Err(Errno::NOENT) => Ok(()),
            Err(Errno::ISDIR) if dirs_too => {
                self.stale.set(true);
                let sub = rustix::fs::openat(
                    dir,
                    n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(entry, "open", e))?;
                remove_tree(&sub).map_err(|e| self.io(entry, "remove", e))?;
                rustix::fs::unlinkat(dir, n, AtFlags::REMOVEDIR)
                    .map_err(|e| self.io(entry, "remove", e))
            }
            Err(Errno::ISDIR) => {
                Err(self.unsafe_entry(entry, "a directory stands where a file goes"))
            }
            Err(e) => Err(self.io(entry, "remove", e)),
        }
    }

    fn entry(&mut self, entry: &mut tar::Entry<'_, impl Read>) -> Result<(), UnpackError> {
        let name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let meta = self.meta(entry)?;
        let Some((parts, last)) = self.split(&name)? else {
            // The root itself (`./`): its metadata only.
            if kind.is_dir() {
                self.set_owner_mode(&name, &self.root, &meta)?;
                if self.as_root {
                    self.root_gid = meta.gid;
                }
                self.dirs.push((Vec::new(), meta.mtime));
            }
            return Ok(());
        };
        let (dir, dir_gid) = self.parent(&name, &parts)?;
        // A file made here is ours, with our group or the directory's (setgid, `grpid`):
        // where all of that is what the archive says, it needs no chown.
        let owned_already =
            !self.as_root || (meta.uid == 0 && meta.gid == self.gid && dir_gid == self.gid);
        if last == OPAQUE {
            if !self.as_root {
                return Err(self.needs_root(&name, "an opaque directory"));
            }
            return rustix::fs::fsetxattr(&dir, OPAQUE_XATTR, b"y", XattrFlags::empty())
                .map_err(|e| self.io(&name, "set opaque", e));
        }
        if let Some(hidden) = last.strip_prefix(WHITEOUT) {
            if hidden.starts_with(b".wh.") {
                return Ok(()); // aufs bookkeeping (.wh..wh.plnk and such)
            }
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(self.unsafe_entry(&name, "a whiteout of no file"));
            }
            if !self.as_root {
                return Err(self.needs_root(&name, "a whiteout"));
            }
            self.clear(&name, &dir, hidden, true)?;
            return rustix::fs::mknodat(
                &dir,
                OsStr::from_bytes(hidden),
                FileType::CharacterDevice,
                Mode::empty(),
                0,
            )
            .map_err(|e| self.io(&name, "mknod", e));
        }
        let n = OsStr::from_bytes(&last);
        let full_rel = join(&parts, &last);
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&dir, n, Mode::from_raw_mode(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EXIST) => {
                        match rustix::fs::statat(&dir, n, AtFlags::SYMLINK_NOFOLLOW) {
                            // Given this entry's owner below: a kept directory may be this one
                            // under another path (a symlink), with the group it had.
                            Ok(st)
                                if FileType::from_raw_mode(st.st_mode) == FileType::Directory =>
                            {
                                self.stale.set(true);
                            }
                            Ok(_) => {
                                self.clear(&name, &dir, &last, false)?;
                                self.mkdir(&name, &dir, n)?;
                            }
                            Err(e) => return Err(self.io(&name, "stat", e)),
                        }
                    }
                    Err(e) => return Err(self.io(&name, "mkdir", e)),
                }
                let fd = rustix::fs::openat(
                    &dir,
                    n,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| self.io(&name, "open", e))?;
                self.set_owner_mode(&name, &fd, &meta)?;
                self.set_xattrs(&name, &fd, &meta)?;
                self.dirs.push((full_rel, meta.mtime));
                // Its entries most likely follow: they find it open (`parent` is at
                // `parts` now, so this is `parts` + `last`).
                let gid = if self.as_root {
                    meta.gid
                } else {
                    self.gid // never asked when not root: nothing is chowned then
                };
                self.open.push(OpenDir {
                    name: last,
                    fd: Rc::new(fd),
                    gid,
                });
            }
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => {
                let create = || {
                    rustix::fs::openat(
                        &dir,
                        n,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o600),
                    )
                };
                // Made new (O_EXCL: never through a symlink); whatever stood there first
                // is cleared only when something does.
                let fd = match create() {
                    Err(Errno::EXIST) => {
                        self.clear(&name, &dir, &last, true)?;
                        create()
                    }
                    r => r,
                }
                .map_err(|e| self.io(&name, "create", e))?;
                let mut file = std::fs::File::from(fd);
                let mut buf = std::mem::take(&mut self.buf);
                let copied = copy(entry, &mut file, &mut buf);
                self.buf = buf;
                let n_bytes = copied.map_err(|(op, e)| {
                    if op == "read"
                        && (e.kind() == std::io::ErrorKind::UnexpectedEof
                            || e.kind() == std::io::ErrorKind::InvalidData
                            || e.kind() == std::io::ErrorKind::InvalidInput)
                    {
                        corrupt(
                            self.layer,
                            format!("entry {:?}: {e}", String::from_utf8_lossy(&name)),
                        )
                    } else {
                        self.io(&name, op, e)
                    }
                })?;
                self.done.bytes += n_bytes;
                if !owned_already {
                    self.set_owner(&name, &file, &meta)?;
                }
                rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
                    .map_err(|e| self.io(&name, "chmod", e))?;
                self.set_xattrs(&name, &file, &meta)?;
                rustix::fs::futimens(&file, &times(meta.mtime))
                    .map_err(|e| self.io(&name, "set times", e))?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                if target.is_empty() {
                    return Err(corrupt(
                        self.layer,
                        format!(
                            "entry {:?}: a symlink to nothing",
                            String::from_utf8_lossy(&name)
                        ),
                    ));
                }
                let make = || rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, n);
                match make() {
                    Err(Errno::EXIST) => {
                        self.clear(&name, &dir, &last, true)?;
                        make()
                    }
                    r => r,
                }
                .map_err(|e| self.io(&name, "symlink", e))?;
                if !owned_already {
                    self.set_owner_at(&name, &dir, n, &meta)?;
                }
                rustix::fs::utimensat(&dir, n, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(&name, "set times", e))?;
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                self.hard_link(&name, &dir, &last, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let (ft, what) = match kind {
                    tar::EntryType::Char => (FileType::CharacterDevice, "a character device"),
                    tar::EntryType::Block => (FileType::BlockDevice, "a block device"),
                    _ => (FileType::Fifo, "a FIFO"),
                };
                if ft != FileType::Fifo && !self.as_root {
                    return Err(self.needs_root(&name, what));
                }
                let h = entry.header();
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                self.clear(&name, &dir, &last, true)?;
                rustix::fs::mknodat(&dir, n, ft, Mode::from_raw_mode(0o600), dev)
                    .map_err(|e| self.io(&name, "mknod", e))?;
                self.set_owner_at(&name, &dir, n, &meta)?;
                // Not a symlink (made just now): chmodat cannot follow anything here.
                rustix::fs::chmodat(&dir, n, Mode::from_raw_mode(meta.mode), AtFlags::empty())
                    .map_err(|e| self.io(&name, "chmod", e))?;
                rustix::fs::utimensat(&dir, n, &times(meta.mtime), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(|e| self.io(&name, "set times", e))?;
            }
            other => {
                return Err(UnpackError::Unsupported {
                    layer: self.layer.clone(),
                    entry: String::from_utf8_lossy(&name).into_owned(),
                    reason: format!("entry type {other:?} cannot be unpacked"),
                });
            }
        }
        Ok(())
    }

    fn needs_root(&self, entry: &[u8], what: &str) -> UnpackError {
        UnpackError::Unsupported {
            layer: self.layer.clone(),
            entry: String::from_utf8_lossy(entry).into_owned(),
            reason: format!("{what} can only be unpacked by root"),
        }
    }

    fn mkdir(&self, entry: &[u8], dir: &OwnedFd, n: &OsStr) -> Result<(), UnpackError> {
        rustix::fs::mkdirat(dir, n, Mode::from_raw_mode(0o700))
            .map_err(|e| self.io(entry, "mkdir", e))
    }

    /// Owner first (chown clears setuid/setgid), then the mode.
    fn set_owner_mode(&self, entry: &[u8], fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        if self.as_root {
            self.set_owner(entry, &fd, meta)?;
        }
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.io(entry, "chmod", e))
    }

    fn set_owner(&self, entry: &[u8], fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        rustix::fs::fchown(
            &fd,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
        )
        .map_err(|e| self.io(entry, "chown", e))
    }

    fn set_owner_at(
        &self,
        entry: &[u8],
        dir: &OwnedFd,
        n: &OsStr,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if !self.as_root {
            return Ok(());
        }
        rustix::fs::chownat(
            dir,
            n,
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| self.io(entry, "chown", e))
    }

    fn set_xattrs(&self, entry: &[u8], fd: impl AsFd, meta: &Meta) -> Result<(), UnpackError> {
        for (k, v) in &meta.xattrs {
            match rustix::fs::fsetxattr(&fd, k.as_str(), v, XattrFlags::empty()) {
                Ok(()) => {}
                // user.* on a file system without them, security.* without the right: as
                // tar does, the content stays and the attribute goes.
                Err(Errno::NOTSUP | Errno::PERM) if !k.starts_with("security.capability") => {
                    tracing::debug!(layer = %self.layer, entry = %String::from_utf8_lossy(entry), xattr = %k, "xattr not settable here; skipped");
                }
                Err(e) => return Err(self.io(entry, "set xattr", e)),
            }
        }
        Ok(())
    }

    /// `name` as a hard link to `target` (a path in the layer); a target only a lower
    /// snapshot has is copied up first.
    fn hard_link(
        &self,
        entry: &[u8],
        dir: &OwnedFd,
        last: &[u8],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let Some((tparts, tlast)) = self.split(target)? else {
            return Err(self.unsafe_entry(entry, "a hard link to the root"));
        };
        let tdir = self.open_dir(entry, &tparts)?;
        let tn = OsStr::from_bytes(&tlast);
        match rustix::fs::statat(&tdir, tn, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => {}
            Err(Errno::NOENT) => self.copy_up(entry, &tdir, tn, &join(&tparts, &tlast))?,
            Err(e) => return Err(self.io(entry, "stat", e)),
        }
        if tparts == self.split(entry)?.map(|s| s.0).unwrap_or_default() && tlast == last {
            return Ok(()); // a link to itself
        }
        let link = || rustix::fs::linkat(&tdir, tn, dir, OsStr::from_bytes(last), AtFlags::empty());
        match link() {
            Err(Errno::EXIST) => {
                self.clear(entry, dir, last, false)?;
                link()
            }
            r => r,
        }
        .map_err(|e| self.io(entry, "link", e))
    }

    /// Copies the regular file `rel` of the nearest lower snapshot that has one into this
    /// layer as `tdir/tn`, with its owner, mode and times.
    fn copy_up(
        &self,
        entry: &[u8],
        tdir: &OwnedFd,
        tn: &OsStr,
        rel: &[u8],
    ) -> Result<(), UnpackError> {
        for lower in self.lower_dirs.get_or_init(|| (self.lowers)()) {
            let Ok(root) = rustix::fs::open(
                lower,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) else {
                continue;
            };
            let src = match in_root(|| {
                rustix::fs::openat2(
                    &root,
                    OsStr::from_bytes(rel),
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                )
            }) {
                Ok(f) => f,
                Err(Errno::NOENT) => continue,
                Err(Errno::LOOP) => {
                    return Err(
                        self.unsafe_entry(entry, "a hard link to a symlink of a lower layer")
                    );
                }
                Err(e) => return Err(self.io(entry, "open lower", e)),
            };
            let st = rustix::fs::fstat(&src).map_err(|e| self.io(entry, "stat lower", e))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err(self.unsafe_entry(
                    entry,
                    "a hard link to something in a lower layer that is no regular file",
                ));
            }
            let dst = rustix::fs::openat(
                tdir,
                tn,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| self.io(entry, "copy up", e))?;
            let (mut from, mut to) = (std::fs::File::from(src), std::fs::File::from(dst));
            std::io::copy(&mut from, &mut to).map_err(|e| self.io(entry, "copy up", e))?;
            if self.as_root {
                rustix::fs::fchown(
                    &to,
                    Some(Uid::from_raw(st.st_uid)),
                    Some(Gid::from_raw(st.st_gid)),
                )
                .map_err(|e| self.io(entry, "chown", e))?;
            }
            rustix::fs::fchmod(&to, Mode::from_raw_mode(st.st_mode & 0o7777))
                .map_err(|e| self.io(entry, "chmod", e))?;
            let mtime = Timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec as _,
            };
            rustix::fs::futimens(&to, &times(mtime)).map_err(|e| self.io(entry, "set times", e))?;
            return Ok(());
        }
        Err(self.unsafe_entry(
            entry,
            format!(
                "a hard link to {:?}, which neither this layer nor a lower one has",
                String::from_utf8_lossy(rel)
            ),
        ))
    }

    /// Sets the directories' times, deepest first, once nothing more is written in them.
    fn finish_dirs(mut self) -> Result<Applied, UnpackError> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|(p, _)| {
            std::cmp::Reverse(p.iter().filter(|b| **b == b'/').count() + usize::from(!p.is_empty()))
        });
        for (rel, mtime) in dirs {
            let fd = if rel.is_empty() {
                rustix::io::dup(&self.root).map_err(|e| self.io(b"/", "open", e))?
            } else {
                match in_root(|| {
                    rustix::fs::openat2(
                        &self.root,
                        OsStr::from_bytes(&rel),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
                    )
                }) {
                    Ok(fd) => fd,
                    // Replaced by a later entry (a whiteout, a file): nothing to time.
                    Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                    Err(e) => return Err(self.io(&rel, "open", e)),
                }
            };
            rustix::fs::futimens(&fd, &times(mtime)).map_err(|e| self.io(&rel, "set times", e))?;
        }
        Ok(self.done)
    }
}

/// Copies `from` to `to` through `buf`, writing each read as it comes (a streamed layer's
/// read returns what has arrived; nothing waits for the buffer to fill). The error says
/// which side failed.
fn copy(
    from: &mut impl Read,
    to: &mut std::fs::File,
    buf: &mut [u8],
) -> Result<u64, (&'static str, std::io::Error)> {
    let mut total = 0;
    loop {
        let n = match from.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(("read", e)),
        };
        to.write_all(&buf[..n]).map_err(|e| ("write", e))?;
        total += n as u64;
    }
}

/// `openat2` with `RESOLVE_IN_ROOT` answers EAGAIN when a rename anywhere on the system
/// raced its `..` walk: asked again, a few times.
fn in_root<T>(mut open: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    let mut tries = 0;
    loop {
        match open() {
            Err(Errno::AGAIN) if tries < 16 => tries += 1,
            r => return r,
        }
    }
}

fn join(parts: &[Vec<u8>], last: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in parts {
        out.extend_from_slice(p);
        out.push(b'/');
    }
    out.extend_from_slice(last);
    out
}

fn times(mtime: Timespec) -> Timestamps {
    Timestamps {
        last_access: mtime,
        last_modification: mtime,
    }
}

/// PAX `mtime`: seconds with an optional fraction (`1700000000.123456789`).
fn pax_time(text: &str) -> Option<Timespec> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(Timespec { tv_sec, tv_nsec })
}

/// Removes everything inside the directory `dir` (never following a symlink).
fn remove_tree(dir: &OwnedFd) -> std::io::Result<()> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir)? {
        let e = e?;
        let n = e.file_name().to_bytes().to_vec();
        if n != b"." && n != b".." {
            names.push((n, e.file_type()));
        }
    }
    for (n, t) in names {
        let name = OsStr::from_bytes(&n);
        if t == FileType::Directory {
            let sub = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            remove_tree(&sub)?;
            rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
        } else {
            rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
        }
    }
    Ok(())
}

fn io_err(
    layer: &Digest,
    entry: &str,
    op: &'static str,
    e: impl Into<std::io::Error>,
) -> UnpackError {
    UnpackError::Io {
        layer: layer.clone(),
        entry: entry.to_owned(),
        op,
        source: e.into(),
    }
}

fn corrupt(layer: &Digest, reason: String) -> UnpackError {
    UnpackError::Corrupt {
        layer: layer.clone(),
        reason,
    }
}
