//! A real Debian `docker-registry` (distribution 2.x) on 127.0.0.1, storing into a temporary
//! directory, with its access log in a file the tests can read. Killed (by its PID) on Drop.
//!
//! Loopback registries are always insecure for cri-imaged, so plain HTTP is what both sides
//! speak. [`Registry::start_with_auth`] adds htpasswd (HTTP Basic) authentication, with the
//! one test account [`AUTH_USER`] / [`AUTH_PASSWORD`]; [`Registry::start_with_token_auth`]
//! the registry's own token authentication (JWTs from a token server it trusts).

use std::fs::File;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{INSTALL_HINT, tempdir, wait_bounded};

const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The account of [`Registry::start_with_auth`].
pub const AUTH_USER: &str = "puller-7c41";
pub const AUTH_PASSWORD: &str = "Pull-Pw-4b9e1d";
/// `htpasswd -B` line for that account: bcrypt (cost 5) of [`AUTH_PASSWORD`], made with
/// `python3 -c "import crypt; print(crypt.crypt('Pull-Pw-4b9e1d', '$2b$05$' + 'cri1imaged2test3salt4u'))"`.
/// A wrong line would make every authenticated push and pull of the tests fail.
const AUTH_HTPASSWD: &str =
    "puller-7c41:$2b$05$cri1imaged2test3salt4u.VBidbEQJnrt.QkjBPHhfz1R9WyJLg2\n";

/// A server certificate for [`Registry::start_tls`]: PEM files, and the CA that signed it.
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca_pem: Vec<u8>,
}

/// Mutual TLS: the CA a registry checks client certificates against, and the identity
/// (certificate and key, PEM) the test's own requests present.
pub struct ClientCerts {
    pub ca: PathBuf,
    pub identity_pem: Vec<u8>,
}

/// docker-registry's `auth: token:` settings, and a bearer token the test's own requests
/// (pushes) carry.
pub struct TokenAuth {
    pub realm: String,
    pub service: String,
    pub issuer: String,
    /// The certificate whose key signs the tokens.
    pub rootcertbundle: PathBuf,
    /// A token granting the test's pushes (and `GET /v2/`).
    pub bearer: String,
}

/// How a registry authenticates clients.
enum Auth<'a> {
    None,
    Htpasswd,
    Token(&'a TokenAuth),
}

/// A running `docker-registry serve` on 127.0.0.1:<port>.
pub struct Registry {
    child: Child,
    port: u16,
    scheme: &'static str,
    /// Sent with every request the test makes, when the registry requires it.
    basic_auth: Option<(String, String)>,
    bearer: Option<String>,
    log_path: PathBuf,
    http: reqwest::Client,
    _dir: TempDir,
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a registry and waits (bounded) until `GET /v2/` answers.
    pub async fn start() -> Registry {
        Self::start_inner(Auth::None, None, None, None).await
    }

    /// Starts a registry that requires HTTP Basic authentication as [`AUTH_USER`].
    pub async fn start_with_auth() -> Registry {
        Self::start_inner(Auth::Htpasswd, None, None, None).await
    }

    /// Starts a registry that accepts only bearer tokens from the token server `token`
    /// describes.
    pub async fn start_with_token_auth(token: &TokenAuth) -> Registry {
        Self::start_inner(Auth::Token(token), None, None, None).await
    }

    /// Starts a registry serving HTTPS with `tls` (the test's own client trusts its CA).
    pub async fn start_tls(tls: &TlsFiles) -> Registry {
        Self::start_inner(Auth::None, Some(tls), None, None).await
    }

    /// Starts a registry serving HTTPS with `tls` that accepts only bearer tokens from the
    /// token server `token` describes.
    pub async fn start_tls_with_token_auth(tls: &TlsFiles, token: &TokenAuth) -> Registry {
        Self::start_inner(Auth::Token(token), Some(tls), None, None).await
    }

    /// Starts a registry serving HTTPS with `tls` that requires a client certificate
    /// signed by `client.ca` (`http.tls.clientcas`).
    pub async fn start_mtls(tls: &TlsFiles, client: &ClientCerts) -> Registry {
        Self::start_inner(Auth::None, Some(tls), Some(client), None).await
    }

    /// A pull-through cache: docker-registry in proxy mode in front of `upstream` (an open
    /// registry), as a node's or a zone's mirror; it keeps what it fetched.
    pub async fn start_pull_through(upstream: &Registry) -> Registry {
        Self::start_inner(Auth::None, None, None, Some(&upstream.url())).await
    }

