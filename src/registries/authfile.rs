//! The node's auth file: containers-auth.json(5), which is also docker's `config.json`
//! format. `auths` is keyed by `host[:port]`, `host/namespace` or `host/namespace/repo`;
//! for a name the most specific key wins. `credHelpers` (per registry) and `credsStore`
//! (the default) name the credential helper to ask when `auths` has no entry
//! ([`AuthFile::helper_for`]; `registry/helper.rs` runs it).
//!
//! Nothing here prints a secret: [`Credentials`] redacts itself, and parse errors name the
//! key, never the value.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::LoadError;
use super::load::read_optional;
use crate::names::ImageName;
use crate::registry::{AuthFields, Credentials};

#[derive(Deserialize)]
struct RawAuthFile {
    #[serde(default)]
    auths: BTreeMap<String, RawAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize, Default)]
struct RawAuth {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
    #[serde(default)]
    registrytoken: String,
}

/// The credentials of the auth file, by normalised key.
#[derive(Debug, Clone, Default)]
pub struct AuthFile {
    entries: BTreeMap<String, Credentials>,
    /// Registry host (normalised) → helper name.
    helpers: BTreeMap<String, String>,
    /// The helper for every other registry.
    store: Option<String>,
}

/// A helper name runs `docker-credential-<name>` from PATH: no path, nothing odd.
fn valid_helper(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}

/// `https://index.docker.io/v1/` → `docker.io`; `Quay.io/Org/` → `quay.io/Org`.
fn normalize_key(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let key = key.trim_end_matches('/');
    let key = key
        .strip_suffix("/v1")
        .or_else(|| key.strip_suffix("/v2"))
        .unwrap_or(key);
    let (host, path) = match key.split_once('/') {
        Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
        None => (key.to_ascii_lowercase(), None),
    };
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_owned()
        }
        _ => host,
    };
    match path {
        Some(p) => format!("{host}/{p}"),
        None => host,
    }
}

