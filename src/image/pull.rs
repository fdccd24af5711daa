//! PullImage: resolve the name, try each candidate, and bring the node's manifest, its
//! config and layers into the store, verified, once per blob however many callers ask.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures_util::TryStreamExt;

use super::{Error, ImageMeta, ImageService, Inner, flight};
use crate::names::{self, ImageId, ImageName, Resolved};
use crate::oci::{self, Descriptor};
use crate::registry::{AuthFields, Credentials, Session};
use crate::store::{ManifestBlobs, NameRecord, StoreError};

/// A pull request without gRPC types.
#[derive(Clone, Default)]
pub struct PullRequest {
    /// `[transport:]name`, as the client sent it.
    pub image: String,
    pub auth: Option<AuthFields>,
}

/// Splits `docker://name` into its transport; a name without one gets the default.
fn split_transport<'a>(image: &'a str, default: &'a str) -> (&'a str, &'a str) {
    if let Some(rest) = image.strip_prefix("docker://") {
        return ("docker", rest);
    }
    // A transport prefix is a containers/image transport name and a colon, e.g.
    // `oci-archive:/x`; `host:5000/repo` and `repo:tag` are names.
    if let Some((t, rest)) = image.split_once(':') {
        let known = [
            "oci",
            "oci-archive",
            "docker-archive",
            "dir",
            "containers-storage",
            "docker-daemon",
        ];
        if known.contains(&t) {
            return (t, rest);
        }
    }
    (default, image)
}

impl ImageService {
    /// Pulls an image and returns its ID (the config digest).
    pub async fn pull(&self, req: PullRequest) -> Result<ImageId, Error> {
        if req.image.is_empty() {
            return Err(Error::EmptyName);
        }
        let (transport, name) = split_transport(&req.image, &self.inner.settings.default_transport);
        if transport != "docker" {
            return Err(Error::UnsupportedTransport {
                image: req.image.clone(),
                transport: transport.to_owned(),
            });
        }
        let creds = match &req.auth {
            Some(a) => Credentials::from_fields(a).map_err(|source| Error::Credentials {
                image: req.image.clone(),
                source,
            })?,
            None => Credentials::Anonymous,
        };
        let store = &self.inner.store;
        let candidates = match names::resolve(name, &self.inner.settings.registries, |p| {
            store.find_id_prefix(p)
        })? {
            Resolved::Id(id) => return Ok(id),
            Resolved::Names(c) => c,
        };
        let mut failures = Vec::new();
        for candidate in &candidates {
            // Credentials naming another registry are not sent to this one.
            let creds = match &req.auth {
                Some(a) if !a.applies_to(candidate.registry()) => Credentials::Anonymous,
                _ => creds.clone(),
            };
            match self.pull_name(candidate, &creds).await {
                Ok(id) => return Ok(id),
                Err(e) if candidates.len() == 1 => return Err(e),
                Err(e) => {
                    tracing::debug!(candidate = %candidate, error = %e, "candidate failed");
                    failures.push((candidate.to_string(), Arc::new(e)));
                }
            }
        }
        Err(Error::AllCandidatesFailed {
            image: name.to_owned(),
            failures,
        })
    }

    /// Pulls one qualified name; joins a pull of the same name with the same credentials
    /// that is already running.
    async fn pull_name(&self, name: &ImageName, creds: &Credentials) -> Result<ImageId, Error> {
        let mut h = DefaultHasher::new();
        creds.hash(&mut h);
        let key = format!("{name}#{:x}", h.finish());
        let inner = self.inner.clone();
        let (name, creds) = (name.clone(), creds.clone());
        let result = self
            .inner
            .pulls
            .run(key, move || async move {
                let image = name.to_string();
                let token = inner.shutdown.clone();
                let task = tokio::spawn(async move {
                    tokio::select! {
                        r = pull_task(inner, name, creds) => r,
                        () = token.cancelled() => Err(Error::ShuttingDown { image: image.clone() }),
                    }
                });
                // When every waiter is gone, the pull stops (and with it its downloads).
                let _abort = flight::AbortOnDrop(task.abort_handle());
                match task.await {
                    Ok(r) => r.map_err(Arc::new),
                    Err(e) => Err(Arc::new(Error::Internal(format!("pull task failed: {e}")))),
                }
            })
            .await
            .0;
        result.map_err(Error::Shared)
    }
}

