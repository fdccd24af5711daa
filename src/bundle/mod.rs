//! `cri-imaged bundle IMAGE DIR`: an OCI runtime bundle of a pulled image, so that
//! `cd DIR && runc run ID` runs it; `cri-imaged bundle --remove DIR` frees it. Only a
//! client of the daemon (which holds the store's lock): the mount API on the admin
//! socket prepares a container snapshot and answers its overlay mount and the image
//! config; this mounts it as `DIR/rootfs` and writes `DIR/config.json` (`spec.rs`, the
//! user resolved inside the rootfs by `user.rs`). While the bundle exists its image's
//! snapshots stay, even if the image is removed.

mod spec;
#[cfg(test)]
mod tests;
mod user;

use std::ffi::CString;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::admin::client::{self, ClientError};
use crate::image::containers::Mount;

/// The largest mount data the kernel takes (one page, less the terminating NUL).
const MAX_MOUNT_DATA: usize = 4095;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Daemon(#[from] ClientError),
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is a bundle already (remove it with `cri-imaged bundle --remove {}`)", dir.display(), dir.display())]
    Exists { dir: PathBuf },
    #[error("{} is not a bundle made by cri-imaged: {reason}", dir.display())]
    NotABundle { dir: PathBuf, reason: String },
    #[error("mounting the image's layers on {}: {reason}", target.display())]
    Mount { target: PathBuf, reason: String },
    #[error("the runtime spec of image {image}: {reason}")]
    Spec { image: String, reason: String },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| BundleError::Io { op, path, source }
}

/// The container snapshot's key for the bundle in `dir` (an absolute path).
fn key_of(dir: &Path) -> String {
    let hash = Sha256::digest(dir.as_os_str().as_encoded_bytes());
    format!("bundle-{}", &hex::encode(hash)[..24])
}

/// `dir` made absolute (it need not exist).
fn absolute(dir: &Path) -> Result<PathBuf, BundleError> {
    std::path::absolute(dir).map_err(io("resolving", dir))
}

/// Makes the bundle of `image` in `dir`.
pub async fn create(socket: &Path, image: &str, dir: &Path) -> Result<PathBuf, BundleError> {
    let dir = absolute(dir)?;
    let (rootfs, config) = (dir.join("rootfs"), dir.join("config.json"));
    if config.exists() {
        return Err(BundleError::Exists { dir });
    }
    std::fs::create_dir_all(&rootfs).map_err(io("creating", &rootfs))?;
    if std::fs::read_dir(&rootfs)
        .map_err(io("reading", &rootfs))?
        .next()
        .is_some()
    {
        return Err(BundleError::Exists { dir });
    }
    let key = key_of(&dir);
    let prepared = client::prepare_container(socket, &key, image).await?;
    let made = (|| {
        for m in &prepared.mounts {
            mount(m, &rootfs)?;
        }
        let spec = spec::runtime_spec(&prepared.image_config, &rootfs, &key).map_err(|reason| {
            BundleError::Spec {
                image: image.to_owned(),
                reason,
            }
        })?;
        let tmp = dir.join(".config.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&spec).unwrap_or_default())
            .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &config).map_err(io("renaming", &tmp))
    })();
    if let Err(e) = made {
        let _ = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH);
        let _ = client::remove_container(socket, &key).await;
        let _ = std::fs::remove_dir(&rootfs);
        return Err(e);
    }
    Ok(dir)
}

/// Mounts `m` (an overlay from the mount API) on `target`. Lower directories that do not
/// fit one page of mount data are given relative to their common parent, entered first.
fn mount(m: &Mount, target: &Path) -> Result<(), BundleError> {
    let fail = |reason: String| BundleError::Mount {
        target: target.to_owned(),
        reason,
    };
    if m.kind != "overlay" {
        return Err(fail(format!("mount type {:?} is not overlay", m.kind)));
    }
    let mut data = m.options.join(",");
    let mut entered = None;
    if data.len() > MAX_MOUNT_DATA {
        let (short, parent) = relative_lowers(&m.options).ok_or_else(|| {
            fail(format!(
                "{} bytes of overlay options do not fit a page",
                data.len()
            ))
        })?;
        data = short;
        entered = Some(std::env::current_dir().map_err(|e| fail(e.to_string()))?);
        std::env::set_current_dir(&parent).map_err(|e| fail(e.to_string()))?;
    }
    let data = CString::new(data).map_err(|e| fail(e.to_string()))?;
    let mounted = rustix::mount::mount(
        m.source.as_str(),
        target,
        "overlay",
        rustix::mount::MountFlags::empty(),
        data.as_c_str(),
    );
    if let Some(back) = entered {
        let _ = std::env::set_current_dir(back);
    }
    mounted.map_err(|e| fail(format!("mount(2): {e}")))
}

/// The options with every lower directory relative to their common parent, and that
/// parent; `None` if that still does not fit.
fn relative_lowers(options: &[String]) -> Option<(String, PathBuf)> {
    let lowers = options.iter().find_map(|o| o.strip_prefix("lowerdir="))?;
    let dirs: Vec<&Path> = lowers.split(':').map(Path::new).collect();
    let parent = dirs.first()?.parent()?.parent()?.to_owned();
    let rel: Vec<String> = dirs
        .iter()
        .map(|d| {
            d.strip_prefix(&parent)
                .ok()
                .map(|r| r.display().to_string())
        })
        .collect::<Option<_>>()?;
    let short: Vec<String> = options
        .iter()
        .map(|o| {
            if o.starts_with("lowerdir=") {
                format!("lowerdir={}", rel.join(":"))
            } else {
                o.clone()
            }
        })
        .collect();
    let data = short.join(",");
    (data.len() <= MAX_MOUNT_DATA).then_some((data, parent))
}

/// Unmounts and frees the bundle in `dir`; its `config.json` and `rootfs` go, `dir` stays.
pub async fn remove(socket: &Path, dir: &Path) -> Result<(), BundleError> {
    let dir = absolute(dir)?;
    let (rootfs, config) = (dir.join("rootfs"), dir.join("config.json"));
    let key = match std::fs::read(&config) {
        Ok(bytes) => serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| {
                v["annotations"][spec::KEY_ANNOTATION]
                    .as_str()
                    .map(str::to_owned)
            })
            .ok_or_else(|| BundleError::NotABundle {
                dir: dir.clone(),
                reason: format!("config.json has no {} annotation", spec::KEY_ANNOTATION),
            })?,
        // A bundle whose config.json was never written (or is gone): its key by its path.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => key_of(&dir),
        Err(e) => return Err(io("reading", &config)(e)),
    };
    match rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::empty()) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => {
            return Err(BundleError::Mount {
                target: rootfs,
                reason: format!("umount(2): {e} (is a container still running in it?)"),
            });
        }
    }
    client::remove_container(socket, &key).await?;
    match std::fs::remove_file(&config) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("removing", &config)(e)),
    }
    match std::fs::remove_dir(&rootfs) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io("removing", &rootfs)(e)),
    }
}
