//! The registry client: the only module that talks to `oci-client`.
//!
//! It fetches manifests (choosing the node's platform from an index) and streams blobs;
//! it never writes to the store. A [`Session`] (an oci-client `Client`) is shared only by
//! pulls from the same registry, over the same scheme, with equal credentials, because
//! oci-client keeps the first credentials and tokens it sees per registry: sharing a client
//! more widely would let one pod's token serve another's pull. Sessions are kept between
//! pulls for a while ([`sessions`]): building one is costly. `signatures` fetches what
//! the trust check needs (cosign attachments, lookaside files), capped; `helper` asks a
//! credential helper (docker-credential-NAME) for a registry's credentials.
//!
//! TLS: verified everywhere (system roots plus the source's certs.d CAs), except registries
//! the operator marked insecure — registries.conf `insecure = true`, or the insecure list
//! (hosts, literal-IP CIDRs, loopback) for a host without certs.d CAs — which are tried
//! over HTTPS without verification first and plain HTTP after; the scheme that worked is
//! remembered per registry.

mod auth;
mod error;
mod fetch;
pub mod helper;
pub mod retry;
mod sessions;
mod signatures;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use oci_client::client::{
    BlobResponse, Certificate, CertificateEncoding, ClientConfig, ClientProtocol,
};
use oci_client::{Client, Reference};

pub use auth::{AuthError, AuthFields, Credentials};
pub use error::RegistryError;
pub use retry::RetryPolicy;

use crate::names::{Digest, ImageName, InsecureRegistries, Reference as NameRef};
use crate::oci::{self, Descriptor, Manifest, Parsed, Platform};

/// A manifest chosen for the node, with everything needed to store it.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The digest the name resolved to: the index's for a multi-arch image.
    pub pulled_by: Digest,
    /// The platform manifest's descriptor.
    pub descriptor: Descriptor,
    /// Its exact bytes (they hash to `descriptor.digest`).
    pub bytes: Bytes,
    pub manifest: Manifest,
}

/// A blob body: chunks as they arrive.
pub type BlobStream = std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Scheme {
    Https,
    InsecureHttps,
    Http,
}

/// Builds sessions for pulls; remembers which scheme each insecure registry speaks.
pub struct RegistryClient {
    insecure: InsecureRegistries,
    platform: Platform,
    schemes: Mutex<HashMap<String, Scheme>>,
    sessions: sessions::Sessions,
}

impl RegistryClient {
    pub fn new(insecure: InsecureRegistries, platform: Platform) -> RegistryClient {
        RegistryClient {
            insecure,
            platform,
            schemes: Mutex::default(),
            sessions: sessions::Sessions::default(),
        }
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Whether `registry` is reached without TLS verification: registries.conf's
    /// `insecure` when set; otherwise the insecure list (hosts, literal-IP CIDRs, loopback),
    /// unless certs.d gives CAs for it (an operator who installs a CA wants it checked).
    pub fn is_insecure(&self, registry: &str, tls: &SourceTls) -> bool {
        tls.insecure
            .unwrap_or_else(|| tls.roots.is_empty() && self.insecure.is_insecure(registry))
    }

    fn schemes_to_try(&self, registry: &str, tls: &SourceTls) -> Vec<Scheme> {
        if !self.is_insecure(registry, tls) {
            return vec![Scheme::Https];
        }
        let known = self
            .schemes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(registry)
            .copied();
        match known {
            Some(Scheme::Http) => vec![Scheme::Http, Scheme::InsecureHttps],
            _ => vec![Scheme::InsecureHttps, Scheme::Http],
        }
    }

    fn remember(&self, registry: &str, scheme: Scheme) {
        if scheme != Scheme::Https {
            self.schemes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(registry.to_owned(), scheme);
        }
    }

    /// Resolves `name` to the node's manifest, returning a session bound to the registry
    /// scheme that answered.
    pub async fn open(
        &self,
        name: &ImageName,
        creds: &Credentials,
        tls: &SourceTls,
    ) -> Result<(Session, FetchedManifest), RegistryError> {
        let registry = name.registry();
        let mut last = None;
        for scheme in self.schemes_to_try(registry, tls) {
            let session =
                self.sessions
                    .get_or_create(registry, scheme, creds, &tls.roots, || {
                        Session::new(registry, scheme, creds, &tls.roots)
                    })?;
            match session.fetch_manifest(name, &self.platform).await {
                Ok(m) => {
                    self.remember(registry, scheme);
                    return Ok((session, m));
                }
                // Only a transport failure suggests the other scheme; an HTTP answer is final
                // (a Retry-After is one, and must reach the retry policy as it is).
                Err(e) if e.is_transport_failure() => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| RegistryError::Other {
            registry: registry.to_owned(),
            reason: "no scheme to try".into(),
        }))
    }
}

/// How one source is reached over TLS (from registries.conf and certs.d).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceTls {
    /// registries.conf's `insecure` for this source; `None`: not set there.
    pub insecure: Option<bool>,
    /// CA certificates (PEM, one each) trusted besides the system roots.
    pub roots: Vec<Vec<u8>>,
}

