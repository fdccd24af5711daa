//! What a session sends in `Authorization`, and when it asks again.
//!
//! The registry's challenge (an anonymous `GET /v2/`) is asked once per session and kept:
//! none (an open registry: no header at all), `Basic` (the session's username and
//! password), or `Bearer` (an access token per repository from the token server,
//! `token.rs`, kept for its lifetime). So a registry that needs no authentication costs no
//! request beyond the manifest and blobs, and a kept session pulls again without a token
//! round trip. A CRI `registry_token` is sent as it is. A 401 makes the caller ask again
//! with `fresh` (the challenge and the repository's token are fetched anew, once).
//!
//! The header value is marked sensitive (never printed by the HTTP stack) and appears in
//! no log line or error.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::header::{self, HeaderValue};

use super::error::transport;
use super::token::{Challenge, TokenRequest, bearer_challenge};
use super::{Credentials, RegistryError, Session};

/// What the registry asked for at `GET /v2/`.
#[derive(Debug, Clone)]
enum Asked {
    Nothing,
    Basic,
    Bearer(Challenge),
}

/// A session's knowledge of its registry's authentication.
#[derive(Default)]
pub(super) struct AccessState {
    asked: Option<Asked>,
    /// Access tokens per repository, with when they stop being used.
    tokens: HashMap<String, (HeaderValue, Instant)>,
}

/// Tokens are replaced this long before they expire (a pull started on a token that then
/// expires gets a 401 and asks again anyway).
const MARGIN: Duration = Duration::from_secs(5);
/// Repositories whose tokens a session keeps at most.
const MAX_TOKENS: usize = 256;

fn sensitive(text: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(text).ok()?;
    v.set_sensitive(true);
    Some(v)
}

fn basic(username: &str, password: &str) -> Option<HeaderValue> {
    let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    sensitive(&format!("Basic {pair}"))
}

impl Session {
    fn access(&self) -> std::sync::MutexGuard<'_, AccessState> {
        self.access.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The `Authorization` header for pulling from `repository`; `None`: send none.
    /// `fresh` forgets what is kept and asks the registry (and its token server) again.
    pub(super) async fn authorization(
        &self,
        repository: &str,
        fresh: bool,
    ) -> Result<Option<HeaderValue>, RegistryError> {
        if let Credentials::Bearer(token) = &self.creds {
            return Ok(sensitive(&format!("Bearer {token}")));
        }
        let asked = {
            let mut state = self.access();
            if fresh {
                state.asked = None;
                state.tokens.remove(repository);
            }
            if let Some((value, until)) = state.tokens.get(repository)
                && Instant::now() < *until
            {
                return Ok(Some(value.clone()));
            }
            state.asked.clone()
        };
        let asked = match asked {
            Some(a) => a,
            None => {
                let a = self.ask().await?;
                self.access().asked = Some(a.clone());
                a
            }
        };
        match asked {
            Asked::Nothing => Ok(None),
            Asked::Basic => Ok(match &self.creds {
                Credentials::Basic { username, password } => basic(username, password),
                _ => None,
            }),
            Asked::Bearer(challenge) => {
                let request = TokenRequest {
                    http: &self.http,
                    registry: &self.registry,
                    creds: &self.creds,
                    plain_realm_ok: !self.verified,
                    repository,
                };
                let (token, life) = request.get(&challenge).await?;
                let value = sensitive(&format!("Bearer {token}")).ok_or_else(|| {
                    RegistryError::InvalidContent {
                        registry: self.registry.clone(),
                        reason: "the token server's token is not a valid header value".into(),
                    }
                })?;
                let until = Instant::now() + life.saturating_sub(MARGIN);
                let mut state = self.access();
                if state.tokens.len() >= MAX_TOKENS {
                    state.tokens.clear();
                }
                state
                    .tokens
                    .insert(repository.to_owned(), (value.clone(), until));
                Ok(Some(value))
            }
        }
    }

    /// The registry's challenge, from an anonymous `GET /v2/`.
    async fn ask(&self) -> Result<Asked, RegistryError> {
        let url = format!("{}://{}/v2/", self.scheme, self.host);
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| transport(&self.registry, e))?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            let values = response.headers().get_all(header::WWW_AUTHENTICATE);
            return Ok(
                match bearer_challenge(values.iter().filter_map(|v| v.to_str().ok())) {
                    Some(c) => Asked::Bearer(c),
                    // Basic, or a 401 without a usable challenge: the password, if any.
                    None => Asked::Basic,
                },
            );
        }
        let code = status.as_u16();
        if code == 429 || code == 408 || code >= 500 {
            return Err(super::fetch::status_error(
                &self.registry,
                "GET /v2/",
                status,
                response.headers(),
                &[],
            ));
        }
        // 200, or a registry without the /v2/ endpoint (404): nothing to send.
        Ok(Asked::Nothing)
    }
}
