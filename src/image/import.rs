//! PullImage from files (`oci:`, `oci-archive:`, `docker-archive:`, `dir:`): the source is
//! admitted by the import policy, read through [`crate::transport`], and its blobs go
//! through the same verified ingest as registry blobs. One import per source at a time.

use std::sync::Arc;

use super::bring::transport::TransportSource;
use super::bring::{Chosen, bring_in};
use super::flight::PullKey;
use super::{Error, ImageService, Inner};
use crate::names::ImageId;
use crate::store::NameRecord;
use crate::transport::{LocalTransport, Source, SourceRef};

impl ImageService {
    /// Imports the image `rest` names in `transport` (`image` is the request as sent).
    pub(super) async fn import(
        &self,
        image: &str,
        transport: LocalTransport,
        rest: &str,
        policy: Arc<crate::trust::Loaded>,
    ) -> Result<ImageId, Error> {
        let err = |source| Error::Import {
            image: image.to_owned(),
            source,
        };
        let src = SourceRef::parse(transport, rest).map_err(err)?;
        let src = self.inner.settings.imports.admit(src).await.map_err(err)?;
        let key = PullKey::Import {
            source: src.to_string(),
            policy: policy.file.clone(),
        };
        let _waiting = self.inner.progress.waiting(&key);
        let (image, key2) = (image.to_owned(), key.clone());
        self.single_flight(key, image.clone(), move |inner| {
            import_task(inner, image, src, key2, policy)
        })
        .await
    }
}

/// One import: open the source through skopeo, bring the image in from it, let skopeo
/// exit, log the summary.
async fn import_task(
    inner: Arc<Inner>,
    image: String,
    src: SourceRef,
    key: PullKey,
    policy: Arc<crate::trust::Loaded>,
) -> Result<ImageId, Error> {
    let started = std::time::Instant::now();
    let label = src.to_string();
    // `cri-imaged pulls` shows an import like a pull; its source is the transport.
    let progress = inner.progress.start(&key, &image, src.transport.name());
    let source = Source::open(&inner.settings.imports, &src)
        .await
        .map_err(|source| Error::Import {
            image: image.clone(),
            source,
        })?;
    let local = source.image().clone();
    // Local transports carry no signatures: only a policy that needs none admits them.
    super::trust::enforce(
        &inner,
        &policy,
        src.transport.name(),
        &src.path.display().to_string(),
        None,
        &local.descriptor.digest,
        &crate::trust::NoSignatures,
    )
    .await?;
    let chosen = Chosen {
        names: local
            .names
            .iter()
            .map(|name| NameRecord {
                name: name.clone(),
                manifest: local.descriptor.clone(),
                pulled_by: local.pulled_by.clone(),
            })
            .collect(),
        stored: local.descriptor.clone(),
        stored_bytes: local.bytes.clone(),
        config: local.manifest.config.clone(),
        layers: local.manifest.layers.clone(),
    };
    let from = Arc::new(TransportSource::new(source, image.clone(), label.clone()));
    let brought = bring_in(&inner, &from, &image, chosen, &progress).await?;
    if let Ok(from) = Arc::try_unwrap(from) {
        from.finish().await;
    }
    tracing::info!(
        source = %label,
        id = %brought.id,
        names = ?local.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        bytes = local.manifest.content_size(),
        layers = local.manifest.layers.len(),
        blobs_present = brought.blobs_present,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "imported image"
    );
    Ok(brought.id)
}
