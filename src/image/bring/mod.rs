//! The one bring-in path: an image whose manifest is chosen ([`Chosen`]) comes into the
//! store from a [`BlobSource`] — a registry session ([`registry`]) or a local transport
//! read through skopeo ([`transport`]) — in the same steps whatever the source:
//!
//! 1. the chosen manifest is checked (its config's announced size), and every blob it
//!    names is leased, so nothing it needs is collected while it comes in; unless every
//!    blob is present, a durable note of the pull is written (`store::intents`), so a
//!    crash keeps what it verified for the next pull;
//! 2. the signature policy has been checked by the caller (`image/trust.rs`, after the
//!    manifest is chosen, before this is called: before any blob is fetched);
//! 3. the config (first when layers are unpacked: they need its diff_ids; else beside
//!    them), and the layers, are brought into the verified ingest ([`download`]:
//!    one download per blob at a time, resumed and retried as the source allows; the one
//!    loop where a blob's bytes pass, hashed as they are written — where an unpack stage
//!    is fed);
//! 4. the config is parsed, the manifest stored, and the image recorded with its names
//!    under the lease, in one `index.json` write; then the note goes.

mod download;

pub(super) use download::Feed;
pub mod registry;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot::Sender;

use super::{Error, ImageMeta, Inner, progress};
use crate::names::ImageId;
use crate::oci::{self, Descriptor};
use crate::store::{ManifestBlobs, NameRecord, StoreError};

/// A failure the bring-in loop itself detects in a source's transfer.
pub(super) enum Break {
    /// The body ended cleanly but short (the connection was cut).
    ShortBody(String),
    /// The stall watch stopped it (`pull_progress_timeout`, `pull_min_rate`).
    Stalled(String),
}

/// What comes after a failed transfer of a blob.
pub(super) enum Next {
    /// Try again after this wait, resuming from the bytes already written.
    Retry(Duration),
    /// Authenticate again, then try again at once.
    Reauth,
    /// The failure is final.
    GiveUp,
}

/// Where an image's blobs come from. Everything else the bring-in path does is the same
/// for every source.
pub(super) trait BlobSource: Send + Sync + 'static {
    /// A failed transfer, in the source's own terms.
    type Failure: std::fmt::Display + Send + Sync + 'static;
    /// One blob's body being read.
    type Body<'a>: BlobBody<Failure = Self::Failure>
    where
        Self: 'a;

    /// The image name logs and download errors use (the source's name for it).
    fn name(&self) -> &str;
    /// The label of the registry it counts fetched bytes under (`None`: not a registry).
    fn registry(&self) -> Option<&str>;
    /// Whether its blobs may be fetched side by side.
    fn concurrent(&self) -> bool;
    /// Opens `blob` from byte `offset`. Returns the body and the byte it really starts at:
    /// 0 when the source ignored the offset.
    fn open_blob(
        &self,
        blob: &Descriptor,
        offset: u64,
    ) -> impl Future<Output = Result<(Self::Body<'_>, u64), Self::Failure>> + Send;
    /// What to do after `failure`, the `attempt`-th try in a row without progress.
    fn next(&self, failure: &Self::Failure, attempt: u32, reauthed: bool) -> Next;
    /// Authenticates again (only asked after [`Next::Reauth`]).
    fn reauth(&self) -> impl Future<Output = Result<(), Self::Failure>> + Send;
    /// A failure the bring-in loop detected, in the source's terms.
    fn broken(&self, why: Break) -> Self::Failure;
    /// The image's error for a transfer failure that ends the pull.
    fn error(&self, failure: Self::Failure) -> Error;
    /// The image's error for content from this source that is invalid (does not parse,
    /// is inconsistent) — `unsupported` for content valid but refused (over a cap).
    fn invalid(&self, image: &str, reason: String) -> Error;
    fn unsupported(&self, image: &str, reason: String) -> Error;
    /// The image's error for bytes of this source that did not verify.
    fn corrupt(&self, image: &str, e: StoreError) -> Error;
}

/// One blob's body from a source.
pub(super) trait BlobBody: Send {
    type Failure;
    /// The next chunk; `None` at the end.
    fn next(&mut self) -> impl Future<Output = Result<Option<Bytes>, Self::Failure>> + Send;
    /// After the last chunk: the source's own verdict on the blob, if it has one.
    fn finish(self) -> impl Future<Output = Result<(), Self::Failure>> + Send;
}

/// An image whose manifest is chosen: what the bring-in path stores and records.
pub(super) struct Chosen {
    /// The manifest as stored (OCI form, whatever the source served) and its bytes.
    pub stored: Descriptor,
    pub stored_bytes: Vec<u8>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    /// The names it is recorded under.
    pub names: Vec<NameRecord>,
}

/// What a bring-in did, for the caller's summary line.
pub(super) struct Brought {
    pub id: ImageId,
    /// Layers already in the store.
    pub layers_present: usize,
    /// Blobs (config and layers) already in the store.
    pub blobs_present: usize,
    /// Bytes of config and layers already in the store.
    pub present_bytes: u64,
}

/// A store failure while bringing in `image`: bytes that did not verify are the
/// source's fault, anything else the store's.
fn store_error<S: BlobSource>(source: &S, image: &str, e: StoreError) -> Error {
    if e.is_mismatch() {
        source.corrupt(image, e)
    } else {
        Error::Store {
            image: image.to_owned(),
            source: e,
        }
    }
}

