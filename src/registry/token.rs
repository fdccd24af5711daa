//! The token server (distribution's token authentication): what a registry's `Bearer
//! realm=…,service=…` challenge names, and the access tokens it grants for
//! `repository:NAME:pull`. Basic credentials go with a `GET` of the realm (as docker,
//! containerd and containers/image send them); an identity token — Docker's OAuth2 refresh
//! token (CRI `AuthConfig.identity_token`, an auth file's `identitytoken`) — is `POST`ed as
//! a refresh grant (RFC 6749 §6, the form Docker and containerd send); anonymous pulls get
//! a token with a bare `GET`.
//!
//! Where a secret may go: only to the realm the registry names, over HTTPS — plain HTTP
//! only when the registry itself is reached without TLS verification (the operator marked
//! it insecure) — with the session's TLS settings, and never through a redirect (the
//! session's client follows none). No token appears in a log line or an error; a refused
//! secret is `Unauthorized` naming the registry, whatever the token server said.

use std::time::Duration;

use serde::Deserialize;

use super::error::transport;
use super::{Credentials, RegistryError};

/// Longest token-server answer read (a JWT is a few KiB).
const MAX_TOKEN_RESPONSE: usize = 64 * 1024;
/// Token lifetime when the answer gives none (distribution's documented default).
const DEFAULT_EXPIRY: u64 = 60;

/// A `Bearer` challenge's parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Challenge {
    pub realm: String,
    pub service: Option<String>,
}

/// The first `Bearer` challenge in `WWW-Authenticate` values.
pub(super) fn bearer_challenge<'a>(headers: impl Iterator<Item = &'a str>) -> Option<Challenge> {
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
    #[serde(default)]
    expires_in: Option<u64>,
}

/// The bearer token in a token server's answer: `access_token`, else `token`.
#[cfg(test)]
fn parse_token_response(body: &[u8]) -> Option<String> {
    parse_token(body).map(|(t, _)| t)
}

/// The bearer token (`access_token`, else `token`) and its lifetime (`expires_in`).
fn parse_token(body: &[u8]) -> Option<(String, Duration)> {
    let r: TokenResponse = serde_json::from_slice(body).ok()?;
    let life = Duration::from_secs(r.expires_in.unwrap_or(DEFAULT_EXPIRY).clamp(1, 24 * 3600));
    [r.access_token, r.token]
        .into_iter()
        .find(|t| !t.is_empty())
        .map(|t| (t, life))
}

/// A token-server answer that cannot be used (its body is never quoted: it holds tokens).
fn invalid(registry: &str, realm_host: &str, what: &str) -> RegistryError {
    RegistryError::InvalidContent {
        registry: registry.to_owned(),
        reason: format!("the answer of token server {realm_host} {what}"),
    }
}

/// One request for an access token.
pub(super) struct TokenRequest<'a> {
    pub http: &'a reqwest::Client,
    pub registry: &'a str,
    pub creds: &'a Credentials,
    /// Whether a realm over plain HTTP may get a secret: the registry itself is insecure.
    pub plain_realm_ok: bool,
    pub repository: &'a str,
}

impl TokenRequest<'_> {
    fn other(&self, reason: String) -> RegistryError {
        RegistryError::Other {
            registry: self.registry.to_owned(),
            reason,
        }
    }

    /// An access token (and its lifetime) from the server `challenge` names.
    pub(super) async fn get(
        &self,
        challenge: &Challenge,
    ) -> Result<(String, Duration), RegistryError> {
        let registry = self.registry;
        let mut realm = reqwest::Url::parse(&challenge.realm)
            .map_err(|e| self.other(format!("the Bearer challenge's realm is not a URL: {e}")))?;
        let realm_host = realm.host_str().unwrap_or_default().to_owned();
        let secret = !matches!(self.creds, Credentials::Anonymous);
        match realm.scheme() {
            "https" => {}
            "http" if self.plain_realm_ok || !secret => {}
            s => {
                let what = match self.creds {
                    Credentials::IdentityToken(_) => "an identity token",
                    _ => "a password",
                };
                return Err(RegistryError::Unsupported {
                    registry: registry.to_owned(),
                    reason: format!(
                        "its token server {realm_host} is reached over {s}: {what} is sent over HTTPS only (or to an insecure registry's realm)"
                    ),
                });
            }
        }
        let scope = format!("repository:{}:pull", self.repository);
        let request = match self.creds {
            Credentials::IdentityToken(refresh) => {
                tracing::debug!(registry, token_server = %realm_host, "exchanging an identity token");
                self.http
                    .post(realm)
                    .header(
                        reqwest::header::CONTENT_TYPE,
                        "application/x-www-form-urlencoded",
                    )
                    .body(grant_body(refresh, challenge.service.as_deref(), &scope))
            }
            creds => {
                {
                    let mut q = realm.query_pairs_mut();
                    if let Some(s) = &challenge.service {
                        q.append_pair("service", s);
                    }
                    q.append_pair("scope", &scope);
                }
                let request = self.http.get(realm);
                match creds {
                    Credentials::Basic { username, password } => {
                        request.basic_auth(username, Some(password))
                    }
                    _ => request,
                }
            }
        };
        let response = request.send().await.map_err(|e| transport(registry, e))?;
        let status = response.status();
        match status.as_u16() {
            200..=299 => {}
            // invalid_grant (400), or a server that says 401/403: the secret is refused.
            400 | 401 | 403 => {
                return Err(RegistryError::Unauthorized {
                    registry: registry.to_owned(),
                });
            }
            429 => {
                return Err(RegistryError::Throttled {
                    registry: registry.to_owned(),
                    reason: format!("token server {realm_host} answered HTTP 429"),
                    after: super::fetch::retry_after(response.headers()),
                });
            }
            code if code >= 500 || code == 408 => {
                return Err(RegistryError::Unavailable {
                    registry: registry.to_owned(),
                    reason: format!("token server {realm_host} answered HTTP {code}"),
                    after: super::fetch::retry_after(response.headers()),
                });
            }
            code => {
                return Err(self.other(format!("token server {realm_host} answered HTTP {code}")));
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
        parse_token(&body).ok_or_else(|| invalid(registry, &realm_host, "has no token"))
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
        assert_eq!(
            parse_token(br#"{"token":"b","expires_in":300}"#),
            Some(("b".into(), Duration::from_secs(300)))
        );
        assert_eq!(
            parse_token(br#"{"token":"b"}"#).unwrap().1,
            Duration::from_secs(DEFAULT_EXPIRY)
        );
    }
}
