//! An OAuth2 token server for docker-registry's token authentication, in-process on
//! 127.0.0.1 (axum on the test's runtime; the task is aborted on Drop).
//!
//! It implements the refresh-token grant only (`POST /token`, form-encoded
//! `grant_type=refresh_token&refresh_token=…&service=…&scope=…&client_id=…`): the one
//! refresh token it knows gets a JWT with pull access to the scope's repository; anything
//! else is `400 invalid_grant` (RFC 6749 §5.2). `GET /token` (the anonymous and Basic
//! flow) is always `401`. Tokens are what distribution's `auth: token:` verifies: RS256,
//! `x5c` holding the signing certificate, which is the registry's `rootcertbundle`;
//! `iss`/`aud` as configured. The key and certificate are made by the `openssl` CLI for
//! each server, and each token is signed by `openssl dgst -sha256 -sign`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::post;
use base64::Engine as _;
use tempfile::TempDir;
use tokio::task::JoinHandle;

use super::registry::TokenAuth;
use super::tls::make_ca;
use super::{run_tool, tempdir};

pub const SERVICE: &str = "cri-imaged-test-registry";
pub const ISSUER: &str = "cri-imaged-test-token-issuer";

/// One grant request, as the server parsed it.
#[derive(Debug, Clone)]
pub struct Grant {
    pub fields: Vec<(String, String)>,
    /// Whether it got a token.
    pub granted: bool,
}