    async fn start_inner(
        auth: Auth<'_>,
        tls: Option<&TlsFiles>,
        client: Option<&ClientCerts>,
        proxy_of: Option<&str>,
    ) -> Registry {
        assert!(
            std::path::Path::new(REGISTRY_BIN).is_file(),
            "docker-registry not found: {INSTALL_HINT}"
        );
        // A free port can be taken by someone else between probing and binding: retry.
        let mut last_log = String::new();
        for _attempt in 0..5 {
            let dir = tempdir();
            let port = closed_port();
            let storage = dir.path().join("storage");
            std::fs::create_dir_all(&storage).expect("create registry storage dir");
            let config = dir.path().join("config.yml");
            let mut yaml = format!(
                "version: 0.1\n\
                 log:\n  accesslog:\n    disabled: false\n  level: info\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            );
            if let Some(t) = tls {
                yaml.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    t.cert.display(),
                    t.key.display()
                ));
                if let Some(c) = client {
                    yaml.push_str(&format!("    clientcas:\n      - {}\n", c.ca.display()));
                }
            }
            match &auth {
                Auth::None => {}
                Auth::Htpasswd => {
                    let htpasswd = dir.path().join("htpasswd");
                    std::fs::write(&htpasswd, AUTH_HTPASSWD).expect("write htpasswd");
                    yaml.push_str(&format!(
                        "auth:\n  htpasswd:\n    realm: cri-imaged-tests\n    path: {}\n",
                        htpasswd.display()
                    ));
                }
                Auth::Token(t) => yaml.push_str(&format!(
                    "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                    t.realm,
                    t.service,
                    t.issuer,
                    t.rootcertbundle.display()
                )),
            }
            if let Some(remote) = proxy_of {
                yaml.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
            }
            std::fs::write(&config, yaml).expect("write registry config");
            let log_path = dir.path().join("registry.log");
            let log = File::create(&log_path).expect("create registry log");
            let log2 = log.try_clone().expect("clone registry log handle");
            let child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start docker-registry: {e} ({INSTALL_HINT})"));
            let mut http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30));
            if let Some(t) = tls {
                http = http
                    .tls_certs_merge([reqwest::Certificate::from_pem(&t.ca_pem).expect("test CA")]);
            }
            if let Some(c) = client {
                http = http.identity(
                    reqwest::Identity::from_pem(&c.identity_pem).expect("test client identity"),
                );
            }
            let mut reg = Registry {
                child,
                port,
                scheme: if tls.is_some() { "https" } else { "http" },
                basic_auth: matches!(auth, Auth::Htpasswd)
                    .then(|| (AUTH_USER.to_owned(), AUTH_PASSWORD.to_owned())),
                bearer: match &auth {
                    Auth::Token(t) => Some(t.bearer.clone()),
                    _ => None,
                },
                log_path,
                http: http.build().expect("build HTTP client"),
                _dir: dir,
            };
            if reg.wait_ready().await {
                return reg;
            }
            last_log = reg.log();
            // `reg` is dropped here: the child is killed and reaped.
        }
        panic!("docker-registry did not start; last log:\n{last_log}");
    }

    /// True once `GET /v2/` answers 200; false if the process exits or 20 s pass.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            let probe = self
                .request(reqwest::Method::GET, format!("{}/v2/", self.url()))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if matches!(probe, Ok(ref r) if r.status().as_u16() == 200) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `127.0.0.1:<port>`, the registry part of image names.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port>` (`https://` for a TLS registry).
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.host())
    }

    /// A request with the registry's credentials, if it has any.
    fn request(&self, method: reqwest::Method, url: String) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        let r = match &self.basic_auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        };
        match &self.bearer {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Whether the registry's own storage holds the blob `digest` (`sha256:<hex>`) whole:
    /// a pull-through cache has stored what it fetched.
    pub fn stores_blob(&self, digest: &str) -> bool {
        let hex = digest.trim_start_matches("sha256:");
        self._dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
            .is_file()
    }

    /// Everything the registry wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Uploads one blob (POST an upload session, then PUT its content with the digest).
    pub async fn put_blob(&self, repo: &str, digest: &str, data: &[u8]) {
        let start = self
            .request(
                reqwest::Method::POST,
                format!("{}/v2/{repo}/blobs/uploads/", self.url()),
            )
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST blob upload to {repo}: {e}"));
        assert_eq!(
            start.status().as_u16(),
            202,
            "POST /v2/{repo}/blobs/uploads/ answered {}",
            start.status()
        );
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .expect("upload Location header")
            .to_owned();
        let mut url = if location.starts_with('/') {
            format!("{}{location}", self.url())
        } else {
            location
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str("digest=");
        url.push_str(digest);
        let put = self
            .request(reqwest::Method::PUT, url)
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT blob {digest} to {repo}: {e}"));
        let code = put.status().as_u16();
        let body = put.text().await.unwrap_or_default();
        assert_eq!(code, 201, "PUT blob {digest} to {repo}: {code} {body}");
    }

    /// Uploads a manifest (or index) under `reference` (a tag or its digest).
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) {
        let put = self
            .request(
                reqwest::Method::PUT,
                format!("{}/v2/{repo}/manifests/{reference}", self.url()),
            )
            .header("content-type", media_type)
            .body(data.to_vec())
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT manifest {repo}:{reference}: {e}"));
        let code = put.status().as_u16();
        let body = put.text().await.unwrap_or_default();
        assert_eq!(code, 201, "PUT manifest {repo}:{reference}: {code} {body}");
    }

    /// How many `GET /v2/<repo>/blobs/<digest>` requests the access log shows.
    /// Call [`Registry::flush_access_log`] first so every finished request is in the file.
    pub fn blob_get_count(&self, repo: &str, digest: &str) -> usize {
        let needle = format!("\"GET /v2/{repo}/blobs/{digest} HTTP/");
        self.log().lines().filter(|l| l.contains(&needle)).count()
    }

    /// Sends a marker request and waits (bounded) until its access-log line appears, so the
    /// lines of requests that finished before it are in the file too.
    pub async fn flush_access_log(&self) {
        let marker = format!("flush{}", rand::random::<u64>());
        let _ = self
            .request(
                reqwest::Method::GET,
                format!("{}/v2/{marker}/tags/list", self.url()),
            )
            .send()
            .await;
        let needle = format!("\"GET /v2/{marker}/tags/list HTTP/");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.log().contains(&needle) {
            assert!(
                Instant::now() < deadline,
                "registry access log never showed the marker request"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill sends SIGKILL to the PID we started; then reap it.
        let _ = self.child.kill();
        let _ = wait_bounded(&mut self.child, Duration::from_secs(10));
    }
}