/// Brings `chosen` in from `source` and records it; `image` names it in errors.
pub(super) async fn bring_in<S: BlobSource>(
    inner: &Arc<Inner>,
    source: &Arc<S>,
    image: &str,
    chosen: Chosen,
    progress: &progress::PullGuard,
) -> Result<Brought, Error> {
    let Chosen {
        stored,
        stored_bytes,
        config,
        layers,
        names,
    } = chosen;
    let store_err = |e| store_error(&**source, image, e);
    // Refused before a byte of it is fetched (the ingest refuses to grow past the size).
    if config.size > oci::manifest::MAX_DOCUMENT_BYTES as u64 {
        return Err(source.unsupported(
            image,
            format!(
                "config {} is {} bytes, more than the {} accepted",
                config.digest,
                config.size,
                oci::manifest::MAX_DOCUMENT_BYTES
            ),
        ));
    }
    let blobs = ManifestBlobs {
        manifest: stored.clone(),
        config: config.clone(),
        layers: layers.clone(),
    };
    let lease = inner.store.lease(blobs.all().map(|d| d.digest.clone()));

    let wanted: Vec<&Descriptor> = std::iter::once(&config).chain(&layers).collect();
    let present =
        futures_util::future::join_all(wanted.iter().map(|d| inner.store.has_blob(d))).await;
    progress.set_blobs(
        wanted
            .iter()
            .zip(&present)
            .map(|(d, p)| (d.digest.clone(), d.size, *p)),
    );
    let present_bytes: u64 = wanted
        .iter()
        .zip(&present)
        .filter(|(_, p)| **p)
        .map(|(d, _)| d.size)
        .sum();
    if source.registry().is_some() {
        inner.metrics.skipped(present_bytes);
    }
    // Written before the first blob: a crash from here on keeps what was verified.
    let intent = if present.iter().all(|p| *p) {
        None
    } else {
        Some(inner.store.intend(image, &blobs).await.map_err(store_err)?)
    };

    let fetch_config = || async {
        download::fetch_blob(inner, source, &config, None).await?;
        progress.blob_done(&config.digest);
        Ok::<_, Error>(())
    };
    let parse_config = || async {
        let config_bytes = inner
            .store
            .read_blob(&config.digest)
            .await
            .map_err(store_err)?;
        oci::manifest::parse_config(&config_bytes)
            .map_err(|e| source.invalid(image, format!("config {}: {e}", config.digest)))
    };
    // With unpack on, each layer is unpacked as soon as its blob is in, beside the other
    // downloads, and all of them before the image is recorded: a listed image is runnable.
    // The unpacks need the config's diff_ids (their snapshots' chain IDs); the downloads do
    // not, so each layer's download gets a follow tap made before the unpacks exist, and
    // its unpack takes the follower up from byte 0 once the config is in. From a
    // concurrent source the config comes beside the layers (was, with unpack on: the
    // config first, one round trip before the first layer byte); otherwise first.
    let (feeds, follows): (Vec<_>, Vec<_>) = layers
        .iter()
        .map(|_| match inner.snapshots {
            Some(_) => {
                let (feed, fed) = crate::store::follow::tap();
                let (blob_in, blob_there) = tokio::sync::oneshot::channel::<()>();
                (Some((feed, blob_in)), Some((fed, blob_there)))
            }
            None => (None, None),
        })
        .unzip();
    let config_and_unpacks = async {
        fetch_config().await?;
        let parsed = parse_config().await?;
        let Some(snapshots) = &inner.snapshots else {
            return Ok::<_, Error>((parsed, None));
        };
        let ids = super::unpack::chains_of(&parsed.diff_ids, &layers).map_err(|reason| {
            source.invalid(image, format!("config {}: {reason}", config.digest))
        })?;
        let chains: Vec<_> = ids.iter().map(|(_, c)| c.clone()).collect();
        let held = snapshots.hold(&chains);
        let digests: Vec<_> = layers.iter().map(|l| l.digest.clone()).collect();
        progress.set_unpacking(&digests);
        let unpacks = super::unpack::Unpacks::new(inner, snapshots, image, &layers, &ids)
            .reporting(progress.unpacks());
        for (i, (fed, blob_there)) in follows.into_iter().flatten().enumerate() {
            unpacks.stream(i, fed, blob_there);
        }
        Ok((parsed, Some((unpacks, held))))
    };
    let fetch_layer = |(l, feed): (&Descriptor, Option<(Feed, Sender<()>)>)| {
        let l = l.clone();
        async move {
            let (feed, blob_in) = feed.unzip();
            download::fetch_blob(inner, source, &l, feed).await?;
            progress.blob_done(&l.digest);
            if let Some(b) = blob_in {
                let _ = b.send(());
            }
            Ok::<_, Error>(())
        }
    };
    let (parsed, unpacking) = if source.concurrent() {
        let layers = futures_util::future::try_join_all(layers.iter().zip(feeds).map(fetch_layer));
        futures_util::future::try_join(config_and_unpacks, layers)
            .await?
            .0
    } else {
        let got = config_and_unpacks.await?;
        for l in layers.iter().zip(feeds) {
            fetch_layer(l).await?;
        }
        got
    };
    let _held = match unpacking {
        Some((unpacks, held)) => {
            unpacks.finish().await?;
            Some(held)
        }
        None => None,
    };
    inner
        .store
        .put_blob(&stored, &stored_bytes)
        .await
        .map_err(store_err)?;

    let id = ImageId::new(config.digest.clone());
    inner
        .store
        .add_names(&id, &blobs, names, lease)
        .await
        .map_err(|source| Error::Store {
            image: image.to_owned(),
            source,
        })?;
    drop(intent);
    inner
        .cache
        .insert(id.clone(), ImageMeta { user: parsed.user });
    Ok(Brought {
        id,
        layers_present: present[1..].iter().filter(|p| **p).count(),
        blobs_present: present.iter().filter(|p| **p).count(),
        present_bytes,
    })
}
