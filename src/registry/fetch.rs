//! cri-imaged's own GET of a manifest or index. oci-client 0.18 reads a manifest body
//! whole before returning it, so a registry could make the daemon hold any amount of
//! memory; here the size the registry announces (`Content-Length`) is checked before a
//! body byte is read, and the body is read chunk by chunk and cut off once it grows past
//! the limit, whatever was announced. The limit is [`MAX_DOCUMENT_BYTES`], or the size an
//! index's descriptor gives for the manifest when it is smaller.
//!
//! The body's sha256 is computed here and checked against the digest the manifest was
//! asked by (an index entry or a pinned name) and against `Docker-Content-Digest`; the
//! digest returned is always the body's own. Error answers are classified like
//! oci-client's (the same `RegistryError`s), and a `Retry-After` is kept.
//!
//! Every GET of a session goes through [`get`]: redirects are followed here (at most
//! [`MAX_REDIRECTS`]), and `Authorization` goes only to the registry's own origin — a blob
//! redirected to a CDN or object store gets its signed URL, never the registry's token.
//! Error answers of any request are classified by status ([`status_error`]) and keep the
//! registry's `Retry-After`. The header is never logged or put in an error.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode, Url};

use super::RegistryError;
use crate::names::Digest;
use crate::oci::manifest::MAX_DOCUMENT_BYTES;
use crate::oci::media;

/// Most of an error answer's body read (for the OCI error envelope).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// Redirects followed for one request (a registry sends one, to its blob storage).
pub(super) const MAX_REDIRECTS: usize = 5;

/// One GET: `url`, with `accept`, from byte `offset` on when it is not 0.
pub(super) struct Get<'a> {
    pub url: String,
    pub accept: Option<&'a str>,
    pub offset: u64,
}

/// Sends `get`, following redirects; `Authorization` only to the origin of `get.url`.
/// Returns the final answer whatever its status.
pub(super) async fn get(
    client: &reqwest::Client,
    registry: &str,
    authorization: Option<&HeaderValue>,
    get: Get<'_>,
) -> Result<Response, RegistryError> {
    let transport = |e| super::error::transport(registry, e);
    let first = Url::parse(&get.url).map_err(|e| RegistryError::Other {
        registry: registry.to_owned(),
        reason: format!("bad URL {}: {e}", get.url),
    })?;
    let mut url = first.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = client.get(url.clone());
        if let Some(accept) = get.accept {
            request = request.header(header::ACCEPT, accept);
        }
        if get.offset > 0 {
            request = request.header(header::RANGE, format!("bytes={}-", get.offset));
        }
        if let Some(value) = authorization
            && url.origin() == first.origin()
        {
            request = request.header(header::AUTHORIZATION, value.clone());
        }
        let response = request.send().await.map_err(transport)?;
        if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
            return Ok(response);
        }
        let next = response
            .headers()
            .get(header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        // An HTTPS request is never redirected to plain HTTP.
        match next {
            Some(u) if !(url.scheme() == "https" && u.scheme() == "http") => url = u,
            _ => {
                return Err(RegistryError::InvalidContent {
                    registry: registry.to_owned(),
                    reason: format!("{} redirected to an unusable location", first.path()),
                });
            }
        }
    }
    Err(RegistryError::InvalidContent {
        registry: registry.to_owned(),
        reason: format!(
            "{} redirected more than {MAX_REDIRECTS} times",
            first.path()
        ),
    })
}

/// One manifest request.
pub(super) struct ManifestRequest<'a> {
    /// Registry, repository and tag or digest.
    pub reference: &'a Reference,
    /// The image, for messages.
    pub what: &'a str,
    /// The descriptor's size when an index gave one.
    pub size: Option<u64>,
}

/// A manifest's exact bytes and their digest.
pub(super) struct Fetched {
    pub bytes: Bytes,
    pub digest: Digest,
}

/// How requests of one session reach the registry.
pub(super) struct Http<'a> {
    pub client: &'a reqwest::Client,
    pub scheme: &'static str,
    /// The registry as named (for messages).
    pub registry: &'a str,
    /// Where it is reached (`index.docker.io` for `docker.io`).
    pub host: &'a str,
    pub authorization: Option<&'a HeaderValue>,
}

