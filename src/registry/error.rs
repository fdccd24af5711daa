//! Errors of the registry client, classified by what the caller can do about them. The
//! classification matches oci-client's variants, HTTP statuses, OCI error codes and the
//! error types in a transport failure's cause chain, never message text; each variant has
//! one [`Kind`] (the table in `kind.rs`).

use std::time::Duration;

use oci_client::errors::{OciDistributionError, OciErrorCode};

use crate::kind::Kind;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{what} not found in registry {registry}")]
    NotFound { registry: String, what: String },
    #[error("registry {registry} refused the credentials or requires authentication")]
    Unauthorized { registry: String },
    #[error("registry {registry} denied access")]
    Denied { registry: String },
    /// Unreachable, broken off, or answering 5xx/408; `after` is its `Retry-After`.
    #[error("registry {registry} is unavailable: {reason}{}", retry_note(*after))]
    Unavailable {
        registry: String,
        reason: String,
        after: Option<Duration>,
    },
    /// The registry asks clients to slow down (429, `TOOMANYREQUESTS`).
    #[error("registry {registry} is unavailable: {reason}{}", retry_note(*after))]
    Throttled {
        registry: String,
        reason: String,
        after: Option<Duration>,
    },
    /// Unavailable because the connection or a read timed out.
    #[error("registry {registry} is unavailable: {reason}")]
    Timeout { registry: String, reason: String },
    /// The registry ended the TLS handshake over the client certificate: it requires one
    /// and none was presented, or it does not accept the one presented (unknown CA,
    /// expired, revoked).
    #[error(
        "registry {registry} refused the TLS client certificate or requires one (certs.d <host>/*.cert and *.key): {reason}"
    )]
    ClientCertificate { registry: String, reason: String },
    /// Unavailable because the TLS handshake failed (certificate, protocol).
    #[error("registry {registry} is unavailable: {reason}")]
    Tls { registry: String, reason: String },
    #[error("registry {registry} served invalid content: {reason}")]
    InvalidContent { registry: String, reason: String },
    /// Invalid content of one kind: bytes that do not hash to (or have the size of) the
    /// digest they were served for.
    #[error("registry {registry} served invalid content: {reason}")]
    DigestMismatch { registry: String, reason: String },
    #[error("registry {registry} served content cri-imaged does not support: {reason}")]
    Unsupported { registry: String, reason: String },
    #[error("no manifest for platform {platform} in the index served by {registry}")]
    NoPlatform { registry: String, platform: String },
    #[error("registry {registry}: {reason}")]
    Other { registry: String, reason: String },
}

fn retry_note(after: Option<Duration>) -> String {
    after.map_or(String::new(), |a| {
        format!(" (it asks to retry after {}s)", a.as_secs())
    })
}

/// A transport error's text with its cause chain.
fn reason(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// A transfer failure, classified by the error types in its cause chain: a timeout, a
/// TLS failure, or another network failure.
pub(super) fn unavailable(
    registry: String,
    reason: String,
    e: &(dyn std::error::Error + 'static),
) -> RegistryError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        // An io::Error's source() skips the error it wraps: look inside it too.
        let tls = c.downcast_ref::<rustls::Error>().or_else(|| {
            c.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        if let Some(tls) = tls {
            return if refuses_client_certificate(tls) {
                RegistryError::ClientCertificate { registry, reason }
            } else {
                RegistryError::Tls { registry, reason }
            };
        }
        let timed_out = c
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout)
            || c.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
        if timed_out {
            return RegistryError::Timeout { registry, reason };
        }
        cause = c.source();
    }
    RegistryError::Unavailable {
        registry,
        reason,
        after: None,
    }
}

/// A request that failed in transport, classified like [`unavailable`]. Without the URL:
/// a redirect target (a blob CDN's signed URL) can carry credentials in its query; the
/// host is enough to say where it failed.
pub(super) fn transport(registry: &str, e: reqwest::Error) -> RegistryError {
    let host = e.url().and_then(|u| u.host_str().map(str::to_owned));
    let e = e.without_url();
    let text = reason(&e);
    unavailable(
        registry.to_owned(),
        host.map_or(text.clone(), |h| format!("{h}: {text}")),
        &e,
    )
}

/// Whether the server's alert is about the client's certificate (a server's own
/// certificate is judged here, never by an alert from it).
fn refuses_client_certificate(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e,
        rustls::Error::AlertReceived(
            A::BadCertificate
                | A::UnsupportedCertificate
                | A::CertificateRevoked
                | A::CertificateExpired
                | A::CertificateUnknown
                | A::UnknownCA
                | A::AccessDenied
                | A::CertificateRequired
        )
    )
}

