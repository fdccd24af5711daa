//! One blob into the store, from any [`BlobSource`]: one download per blob at a time
//! (callers of the same blob join it), a bounded number of concurrent downloads, and a
//! transfer loop that resumes from the bytes already hashed, retries what the source says
//! may pass, and verifies before the blob is placed. A [`Feed`] follows the same bytes as
//! they reach the ingest file (the unpack stage), then gets word that the blob verified
//! and was placed.

use std::sync::Arc;

use super::{BlobBody, BlobSource, Break, Next};
use crate::image::{Error, Inner, stall};
use crate::oci::Descriptor;
use crate::store::{Ingest, StoreError};

/// Requests for one blob download, whatever progress each made.
const MAX_TRIES: u32 = 50;

/// The tap a download gives its blob's bytes to as they reach the ingest file, from
/// byte 0 on, then word that the blob verified and was placed ([`Tap::verified`]). A
/// download that cannot give every byte in order (another pull's download of the same
/// blob, a partial file resumed, a source that ignores `Range`, a restart from 0) drops
/// it, and the follower fails. The download never waits for the follower.
pub type Feed = crate::store::follow::Tap;

/// Brings one blob into the store unless it is there; one download per blob at a time.
pub(super) async fn fetch_blob<S: BlobSource>(
    inner: &Arc<Inner>,
    source: &Arc<S>,
    blob: &Descriptor,
    feed: Option<Feed>,
) -> Result<(), Error> {
    if inner.store.has_blob(blob).await {
        return Ok(());
    }
    let mut feed = feed;
    // A download another pull started runs with that pull's source and credentials: if
    // it fails, try once more with ours before giving up.
    for joined_attempt in [true, false] {
        let (inner2, source2, blob2) = (inner.clone(), source.clone(), blob.clone());
        // Fed only by a download this call leads, and only its first.
        let feed2 = feed.take();
        let (result, led) = inner
            .blobs
            .run(blob.digest.clone(), move || async move {
                download(&inner2, &*source2, &blob2, feed2)
                    .await
                    .map_err(Arc::new)
            })
            .await;
        match result {
            Ok(()) => return Ok(()),
            Err(e) if !led && joined_attempt => {
                tracing::debug!(image = %source.name(), blob = %blob.digest, error = %e, "joined download failed; retrying with this pull's session");
            }
            Err(e) => return Err(Error::Shared(e)),
        }
    }
    Err(Error::Internal(format!(
        "download of {} gave no result",
        blob.digest
    )))
}

/// Why one transfer of a blob stopped.
enum Broken<F> {
    /// The source or the network: maybe worth another try.
    Source(F),
    /// The store: final.
    Store(StoreError),
}