/// A connection to one registry with one set of credentials and TLS settings; clones
/// share the client (its connection pool and tokens).
#[derive(Clone)]
pub struct Session {
    client: Client,
    /// The same TLS and timeouts as `client`, for the requests cri-imaged makes itself
    /// (`fetch.rs`: manifests, read with a size cap).
    http: reqwest::Client,
    scheme: &'static str,
    auth: oci_client::secrets::RegistryAuth,
    /// Set when the credentials are an identity token, exchanged at each authentication.
    identity: Option<token::Identity>,
    registry: String,
    /// Whether the registry's token realm is known to be HTTPS (or need not be: the
    /// registry itself is insecure). A password goes to no realm over plain HTTP.
    basic_realm_checked: Arc<std::sync::atomic::AtomicBool>,
}

fn oci_reference(name: &ImageName, digest: Option<&Digest>) -> Reference {
    let (registry, repo) = (name.registry().to_owned(), name.repository().to_owned());
    match (digest, name.reference()) {
        (Some(d), _) => Reference::with_digest(registry, repo, d.to_string()),
        (None, NameRef::Digest(d)) => Reference::with_digest(registry, repo, d.to_string()),
        (None, NameRef::Tag(t)) => Reference::with_tag(registry, repo, t.clone()),
    }
}

impl Session {
    fn new(
        registry: &str,
        scheme: Scheme,
        creds: &Credentials,
        roots: &[Vec<u8>],
    ) -> Result<Session, RegistryError> {
        let config = ClientConfig {
            protocol: if scheme == Scheme::Http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: scheme == Scheme::InsecureHttps,
            platform_resolver: None,
            connect_timeout: Some(Duration::from_secs(30)),
            // A registry that sends nothing for this long (no response headers, or no body
            // bytes; reset by every read) fails the pull instead of holding it, and a
            // download slot, forever.
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("cri-imaged/", env!("CARGO_PKG_VERSION")),
            extra_root_certificates: roots
                .iter()
                .map(|pem| Certificate {
                    encoding: CertificateEncoding::Pem,
                    data: pem.clone(),
                })
                .collect(),
            ..ClientConfig::default()
        };
        let building = |e: &dyn std::fmt::Display| RegistryError::Other {
            registry: registry.to_owned(),
            reason: format!("building the HTTP client: {e}"),
        };
        let http = own_http_client(&config).map_err(|e| building(&e))?;
        // `Client::new` silently falls back to defaults on a bad config: use try_from.
        let client = Client::try_from(config).map_err(|e| building(&e))?;
        Ok(Session {
            client,
            http,
            scheme: if scheme == Scheme::Http {
                "http"
            } else {
                "https"
            },
            auth: creds.to_oci(),
            identity: token::Identity::for_credentials(creds, registry, scheme, roots)?,
            registry: registry.to_owned(),
            basic_realm_checked: Arc::new(std::sync::atomic::AtomicBool::new(
                scheme != Scheme::Https,
            )),
        })
    }

