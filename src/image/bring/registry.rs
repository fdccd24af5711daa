//! The registry as a [`BlobSource`]: blobs from a session (the mirror or the primary that
//! served the manifest), resumed with `Range`, retried by the [`RetryPolicy`], one
//! re-authentication after a 401.

use bytes::Bytes;
use futures_util::TryStreamExt;

use super::{BlobBody, BlobSource, Break, Next};
use crate::image::Error;
use crate::kind::Kind;
use crate::names::ImageName;
use crate::oci::Descriptor;
use crate::registry::{BlobStream, RegistryError, RetryPolicy, Session};
use crate::store::StoreError;

pub(in crate::image) struct RegistrySource {
    session: Session,
    /// The name at the source (a mirror's name for mirrored pulls).
    name: ImageName,
    label: String,
    retry: RetryPolicy,
}

impl RegistrySource {
    pub(in crate::image) fn new(session: Session, name: ImageName, retry: RetryPolicy) -> Self {
        RegistrySource {
            session,
            label: name.to_string(),
            name,
            retry,
        }
    }

    fn registry_error(&self, e: RegistryError) -> Error {
        Error::from_registry(&self.label, e)
    }
}

pub(in crate::image) struct RegistryBody(BlobStream);

impl BlobBody for RegistryBody {
    type Failure = RegistryError;

    async fn next(&mut self) -> Result<Option<Bytes>, RegistryError> {
        self.0.try_next().await
    }

    async fn finish(self) -> Result<(), RegistryError> {
        Ok(())
    }
}

impl BlobSource for RegistrySource {
    type Failure = RegistryError;
    type Body<'a> = RegistryBody;

    fn name(&self) -> &str {
        &self.label
    }

    fn registry(&self) -> Option<&str> {
        Some(self.name.registry())
    }

    fn concurrent(&self) -> bool {
        true
    }

    async fn open_blob(
        &self,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(RegistryBody, u64), RegistryError> {
        let (stream, partial) = self.session.fetch_blob(&self.name, blob, offset).await?;
        Ok((RegistryBody(stream), if partial { offset } else { 0 }))
    }

    fn next(&self, failure: &RegistryError, attempt: u32, reauthed: bool) -> Next {
        if failure.kind() == Kind::Unauthenticated && !reauthed {
            Next::Reauth
        } else if self.retry.should_retry(attempt, failure) {
            Next::Retry(self.retry.delay(attempt, failure))
        } else {
            Next::GiveUp
        }
    }

    async fn reauth(&self) -> Result<(), RegistryError> {
        self.session.reauth(&self.name).await
    }

    fn broken(&self, why: Break) -> RegistryError {
        let registry = self.name.registry().to_owned();
        match why {
            Break::ShortBody(reason) => RegistryError::Unavailable {
                registry,
                reason,
                after: None,
            },
            Break::Stalled(reason) => RegistryError::Timeout { registry, reason },
        }
    }

    fn error(&self, failure: RegistryError) -> Error {
        self.registry_error(failure)
    }

    fn invalid(&self, image: &str, reason: String) -> Error {
        Error::from_registry(
            &image,
            RegistryError::InvalidContent {
                registry: self.name.registry().to_owned(),
                reason,
            },
        )
    }

    fn unsupported(&self, image: &str, reason: String) -> Error {
        Error::from_registry(
            &image,
            RegistryError::Unsupported {
                registry: self.name.registry().to_owned(),
                reason,
            },
        )
    }

    fn corrupt(&self, image: &str, e: StoreError) -> Error {
        Error::Served {
            image: image.to_owned(),
            from: format!("registry {}", self.name.registry()),
            source: Box::new(e),
        }
    }
}
