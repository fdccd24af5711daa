//! PullImage: resolve the name, try each candidate, and bring the node's manifest, its
//! config and layers into the store, verified, once per blob however many callers ask.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use futures_util::TryStreamExt;

use super::{Error, ImageMeta, ImageService, Inner, flight, progress, sources, stall};
use crate::names::{ImageId, ImageName, Resolved};
use crate::oci::{self, Descriptor};
use crate::registries::Source;
use crate::registry::{AuthFields, Credentials, RegistryError, Session};
use crate::store::{Ingest, ManifestBlobs, NameRecord, StoreError};
use crate::transport::LocalTransport;

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
        // Transports cri-imaged reads, and two it names only to refuse them clearly.
        let refused = ["containers-storage", "docker-daemon"];
        if LocalTransport::from_name(t).is_some() || refused.contains(&t) {
            return (t, rest);
        }
    }
    (default, image)
}

impl ImageService {
    /// Pulls an image and returns its ID (the config digest). `observe.rs` wraps it.
    pub(super) async fn pull_unobserved(&self, req: PullRequest) -> Result<ImageId, Error> {
        if req.image.is_empty() {
            return Err(Error::EmptyName);
        }
        let (transport, name) = split_transport(&req.image, &self.inner.settings.default_transport);
        if transport != "docker" {
            let Some(local) = LocalTransport::from_name(transport) else {
                return Err(Error::UnsupportedTransport {
                    image: req.image.clone(),
                    transport: transport.to_owned(),
                });
            };
            return self.import(&req.image, local, name).await;
        }
        let creds = match &req.auth {
            Some(a) => Credentials::from_fields(a).map_err(|source| Error::Credentials {
                image: req.image.clone(),
                source,
            })?,
            None => Credentials::Anonymous,
        };
        let store = &self.inner.store;
        let node = self.node();
        let candidates = match self.resolve_input(&node, name, |p| store.find_id_prefix(p), true)? {
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
        let _waiting = self.inner.progress.waiting(&key);
        let (name, creds, key2) = (name.clone(), creds.clone(), key.clone());
        self.single_flight(key, name.to_string(), move |inner| {
            pull_task(inner, name, creds, key2)
        })
        .await
    }

    /// Runs `work` as the one pull for `key` (callers asking for the same key join it) in
    /// its own task: it stops when every caller has gone, or at shutdown.
    pub(super) async fn single_flight<F, Fut>(
        &self,
        key: String,
        image: String,
        work: F,
    ) -> Result<ImageId, Error>
    where
        F: FnOnce(Arc<Inner>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<ImageId, Error>> + Send + 'static,
    {
        let inner = self.inner.clone();
        let result = self
            .inner
            .pulls
            .run(key, move || async move {
                let token = inner.shutdown.clone();
                let task = tokio::spawn(async move {
                    tokio::select! {
                        r = work(inner) => r,
                        () = token.cancelled() => Err(Error::ShuttingDown { image }),
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
    key: String,
) -> Result<ImageId, Error> {
    let started = std::time::Instant::now();
    let progress = inner
        .progress
        .start(&key, &name.to_string(), name.registry());
    let node = inner.node.read().unwrap_or_else(|p| p.into_inner()).clone();
    let planned = sources::plan(&node, &name, &creds)?;
    drop(node);
    let (session, fetched, source) = open_first(&inner, &name, &planned, &progress).await?;
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
    // Refused before a byte of it is fetched (the ingest refuses to grow past the size).
    if m.config.size > oci::manifest::MAX_DOCUMENT_BYTES as u64 {
        return Err(Error::Unsupported {
            image: name.to_string(),
            source: crate::registry::RegistryError::Unsupported {
                registry: name.registry().to_owned(),
                reason: format!(
                    "config {} is {} bytes, more than the {} accepted",
                    m.config.digest,
                    m.config.size,
                    oci::manifest::MAX_DOCUMENT_BYTES
                ),
            },
        });
    }
    let store_err = |source| Error::Store {
        image: name.to_string(),
        source,
    };

    let present =
        futures_util::future::join_all(m.layers.iter().map(|l| inner.store.has_blob(l))).await;
    let config_present = inner.store.has_blob(&m.config).await;
    progress.set_blobs(
        std::iter::once((&m.config, config_present))
            .chain(m.layers.iter().zip(present.iter().copied()))
            .map(|(d, p)| (d.digest.to_string(), d.size, p)),
    );
    let skipped_bytes: u64 = std::iter::once((&m.config, config_present))
        .chain(m.layers.iter().zip(present.iter().copied()))
        .filter(|(_, p)| *p)
        .map(|(d, _)| d.size)
        .sum();
    inner.metrics.skipped(skipped_bytes);

    fetch_blob(&inner, &session, &source.name, &m.config).await?;
    progress.blob_done(&m.config.digest.to_string());
    let config_bytes = inner
        .store
        .read_blob(&m.config.digest)
        .await
        .map_err(store_err)?;
    let config = oci::manifest::parse_config(&config_bytes)
        .map_err(|e| invalid(&name, format!("config {}: {e}", m.config.digest)))?;

    let skipped = present.iter().filter(|p| **p).count();
    futures_util::future::try_join_all(m.layers.iter().map(|l| async {
        fetch_blob(&inner, &session, &source.name, l).await?;
        progress.blob_done(&l.digest.to_string());
        Ok::<_, Error>(())
    }))
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
    let seconds = started.elapsed().as_secs_f64();
    let fetched = m.content_size().saturating_sub(skipped_bytes);
    tracing::info!(
        image = %name,
        id = %id,
        source = %source.name.registry(),
        mirror = source.mirror,
        bytes = m.content_size(),
        fetched_bytes = fetched,
        seconds = format_args!("{seconds:.3}"),
        bytes_per_second = (fetched as f64 / seconds.max(0.001)) as u64,
        layers = m.layers.len(),
        layers_fetched = m.layers.len() - skipped,
        layers_present = skipped,
        "pulled image"
    );
    Ok(id)
}

/// Opens the first source that serves the manifest: mirrors in order, then the primary.
/// A mirror that fails costs one attempt (mirror fallback stays fast); the last source is
/// retried. Blobs then come from the one that answered, and the progress view names it.
async fn open_first(
    inner: &Inner,
    name: &ImageName,
    planned: &[sources::Planned],
    progress: &progress::PullGuard,
) -> Result<(Session, crate::registry::FetchedManifest, Source), Error> {
    for (i, p) in planned.iter().enumerate() {
        progress.set_source(p.source.name.registry());
        let last = i + 1 == planned.len();
        let opened = if last {
            open_retrying(inner, p).await
        } else {
            inner
                .registry
                .open(&p.source.name, &p.creds, &p.tls)
                .await
                .map_err(|e| Error::from_registry(&p.source.name, e))
        };
        match opened {
            Ok((session, fetched)) => {
                if p.source.mirror {
                    tracing::info!(image = %name, mirror = %p.source.name.registry(), from = %p.source.name, "pulling through mirror");
                }
                return Ok((session, fetched, p.source.clone()));
            }
            Err(e) if !last => {
                tracing::warn!(image = %name, source = %p.source.name, mirror = p.source.mirror, error = %e, "source failed; trying the next");
            }
            Err(e) => return Err(e),
        }
    }
    Err(Error::Internal(format!("no source to pull {name} from")))
}

/// Resolves the manifest at one source, retrying what a busy or restarting registry breaks.
async fn open_retrying(
    inner: &Inner,
    p: &sources::Planned,
) -> Result<(Session, crate::registry::FetchedManifest), Error> {
    let name = &p.source.name;
    let policy = inner.settings.retry;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match inner.registry.open(name, &p.creds, &p.tls).await {
            Ok(opened) => return Ok(opened),
            Err(e) if policy.should_retry(attempt, &e) => {
                let delay = policy.delay(attempt, &e);
                tracing::warn!(image = %name, attempt, delay_ms = delay.as_millis() as u64, error = %e, "fetching the manifest failed; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(Error::from_registry(name, e)),
        }
    }
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
            Error::InvalidContent {
                image: name.to_string(),
                source: crate::registry::RegistryError::DigestMismatch {
                    registry: name.registry().to_owned(),
                    reason: e.to_string(),
                },
            }
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

/// Requests for one blob download, whatever progress each made.
const MAX_TRIES: u32 = 50;

/// Why one transfer of a blob stopped.
enum Broken {
    /// The registry or the network: maybe worth another try.
    Registry(RegistryError),
    /// The store: final.
    Store(StoreError),
}

/// Downloads one blob into an ingest, retrying what the registry or the network broke
/// (each retry resumes with `Range` from the bytes already received and hashed), then
/// places it. A partial download a crash left for this blob is resumed too; if the
/// finished blob does not verify and it began from such bytes, it is fetched once more
/// from byte 0.
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
    let mut ingest = inner
        .store
        .ingest_resumable(blob)
        .await
        .map_err(|e| blob_err(name, e))?;
    let progress = inner.progress.download(&blob.digest.to_string());
    let mut from_old_bytes = ingest.written() > 0;
    if from_old_bytes {
        tracing::info!(image = %name, blob = %blob.digest, bytes = ingest.written(), "resuming a partial download");
        progress.add(ingest.written());
    }
    let policy = inner.settings.retry;
    let (mut attempt, mut tries, mut reauthed) = (0u32, 0u32, false);
    loop {
        let before = ingest.written();
        let failure = match transfer(inner, session, name, blob, &mut ingest, &progress).await {
            Ok(()) => match ingest.verify().await {
                Ok(()) => break,
                Err(e @ StoreError::DigestMismatch { .. }) if from_old_bytes => {
                    tracing::warn!(image = %name, blob = %blob.digest, error = %e, "a resumed download does not verify; fetching it again from the start");
                    from_old_bytes = false;
                    ingest.reset().await.map_err(|e| blob_err(name, e))?;
                    continue;
                }
                Err(e) => return Err(blob_err(name, e)),
            },
            Err(Broken::Store(e)) => return Err(blob_err(name, e)),
            Err(Broken::Registry(e)) => e,
        };
        // A transfer that brought bytes before it broke starts the count again (a long
        // blob on a flaky link keeps going); the total is bounded all the same.
        tries += 1;
        attempt = if ingest.written() > before {
            // Progress since the last try: a token that expires again later (a long blob
            // outliving two short-lived tokens) may be renewed again.
            reauthed = false;
            1
        } else {
            attempt + 1
        };
        if tries >= MAX_TRIES {
            return Err(Error::from_registry(name, failure));
        }
        if matches!(failure, RegistryError::Unauthorized { .. }) && !reauthed {
            // A token that expired mid-pull: authenticate again, once.
            reauthed = true;
            tracing::info!(image = %name, blob = %blob.digest, "registry answered 401; authenticating again");
            session
                .reauth(name)
                .await
                .map_err(|e| Error::from_registry(name, e))?;
            continue;
        }
        if !policy.should_retry(attempt, &failure) {
            return Err(Error::from_registry(name, failure));
        }
        let delay = policy.delay(attempt, &failure);
        tracing::warn!(image = %name, blob = %blob.digest, offset = ingest.written(), attempt, delay_ms = delay.as_millis() as u64, error = %failure, "blob download broke; retrying");
        tokio::time::sleep(delay).await;
    }
    inner
        .store
        .commit(ingest)
        .await
        .map_err(|e| blob_err(name, e))
}

/// One request for the rest of a blob: from `ingest.written()` on (from 0 if the registry
/// ignores `Range`), until the body ends, breaks, or stalls.
async fn transfer(
    inner: &Inner,
    session: &Session,
    name: &ImageName,
    blob: &Descriptor,
    ingest: &mut Ingest,
    progress: &progress::DownloadGuard,
) -> Result<(), Broken> {
    let offset = ingest.written();
    if offset == blob.size {
        return Ok(());
    }
    let mut watch = stall::Watch::new(
        inner.settings.progress_timeout,
        inner.settings.min_rate,
        name,
        blob,
    );
    let (mut stream, partial) = watch
        .guard(session.fetch_blob(name, blob, offset))
        .await
        .map_err(Broken::Registry)?
        .map_err(Broken::Registry)?;
    if !partial && offset > 0 {
        tracing::info!(image = %name, blob = %blob.digest, offset, "registry ignored Range; fetching the whole blob again");
        progress.sub(offset);
        ingest.reset().await.map_err(Broken::Store)?;
    }
    let fetched = inner.metrics.fetched(name.registry());
    loop {
        let next = watch
            .guard(stream.try_next())
            .await
            .map_err(Broken::Registry)?
            .map_err(Broken::Registry)?;
        let Some(chunk) = next else { break };
        watch
            .received(chunk.len() as u64)
            .map_err(Broken::Registry)?;
        progress.add(chunk.len() as u64);
        fetched.add(chunk.len() as u64);
        ingest.write(chunk).await.map_err(Broken::Store)?;
    }
    if ingest.written() < blob.size {
        // A body that ended cleanly but short: the connection was cut.
        return Err(Broken::Registry(RegistryError::Unavailable {
            registry: name.registry().to_owned(),
            reason: format!(
                "blob {}: body ended after {} of {} bytes",
                blob.digest,
                ingest.written(),
                blob.size
            ),
        }));
    }
    Ok(())
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