/// Downloads one blob into an ingest, retrying what the source or the network broke
/// (each retry resumes from the bytes already received and hashed), then places it. A
/// partial download a crash left for this blob is resumed too; if the finished blob does
/// not verify and it began from such bytes, it is fetched once more from byte 0.
async fn download<S: BlobSource>(
    inner: &Inner,
    source: &S,
    blob: &Descriptor,
    mut feed: Option<Feed>,
) -> Result<(), Error> {
    if inner.store.has_blob(blob).await {
        return Ok(());
    }
    let name = source.name();
    let corrupt = |e| super::store_error(source, name, e);
    let slots = if blob.size <= crate::image::SMALL_BLOB {
        &inner.small_downloads
    } else {
        &inner.downloads
    };
    let _permit = slots
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut ingest = inner.store.ingest_resumable(blob).await.map_err(corrupt)?;
    let progress = inner.progress.download(&blob.digest);
    let mut from_old_bytes = ingest.written() > 0;
    if from_old_bytes {
        // The bytes of the partial file were never fed.
        feed = None;
        tracing::info!(image = %name, blob = %blob.digest, bytes = ingest.written(), "resuming a partial download");
        progress.add(ingest.written());
    }
    if let Some(tap) = &feed
        && !ingest.follow(tap)
    {
        feed = None;
    }
    let (mut attempt, mut tries, mut reauthed) = (0u32, 0u32, false);
    loop {
        let before = ingest.written();
        let failure = match transfer(inner, source, blob, &mut ingest, &progress, &mut feed).await {
            Ok(body) => match ingest.verify().await {
                // Our own check first (digest and size), then the source's verdict.
                Ok(()) => match body {
                    Some(body) => match body.finish().await {
                        Ok(()) => break,
                        Err(e) => return Err(source.error(e)),
                    },
                    None => break,
                },
                Err(e @ StoreError::DigestMismatch { .. }) if from_old_bytes => {
                    tracing::warn!(image = %name, blob = %blob.digest, error = %e, "a resumed download does not verify; fetching it again from the start");
                    from_old_bytes = false;
                    ingest.reset().await.map_err(corrupt)?;
                    continue;
                }
                Err(e) => return Err(corrupt(e)),
            },
            Err(Broken::Store(e)) => return Err(corrupt(e)),
            Err(Broken::Source(e)) => e,
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
            return Err(source.error(failure));
        }
        match source.next(&failure, attempt, reauthed) {
            Next::GiveUp => return Err(source.error(failure)),
            Next::Reauth => {
                // A token that expired mid-pull: authenticate again, once.
                reauthed = true;
                tracing::info!(image = %name, blob = %blob.digest, "registry answered 401; authenticating again");
                source.reauth().await.map_err(|e| source.error(e))?;
            }
            Next::Retry(delay) => {
                tracing::warn!(image = %name, blob = %blob.digest, offset = ingest.written(), attempt, delay_ms = delay.as_millis() as u64, error = %failure, "blob download broke; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    inner.store.commit(ingest).await.map_err(corrupt)?;
    if let Some(f) = feed {
        f.verified();
    }
    Ok(())
}

/// One request for the rest of a blob: from `ingest.written()` on (from 0 if the source
/// ignores the offset), until the body ends, breaks, or stalls. This loop is the one place
/// a blob's bytes pass on their way into the store, hashed by the ingest as it writes.
/// Returns the finished body (`None`: nothing was left to fetch).
async fn transfer<'s, S: BlobSource>(
    inner: &Inner,
    source: &'s S,
    blob: &Descriptor,
    ingest: &mut Ingest,
    progress: &crate::image::progress::DownloadGuard,
    feed: &mut Option<Feed>,
) -> Result<Option<S::Body<'s>>, Broken<S::Failure>> {
    let offset = ingest.written();
    if offset == blob.size {
        return Ok(None);
    }
    let stalled = |s: stall::Stalled| Broken::Source(source.broken(Break::Stalled(s.0)));
    let mut watch = stall::Watch::new(
        inner.settings.progress_timeout,
        inner.settings.min_rate,
        format!("blob {} of {}", blob.digest, source.name()),
    );
    let (mut body, start) = watch
        .guard(source.open_blob(blob, offset))
        .await
        .map_err(stalled)?
        .map_err(Broken::Source)?;
    if start != offset {
        tracing::info!(image = %source.name(), blob = %blob.digest, offset, "registry ignored Range; fetching the whole blob again");
        progress.sub(offset);
        // What was fed is fed again: the feed cannot follow (closed before the file
        // shrinks).
        *feed = None;
        ingest.reset().await.map_err(Broken::Store)?;
    }
    let fetched = source.registry().map(|r| inner.metrics.fetched(r));
    loop {
        let next = watch
            .guard(body.next())
            .await
            .map_err(stalled)?
            .map_err(Broken::Source)?;
        let Some(chunk) = next else { break };
        watch.received(chunk.len() as u64).map_err(stalled)?;
        progress.add(chunk.len() as u64);
        if let Some(f) = &fetched {
            f.add(chunk.len() as u64);
        }
        ingest.write(chunk).await.map_err(Broken::Store)?;
    }
    if ingest.written() < blob.size {
        return Err(Broken::Source(source.broken(Break::ShortBody(format!(
            "blob {}: body ended after {} of {} bytes",
            blob.digest,
            ingest.written(),
            blob.size
        )))));
    }
    Ok(Some(body))
}
