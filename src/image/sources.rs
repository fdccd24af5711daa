//! What a name means under the operator's registry configuration: short names through
//! `[aliases]`, the search registries and `short-name-mode`; qualified names through
//! `[[registry]]` into an ordered list of sources (mirrors, then the primary), each with
//! the credentials and TLS settings it may get. Pure decisions on one snapshot.
//!
//! Credentials rule: the CRI credentials of a pull go only to a source on the registry
//! the client named (after `server_address` filtering in `pull.rs`); any other source (a
//! mirror, a remapped location) gets only what the node's auth file holds for it.

use std::sync::Arc;

use super::{Error, ImageService};
use crate::names::{self, ImageId, ImageName, NameError, Resolved};
use crate::registries::{NodeRegistries, ShortNameMode, Source};
use crate::registry::{Credentials, SourceTls};

/// One place to try, with what it may be sent.
#[derive(Debug, Clone)]
pub(super) struct Planned {
    pub source: Source,
    pub creds: Credentials,
    pub tls: SourceTls,
}

/// The sources of `name`, in order; `cri` are the caller's credentials for `name`'s
/// registry. A blocked registry is an error here, before any connection.
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
            let creds = if same_registry && *cri != Credentials::Anonymous {
                cri.clone()
            } else {
                node.auth.lookup(&source.name).cloned().unwrap_or_default()
            };
            let tls = SourceTls {
                insecure: source.insecure,
                roots: node
                    .certs
                    .for_registry(source.name.registry())
                    .map(|c| c.roots.clone())
                    .unwrap_or_default(),
            };
            Planned { source, creds, tls }
        })
        .collect())
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