impl Http<'_> {
    fn url(&self, reference: &Reference) -> String {
        let target = reference
            .digest()
            .or(reference.tag())
            .unwrap_or(crate::names::DEFAULT_TAG);
        format!(
            "{}://{}/v2/{}/manifests/{target}",
            self.scheme,
            self.host,
            reference.repository()
        )
    }

    fn too_large(&self, req: &ManifestRequest<'_>, size: String) -> RegistryError {
        RegistryError::Unsupported {
            registry: self.registry.to_owned(),
            reason: format!(
                "manifest {} of {} is {size} bytes, more than the {MAX_DOCUMENT_BYTES} accepted",
                target(req.reference),
                req.what
            ),
        }
    }

    fn size_mismatch(
        &self,
        req: &ManifestRequest<'_>,
        expected: u64,
        got: String,
    ) -> RegistryError {
        RegistryError::DigestMismatch {
            registry: self.registry.to_owned(),
            reason: format!(
                "manifest {} of {}: the index gives {expected} bytes, the registry {got}",
                target(req.reference),
                req.what
            ),
        }
    }

    fn transport(&self, e: reqwest::Error) -> RegistryError {
        super::error::transport(self.registry, e)
    }

    /// Fetches the manifest `req` names, refusing it before reading when it is too large.
    pub async fn manifest(&self, req: &ManifestRequest<'_>) -> Result<Fetched, RegistryError> {
        let limit = req.size.map_or(MAX_DOCUMENT_BYTES as u64, |s| {
            s.min(MAX_DOCUMENT_BYTES as u64)
        });
        if let Some(size) = req.size.filter(|s| *s > MAX_DOCUMENT_BYTES as u64) {
            return Err(self.too_large(req, size.to_string()));
        }
        let accept = media::MANIFEST_ACCEPT.join(", ");
        let request = Get {
            url: self.url(req.reference),
            accept: Some(&accept),
            offset: 0,
        };
        let mut response = get(self.client, self.registry, self.authorization, request).await?;
        let status = response.status();
        if status != StatusCode::OK {
            return Err(error_answer(self.registry, req.what, response).await);
        }
        let headers = response.headers().clone();
        if let Some(announced) = response.content_length() {
            if announced > MAX_DOCUMENT_BYTES as u64 {
                return Err(self.too_large(req, announced.to_string()));
            }
            if let Some(expected) = req.size.filter(|s| *s != announced) {
                return Err(self.size_mismatch(req, expected, format!("announces {announced}")));
            }
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(e))? {
            if (body.len() + chunk.len()) as u64 > limit {
                return Err(match req.size {
                    Some(expected) if expected < MAX_DOCUMENT_BYTES as u64 => {
                        self.size_mismatch(req, expected, format!("sends more than {expected}"))
                    }
                    _ => self.too_large(req, format!("more than {limit}")),
                });
            }
            body.extend_from_slice(&chunk);
        }
        if let Some(expected) = req.size.filter(|s| *s != body.len() as u64) {
            return Err(self.size_mismatch(req, expected, format!("sent {}", body.len())));
        }
        let digest = Digest::of(&body);
        self.check_digest(req, &digest, &headers)?;
        Ok(Fetched {
            bytes: body.freeze(),
            digest,
        })
    }

    /// The body must hash to the digest asked for, and to `Docker-Content-Digest` when
    /// that is a sha256 digest (another algorithm cannot be compared and is ignored).
    fn check_digest(
        &self,
        req: &ManifestRequest<'_>,
        actual: &Digest,
        headers: &HeaderMap,
    ) -> Result<(), RegistryError> {
        let mismatch = |claimed: &str, by: &str| RegistryError::DigestMismatch {
            registry: self.registry.to_owned(),
            reason: format!(
                "manifest of {} has digest {actual}, but {by} {claimed}",
                req.what
            ),
        };
        if let Some(asked) = req.reference.digest()
            && asked != actual.as_str()
        {
            return Err(mismatch(asked, "it was asked for as"));
        }
        let header = headers
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok());
        if let Some(claimed) = header
            && claimed.starts_with("sha256:")
            && claimed != actual.as_str()
        {
            let shown: String = claimed.chars().take(80).collect();
            return Err(mismatch(&shown, "Docker-Content-Digest says"));
        }
        Ok(())
    }
}

/// Classifies an answer other than 200/206 (reading at most [`MAX_ERROR_BODY`] of it).
pub(super) async fn error_answer(
    registry: &str,
    what: &str,
    mut response: Response,
) -> RegistryError {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = MAX_ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    status_error(registry, what, response.status(), response.headers(), &body)
}

/// An answer's status (and OCI error envelope, for 4xx other than 408/429) as a
/// [`RegistryError`], with its `Retry-After`.
pub(super) fn status_error(
    registry: &str,
    what: &str,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> RegistryError {
    // No URL in the error: a redirect target may carry credentials in its query.
    let url = String::new();
    let code = status.as_u16();
    let e = if status == StatusCode::UNAUTHORIZED {
        OciDistributionError::UnauthorizedError { url }
    } else if status.is_success() {
        OciDistributionError::SpecViolationError(format!("expected HTTP 200, got {status}"))
    } else if status.is_client_error()
        // A 408 or 429 is "come back later" whatever code its body carries.
        && status != StatusCode::REQUEST_TIMEOUT
        && status != StatusCode::TOO_MANY_REQUESTS
        && let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body)
    {
        OciDistributionError::RegistryError { envelope, url }
    } else {
        OciDistributionError::ServerError {
            code,
            url,
            message: String::from_utf8_lossy(body).into_owned(),
        }
    };
    RegistryError::from_oci(registry, what, e).with_retry_after(retry_after(headers))
}

/// The tag or digest a reference asks for.
fn target(reference: &Reference) -> &str {
    reference
        .digest()
        .or(reference.tag())
        .unwrap_or(crate::names::DEFAULT_TAG)
}

/// A `Retry-After` given in seconds (the HTTP-date form is rare from registries and is
/// ignored: the usual backoff applies).
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static(" 7 "));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(header::RETRY_AFTER, HeaderValue::from_static("-1"));
        assert_eq!(retry_after(&h), None);
    }
}
