//! The registry client: the distribution protocol over cri-imaged's own HTTP (reqwest),
//! with oci-client's reference and error types.
//!
//! It fetches manifests (choosing the node's platform from an index) and streams blobs;
//! it never writes to the store. Its requests are its own, not oci-client's `Client`,
//! because that client cannot present a client certificate (mutual TLS, certs.d
//! `*.cert`/`*.key`), reads its proxies from the environment its own way, asks `GET /v2/`
//! again for requests it could answer from what it knows, and drops a blob answer's
//! `Retry-After`. A [`Session`] is shared only by pulls from the same registry, over the same
//! scheme, with equal credentials and TLS material, so one pod's token never serves another's
//! pull. Sessions are kept between pulls for a while ([`sessions`]): building one is costly.
//! `access` decides the `Authorization` header, `token` talks to the token server, `fetch`
//! and `blob` make the GETs; `signatures` fetches what the trust check needs (cosign
//! attachments, lookaside files), capped; `helper` asks a credential helper
//! (docker-credential-NAME) for a registry's credentials; `proxy` holds the environment's
//! HTTP proxies.
//!
//! TLS: verified everywhere (system roots plus the source's certs.d CAs), except registries
//! the operator marked insecure — registries.conf `insecure = true`, or the insecure list
//! (hosts, literal-IP CIDRs, loopback) for a host without certs.d CAs — which are tried
//! over HTTPS without verification first and plain HTTP after; the scheme that worked is
//! remembered per registry. A certs.d client certificate is presented to its registry only.

mod access;
mod auth;
mod blob;
mod error;
mod fetch;
pub mod helper;
pub mod proxy;
pub mod retry;
mod sessions;
mod signatures;
mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use oci_client::Reference;

pub use auth::{AuthError, AuthFields, Credentials};
pub use error::RegistryError;
pub use proxy::ProxyConf;
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
    proxy: Arc<ProxyConf>,
    schemes: Mutex<HashMap<String, Scheme>>,
    sessions: sessions::Sessions,
}

impl RegistryClient {
    pub fn new(insecure: InsecureRegistries, platform: Platform) -> RegistryClient {
        RegistryClient::with_proxy(insecure, platform, ProxyConf::default())
    }

