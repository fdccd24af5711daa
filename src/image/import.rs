//! PullImage from files (`oci:`, `oci-archive:`, `docker-archive:`, `dir:`): the source is
//! admitted by the import policy, read through [`crate::transport`], and its blobs go
//! through the same verified ingest as registry blobs. One import per source at a time.

use std::sync::Arc;

use super::{Error, ImageMeta, ImageService, Inner};
use crate::names::ImageId;
use crate::oci;
use crate::store::{ManifestBlobs, NameRecord, StoreError};
use crate::transport::{LocalTransport, Source, SourceRef, TransportError};

impl ImageService {
    /// Imports the image `rest` names in `transport` (`image` is the request as sent).
    pub(super) async fn import(
        &self,
        image: &str,
        transport: LocalTransport,
        rest: &str,
    ) -> Result<ImageId, Error> {
        let err = |source| Error::Import {
            image: image.to_owned(),
            source,
        };
        let src = SourceRef::parse(transport, rest).map_err(err)?;
        let src = self.inner.settings.imports.admit(src).await.map_err(err)?;
        let key = format!("import:{src}");
        let _waiting = self.inner.progress.waiting(&key);
        let (image, key2) = (image.to_owned(), key.clone());
        self.single_flight(key, image.clone(), move |inner| {
            import_task(inner, image, src, key2)
        })
        .await
    }
}

async fn import_task(
    inner: Arc<Inner>,
    image: String,
    src: SourceRef,
    key: String,
) -> Result<ImageId, Error> {
    let started = std::time::Instant::now();
    let label = src.to_string();
    // `cri-imaged pulls` shows an import like a pull; its source is the transport.
    let progress = inner.progress.start(&key, &image, src.transport.name());
    let err = |source| Error::Import {
        image: image.clone(),
        source,
    };
    let invalid = |reason: String| {
        err(TransportError::InvalidContent {
            source_ref: label.clone(),
            reason,
        })
    };
    let store_err = |source: StoreError| match source {
        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => {
            invalid(source.to_string())
        }
        source => Error::Store {
            image: image.clone(),
            source,
        },
    };

    let source = Source::open(&inner.settings.imports, &src)
        .await
        .map_err(err)?;
    let local = source.image().clone();
    let m = &local.manifest;
    if m.config.size > oci::manifest::MAX_DOCUMENT_BYTES as u64 {
        return Err(invalid(format!(
            "config {} is {} bytes",
            m.config.digest, m.config.size
        )));
    }
    let blobs = ManifestBlobs {
        manifest: local.descriptor.clone(),
        config: m.config.clone(),
        layers: m.layers.clone(),
    };
    let lease = inner.store.lease(blobs.all().map(|d| d.digest.clone()));

    let mut present_flags = Vec::new();
    for d in std::iter::once(&m.config).chain(&m.layers) {
        present_flags.push(inner.store.has_blob(d).await);
    }
    progress.set_blobs(
        std::iter::once(&m.config)
            .chain(&m.layers)
            .zip(&present_flags)
            .map(|(d, p)| (d.digest.to_string(), d.size, *p)),
    );
    let present = present_flags.iter().filter(|p| **p).count();
    for (d, _) in std::iter::once(&m.config)
        .chain(&m.layers)
        .zip(&present_flags)
        .filter(|(_, p)| !**p)
    {
        let download = inner.progress.download(&d.digest.to_string());
        let mut ingest = inner.store.ingest(d).await.map_err(store_err)?;
        let mut blob = source.blob(d).await.map_err(err)?;
        while let Some(chunk) = blob.next().await.map_err(err)? {
            download.add(chunk.len() as u64);
            ingest
                .write(bytes::Bytes::copy_from_slice(chunk))
                .await
                .map_err(store_err)?;
        }
        // Our own check first (digest and size, as for registry blobs), then the proxy's.
        inner.store.commit(ingest).await.map_err(store_err)?;
        blob.finish().await.map_err(err)?;
        progress.blob_done(&d.digest.to_string());
    }
    source.finish().await;

    let config_bytes = inner
        .store
        .read_blob(&m.config.digest)
        .await
        .map_err(store_err)?;
    let config = oci::manifest::parse_config(&config_bytes)
        .map_err(|e| invalid(format!("config {}: {e}", m.config.digest)))?;
    inner
        .store
        .put_blob(&local.descriptor, &local.bytes)
        .await
        .map_err(store_err)?;

    let id = ImageId::new(m.config.digest.clone());
    let records = local
        .names
        .iter()
        .map(|name| NameRecord {
            name: name.clone(),
            manifest: local.descriptor.clone(),
            pulled_by: local.pulled_by.clone(),
        })
        .collect();
    inner
        .store
        .add_names(&id, &blobs, records, lease)
        .await
        .map_err(store_err)?;
    inner
        .cache
        .insert(id.clone(), ImageMeta { user: config.user });
    tracing::info!(
        source = %label,
        id = %id,
        names = ?local.names.iter().map(ToString::to_string).collect::<Vec<_>>(),
        bytes = m.content_size(),
        layers = m.layers.len(),
        blobs_present = present,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "imported image"
    );
    Ok(id)
}