impl Grant {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct Signer {
    dir: PathBuf,
    key: PathBuf,
    /// The signing certificate, base64 DER (the JWT header's `x5c`).
    x5c: String,
    refresh_token: String,
    /// Every token issued (grants and pushes).
    issued: Mutex<Vec<String>>,
    grants: Mutex<Vec<Grant>>,
    /// GET /token requests that carried an `Authorization` header (a client's password).
    authorized_gets: Mutex<usize>,
}

/// A running token server.
pub struct TokenServer {
    addr: SocketAddr,
    signer: Arc<Signer>,
    cert: PathBuf,
    task: JoinHandle<()>,
    _dir: TempDir,
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// `application/x-www-form-urlencoded` → pairs (`+` is a space, `%XX` a byte).
fn parse_form(body: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (b[i], hex) {
                (b'+', _) => out.push(b' '),
                (b'%', Some(v)) => {
                    out.push(v);
                    i += 2;
                }
                (c, _) => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

impl Signer {
    /// A JWT granting `actions` on `repo`.
    fn sign(&self, repo: &str, actions: &[&str]) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs();
        let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "x5c": [self.x5c]});
        let access = serde_json::json!([{"type": "repository", "name": repo, "actions": actions}]);
        let claims = serde_json::json!({
            "iss": ISSUER,
            "sub": "cri-imaged-test",
            "aud": SERVICE,
            "exp": now + 900,
            "nbf": now - 30,
            "iat": now,
            "jti": format!("{:x}", rand::random::<u64>()),
            "access": access,
        });
        let input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let stamp = rand::random::<u64>();
        let (data, sig) = (
            self.dir.join(format!("jwt-{stamp}.in")),
            self.dir.join(format!("jwt-{stamp}.sig")),
        );
        std::fs::write(&data, &input).expect("write JWT input");
        let out = run_tool(
            &self.dir,
            "/usr/bin/openssl",
            &[
                "dgst",
                "-sha256",
                "-sign",
                self.key.to_str().unwrap(),
                "-out",
                sig.to_str().unwrap(),
                data.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        assert!(out.status.success(), "openssl dgst -sign: {}", out.stderr);
        let signature = std::fs::read(&sig).expect("read signature");
        let _ = std::fs::remove_file(data);
        let _ = std::fs::remove_file(sig);
        let token = format!("{input}.{}", b64url(&signature));
        self.issued.lock().unwrap().push(token.clone());
        token
    }

    /// Answers one refresh grant.
    fn grant(&self, body: &str) -> (StatusCode, String) {
        let fields = parse_form(body);
        let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        // scope=repository:<name>:<actions>; only pull is ever granted.
        let repo = get("scope").and_then(|s| {
            let rest = s.strip_prefix("repository:")?;
            let (name, actions) = rest.rsplit_once(':')?;
            actions.split(',').any(|a| a == "pull").then_some(name)
        });
        let ok = get("grant_type") == Some("refresh_token")
            && get("refresh_token") == Some(self.refresh_token.as_str())
            && get("service") == Some(SERVICE)
            && get("client_id").is_some_and(|c| !c.is_empty())
            && repo.is_some();
        let answer = if ok {
            let token = self.sign(repo.unwrap_or_default(), &["pull"]);
            (
                StatusCode::OK,
                serde_json::json!({"access_token": token, "expires_in": 900}).to_string(),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                r#"{"error":"invalid_grant"}"#.to_owned(),
            )
        };
        self.grants.lock().unwrap().push(Grant {
            fields,
            granted: ok,
        });
        answer
    }
}

impl TokenServer {
    /// Makes a signing key and certificate, and serves `POST /token`; `refresh_token` is
    /// the one identity token it accepts.
    pub async fn start(refresh_token: &str) -> TokenServer {
        let dir = tempdir();
        // A self-signed certificate: the leaf in `x5c` and the registry's only root.
        let cert = make_ca(dir.path(), "token-signer");
        let key = cert.with_extension("key");
        let pem = std::fs::read_to_string(&cert).expect("read signer certificate");
        // A PEM body is the base64 of the DER: exactly what `x5c` holds.
        let x5c: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect::<Vec<_>>()
            .concat();
        let signer = Arc::new(Signer {
            dir: dir.path().to_owned(),
            key,
            x5c,
            refresh_token: refresh_token.to_owned(),
            issued: Mutex::default(),
            grants: Mutex::default(),
            authorized_gets: Mutex::default(),
        });
        let app = axum::Router::new()
            .route(
                "/token",
                post(|State(s): State<Arc<Signer>>, body: String| async move {
                    let (code, json) = tokio::task::spawn_blocking(move || s.grant(&body))
                        .await
                        .expect("signing task");
                    (code, [(header::CONTENT_TYPE, "application/json")], json)
                })
                .get(
                    |State(s): State<Arc<Signer>>, headers: axum::http::HeaderMap| async move {
                        if headers.contains_key(header::AUTHORIZATION) {
                            *s.authorized_gets.lock().unwrap() += 1;
                        }
                        (StatusCode::UNAUTHORIZED, "refresh grants only")
                    },
                ),
            )
            .with_state(signer.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the token server");
        let addr = listener.local_addr().expect("token server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        TokenServer {
            addr,
            signer,
            cert,
            task,
            _dir: dir,
        }
    }

    /// The registry's `auth: token:` settings, with a bearer token for the test's pushes
    /// to `push_repo`.
    pub fn registry_auth(&self, push_repo: &str) -> TokenAuth {
        TokenAuth {
            realm: format!("http://{}/token", self.addr),
            service: SERVICE.to_owned(),
            issuer: ISSUER.to_owned(),
            rootcertbundle: self.cert.clone(),
            bearer: self.signer.sign(push_repo, &["pull", "push"]),
        }
    }

    /// Every grant request so far.
    pub fn grants(&self) -> Vec<Grant> {
        self.signer.grants.lock().unwrap().clone()
    }

    /// GET /token requests that carried credentials (the Basic-auth token flow).
    pub fn authorized_gets(&self) -> usize {
        *self.signer.authorized_gets.lock().unwrap()
    }

    /// Every token issued so far.
    pub fn issued(&self) -> Vec<String> {
        self.signer.issued.lock().unwrap().clone()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[test]
fn forms_are_decoded() {
    assert_eq!(
        parse_form("a=b%2Fc+d&e=&f%3A=%zz%4"),
        [
            ("a".to_owned(), "b/c d".to_owned()),
            ("e".to_owned(), String::new()),
            ("f:".to_owned(), "%zz%4".to_owned()),
        ]
    );
}
