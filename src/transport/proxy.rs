//! A running `skopeo experimental-image-proxy` with one image open. The child process is
//! bound to the pull: dropping a [`Source`] (the pull finished, failed or was cancelled)
//! kills it through a pidfd, and it dies with the daemon (parent-death signal).

use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::pin::Pin;
use std::process::Command;

use containers_image_proxy::{ImageProxy, ImageProxyConfig, OpenedImage, oci_spec};
use tokio::io::AsyncReadExt;

use super::embedded::{self, Embedded};
use super::{ImportPolicy, SourceRef, TransportError};
use crate::names::{Digest, ImageName};
use crate::oci::{self, Descriptor, Manifest};

/// The image a source holds, as the store will keep it.
#[derive(Debug, Clone)]
pub struct LocalImage {
    /// The OCI manifest (the proxy converts Docker ones) and its bytes.
    pub descriptor: Descriptor,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
    /// The digest the names are recorded as pulled by: the layout's index for a
    /// multi-arch image, else the manifest.
    pub pulled_by: Digest,
    pub names: Vec<ImageName>,
}

/// Kills the skopeo process it names when dropped (a pidfd never names another process,
/// so one that already exited is harmless).
struct Child(Option<OwnedFd>);

impl Drop for Child {
    fn drop(&mut self) {
        if let Some(pidfd) = &self.0 {
            let _ = rustix::process::pidfd_send_signal(pidfd, rustix::process::Signal::KILL);
        }
    }
}

/// An open image behind a skopeo proxy process.
pub struct Source {
    proxy: Option<ImageProxy>,
    opened: Option<OpenedImage>,
    label: String,
    image: LocalImage,
    _child: Child,
}

impl Source {
    /// Starts skopeo, opens the image `src` names (already admitted by the policy) and
    /// reads its manifest and names.
    pub async fn open(policy: &ImportPolicy, src: &SourceRef) -> Result<Source, TransportError> {
        let label = src.to_string();
        let src2 = src.clone();
        let embedded = tokio::task::spawn_blocking(move || embedded::read(&src2))
            .await
            .map_err(|e| TransportError::Unreadable {
                source_ref: label.clone(),
                reason: e.to_string(),
            })??;
        let (proxy, child) = spawn(policy).await?;
        let opened = proxy
            .open_image(&label)
            .await
            .map_err(|e| open_error(&label, e))?;
        let (_, bytes) = proxy
            .fetch_manifest_raw_oci(&opened)
            .await
            .map_err(|e| open_error(&label, e))?;
        let image = image_of(&label, bytes, embedded)?;
        Ok(Source {
            proxy: Some(proxy),
            opened: Some(opened),
            label,
            image,
            _child: child,
        })
    }

    pub fn image(&self) -> &LocalImage {
        &self.image
    }

    fn proxy(&self) -> &ImageProxy {
        self.proxy.as_ref().expect("proxy is present until finish")
    }

    /// Opens blob `d` for reading. The proxy checks digest and size too (its verdict comes
    /// with [`Blob::finish`]), but the caller must verify what it reads regardless.
    pub async fn blob(&self, d: &Descriptor) -> Result<Blob<'_>, TransportError> {
        let digest = oci_spec::image::Digest::try_from(d.digest.as_str())
            .map_err(|e| self.invalid(format!("digest {}: {e}", d.digest)))?;
        let opened = self.opened.as_ref().expect("open sets the image");
        let (reader, driver) = self
            .proxy()
            .get_blob(opened, &digest, d.size)
            .await
            .map_err(|e| unreadable(&self.label, e))?;
        Ok(Blob {
            source: self,
            descriptor: d.clone(),
            reader: Box::new(reader),
            driver: Box::pin(driver),
            verdict: None,
            buf: vec![0u8; 1 << 20],
            total: 0,
        })
    }

    /// Closes the image and lets skopeo exit normally.
    pub async fn finish(mut self) {
        let (Some(proxy), opened) = (self.proxy.take(), self.opened.take()) else {
            return;
        };
        if let Some(img) = opened {
            let _ = proxy.close_image(&img).await;
        }
        if let Err(e) = proxy.finalize().await {
            tracing::debug!(source = %self.label, error = %e, "skopeo proxy did not exit cleanly");
        }
    }

    fn invalid(&self, reason: String) -> TransportError {
        TransportError::InvalidContent {
            source_ref: self.label.clone(),
            reason,
        }
    }

    fn unreadable(&self, reason: String) -> TransportError {
        TransportError::Unreadable {
            source_ref: self.label.clone(),
            reason,
        }
    }
}

