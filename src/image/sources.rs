//! What a name means under the operator's registry configuration: short names through
//! `[aliases]`, the search registries and `short-name-mode`; qualified names through
//! `[[registry]]` into an ordered list of sources (mirrors, then the primary), each with
//! the credentials and TLS settings it may get. Pure decisions on one snapshot.
//!
//! Credentials rule: the CRI credentials of a pull go only to a source on the registry
//! the client named (after `server_address` filtering in `pull.rs`); any other source (a
//! mirror, a remapped location) gets only what the node's auth file holds for it.

use std::sync::Arc;

use super::{Error, ImageService, Inner};
use crate::names::{self, ImageId, ImageName, NameError, Resolved};
use crate::registries::{NodeRegistries, ShortNameMode, Source};
use crate::registry::{Credentials, SourceTls};

/// One place to try, with what it may be sent.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub source: Source,
    pub creds: Credentials,
    pub tls: SourceTls,
    /// The credential helpers to ask for `creds`, in order (nothing before them had any).
    pub helpers: Vec<String>,
    /// The auth file's `auths` entry listed after those helpers: used when none answers.
    pub fallback: Option<Credentials>,
}

/// The sources of `name`, in order; `cri` are the caller's credentials for `name`'s
/// registry. A blocked registry is an error here, before any connection.
///
/// Credentials, in containers/image's order: the CRI request's (for the registry it
/// names only), then registries.conf's `credential-helpers` in order (default: the auth
/// file alone) — the auth file is its `auths`, then the helper it names for the source's
/// registry (`credHelpers`, else `credsStore`); any other entry is a helper. Helpers are
/// noted in [`Planned::helpers`] and asked by [`ask_helpers`]. Each source (a mirror too)
/// gets its own registry's credentials, never another's.
pub(super) fn plan(
    node: &NodeRegistries,
    name: &ImageName,
    cri: &Credentials,
) -> Result<Vec<Planned>, Error> {
    let sources = node.conf.sources(name).map_err(|source| Error::Blocked {
        image: name.to_string(),
        source,
    })?;
    Ok(sources
        .into_iter()
        .map(|source| {
            let same_registry = source.name.registry() == name.registry();
            let (creds, helpers, fallback) = if same_registry && *cri != Credentials::Anonymous {
                (cri.clone(), Vec::new(), None)
            } else {
                look_up(node, &source)
            };
            let certs = node.certs.for_registry(source.name.registry());
            let tls = SourceTls {
                insecure: source.insecure,
                roots: certs.map(|c| c.roots.clone()).unwrap_or_default(),
                identity: certs.and_then(|c| c.identity.clone()),
            };
            Planned {
                source,
                creds,
                tls,
                helpers,
                fallback,
            }
        })
        .collect())
}

/// Walks `credential-helpers` for `source`: the auth file's `auths` entry if it comes
/// before any helper, else the helpers to ask in order, with a later `auths` entry as the
/// fallback when none of them answers.
fn look_up(
    node: &NodeRegistries,
    source: &Source,
) -> (Credentials, Vec<String>, Option<Credentials>) {
    let mut helpers = Vec::new();
    for entry in node.conf.credential_helpers() {
        if entry != crate::registries::AUTH_FILES {
            helpers.push(entry.to_owned());
            continue;
        }
        if let Some(c) = node.auth.lookup(&source.name) {
            if helpers.is_empty() {
                return (c.clone(), helpers, None);
            }
            return (Credentials::Anonymous, helpers, Some(c.clone()));
        }
        if let Some(h) = node.auth.helper_for(source.name.registry()) {
            helpers.push(h.to_owned());
        }
    }
    (Credentials::Anonymous, helpers, None)
}

/// Asks the credential helper of each planned source that has one, its answer cached per
/// (helper, registry) for `credential_helper_cache`; a helper that fails fails the pull,
/// naming the helper (never what it printed).
pub(super) async fn ask_helpers(
    inner: &Inner,
    name: &ImageName,
    planned: &mut [Planned],
) -> Result<(), Error> {
    for p in planned.iter_mut() {
        // As containers/image: the first answer wins; a failing helper does not stop the
        // others, and fails the pull only when none answered.
        let mut failed = None;
        let mut found = None;
        for helper in std::mem::take(&mut p.helpers) {
            match inner
                .helpers
                .get(
                    &helper,
                    p.source.name.registry(),
                    inner.settings.credential_helper_cache,
                )
                .await
            {
                Ok(Some(c)) => {
                    found = Some(c);
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(image = %name, helper = %helper, error = %e, "credential helper failed; trying the next");
                    failed.get_or_insert(e);
                }
            }
        }
        match (found.or(p.fallback.take()), failed) {
            (Some(c), _) => p.creds = c,
            (None, Some(source)) => {
                return Err(Error::CredentialHelper {
                    image: name.to_string(),
                    source,
                });
            }
            (None, None) => {}
        }
    }
    Ok(())
}

/// Credential helper answers, kept per (helper, registry) for a short while: kubelet
/// pulls many images of one registry at once, and a helper may be slow (a cloud
/// metadata call).
#[derive(Default)]
pub(super) struct HelperCache {
    answers: std::sync::Mutex<std::collections::HashMap<(String, String), Kept>>,
}

/// One answer and when it came.
type Kept = (std::time::Instant, Option<Credentials>);

