//! Identity tokens: Docker's OAuth2 refresh tokens (CRI `AuthConfig.identity_token`, an
//! auth file's `identitytoken`). oci-client only knows Basic and ready bearer tokens, so
//! the exchange is done here: read the registry's `Bearer realm=…,service=…` challenge
//! from an anonymous `GET /v2/`, POST the refresh grant to the realm (RFC 6749 §6, the
//! form Docker and containerd send), and hand the `access_token` to oci-client as a bearer
//! token for the session. A 401 mid-pull repeats the exchange (`Session::reauth`).
//!
//! Where the refresh token may go: only to the realm the registry names, over HTTPS — plain
//! HTTP only when the registry itself is reached without TLS verification (operator
//! marked it insecure) — with the source's certs.d CAs and insecure setting, and never
//! through a redirect. Neither token appears in a log line or an error; a refused token is
//! `Unauthorized` naming the registry, whatever the token server said.

use std::time::Duration;

use oci_client::{Reference, RegistryOperation};
use serde::Deserialize;

use super::error::unavailable;
use super::{Credentials, RegistryError, Scheme, Session};

/// Longest token-server answer read (a JWT is a few KiB).
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;

/// What a session needs to trade an identity token for access tokens.
#[derive(Clone)]
pub(super) struct Identity {
    refresh_token: String,
    http: reqwest::Client,
    /// `https` (`http` when the registry speaks plain HTTP).
    url_scheme: &'static str,
    /// Whether a realm over plain HTTP is acceptable: the registry is insecure.
    plain_realm_ok: bool,
}

impl Identity {
    /// The exchange setup for `creds` when they are an identity token; `None` otherwise.
    pub(super) fn for_credentials(
        creds: &Credentials,
        registry: &str,
        scheme: Scheme,
        roots: &[Vec<u8>],
    ) -> Result<Option<Identity>, RegistryError> {
        let Credentials::IdentityToken(refresh_token) = creds else {
            return Ok(None);
        };
        let other = |reason: String| RegistryError::Other {
            registry: registry.to_owned(),
            reason,
        };
        let mut roots_parsed = Vec::with_capacity(roots.len());
        for pem in roots {
            roots_parsed.push(
                reqwest::Certificate::from_pem(pem)
                    .map_err(|e| other(format!("a certs.d CA: {e}")))?,
            );
        }
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(scheme == Scheme::InsecureHttps)
            .tls_certs_merge(roots_parsed)
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("cri-imaged/", env!("CARGO_PKG_VERSION")))
            // A redirect would carry the refresh token somewhere the registry did not name.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| other(format!("building the HTTP client: {e}")))?;
        Ok(Some(Identity {
            refresh_token: refresh_token.clone(),
            http,
            url_scheme: if scheme == Scheme::Http {
                "http"
            } else {
                "https"
            },
            plain_realm_ok: scheme != Scheme::Https,
        }))
    }
}

/// A `Bearer` challenge's parameters.
#[derive(Debug, PartialEq, Eq)]
struct Challenge {
    realm: String,
    service: Option<String>,
}

/// The first `Bearer` challenge in `WWW-Authenticate` values.
fn bearer_challenge<'a>(headers: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    for value in headers {
        for challenge in http_auth::parser::ChallengeParser::new(value).flatten() {
            if !challenge.scheme.eq_ignore_ascii_case("bearer") {
                continue;
            }
            let param = |name: &str| {
                challenge
                    .params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.to_unescaped())
            };
            if let Some(realm) = param("realm") {
                return Some(Challenge {
                    realm,
                    service: param("service"),
                });
            }
        }
    }
    None
}