/// One blob being read from the proxy.
pub struct Blob<'a> {
    source: &'a Source,
    descriptor: Descriptor,
    reader: Box<dyn tokio::io::AsyncBufRead + Send + Unpin>,
    driver: Pin<Box<dyn Future<Output = containers_image_proxy::Result<()>> + Send + 'a>>,
    verdict: Option<containers_image_proxy::Result<()>>,
    buf: Vec<u8>,
    total: u64,
}

impl Blob<'_> {
    /// The next chunk; `None` at the end. More bytes than the descriptor's size is an error.
    ///
    /// skopeo closes the pipe only when asked to finish it, so the finishing request
    /// (`driver`) runs alongside the reads.
    pub async fn next(&mut self) -> Result<Option<&[u8]>, TransportError> {
        let d = &self.descriptor;
        let n = loop {
            tokio::select! {
                r = self.reader.read(&mut self.buf) => {
                    break r.map_err(|e| self.source.unreadable(format!("blob {}: {e}", d.digest)))?;
                }
                verdict = &mut self.driver, if self.verdict.is_none() => {
                    self.verdict = Some(verdict);
                }
            }
        };
        self.total += n as u64;
        if self.total > d.size {
            return Err(self.source.invalid(format!(
                "blob {} is longer than its {} bytes",
                d.digest, d.size
            )));
        }
        Ok((n > 0).then(|| &self.buf[..n]))
    }

    /// The proxy's own verdict on the blob (its digest and size check), after everything
    /// was read.
    pub async fn finish(self) -> Result<(), TransportError> {
        let verdict = match self.verdict {
            Some(v) => v,
            None => self.driver.await,
        };
        verdict.map_err(|e| {
            self.source
                .invalid(format!("blob {}: {e}", self.descriptor.digest))
        })
    }
}