impl RegistryError {
    /// The failure's kind: one line per variant.
    pub fn kind(&self) -> Kind {
        match self {
            RegistryError::NotFound { .. } | RegistryError::NoPlatform { .. } => Kind::NotFound,
            RegistryError::Unauthorized { .. } | RegistryError::ClientCertificate { .. } => {
                Kind::Unauthenticated
            }
            RegistryError::Denied { .. } => Kind::Denied,
            RegistryError::Unavailable { .. } => Kind::Network,
            RegistryError::Throttled { .. } => Kind::Throttled,
            RegistryError::Timeout { .. } => Kind::Timeout,
            RegistryError::Tls { .. } => Kind::Tls,
            RegistryError::InvalidContent { .. } => Kind::InvalidContent,
            RegistryError::DigestMismatch { .. } => Kind::DigestMismatch,
            RegistryError::Unsupported { .. } => Kind::Unsupported,
            RegistryError::Other { .. } => Kind::RegistryFailed,
        }
    }

    /// Whether the registry could not be reached or stopped answering, without saying
    /// when to come back (a `Retry-After` is an answer, and final for the scheme choice).
    pub fn is_transport_failure(&self) -> bool {
        self.retry_after().is_none()
            && matches!(
                self.kind(),
                Kind::Network | Kind::Throttled | Kind::Timeout | Kind::Tls
            )
    }

    /// The wait the registry asked for (`Retry-After`), if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RegistryError::Unavailable { after, .. } | RegistryError::Throttled { after, .. } => {
                *after
            }
            _ => None,
        }
    }

    /// The same failure, with the `Retry-After` the registry sent along.
    pub(super) fn with_retry_after(mut self, asked: Option<Duration>) -> RegistryError {
        if let RegistryError::Unavailable { after, .. } | RegistryError::Throttled { after, .. } =
            &mut self
        {
            *after = asked;
        }
        self
    }

    pub(super) fn from_oci(registry: &str, what: &str, e: OciDistributionError) -> RegistryError {
        let registry = registry.to_owned();
        match e {
            OciDistributionError::RegistryError { envelope, .. } => {
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NotFound,
                    ) => RegistryError::NotFound {
                        registry,
                        what: what.to_owned(),
                    },
                    Some(OciErrorCode::Unauthorized) => RegistryError::Unauthorized { registry },
                    Some(OciErrorCode::Denied) => RegistryError::Denied { registry },
                    Some(OciErrorCode::Toomanyrequests) => RegistryError::Throttled {
                        registry,
                        reason: "too many requests".into(),
                        after: None,
                    },
                    Some(
                        OciErrorCode::NameInvalid
                        | OciErrorCode::TagInvalid
                        | OciErrorCode::ManifestInvalid
                        | OciErrorCode::DigestInvalid,
                    ) => RegistryError::Other {
                        registry,
                        reason: envelope.to_string(),
                    },
                    _ => RegistryError::Other {
                        registry,
                        reason: envelope.to_string(),
                    },
                }
            }
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                RegistryError::Unauthorized { registry }
            }
            OciDistributionError::ServerError { code: 404, .. } => RegistryError::NotFound {
                registry,
                what: what.to_owned(),
            },
            OciDistributionError::ServerError { code: 401, .. } => {
                RegistryError::Unauthorized { registry }
            }
            OciDistributionError::ServerError { code: 403, .. } => {
                RegistryError::Denied { registry }
            }
            OciDistributionError::ServerError { code: 429, .. } => RegistryError::Throttled {
                registry,
                reason: "HTTP 429".into(),
                after: None,
            },
            OciDistributionError::ServerError { code, .. } if code >= 500 || code == 408 => {
                RegistryError::Unavailable {
                    registry,
                    reason: format!("HTTP {code}"),
                    after: None,
                }
            }
            OciDistributionError::ServerError { code, message, .. } => RegistryError::Other {
                registry,
                reason: format!(
                    "HTTP {code}: {}",
                    message.chars().take(200).collect::<String>()
                ),
            },
            OciDistributionError::RequestError(e) => transport(&registry, e),
            OciDistributionError::IoError(e) => {
                let text = e.to_string();
                unavailable(registry, text, &e)
            }
            e @ (OciDistributionError::UnsupportedMediaTypeError(_)
            | OciDistributionError::UnsupportedSchemaVersionError(_)) => {
                RegistryError::Unsupported {
                    registry,
                    reason: e.to_string(),
                }
            }
            e @ OciDistributionError::DigestError(_) => RegistryError::DigestMismatch {
                registry,
                reason: e.to_string(),
            },
            e @ (OciDistributionError::ManifestParsingError(_)
            | OciDistributionError::VersionedParsingError(_)
            | OciDistributionError::ManifestEncodingError(_)
            | OciDistributionError::JsonError(_)
            | OciDistributionError::SpecViolationError(_)
            | OciDistributionError::RegistryNoDigestError
            | OciDistributionError::HeaderValueError(_)) => RegistryError::InvalidContent {
                registry,
                reason: e.to_string(),
            },
            OciDistributionError::ImageManifestNotFoundError(_) => RegistryError::NotFound {
                registry,
                what: what.to_owned(),
            },
            e => RegistryError::Other {
                registry,
                reason: e.to_string(),
            },
        }
    }
}
