//! Registry credentials, turned from CRI `AuthConfig` fields into what a registry accepts.
//! `Debug` never shows a secret.

use base64::Engine as _;

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub enum Credentials {
    #[default]
    Anonymous,
    Basic {
        username: String,
        password: String,
    },
    /// A bearer token sent as is (CRI `registry_token`).
    Bearer(String),
    /// An OAuth2 refresh token (CRI `identity_token`, an auth file's `identitytoken`),
    /// traded at the registry's token server for bearer tokens (`token.rs`).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username:?}, <redacted>)"),
            Credentials::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credentials::IdentityToken(_) => f.write_str("IdentityToken(<redacted>)"),
        }
    }
}

/// Why CRI auth fields could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("the auth field is not valid base64 of user:password")]
    BadAuthField,
}

/// The CRI `AuthConfig` fields, without gRPC types.
#[derive(Clone, Default)]
pub struct AuthFields {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub server_address: String,
    pub identity_token: String,
    pub registry_token: String,
}

/// Host names that all mean Docker Hub.
const DOCKER_HUB_ALIASES: &[&str] = &[
    "docker.io",
    "index.docker.io",
    "registry-1.docker.io",
    "registry.hub.docker.com",
];

fn normalize_host(host: &str) -> String {
    let host = host.trim();
    let host = host
        .strip_prefix("https://")
        .or_else(|| host.strip_prefix("http://"))
        .unwrap_or(host);
    let host = host
        .split('/')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    if DOCKER_HUB_ALIASES.contains(&host.as_str()) {
        "docker.io".to_owned()
    } else {
        host
    }
}

impl AuthFields {
    /// Whether these credentials may be sent to `registry`: when `server_address` names a
    /// registry, only to that one (as containerd does), so a short name tried against
    /// several registries never hands one registry's secret to another.
    pub fn applies_to(&self, registry: &str) -> bool {
        self.server_address.trim().is_empty()
            || normalize_host(&self.server_address) == normalize_host(registry)
    }
}

impl Credentials {
    /// Picks credentials the way containerd does: username/password first, then a registry
    /// token, then an identity token, then the base64 `auth` field; nothing set is
    /// anonymous. A username without a password beside an identity token is the token's
    /// account name (as docker writes it), not a password login.
    pub fn from_fields(f: &AuthFields) -> Result<Credentials, AuthError> {
        let names_identity = f.password.is_empty() && !f.identity_token.is_empty();
        if !f.password.is_empty() || (!f.username.is_empty() && !names_identity) {
            return Ok(Credentials::Basic {
                username: f.username.clone(),
                password: f.password.clone(),
            });
        }
        if !f.registry_token.is_empty() {
            return Ok(Credentials::Bearer(f.registry_token.clone()));
        }
        if !f.identity_token.is_empty() {
            return Ok(Credentials::IdentityToken(f.identity_token.clone()));
        }
        if !f.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(f.auth.trim())
                .map_err(|_| AuthError::BadAuthField)?;
            let text = String::from_utf8(decoded).map_err(|_| AuthError::BadAuthField)?;
            let (user, pass) = text.split_once(':').ok_or(AuthError::BadAuthField)?;
            return Ok(Credentials::Basic {
                username: user.to_owned(),
                password: pass.trim_end_matches('\0').to_owned(),
            });
        }
        Ok(Credentials::Anonymous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(f: impl FnOnce(&mut AuthFields)) -> AuthFields {
        let mut a = AuthFields::default();
        f(&mut a);
        a
    }

    #[test]
    fn picks_credentials_in_containerd_order() {
        assert_eq!(
            Credentials::from_fields(&AuthFields::default()),
            Ok(Credentials::Anonymous)
        );
        let basic = Credentials::Basic {
            username: "u".into(),
            password: "p".into(),
        };
        assert_eq!(
            Credentials::from_fields(&fields(|a| {
                a.username = "u".into();
                a.password = "p".into();
                a.registry_token = "t".into();
            })),
            Ok(basic.clone())
        );
        assert_eq!(
            Credentials::from_fields(&fields(|a| a.registry_token = "t".into())),
            Ok(Credentials::Bearer("t".into()))
        );
        assert_eq!(
            Credentials::from_fields(&fields(|a| a.auth = "dTpw".into())),
            Ok(basic)
        );
        assert_eq!(
            Credentials::from_fields(&fields(|a| a.auth = "!!".into())),
            Err(AuthError::BadAuthField)
        );
        let identity = Ok(Credentials::IdentityToken("x".into()));
        assert_eq!(
            Credentials::from_fields(&fields(|a| a.identity_token = "x".into())),
            identity
        );
        // Docker's auth file form: the account's name beside the token, in `username` or
        // in `auth` with an empty password.
        assert_eq!(
            Credentials::from_fields(&fields(|a| {
                a.username = "00000000-0000-0000-0000-000000000000".into();
                a.identity_token = "x".into();
            })),
            identity
        );
        assert_eq!(
            Credentials::from_fields(&fields(|a| {
                a.auth = "dTo=".into();
                a.identity_token = "x".into();
            })),
            identity
        );
        // A password is a password login (containerd's order).
        assert_eq!(
            Credentials::from_fields(&fields(|a| {
                a.username = "u".into();
                a.password = "p".into();
                a.identity_token = "x".into();
            })),
            Ok(Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
    }

    #[test]
    fn credentials_go_only_to_the_registry_they_name() {
        let cases = [
            ("", "quay.io", true),
            ("quay.io", "quay.io", true),
            ("https://quay.io/v2/", "quay.io", true),
            ("quay.io", "docker.io", false),
            ("https://index.docker.io/v1/", "docker.io", true),
            ("registry-1.docker.io", "docker.io", true),
            ("docker.io", "quay.io", false),
            ("127.0.0.1:5000", "127.0.0.1:5000", true),
            ("127.0.0.1:5000", "127.0.0.1:5001", false),
            ("Quay.IO", "quay.io", true),
        ];
        for (server, registry, want) in cases {
            let f = fields(|a| a.server_address = server.into());
            assert_eq!(
                f.applies_to(registry),
                want,
                "server_address {server:?} for {registry}"
            );
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = Credentials::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!format!("{:?}", Credentials::Bearer("tok".into())).contains("tok"));
        assert!(!format!("{:?}", Credentials::IdentityToken("rtok".into())).contains("rtok"));
    }
}