/// Validates the manifest the proxy gave and describes the image as it will be stored.
fn image_of(label: &str, bytes: Vec<u8>, embedded: Embedded) -> Result<LocalImage, TransportError> {
    let invalid = |reason: String| TransportError::InvalidContent {
        source_ref: label.to_owned(),
        reason,
    };
    let bytes = match &embedded.original_config {
        Some(config) => {
            with_config(&bytes, config).map_err(|e| invalid(format!("manifest: {e}")))?
        }
        None => bytes,
    };
    let manifest = match oci::manifest::parse(&bytes, Some(oci::media::OCI_MANIFEST)) {
        Ok(oci::Parsed::Manifest(m)) => m,
        Ok(oci::Parsed::Index(_)) => {
            return Err(invalid(
                "the proxy returned an index, not a manifest".into(),
            ));
        }
        Err(e) => return Err(invalid(format!("manifest: {e}"))),
    };
    let descriptor = Descriptor {
        media_type: crate::oci::media::intern(&manifest.media_type),
        digest: Digest::of(&bytes),
        size: bytes.len() as u64,
    };
    if let Some(allowed) = &embedded.manifest_digests
        && !allowed.contains(&descriptor.digest)
    {
        return Err(invalid(format!(
            "manifest does not match its digest in index.json (its bytes hash to {}, expected {})",
            descriptor.digest,
            allowed
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    let (descriptor, bytes) = oci::convert::for_layout(&descriptor, &bytes)
        .map_err(|e| invalid(format!("manifest: {e}")))?;
    Ok(LocalImage {
        pulled_by: embedded
            .index_digest
            .unwrap_or_else(|| descriptor.digest.clone()),
        names: embedded.names,
        descriptor,
        bytes,
        manifest,
    })
}

/// The manifest with its config descriptor replaced by `config`.
fn with_config(bytes: &[u8], config: &Descriptor) -> Result<Vec<u8>, serde_json::Error> {
    let mut doc: serde_json::Value = serde_json::from_slice(bytes)?;
    doc["config"] = serde_json::json!({
        "mediaType": oci::media::OCI_CONFIG,
        "digest": config.digest.as_str(),
        "size": config.size,
    });
    serde_json::to_vec(&doc)
}

/// Starts the proxy and returns it with a pidfd of the skopeo process.
///
/// The crate spawns skopeo itself and does not say its PID, so the child writes it into a
/// pipe before exec. That needs `pre_exec`: the one `unsafe` block in cri-imaged.
#[allow(unsafe_code)]
async fn spawn(policy: &ImportPolicy) -> Result<(ImageProxy, Child), TransportError> {
    let (mut pid_reader, pid_writer) = std::io::pipe().map_err(|e| missing(policy, e))?;
    let wfd = pid_writer.as_raw_fd();
    let mut cmd = Command::new(&policy.skopeo);
    // SAFETY: between fork and exec the closure makes three raw system calls (prctl,
    // getpid, write to a pipe the parent keeps open until spawn returns): no allocation,
    // no locks, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            let pid = rustix::process::getpid().as_raw_nonzero().get();
            rustix::io::write(BorrowedFd::borrow_raw(wfd), &pid.to_ne_bytes())?;
            Ok(())
        });
    }
    let mut config = ImageProxyConfig::default();
    config.skopeo_cmd = Some(cmd);
    config.auth_anonymous = true;
    let result = ImageProxy::new_with_config(config).await;
    drop(pid_writer);
    let spawned = !matches!(
        result,
        Err(containers_image_proxy::Error::SkopeoSpawnError(_))
    );
    // The child wrote its PID before exec; a failed spawn may have written one of a
    // process already gone, which must not be signalled.
    let mut pid = [0u8; 4];
    let child = Child(if spawned && pid_reader.read_exact(&mut pid).is_ok() {
        rustix::process::Pid::from_raw(i32::from_ne_bytes(pid))
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok())
    } else {
        None
    });
    match result {
        Ok(proxy) => Ok((proxy, child)),
        Err(containers_image_proxy::Error::SkopeoSpawnError(e)) => Err(missing(policy, e)),
        Err(e) => {
            drop(child);
            Err(TransportError::SkopeoMissing {
                skopeo: policy.skopeo.clone(),
                reason: format!("its image proxy did not start: {e}"),
            })
        }
    }
}

fn missing(policy: &ImportPolicy, e: std::io::Error) -> TransportError {
    TransportError::SkopeoMissing {
        skopeo: policy.skopeo.clone(),
        reason: e.to_string(),
    }
}

fn unreadable(label: &str, e: containers_image_proxy::Error) -> TransportError {
    TransportError::Unreadable {
        source_ref: label.to_owned(),
        reason: e.to_string(),
    }
}

/// An image that cannot be opened is usually simply not there.
fn open_error(label: &str, e: containers_image_proxy::Error) -> TransportError {
    let reason = e.to_string();
    let lower = reason.to_lowercase();
    let missing = [
        "no such file",
        "not found",
        "no descriptor found",
        "does not exist",
        "does not match any",
    ];
    if missing.iter().any(|m| lower.contains(m)) {
        TransportError::NoSuchImage {
            source_ref: label.to_owned(),
            reason,
        }
    } else {
        TransportError::Unreadable {
            source_ref: label.to_owned(),
            reason,
        }
    }
}