    /// A client whose requests go through `proxy` (the environment's, see [`proxy`]).
    pub fn with_proxy(
        insecure: InsecureRegistries,
        platform: Platform,
        proxy: ProxyConf,
    ) -> RegistryClient {
        RegistryClient {
            insecure,
            platform,
            proxy: Arc::new(proxy),
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
            let session = self
                .sessions
                .get_or_create(registry, scheme, creds, tls, || {
                    Session::new(registry, scheme, creds, tls, &self.proxy)
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SourceTls {
    /// registries.conf's `insecure` for this source; `None`: not set there.
    pub insecure: Option<bool>,
    /// CA certificates (PEM, one each) trusted besides the system roots.
    pub roots: Vec<Vec<u8>>,
    /// The client certificate presented to it (certs.d `*.cert` with its `*.key`).
    pub identity: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, PEM; `Debug` shows only the file.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ClientIdentity {
    /// The `*.cert` file it came from (for messages).
    pub file: String,
    /// The certificate(s) followed by the key.
    pub pem: Vec<u8>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientIdentity({:?}, <key redacted>)", self.file)
    }
}

/// A connection to one registry with one set of credentials and TLS settings; clones
/// share the HTTP client (its connection pool) and what `access` learnt (tokens).
#[derive(Clone)]
pub struct Session {
    /// Follows no redirect by itself (`fetch::get` does, keeping credentials home).
    http: reqwest::Client,
    scheme: &'static str,
    /// Whether TLS is verified (HTTPS with certificates checked).
    verified: bool,
    creds: Credentials,
    /// The registry as named.
    registry: String,
    /// Where it is reached (`index.docker.io` for `docker.io`).
    host: String,
    access: Arc<Mutex<access::AccessState>>,
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
        tls: &SourceTls,
        proxy: &Arc<ProxyConf>,
    ) -> Result<Session, RegistryError> {
        let building = |e: String| RegistryError::Other {
            registry: registry.to_owned(),
            reason: format!("building the HTTP client: {e}"),
        };
        let http = http_client(scheme, tls, proxy).map_err(building)?;
        let host = Reference::with_tag(registry.to_owned(), "x".into(), "x".into())
            .resolve_registry()
            .to_owned();
        Ok(Session {
            http,
            scheme: if scheme == Scheme::Http {
                "http"
            } else {
                "https"
            },
            verified: scheme == Scheme::Https,
            creds: creds.clone(),
            registry: registry.to_owned(),
            host,
            access: Arc::default(),
        })
    }

    /// Fetches a manifest with cri-imaged's own capped GET (see `fetch.rs`); `size` is the
    /// index descriptor's.
    async fn manifest_raw(
        &self,
        reference: &Reference,
        what: &str,
        size: Option<u64>,
        authorization: Option<&reqwest::header::HeaderValue>,
    ) -> Result<(Bytes, Digest), RegistryError> {
        let http = fetch::Http {
            client: &self.http,
            scheme: self.scheme,
            registry: &self.registry,
            host: &self.host,
            authorization,
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
        let (bytes, digest, token) = self.manifest_authorized(&reference, &what).await?;
        let parsed = oci::manifest::parse(&bytes, None)
            .map_err(|e| self.format_error(format!("manifest of {what}"), e))?;
        match parsed {
            Parsed::Manifest(manifest) => {
                oci::manifest::check_layer_types(&manifest)
                    .map_err(|e| self.format_error(format!("manifest of {what}"), e))?;
                Ok(FetchedManifest {
                    pulled_by: digest.clone(),
                    descriptor: Descriptor {
                        media_type: crate::oci::media::intern(&manifest.media_type),
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
                        token.as_ref(),
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
                        media_type: crate::oci::media::intern(&manifest.media_type),
                        digest: child_digest,
                        size: child_bytes.len() as u64,
                    },
                    bytes: child_bytes,
                    manifest,
                })
            }
        }
    }

    /// The manifest `reference` names, with the `Authorization` that got it: what is
    /// kept first, asked anew once if the registry answers 401 (a token that expired, a
    /// registry whose authentication changed).
    async fn manifest_authorized(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<(Bytes, Digest, Option<reqwest::header::HeaderValue>), RegistryError> {
        let repository = reference.repository();
        let mut fresh = false;
        loop {
            let authorization = self.authorization(repository, fresh).await?;
            match self
                .manifest_raw(reference, what, None, authorization.as_ref())
                .await
            {
                Ok((bytes, digest)) => return Ok((bytes, digest, authorization)),
                Err(RegistryError::Unauthorized { .. }) if !fresh => fresh = true,
                Err(e) => return Err(e),
            }
        }
    }

    /// Authenticates again (a token that expired mid-pull is replaced).
    pub async fn reauth(&self, name: &ImageName) -> Result<(), RegistryError> {
        self.authorization(name.repository(), true)
            .await
            .map(|_| ())
    }
}

/// The session's HTTP client: system roots plus `tls.roots`, the client identity, the
/// proxies, timeouts and agent; no redirects (see `fetch::get`).
fn http_client(
    scheme: Scheme,
    tls: &SourceTls,
    proxy: &Arc<ProxyConf>,
) -> Result<reqwest::Client, String> {
    let roots = tls
        .roots
        .iter()
        .map(|pem| reqwest::Certificate::from_pem(pem))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a certs.d CA: {e}"))?;
    let mut builder = reqwest::Client::builder()
        .danger_accept_invalid_certs(scheme == Scheme::InsecureHttps)
        .tls_certs_merge(roots)
        .user_agent(concat!("cri-imaged/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        // A registry that sends nothing for this long (no response headers, or no body
        // bytes; reset by every read) fails the pull instead of holding it, and a
        // download slot, forever.
        .read_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(identity) = &tls.identity {
        let id = reqwest::Identity::from_pem(&identity.pem)
            .map_err(|e| format!("client certificate {}: {e}", identity.file))?;
        builder = builder.identity(id);
    }
    proxy.apply(builder).build().map_err(|e| e.to_string())
}

/// Checks that `pem` is one certificate the TLS stack accepts (for certs.d files).
pub fn check_certificate(pem: &[u8]) -> Result<(), String> {
    reqwest::Certificate::from_pem(pem)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Checks that `pem` holds a certificate and a private key the TLS stack accepts as a
/// client identity (for certs.d pairs).
pub fn check_identity(pem: &[u8]) -> Result<(), String> {
    reqwest::Identity::from_pem(pem)
        .map(|_| ())
        .map_err(|e| e.to_string())
}
