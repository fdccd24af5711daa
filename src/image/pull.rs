//! PullImage: resolve the name, try each candidate, and bring the node's manifest, its
//! config and layers into the store, verified, once per blob however many callers ask.

use std::sync::Arc;

use super::bring::registry::RegistrySource;
use super::bring::{Chosen, bring_in};
use super::flight::{self, PullKey};
use super::{Error, ImageService, Inner, progress, sources};
use crate::names::{ImageId, ImageName, Resolved};
use crate::oci;
use crate::registries::Source;
use crate::registry::{AuthFields, Credentials, RegistryError, Session};
use crate::store::NameRecord;
use crate::transport::LocalTransport;
use crate::trust::{Loaded, NodeTrust};

/// A pull request without gRPC types.
#[derive(Clone, Default)]
pub struct PullRequest {
    /// `[transport:]name`, as the client sent it.
    pub image: String,
    pub auth: Option<AuthFields>,
    /// The pod's namespace (`sandbox_config.metadata.namespace`): picks the namespace's
    /// signature policy when it has one.
    pub namespace: Option<String>,
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
            let policy = self.trust().policy_for(req.namespace.as_deref()).clone();
            return self.import(&req.image, local, name, policy).await;
        }
        let trust = self.trust();
        let policy = trust.policy_for(req.namespace.as_deref()).clone();
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
            match self.pull_name(candidate, &creds, &trust, &policy).await {
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
    /// Pulls under another signature policy do not join: each is checked by its own.
    async fn pull_name(
        &self,
        name: &ImageName,
        creds: &Credentials,
        trust: &Arc<NodeTrust>,
        policy: &Arc<Loaded>,
    ) -> Result<ImageId, Error> {
        let key = PullKey::registry(name, &(creds, policy.file.as_str()));
        let _waiting = self.inner.progress.waiting(&key);
        let (name, creds, key2) = (name.clone(), creds.clone(), key.clone());
        let (trust, policy) = (trust.clone(), policy.clone());
        self.single_flight(key, name.to_string(), move |inner| {
            pull_task(inner, name, creds, key2, trust, policy)
        })
        .await
    }

    /// Runs `work` as the one pull for `key` (callers asking for the same key join it) in
    /// its own task: it stops when every caller has gone, or at shutdown.
    pub(super) async fn single_flight<F, Fut>(
        &self,
        key: PullKey,
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

/// One pull: plan the sources, open the first that serves the manifest, bring the image
/// in from it, log the summary.
async fn pull_task(
    inner: Arc<Inner>,
    name: ImageName,
    creds: Credentials,
    key: PullKey,
    trust: Arc<NodeTrust>,
    policy: Arc<Loaded>,
) -> Result<ImageId, Error> {
    let started = std::time::Instant::now();
    let progress = inner
        .progress
        .start(&key, &name.to_string(), name.registry());
    let node = inner.node.read().unwrap_or_else(|p| p.into_inner()).clone();
    let mut planned = sources::plan(&node, &name, &creds)?;
    drop(node);
    sources::ask_helpers(&inner, &name, &mut planned).await?;
    let (session, fetched, source) = open_first(&inner, &name, &planned, &progress).await?;
    let chosen = choose(&name, &source, &fetched)?;
    // The policy, after the manifest is chosen and before any blob is fetched.
    let signatures = super::trust::RegistrySignatures {
        session: &session,
        served_as: &source.name,
        digest: &fetched.pulled_by,
        sources: trust
            .registries_d
            .sources(name.registry(), name.repository()),
    };
    let reference = name.to_string();
    super::trust::enforce(
        &inner,
        &policy,
        "docker",
        &reference,
        Some(&name),
        &fetched.pulled_by,
        &signatures,
    )
    .await?;
    let (bytes, layers) = (
        fetched.manifest.content_size(),
        fetched.manifest.layers.len(),
    );
    let from = Arc::new(RegistrySource::new(
        session,
        source.name.clone(),
        inner.settings.retry,
    ));
    let brought = bring_in(&inner, &from, &name.to_string(), chosen, &progress).await?;
    let seconds = started.elapsed().as_secs_f64();
    let fetched = bytes.saturating_sub(brought.present_bytes);
    tracing::info!(
        image = %name,
        id = %brought.id,
        source = %source.name.registry(),
        mirror = source.mirror,
        bytes,
        fetched_bytes = fetched,
        seconds = format_args!("{seconds:.3}"),
        bytes_per_second = (fetched as f64 / seconds.max(0.001)) as u64,
        layers,
        layers_fetched = layers - brought.layers_present,
        layers_present = brought.layers_present,
        "pulled image"
    );
    Ok(brought.id)
}

/// The image the fetched manifest describes, as the store records it: Docker manifests
/// are stored as OCI ones, so OCI-layout readers see every image.
fn choose(
    name: &ImageName,
    source: &Source,
    fetched: &crate::registry::FetchedManifest,
) -> Result<Chosen, Error> {
    let m = &fetched.manifest;
    let (stored, stored_bytes) = oci::convert::for_layout(&fetched.descriptor, &fetched.bytes)
        .map_err(|e| {
            Error::from_registry(
                name,
                RegistryError::InvalidContent {
                    registry: source.name.registry().to_owned(),
                    reason: format!("manifest {}: {e}", fetched.descriptor.digest),
                },
            )
        })?;
    Ok(Chosen {
        names: vec![NameRecord {
            name: name.clone(),
            manifest: stored.clone(),
            pulled_by: fetched.pulled_by.clone(),
        }],
        stored,
        stored_bytes,
        config: m.config.clone(),
        layers: m.layers.clone(),
    })
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
                let next = &planned[i + 1].source.name;
                tracing::warn!(image = %name, source = %p.source.name, mirror = p.source.mirror, next = %next, error = %e, "source failed; trying the next");
                if p.source.mirror {
                    inner
                        .metrics
                        .mirror_failed(p.source.name.registry(), e.kind().class());
                }
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