impl AuthFile {
    /// Parses the file's JSON; `warnings` gets entries that are skipped.
    pub fn parse(
        file: &Path,
        text: &str,
        warnings: &mut Vec<String>,
    ) -> Result<AuthFile, LoadError> {
        let err = |key: String, reason: String| LoadError {
            file: file.to_owned(),
            key,
            reason,
        };
        // serde_json's own message can quote a value (a secret): only say where.
        let raw: RawAuthFile = serde_json::from_str(text).map_err(|e| {
            err(
                String::new(),
                format!(
                    "not a valid auth file ({:?} error at line {} column {})",
                    e.classify(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        for key in raw.other.keys() {
            warnings.push(format!(
                "{}: {key:?} is not supported; ignored",
                file.display()
            ));
        }
        let mut helpers = BTreeMap::new();
        for (registry, helper) in raw.cred_helpers {
            if !valid_helper(&helper) {
                return Err(err(
                    format!("credHelpers.{registry:?}"),
                    format!("{helper:?} is not a helper name (docker-credential-<name> on PATH)"),
                ));
            }
            helpers.insert(normalize_key(&registry), helper);
        }
        if let Some(h) = raw.creds_store.as_deref().filter(|h| !valid_helper(h)) {
            return Err(err(
                "credsStore".into(),
                format!("{h:?} is not a helper name (docker-credential-<name> on PATH)"),
            ));
        }
        let mut entries = BTreeMap::new();
        for (key, a) in raw.auths {
            let fields = AuthFields {
                username: a.username,
                password: a.password,
                auth: a.auth,
                server_address: String::new(),
                identity_token: a.identitytoken,
                registry_token: a.registrytoken,
            };
            match Credentials::from_fields(&fields) {
                Ok(Credentials::Anonymous) => {}
                Ok(c) => {
                    entries.insert(normalize_key(&key), c);
                }
                Err(e) => return Err(err(format!("auths.{key:?}"), e.to_string())),
            }
        }
        Ok(AuthFile {
            entries,
            helpers,
            store: raw.creds_store.filter(|s| !s.is_empty()),
        })
    }

    /// Reads `file`; a missing file has no credentials.
    pub fn load(file: &Path, warnings: &mut Vec<String>) -> Result<AuthFile, LoadError> {
        match read_optional(file)? {
            Some(text) => AuthFile::parse(file, &text, warnings),
            None => Ok(AuthFile::default()),
        }
    }

    /// The credentials for `name`: `host/a/b/c`, then `host/a/b`, `host/a`, `host`.
    pub fn lookup(&self, name: &ImageName) -> Option<&Credentials> {
        let repo = normalize_key(&name.repo());
        let mut key = repo.as_str();
        loop {
            if let Some(c) = self.entries.get(key) {
                return Some(c);
            }
            key = &key[..key.rfind('/')?];
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The credential helper for `registry` (`host[:port]`): its `credHelpers` entry, else
    /// `credsStore`.
    pub fn helper_for(&self, registry: &str) -> Option<&str> {
        self.helpers
            .get(&normalize_key(registry))
            .or(self.store.as_ref())
            .map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(u: &str, p: &str) -> Credentials {
        Credentials::Basic {
            username: u.into(),
            password: p.into(),
        }
    }

    fn name(s: &str) -> ImageName {
        ImageName::parse_qualified(s).unwrap()
    }

    #[test]
    fn the_most_specific_key_wins() {
        // "aG9zdDpob3N0cHc=" is host:hostpw, "bnM6bnNwdw==" ns:nspw, "cmVwbzpyZXBvcHc=" repo:repopw.
        let text = r#"{"auths": {
            "quay.io": {"auth": "aG9zdDpob3N0cHc="},
            "quay.io/org": {"auth": "bnM6bnNwdw=="},
            "quay.io/org/app": {"auth": "cmVwbzpyZXBvcHc="},
            "https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
            "127.0.0.1:5000": {"registrytoken": "tok"}
        }}"#;
        let mut w = Vec::new();
        let f = AuthFile::parse(Path::new("/a.json"), text, &mut w).unwrap();
        assert!(w.is_empty());
        let cases = [
            ("quay.io/org/app:1", Some(basic("repo", "repopw"))),
            ("quay.io/org/other", Some(basic("ns", "nspw"))),
            ("quay.io/orgx/app", Some(basic("host", "hostpw"))),
            ("quay.io/app", Some(basic("host", "hostpw"))),
            ("docker.io/library/busybox", Some(basic("hub", "hubpw"))),
            ("127.0.0.1:5000/x", Some(Credentials::Bearer("tok".into()))),
            ("127.0.0.1:5001/x", None),
            ("example.com/quay.io/x", None),
        ];
        for (n, want) in cases {
            assert_eq!(f.lookup(&name(n)).cloned(), want, "{n}");
        }
    }

    #[test]
    fn bad_entries_are_refused_without_showing_the_secret() {
        let mut w = Vec::new();
        let e = AuthFile::parse(
            Path::new("/a.json"),
            r#"{"auths": {"quay.io": {"auth": "!!secret!!"}}}"#,
            &mut w,
        )
        .unwrap_err();
        assert!(e.to_string().contains("quay.io"), "{e}");
        assert!(!e.to_string().contains("secret"), "{e}");
        let e = AuthFile::parse(Path::new("/a.json"), r#"{"auths": [}"#, &mut w).unwrap_err();
        assert!(e.to_string().contains("/a.json"), "{e}");
        let f = AuthFile::parse(
            Path::new("/a.json"),
            r#"{"auths": {"x.io": {"identitytoken": "t"}}, "credHelpers": {"gcr.io": "gcr"}}"#,
            &mut w,
        )
        .unwrap();
        assert_eq!(f.len(), 1, "an identity token is a credential");
        assert!(w.is_empty(), "credHelpers is understood: {w:?}");
        assert_eq!(f.helper_for("gcr.io"), Some("gcr"));
        assert_eq!(f.helper_for("quay.io"), None);
        let f = AuthFile::parse(
            Path::new("/a.json"),
            r#"{"credsStore": "pass", "credHelpers": {"https://gcr.io": "gcr"}}"#,
            &mut w,
        )
        .unwrap();
        assert_eq!(f.helper_for("gcr.io"), Some("gcr"));
        assert_eq!(f.helper_for("quay.io"), Some("pass"));
        for bad in [
            r#"{"credsStore": "../../bin/sh"}"#,
            r#"{"credHelpers": {"x.io": "a b"}}"#,
        ] {
            let e = AuthFile::parse(Path::new("/a.json"), bad, &mut w).unwrap_err();
            assert!(e.to_string().contains("not a helper name"), "{e}");
        }
    }
}