    /// Fetches a manifest with cri-imaged's own capped GET (see `fetch.rs`); `size` is the
    /// index descriptor's.
    async fn manifest_raw(
        &self,
        reference: &Reference,
        what: &str,
        size: Option<u64>,
        token: Option<&str>,
    ) -> Result<(Bytes, Digest), RegistryError> {
        let http = fetch::Http {
            client: &self.http,
            scheme: self.scheme,
            registry: &self.registry,
            auth: &self.auth,
            token,
        };
        let req = fetch::ManifestRequest {
            reference,
            what,
            size,
        };
        let fetched = http.manifest(&req).await?;
        Ok((fetched.bytes, fetched.digest))
    }

    /// A document that could not be used: unsupported (schema 1, other media types) or
    /// invalid.
    fn format_error(&self, context: String, e: oci::FormatError) -> RegistryError {
        let reason = format!("{context}: {e}");
        match e {
            oci::FormatError::SchemaVersion(_)
            | oci::FormatError::MediaType(_)
            | oci::FormatError::LayerMediaType { .. }
            | oci::FormatError::TooLarge { .. } => RegistryError::Unsupported {
                registry: self.registry.clone(),
                reason,
            },
            oci::FormatError::Json(_)
            | oci::FormatError::Digest(_)
            | oci::FormatError::Invalid(_) => self.invalid(reason),
        }
    }

    fn invalid(&self, reason: String) -> RegistryError {
        RegistryError::InvalidContent {
            registry: self.registry.clone(),
            reason,
        }
    }

    /// Fetches the manifest `name` points to; for an index, the node platform's manifest.
    pub async fn fetch_manifest(
        &self,
        name: &ImageName,
        platform: &Platform,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = name.to_string();
        let reference = oci_reference(name, None);
        // Authenticate explicitly: oci-client swallows token errors on its implicit path,
        // which would turn a token-server outage into a misleading "unauthorized".
        // The bearer token (oci-client's, or one an identity token was exchanged for) goes
        // with our own capped manifest GET.
        let token = self.authenticate(&reference, &what).await?;
        let (bytes, digest) = self
            .manifest_raw(&reference, &what, None, token.as_deref())
            .await?;
        let parsed = oci::manifest::parse(&bytes, None)
            .map_err(|e| self.format_error(format!("manifest of {what}"), e))?;
        match parsed {
            Parsed::Manifest(manifest) => {
                oci::manifest::check_layer_types(&manifest)
                    .map_err(|e| self.format_error(format!("manifest of {what}"), e))?;
                Ok(FetchedManifest {
                    pulled_by: digest.clone(),
                    descriptor: Descriptor {
                        media_type: manifest.media_type.clone(),
                        digest,
                        size: bytes.len() as u64,
                    },
                    bytes,
                    manifest,
                })
            }
            Parsed::Index(index) => {
                let child = platform
                    .select(&index)
                    .ok_or_else(|| RegistryError::NoPlatform {
                        registry: self.registry.clone(),
                        platform: platform.to_string(),
                    })?;
                let (child_bytes, child_digest) = self
                    .manifest_raw(
                        &oci_reference(name, Some(&child.digest)),
                        &what,
                        Some(child.size),
                        token.as_deref(),
                    )
                    .await?;
                if child_digest != child.digest {
                    return Err(RegistryError::DigestMismatch {
                        registry: self.registry.clone(),
                        reason: format!(
                            "manifest {} was served for {}",
                            child_digest, child.digest
                        ),
                    });
                }
                let Parsed::Manifest(manifest) = oci::manifest::parse(&child_bytes, None)
                    .map_err(|e| self.format_error(format!("manifest {}", child.digest), e))?
                else {
                    return Err(RegistryError::Unsupported {
                        registry: self.registry.clone(),
                        reason: format!("index entry {} is itself an index", child.digest),
                    });
                };
                oci::manifest::check_layer_types(&manifest)
                    .map_err(|e| self.format_error(format!("manifest {}", child.digest), e))?;
                Ok(FetchedManifest {
                    pulled_by: digest,
                    descriptor: Descriptor {
                        media_type: manifest.media_type.clone(),
                        digest: child_digest,
                        size: child_bytes.len() as u64,
                    },
                    bytes: child_bytes,
                    manifest,
                })
            }
        }
    }