/// `application/x-www-form-urlencoded` for one value: unreserved characters as they are,
/// every other byte `%XX`.
fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The refresh grant's body.
fn grant_body(refresh_token: &str, service: Option<&str>, scope: &str) -> String {
    let mut fields = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
    ];
    if let Some(s) = service {
        fields.push(("service", s));
    }
    fields.push(("scope", scope));
    fields.push(("client_id", "cri-imaged"));
    fields
        .iter()
        .map(|(k, v)| format!("{k}={}", form_encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

#[derive(Deserialize)]
struct TokenResponse {
    #[serde(default)]
    access_token: String,
    #[serde(default)]
    token: String,
}

/// The bearer token in a token server's answer: `access_token`, else `token`.
fn parse_token_response(body: &[u8]) -> Option<String> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    [r.access_token, r.token]
        .into_iter()
        .find(|t| !t.is_empty())
}

/// A transport failure, without the URL's query (the host is enough to say where).
fn transport(registry: &str, e: reqwest::Error) -> RegistryError {
    let host = e.url().and_then(|u| u.host_str().map(str::to_owned));
    let e = e.without_url();
    let text = e.to_string();
    unavailable(
        registry.to_owned(),
        host.map_or(text.clone(), |h| format!("{h}: {text}")),
        &e,
    )
}

impl Identity {
    /// An access token for pulling `reference`'s repository; `None` when the registry asks
    /// for no authentication at all.
    async fn access_token(
        &self,
        registry: &str,
        reference: &Reference,
    ) -> Result<Option<String>, RegistryError> {
        let other = |reason: String| RegistryError::Other {
            registry: registry.to_owned(),
            reason,
        };
        let probe = self
            .http
            .get(format!(
                "{}://{}/v2/",
                self.url_scheme,
                reference.resolve_registry()
            ))
            .send()
            .await
            .map_err(|e| transport(registry, e))?;
        if probe.status().is_success() {
            return Ok(None);
        }
        let values = probe.headers().get_all(reqwest::header::WWW_AUTHENTICATE);
        let challenge = bearer_challenge(values.iter().filter_map(|v| v.to_str().ok()))
            .ok_or_else(|| {
                other(format!(
                    "an identity token needs a token server, but GET /v2/ answered {} without a Bearer challenge",
                    probe.status()
                ))
            })?;
        let realm = reqwest::Url::parse(&challenge.realm)
            .map_err(|e| other(format!("the Bearer challenge's realm is not a URL: {e}")))?;
        match realm.scheme() {
            "https" => {}
            "http" if self.plain_realm_ok => {}
            s => {
                return Err(other(format!(
                    "the token server {} is reached over {s}: an identity token is sent over HTTPS only (or to an insecure registry's realm)",
                    realm.host_str().unwrap_or_default()
                )));
            }
        }
        let realm_host = realm.host_str().unwrap_or_default().to_owned();
        tracing::debug!(registry, token_server = %realm_host, "exchanging an identity token");
        let scope = format!("repository:{}:pull", reference.repository());
        let response = self
            .http
            .post(realm)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(grant_body(
                &self.refresh_token,
                challenge.service.as_deref(),
                &scope,
            ))
            .send()
            .await
            .map_err(|e| transport(registry, e))?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => {}
            // invalid_grant (400), or a server that says 401/403: the token is refused.
            400 | 401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_owned(),
                });
            }
            429 => {
                return Err(RegistryError::Throttled {
                    registry: registry.to_owned(),
                    reason: format!("token server {realm_host} answered HTTP 429"),
                    after: None,
                });
            }
            code if code >= 500 || code == 408 => {
                return Err(RegistryError::Unavailable {
                    registry: registry.to_owned(),
                    reason: format!("token server {realm_host} answered HTTP {code}"),
                    after: None,
                });
            }
            code => {
                return Err(other(format!(
                    "token server {realm_host} answered HTTP {code}"
                )));
            }
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_TOKEN_RESPONSE as u64)
        {
            return Err(invalid(registry, &realm_host, "is too large"));
        }
        let body = response.bytes().await.map_err(|e| transport(registry, e))?;
        if body.len() > MAX_TOKEN_RESPONSE {
            return Err(invalid(registry, &realm_host, "is too large"));
        }
        parse_token_response(&body)
            .map(Some)
            .ok_or_else(|| invalid(registry, &realm_host, "has no access_token"))
    }
}

/// A token-server answer that cannot be used (its body is never quoted: it holds tokens).
fn invalid(registry: &str, realm_host: &str, what: &str) -> RegistryError {
    RegistryError::InvalidContent {
        registry: registry.to_owned(),
        reason: format!("the answer of token server {realm_host} {what}"),
    }
}

