//! The image config's `User` resolved the way runc/containerd resolve it: `name`, `uid`,
//! `name:group`, `uid:gid` and mixes, names looked up in the image's own `/etc/passwd`
//! and `/etc/group` — opened inside the mounted rootfs with `openat2(RESOLVE_IN_ROOT)`,
//! so an absolute symlink in the image (`/etc/passwd -> /etc/shadow`) stays in it.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// The most read of `/etc/passwd` or `/etc/group`.
const MAX_FILE: u64 = 1 << 20;

/// uid, gid and additional gids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// `/etc/passwd` or `/etc/group` of the image: its `:`-separated lines (empty when absent).
fn read_table(rootfs: &Path, file: &str) -> Result<Vec<Vec<String>>, String> {
    let dir = rustix::fs::open(rootfs, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .map_err(|e| format!("opening {}: {e}", rootfs.display()))?;
    let fd = match rustix::fs::openat2(
        &dir,
        file,
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(Vec::new()),
        Err(e) => return Err(format!("opening the image's /{file}: {e}")),
    };
    let mut text = String::new();
    std::fs::File::from(fd)
        .take(MAX_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading the image's /{file}: {e}"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect())
        .collect())
}

/// Resolves `spec` (the config's `User`) in `rootfs`.
pub fn resolve(spec: &str, rootfs: &Path) -> Result<User, String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_table(rootfs, "etc/passwd")?;
    let groups = read_table(rootfs, "etc/group")?;
    let field = |entry: &[String], i: usize| entry.get(i).and_then(|f| f.parse::<u32>().ok());
    let (uid, mut gid, name) = if user.is_empty() {
        (0, 0, Some("root".to_owned()))
    } else if let Ok(uid) = user.parse::<u32>() {
        let entry = passwd.iter().find(|e| field(e, 2) == Some(uid));
        (
            uid,
            entry.and_then(|e| field(e, 3)).unwrap_or(0),
            entry.map(|e| e[0].clone()),
        )
    } else {
        let entry = passwd
            .iter()
            .find(|e| e[0] == user)
            .ok_or_else(|| format!("user {user:?} is not in the image's /etc/passwd"))?;
        let uid = field(entry, 2)
            .ok_or_else(|| format!("user {user:?}: bad uid in the image's /etc/passwd"))?;
        (uid, field(entry, 3).unwrap_or(0), Some(user.to_owned()))
    };
    if let Some(g) = group.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|e| e[0] == g)
                .and_then(|e| field(e, 2))
                .ok_or_else(|| format!("group {g:?} is not in the image's /etc/group"))?,
        };
    }
    let mut additional_gids: Vec<u32> = match (&name, group) {
        // An explicit group replaces the supplementary ones, as in runc.
        (Some(name), None) => groups
            .iter()
            .filter(|e| e.get(3).is_some_and(|m| m.split(',').any(|m| m == name)))
            .filter_map(|e| field(e, 2))
            .filter(|&g| g != gid)
            .collect(),
        _ => Vec::new(),
    };
    additional_gids.sort_unstable();
    additional_gids.dedup();
    Ok(User {
        uid,
        gid,
        additional_gids,
    })
}