impl HelperCache {
    async fn get(
        &self,
        helper: &str,
        registry: &str,
        keep: std::time::Duration,
    ) -> Result<Option<Credentials>, crate::registry::helper::HelperError> {
        let key = (helper.to_owned(), registry.to_owned());
        {
            let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, c)) = answers.get(&key)
                && at.elapsed() < keep
            {
                return Ok(c.clone());
            }
        }
        let answer =
            crate::registry::helper::get(helper, registry, crate::registry::helper::TIMEOUT)
                .await?;
        if !keep.is_zero() {
            let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
            answers.retain(|_, (at, _)| at.elapsed() < keep);
            answers.insert(key, (std::time::Instant::now(), answer.clone()));
        }
        Ok(answer)
    }
}

impl ImageService {
    /// The registry configuration in force now (a reload swaps it; holders keep theirs).
    pub(super) fn node(&self) -> Arc<NodeRegistries> {
        self.inner
            .node
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the registry configuration; pulls already running keep the one they
    /// started with.
    pub fn reload_registries(&self, node: NodeRegistries) {
        *self.inner.node.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(node);
    }

    /// The signature policies in force now.
    pub(super) fn trust(&self) -> Arc<crate::trust::NodeTrust> {
        self.inner
            .trust
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the signature policies and registries.d; pulls already running keep the
    /// ones they started with.
    pub fn reload_trust(&self, trust: crate::trust::NodeTrust) {
        *self.inner.trust.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(trust);
    }

    /// Resolves a user string: an image ID (prefix), a qualified name, or a short name
    /// through `[aliases]` and the search registries (cri-imaged's `registries` setting
    /// when set, else registries.conf's `unqualified-search-registries`). With `pull`, an
    /// ambiguous short name is refused in `enforcing` mode; lookups take every candidate.
    pub(super) fn resolve_input(
        &self,
        node: &NodeRegistries,
        input: &str,
        find_id: impl Fn(&str) -> Option<ImageId>,
        pull: bool,
    ) -> Result<Resolved, Error> {
        let search: &[String] = if self.inner.settings.registries.is_empty() {
            node.conf.search().unwrap_or_default()
        } else {
            &self.inner.settings.registries
        };
        let short = names::short_name(input);
        let alias = short.as_ref().and_then(|s| node.conf.alias(s));
        let resolved = match names::resolve(input, search, find_id) {
            Err(NameError::NoRegistries { .. }) if alias.is_some() => Resolved::Names(Vec::new()),
            r => r?,
        };
        let Resolved::Names(candidates) = resolved else {
            return Ok(resolved);
        };
        if let Some(alias) = alias {
            let (name, file) = alias.map_err(|reason| NameError::InvalidName {
                name: input.to_owned(),
                reason: format!("its alias: {reason}"),
            })?;
            tracing::debug!(short = input, alias = %name, file = %file.display(), "short name resolved by alias");
            return Ok(Resolved::Names(vec![name]));
        }
        if pull
            && short.is_some()
            && candidates.len() > 1
            && node.conf.short_name_mode() == ShortNameMode::Enforcing
        {
            return Err(Error::AmbiguousShortName {
                name: input.to_owned(),
                candidates: candidates.iter().map(ToString::to_string).collect(),
            });
        }
        Ok(Resolved::Names(candidates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registries::{AuthFile, RegistriesConf};

    fn node(conf: &str, auth: &str) -> NodeRegistries {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("registries.conf");
        std::fs::write(&f, conf).unwrap();
        let mut w = Vec::new();
        NodeRegistries {
            conf: crate::registries::load_conf(&f).unwrap(),
            auth: AuthFile::parse(&dir.path().join("a.json"), auth, &mut w).unwrap(),
            ..Default::default()
        }
    }

    fn name(s: &str) -> ImageName {
        ImageName::parse_qualified(s).unwrap()
    }

    #[test]
    fn cri_credentials_never_reach_a_mirror_or_another_host() {
        // "bTp1" is m:u (the mirror's account in the auth file).
        let n = node(
            "[[registry]]\nlocation = \"gcr.io\"\n[[registry.mirror]]\nlocation = \"mirror.local\"\n[[registry.mirror]]\nlocation = \"gcr.io/cache\"\n",
            r#"{"auths": {"mirror.local": {"auth": "bTp1"}}}"#,
        );
        let cri = Credentials::Basic {
            username: "pod".into(),
            password: "secret".into(),
        };
        let planned = plan(&n, &name("gcr.io/x/y:1"), &cri).unwrap();
        let got: Vec<(String, Credentials)> = planned
            .into_iter()
            .map(|p| (p.source.name.to_string(), p.creds))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "mirror.local/x/y:1".to_owned(),
                    Credentials::Basic {
                        username: "m".into(),
                        password: "u".into()
                    }
                ),
                ("gcr.io/cache/x/y:1".to_owned(), cri.clone()),
                ("gcr.io/x/y:1".to_owned(), cri),
            ]
        );
    }

    #[test]
    fn without_cri_credentials_the_auth_file_answers() {
        let n = node("", r#"{"auths": {"gcr.io/x": {"auth": "bTp1"}}}"#);
        let p = plan(&n, &name("gcr.io/x/y:1"), &Credentials::Anonymous).unwrap();
        assert!(matches!(p[0].creds, Credentials::Basic { .. }));
        let p = plan(&n, &name("gcr.io/z/y:1"), &Credentials::Anonymous).unwrap();
        assert_eq!(p[0].creds, Credentials::Anonymous);
        assert_eq!(RegistriesConf::default().registries().len(), 0);
    }

    #[test]
    fn blocked_registries_are_refused_naming_the_file() {
        let n = node("[[registry]]\nprefix = \"evil.io\"\nblocked = true\n", "{}");
        let e = plan(&n, &name("evil.io/x:1"), &Credentials::Anonymous).unwrap_err();
        assert!(e.to_string().contains("evil.io"), "{e}");
        assert!(e.to_string().contains("registries.conf"), "{e}");
    }
}
