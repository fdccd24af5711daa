//! Where the file system places a snapshot's inodes: the directories that hold whole,
//! unrelated trees (`snapshots/`, `containers/`) are marked as tops of directory
//! hierarchies (`FS_TOPDIR_FL`, `chattr +T`), so ext4's Orlov allocator starts each new
//! tree in a block group of its own choosing instead of packing it beside its siblings.
//!
//! Why: a removed snapshot frees thousands of inodes in the groups around its siblings.
//! On ext4 without a journal, allocation skips every inode freed in the last minute (five,
//! while its table block is dirty) by scanning past it, per new inode — a pull right after a
//! removal spent 60 % of its time there (the debian bench image: 1.6 s on fresh groups,
//! 4.6–11 s in the groups just freed). Spread trees also keep concurrent unpacks off one
//! group's bitmap lock on any ext4. The flag is a placement hint only: file systems without
//! it (xfs, btrfs, tmpfs, overlay) answer that they have no such flag, and nothing changes.

use std::path::Path;

use rustix::fs::IFlags;

/// Marks `dir` as holding unrelated trees, where the file system has the flag (then
/// `true`); a file system without it is no error (logged at debug, `false`).
pub fn spread_trees(dir: &Path) -> bool {
    let set = || -> std::io::Result<()> {
        let d = std::fs::File::open(dir)?;
        let flags = rustix::fs::ioctl_getflags(&d)?;
        if !flags.contains(IFlags::TOPDIR) {
            rustix::fs::ioctl_setflags(&d, flags | IFlags::TOPDIR)?;
        }
        Ok(())
    };
    match set() {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!(dir = %dir.display(), error = %e, "no top-directory flag here; trees stay where the file system puts them");
            false
        }
    }
}

/// Whether `dir` carries the flag: `None` where the file system has no inode flags.
#[cfg(test)]
pub fn spreads_trees(dir: &Path) -> Option<bool> {
    let d = std::fs::File::open(dir).ok()?;
    rustix::fs::ioctl_getflags(&d)
        .ok()
        .map(|f| f.contains(IFlags::TOPDIR))
}