    /// Authenticates again (a token that expired mid-pull is replaced).
    pub async fn reauth(&self, name: &ImageName) -> Result<(), RegistryError> {
        self.authenticate(&oci_reference(name, None), &name.to_string())
            .await
            .map(|_| ())
    }

    /// Streams a blob's body from byte `offset` on. The flag says whether the registry
    /// honoured the range (206); `false` means the body starts at byte 0 whatever was asked
    /// (200). The caller hashes and counts what it receives: the stream itself is not
    /// trusted.
    pub async fn fetch_blob(
        &self,
        name: &ImageName,
        blob: &Descriptor,
        offset: u64,
    ) -> Result<(BlobStream, bool), RegistryError> {
        let reference = oci_reference(name, None);
        let digest = blob.digest.to_string();
        let what = format!("blob {digest} of {name}");
        // Asking for bytes=0- gets an unverified (206) stream: we hash it ourselves once,
        // instead of oci-client and us both hashing every byte.
        let response = self
            .client
            .pull_blob_stream_partial(&reference, digest.as_str(), offset, None)
            .await
            .map_err(|e| RegistryError::from_oci(&self.registry, &what, e))?;
        let (sized, partial) = match response {
            BlobResponse::Full(s) => (s, false),
            BlobResponse::Partial(s) => (s, true),
        };
        let registry = self.registry.clone();
        // oci-client's stream is not fused after an error: stop at the first one. A registry
        // that ignores Range answers 200, and oci-client then verifies the digest itself:
        // its digest error is bad content, not the network.
        let stream = sized.stream.scan(false, move |failed, item| {
            if *failed {
                return futures_util::future::ready(None);
            }
            let item = match item {
                Ok(chunk) => Ok(chunk),
                Err(e) if is_digest_error(&e) => Err(RegistryError::DigestMismatch {
                    registry: registry.clone(),
                    reason: format!("blob {digest}: {e}"),
                }),
                Err(e) => Err(error::unavailable(registry.clone(), e.to_string(), &e)),
            };
            *failed = item.is_err();
            futures_util::future::ready(Some(item))
        });
        Ok((Box::pin(stream), partial))
    }
}

/// A reqwest client like the one oci-client builds from `config` (TLS, timeouts, agent).
fn own_http_client(config: &ClientConfig) -> Result<reqwest::Client, reqwest::Error> {
    let roots = config
        .extra_root_certificates
        .iter()
        .map(|c| reqwest::Certificate::from_pem(&c.data))
        .collect::<Result<Vec<_>, _>>()?;
    let mut builder = reqwest::Client::builder()
        .danger_accept_invalid_certs(config.accept_invalid_certificates)
        .tls_certs_merge(roots)
        .user_agent(config.user_agent);
    if let Some(t) = config.read_timeout {
        builder = builder.read_timeout(t);
    }
    if let Some(t) = config.connect_timeout {
        builder = builder.connect_timeout(t);
    }
    builder.build()
}

/// Checks that `pem` is one certificate the TLS stack accepts (for certs.d files).
pub fn check_certificate(pem: &[u8]) -> Result<(), String> {
    reqwest::Certificate::from_pem(pem)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether a blob stream error is oci-client's digest verification failing.
fn is_digest_error(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|inner| {
        inner
            .downcast_ref::<oci_client::errors::DigestError>()
            .is_some()
    })
}