async fn pull_task(
    inner: Arc<Inner>,
    name: ImageName,
    creds: Credentials,
) -> Result<ImageId, Error> {
    let started = std::time::Instant::now();
    let (session, fetched) = inner
        .registry
        .open(&name, &creds)
        .await
        .map_err(|e| Error::from_registry(&name, e))?;
    let session = Arc::new(session);
    let m = &fetched.manifest;
    // Docker manifests are stored as OCI ones, so OCI-layout readers see every image.
    let (stored, stored_bytes) = oci::convert::for_layout(&fetched.descriptor, &fetched.bytes)
        .map_err(|e| {
            invalid(
                &name,
                format!("manifest {}: {e}", fetched.descriptor.digest),
            )
        })?;
    let blobs = ManifestBlobs {
        manifest: stored.clone(),
        config: m.config.clone(),
        layers: m.layers.clone(),
    };
    let lease = inner.store.lease(blobs.all().map(|d| d.digest.clone()));
    if m.config.size > oci::manifest::MAX_DOCUMENT_BYTES as u64 {
        return Err(invalid(
            &name,
            format!("config {} is {} bytes", m.config.digest, m.config.size),
        ));
    }
    let store_err = |source| Error::Store {
        image: name.to_string(),
        source,
    };

    fetch_blob(&inner, &session, &name, &m.config).await?;
    let config_bytes = inner
        .store
        .read_blob(&m.config.digest)
        .await
        .map_err(store_err)?;
    let config = oci::manifest::parse_config(&config_bytes)
        .map_err(|e| invalid(&name, format!("config {}: {e}", m.config.digest)))?;

    let present =
        futures_util::future::join_all(m.layers.iter().map(|l| inner.store.has_blob(l))).await;
    let skipped = present.iter().filter(|p| **p).count();
    futures_util::future::try_join_all(
        m.layers
            .iter()
            .map(|l| fetch_blob(&inner, &session, &name, l)),
    )
    .await?;
    inner
        .store
        .put_blob(&stored, &stored_bytes)
        .await
        .map_err(|e| blob_err(&name, e))?;

    let id = ImageId::new(m.config.digest.clone());
    let record = NameRecord {
        name: name.clone(),
        manifest: stored,
        pulled_by: fetched.pulled_by.clone(),
    };
    inner
        .store
        .add_name(&id, &blobs, record, lease)
        .await
        .map_err(store_err)?;
    inner
        .cache
        .insert(id.clone(), ImageMeta { user: config.user });
    tracing::info!(
        image = %name,
        id = %id,
        bytes = m.content_size(),
        layers = m.layers.len(),
        layers_present = skipped,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "pulled image"
    );
    Ok(id)
}

fn invalid(name: &ImageName, reason: String) -> Error {
    Error::InvalidContent {
        image: name.to_string(),
        source: crate::registry::RegistryError::InvalidContent {
            registry: name.registry().to_owned(),
            reason,
        },
    }
}

/// A blob that failed verification is the registry's fault; anything else is the store's.
fn blob_err(name: &ImageName, e: StoreError) -> Error {
    match e {
        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
            invalid(name, e.to_string())
        }
        source => Error::Store {
            image: name.to_string(),
            source,
        },
    }
}

/// Downloads one blob into the store unless it is there; one download per blob at a time.
async fn fetch_blob(
    inner: &Arc<Inner>,
    session: &Arc<Session>,
    name: &ImageName,
    blob: &Descriptor,
) -> Result<(), Error> {
    if inner.store.has_blob(blob).await {
        return Ok(());
    }
    // A download another pull started runs with that pull's registry and credentials: if
    // it fails, try once more with ours before giving up.
    for joined_attempt in [true, false] {
        let (inner2, session, name2, blob2) =
            (inner.clone(), session.clone(), name.clone(), blob.clone());
        let (result, led) = inner
            .blobs
            .run(blob.digest.to_string(), move || async move {
                download(&inner2, &session, &name2, &blob2)
                    .await
                    .map_err(Arc::new)
            })
            .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if !led && joined_attempt => {
                tracing::debug!(image = %name, blob = %blob.digest, error = %e, "joined download failed; retrying with this pull's session");
            }
            Err(e) => return Err(Error::Shared(e)),
        }
    }
    Err(Error::Internal(format!(
        "download of {} gave no result",
        blob.digest
    )))
}

async fn download(
    inner: &Inner,
    session: &Session,
    name: &ImageName,
    blob: &Descriptor,
) -> Result<(), Error> {
    if inner.store.has_blob(blob).await {
        return Ok(());
    }
    let _permit = inner
        .downloads
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut stream = session
        .fetch_blob(name, blob)
        .await
        .map_err(|e| Error::from_registry(name, e))?;
    let mut ingest = inner
        .store
        .ingest(blob)
        .await
        .map_err(|e| blob_err(name, e))?;
    while let Some(chunk) = stream
        .try_next()
        .await
        .map_err(|e| Error::from_registry(name, e))?
    {
        ingest.write(chunk).await.map_err(|e| blob_err(name, e))?;
    }
    inner
        .store
        .commit(ingest)
        .await
        .map_err(|e| blob_err(name, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_are_split_from_names() {
        let cases = [
            ("busybox", ("docker", "busybox")),
            ("docker://busybox", ("docker", "busybox")),
            ("localhost:5000/a:1", ("docker", "localhost:5000/a:1")),
            ("busybox:1", ("docker", "busybox:1")),
            ("oci-archive:/x.tar", ("oci-archive", "/x.tar")),
            ("oci:/dir:ref", ("oci", "/dir:ref")),
        ];
        for (input, want) in cases {
            assert_eq!(split_transport(input, "docker"), want, "{input}");
        }
    }
}
