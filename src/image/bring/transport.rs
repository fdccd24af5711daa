//! A local transport (`oci:`, `oci-archive:`, `docker-archive:`, `dir:`) as a
//! [`BlobSource`]: blobs read one after another through the source's skopeo proxy, from
//! byte 0 (a crash's partial file is not resumed: the proxy cannot start mid-blob), never
//! retried; the proxy's own digest verdict comes after ours.

use bytes::Bytes;

use super::{BlobBody, BlobSource, Break, Next};
use crate::image::Error;
use crate::oci::Descriptor;
use crate::store::StoreError;
use crate::transport::{Blob, Source, TransportError};

pub(in crate::image) struct TransportSource {
    source: Source,
    /// The request as the client sent it (`oci-archive:/x.tar`).
    image: String,
    /// The source as parsed (for its own errors).
    label: String,
}

impl TransportSource {
    pub(in crate::image) fn new(source: Source, image: String, label: String) -> Self {
        TransportSource {
            source,
            image,
            label,
        }
    }

    /// Lets skopeo exit normally.
    pub(in crate::image) async fn finish(self) {
        self.source.finish().await
    }

    fn import_error(&self, source: TransportError) -> Error {
        Error::Import {
            image: self.image.clone(),
            source,
        }
    }

    fn invalid_content(&self, reason: String) -> Error {
        self.import_error(TransportError::InvalidContent {
            source_ref: self.label.clone(),
            reason,
        })
    }
}

pub(in crate::image) struct TransportBody<'a>(Blob<'a>);

impl BlobBody for TransportBody<'_> {
    type Failure = TransportError;

    async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        Ok(self.0.next().await?.map(Bytes::copy_from_slice))
    }

    async fn finish(self) -> Result<(), TransportError> {
        self.0.finish().await
    }
}

impl BlobSource for TransportSource {
    type Failure = TransportError;
    type Body<'a> = TransportBody<'a>;

    fn name(&self) -> &str {
        &self.image
    }

    fn registry(&self) -> Option<&str> {
        None
    }

    fn concurrent(&self) -> bool {
        false
    }

    async fn open_blob(
        &self,
        blob: &Descriptor,
        _offset: u64,
    ) -> Result<(TransportBody<'_>, u64), TransportError> {
        Ok((TransportBody(self.source.blob(blob).await?), 0))
    }

    fn next(&self, _failure: &TransportError, _attempt: u32, _reauthed: bool) -> Next {
        Next::GiveUp
    }

    async fn reauth(&self) -> Result<(), TransportError> {
        Ok(())
    }

    fn broken(&self, why: Break) -> TransportError {
        let (Break::ShortBody(reason) | Break::Stalled(reason)) = why;
        TransportError::Unreadable {
            source_ref: self.label.clone(),
            reason,
        }
    }

    fn error(&self, failure: TransportError) -> Error {
        self.import_error(failure)
    }

    fn invalid(&self, _image: &str, reason: String) -> Error {
        self.invalid_content(reason)
    }

    fn unsupported(&self, _image: &str, reason: String) -> Error {
        self.invalid_content(reason)
    }

    fn corrupt(&self, _image: &str, e: StoreError) -> Error {
        self.invalid_content(e.to_string())
    }
}
