//! A blob's body, streamed: `GET /v2/<repo>/blobs/<digest>`, from byte `offset` on with
//! `Range` when resuming. A `206` must start where it was asked to; a `200` starts at 0
//! (the registry ignored the range), and the caller restarts its count. Nothing here
//! hashes: the caller hashes and counts what it receives, and trusts no part of the stream.
//! An error answer is classified by status with its `Retry-After` (`fetch::status_error`),
//! so a throttled or overloaded registry's own wait reaches the retry policy.

use futures_util::stream;
use reqwest::StatusCode;
use reqwest::header;

use super::fetch::{self, Get};
use super::{BlobStream, RegistryError, Session};
use crate::names::ImageName;
use crate::oci::Descriptor;

/// The first byte a `Content-Range: bytes START-END/TOTAL` answer holds.
fn range_start(value: &str) -> Option<u64> {
    value
        .trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

impl Session {
    /// Streams a blob's body from byte `offset` on. The flag says whether the registry
    /// honoured the range (206); `false` means the body starts at byte 0 whatever was asked
    /// (200).
    pub async fn fetch_blob(
        &self,
        name: &ImageName,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(BlobStream, bool), RegistryError> {
        let what = format!("blob {} of {name}", blob.digest);
        let authorization = self.authorization(name.repository(), false).await?;
        let request = Get {
            url: format!(
                "{}://{}/v2/{}/blobs/{}",
                self.scheme,
                self.host,
                name.repository(),
                blob.digest
            ),
            accept: None,
            offset,
        };
        let response =
            fetch::get(&self.http, &self.registry, authorization.as_ref(), request).await?;
        let partial = match response.status() {
            StatusCode::OK => false,
            StatusCode::PARTIAL_CONTENT if offset > 0 => {
                let start = response
                    .headers()
                    .get(header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(range_start);
                if start != Some(offset) {
                    return Err(RegistryError::InvalidContent {
                        registry: self.registry.clone(),
                        reason: format!(
                            "{what}: asked from byte {offset}, the answer starts at {}",
                            start.map_or("an unknown byte".to_owned(), |s| s.to_string())
                        ),
                    });
                }
                true
            }
            // A 206 to a request without Range: the whole body, if it starts at 0.
            StatusCode::PARTIAL_CONTENT => false,
            _ => return Err(fetch::error_answer(&self.registry, &what, response).await),
        };
        // Stops at the first error (the caller resumes with a new request).
        let state = Some((response, self.registry.clone()));
        let body = stream::unfold(state, |state| async move {
            let (mut response, registry) = state?;
            match response.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some((response, registry)))),
                Ok(None) => None,
                Err(e) => Some((Err(super::error::transport(&registry, e)), None)),
            }
        });
        Ok((Box::pin(body), partial))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_start_of_a_content_range() {
        assert_eq!(range_start("bytes 100-199/200"), Some(100));
        assert_eq!(range_start("bytes 0-0/*"), Some(0));
        assert_eq!(range_start("items 1-2/3"), None);
        assert_eq!(range_start("bytes x-1/2"), None);
    }
}
