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
//! Authorization: the bearer token oci-client obtained for this pull, else the session's
//! basic credentials, else none. Neither is ever logged or put in an error.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use oci_client::Reference;
use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use reqwest::header::{self, HeaderMap, HeaderValue};

use super::RegistryError;
use crate::names::Digest;
use crate::oci::manifest::MAX_DOCUMENT_BYTES;
use crate::oci::media;

/// Most of an error answer's body read (for the OCI error envelope).
const MAX_ERROR_BODY: usize = 64 * 1024;

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
    pub registry: &'a str,
    pub auth: &'a RegistryAuth,
    /// oci-client's bearer token for this pull, if the registry asked for one.
    pub token: Option<&'a str>,
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
            reference.resolve_registry(),
            reference.repository()
        )
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if let Some(token) = self.token
            && let Ok(mut value) = HeaderValue::from_str(&format!("Bearer {token}"))
        {
            value.set_sensitive(true);
            return request.header(header::AUTHORIZATION, value);
        }
        match self.auth {
            RegistryAuth::Basic(user, password) => request.basic_auth(user, Some(password)),
            _ => request,
        }
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
        RegistryError::from_oci(self.registry, "", OciDistributionError::RequestError(e))
    }

    /// Fetches the manifest `req` names, refusing it before reading when it is too large.
    pub async fn manifest(&self, req: &ManifestRequest<'_>) -> Result<Fetched, RegistryError> {
        let limit = req.size.map_or(MAX_DOCUMENT_BYTES as u64, |s| {
            s.min(MAX_DOCUMENT_BYTES as u64)
        });
        if let Some(size) = req.size.filter(|s| *s > MAX_DOCUMENT_BYTES as u64) {
            return Err(self.too_large(req, size.to_string()));
        }
        let url = self.url(req.reference);
        let request = self
            .client
            .get(&url)
            .header(header::ACCEPT, media::MANIFEST_ACCEPT.join(", "));
        let mut response = self
            .authorize(request)
            .send()
            .await
            .map_err(|e| self.transport(e))?;
        let status = response.status();
        if status != reqwest::StatusCode::OK {
            return Err(self.error_answer(req, response).await);
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

    /// Classifies an answer other than 200 as oci-client does, keeping `Retry-After`.
    async fn error_answer(
        &self,
        req: &ManifestRequest<'_>,
        mut response: reqwest::Response,
    ) -> RegistryError {
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let mut body = Vec::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            let room = MAX_ERROR_BODY.saturating_sub(body.len());
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if room <= chunk.len() {
                break;
            }
        }
        // Without the URL's query (a redirect target may carry credentials there).
        let url = response.url().path().to_owned();
        let code = status.as_u16();
        let e = if status == reqwest::StatusCode::UNAUTHORIZED {
            OciDistributionError::UnauthorizedError { url }
        } else if status.is_success() {
            OciDistributionError::SpecViolationError(format!("expected HTTP 200, got {status}"))
        } else if status.is_client_error()
            // A 408 or 429 is "come back later" whatever code its body carries.
            && status != reqwest::StatusCode::REQUEST_TIMEOUT
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
            && let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(&body)
        {
            OciDistributionError::RegistryError { envelope, url }
        } else {
            OciDistributionError::ServerError {
                code,
                url,
                message: String::from_utf8_lossy(&body).into_owned(),
            }
        };
        RegistryError::from_oci(self.registry, req.what, e).with_retry_after(retry_after)
    }
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