impl Session {
    /// Authenticates the session for pulling `reference`: an identity token is exchanged
    /// first (again on every call, so a reauth gets a fresh access token); other
    /// credentials go to oci-client as they are.
    pub(super) async fn authenticate(
        &self,
        reference: &Reference,
        what: &str,
    ) -> Result<Option<String>, RegistryError> {
        self.check_basic_realm(reference).await?;
        let auth = match &self.identity {
            None => self.auth.clone(),
            Some(identity) => match identity.access_token(&self.registry, reference).await? {
                Some(token) => oci_client::secrets::RegistryAuth::Bearer(token),
                None => oci_client::secrets::RegistryAuth::Anonymous,
            },
        };
        self.client
            .auth(reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|e| RegistryError::from_oci(&self.registry, what, e))
    }
}

impl Session {
    /// oci-client sends a username and password to whatever realm the registry's Bearer
    /// challenge names, plain HTTP included. On a verified HTTPS registry, cri-imaged looks
    /// at the challenge first (once per session) and refuses an `http://` realm.
    async fn check_basic_realm(&self, reference: &Reference) -> Result<(), RegistryError> {
        use std::sync::atomic::Ordering;
        if !matches!(self.auth, oci_client::secrets::RegistryAuth::Basic(..))
            || self.basic_realm_checked.load(Ordering::Relaxed)
        {
            return Ok(());
        }
        let probe = self
            .http
            .get(format!("https://{}/v2/", reference.resolve_registry()))
            .send()
            .await
            .map_err(|e| transport(&self.registry, e))?;
        let values = probe.headers().get_all(reqwest::header::WWW_AUTHENTICATE);
        if let Some(challenge) = bearer_challenge(values.iter().filter_map(|v| v.to_str().ok()))
            && let Ok(realm) = reqwest::Url::parse(&challenge.realm)
            && realm.scheme() != "https"
        {
            return Err(RegistryError::Unsupported {
                registry: self.registry.clone(),
                reason: format!(
                    "its token server {} is reached over {}: a password is sent over HTTPS only",
                    realm.host_str().unwrap_or_default(),
                    realm.scheme()
                ),
            });
        }
        self.basic_realm_checked.store(true, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bearer_challenge_among_others() {
        let got = bearer_challenge(
            [
                r#"Basic realm="x""#,
                r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a:pull""#,
            ]
            .into_iter(),
        );
        assert_eq!(
            got,
            Some(Challenge {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
            })
        );
        assert_eq!(
            bearer_challenge([r#"bearer realm="http://h/t""#].into_iter()),
            Some(Challenge {
                realm: "http://h/t".into(),
                service: None,
            })
        );
        assert_eq!(bearer_challenge([r#"Basic realm="x""#].into_iter()), None);
        assert_eq!(
            bearer_challenge([r#"Bearer service="s""#].into_iter()),
            None
        );
    }

    #[test]
    fn the_grant_is_form_encoded() {
        assert_eq!(
            grant_body("a+b/c=d&e f", Some("reg.io:5000"), "repository:x/y:pull"),
            "grant_type=refresh_token&refresh_token=a%2Bb%2Fc%3Dd%26e%20f&service=reg.io%3A5000&scope=repository%3Ax%2Fy%3Apull&client_id=cri-imaged"
        );
        assert_eq!(
            grant_body("t", None, "s"),
            "grant_type=refresh_token&refresh_token=t&scope=s&client_id=cri-imaged"
        );
        assert_eq!(form_encode("é~"), "%C3%A9~");
    }

    #[test]
    fn takes_access_token_then_token() {
        assert_eq!(
            parse_token_response(br#"{"access_token":"a","token":"b"}"#),
            Some("a".into())
        );
        assert_eq!(
            parse_token_response(br#"{"token":"b","expires_in":60}"#),
            Some("b".into())
        );
        assert_eq!(parse_token_response(br#"{"token":""}"#), None);
        assert_eq!(parse_token_response(b"not json"), None);
    }
}
