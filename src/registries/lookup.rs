//! Lookups in a [`RegistriesConf`]: which `[[registry]]` a name falls under (longest
//! prefix wins), where to fetch it from (mirrors, then the primary location), and short-name
//! aliases. Pure: no I/O.

use std::path::PathBuf;

use super::conf::{PullFrom, RegistriesConf, RegistryEntry};
use crate::names::{ImageName, Reference, ShortName};

/// One place to fetch a name from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The name at that place (remapped by `location`, or under a mirror).
    pub name: ImageName,
    pub mirror: bool,
    /// registries.conf's `insecure` for it; `None` when not set.
    pub insecure: Option<bool>,
}

/// Why a name has no source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("registry {prefix} is blocked by {}", file.display())]
    Blocked { prefix: String, file: PathBuf },
    #[error("{name} cannot be remapped by [[registry]] prefix {prefix:?} in {}: {reason}", file.display())]
    Remap {
        name: String,
        prefix: String,
        file: PathBuf,
        reason: String,
    },
}

impl LookupError {
    /// The failure's kind: a blocked registry is refused by policy; a remap that cannot
    /// apply is the node's configuration.
    pub fn kind(&self) -> crate::kind::Kind {
        match self {
            LookupError::Blocked { .. } => crate::kind::Kind::Denied,
            LookupError::Remap { .. } => crate::kind::Kind::Misconfigured,
        }
    }
}

/// `host/path` + the reference of `reference`, as an image name.
fn name_at(repo: &str, reference: &Reference) -> Result<ImageName, String> {
    let (host, path) = repo
        .split_once('/')
        .ok_or_else(|| format!("{repo:?} has no repository path"))?;
    ImageName::new(host, path, reference.clone()).map_err(|e| e.to_string())
}

impl RegistryEntry {
    /// How many characters of `name` this entry matches (its prefix's length), if any.
    fn matches(&self, name: &ImageName) -> Option<usize> {
        if let Some(domain) = self.prefix.strip_prefix('*') {
            // `*.example.com` matches every sub-domain (any port), not example.com itself.
            let host = host_of(name.registry());
            return host
                .to_ascii_lowercase()
                .ends_with(&domain.to_ascii_lowercase())
                .then_some(self.prefix.len());
        }
        let repo = name.repo();
        let rest = repo.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(self.prefix.len())
    }

    /// The part of `name`'s repository after the matched prefix (starts with `/` or is
    /// empty).
    fn rest(&self, name: &ImageName) -> String {
        let repo = name.repo();
        if self.is_wildcard() {
            repo[name.registry().len()..].to_owned()
        } else {
            repo[self.prefix.len()..].to_owned()
        }
    }
}

/// `host` of `host[:port]` (IPv6 in brackets kept whole).
fn host_of(registry: &str) -> &str {
    if registry.starts_with('[') {
        return registry
            .split(']')
            .next()
            .map_or(registry, |h| &registry[..=h.len()]);
    }
    registry.split(':').next().unwrap_or(registry)
}

impl RegistriesConf {
    /// The `[[registry]]` whose prefix matches `name` longest.
    pub fn entry_for(&self, name: &ImageName) -> Option<&RegistryEntry> {
        self.registries
            .iter()
            .filter_map(|e| e.matches(name).map(|len| (len, e)))
            .max_by_key(|(len, _)| *len)
            .map(|(_, e)| e)
    }

    /// Where to fetch `name` from, in order: the mirrors that serve this kind of reference,
    /// then the primary location. A blocked registry has none (and nothing is contacted).
    pub fn sources(&self, name: &ImageName) -> Result<Vec<Source>, LookupError> {
        let Some(entry) = self.entry_for(name) else {
            return Ok(vec![Source {
                name: name.clone(),
                mirror: false,
                insecure: None,
            }]);
        };
        if entry.blocked {
            return Err(LookupError::Blocked {
                prefix: entry.prefix.clone(),
                file: entry.file.clone(),
            });
        }
        let remap = |base: &str| {
            name_at(&format!("{base}{}", entry.rest(name)), name.reference()).map_err(|reason| {
                LookupError::Remap {
                    name: name.to_string(),
                    prefix: entry.prefix.clone(),
                    file: entry.file.clone(),
                    reason,
                }
            })
        };
        let by_digest = name.is_digest_name();
        let mut out = Vec::new();
        for m in &entry.mirrors {
            let serves = if entry.mirror_by_digest_only {
                by_digest
            } else {
                match m.pull_from {
                    PullFrom::All => true,
                    PullFrom::DigestOnly => by_digest,
                    PullFrom::TagOnly => !by_digest,
                }
            };
            if serves {
                out.push(Source {
                    name: remap(&m.location)?,
                    mirror: true,
                    insecure: m.insecure,
                });
            }
        }
        let primary = match &entry.location {
            Some(l) => remap(l)?,
            None => name.clone(),
        };
        out.push(Source {
            name: primary,
            mirror: false,
            insecure: entry.insecure,
        });
        Ok(out)
    }

    /// The alias of a short name (`[aliases]`), with the short name's tag or digest, and
    /// the file that set it.
    pub fn alias(&self, short: &ShortName) -> Option<Result<(ImageName, PathBuf), String>> {
        let (target, file) = self.aliases.get(&short.path)?;
        Some(name_at(target, &short.reference).map(|n| (n, file.clone())))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::registries::conf::ShortNameMode;
    use crate::registries::load::parse_file;

    fn conf(text: &str) -> RegistriesConf {
        let mut c = RegistriesConf::default();
        c.apply(
            Path::new("/etc/r.conf"),
            parse_file(Path::new("/etc/r.conf"), text).unwrap(),
        )
        .unwrap();
        c
    }

    fn name(s: &str) -> ImageName {
        ImageName::parse_qualified(s).unwrap()
    }

    fn sources(c: &RegistriesConf, n: &str) -> Vec<(String, bool)> {
        c.sources(&name(n))
            .unwrap()
            .into_iter()
            .map(|s| (s.name.to_string(), s.mirror))
            .collect()
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn longest_prefix_wins_and_location_remaps() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.com"
location = "mirror.local/all"
[[registry]]
prefix = "example.com/team"
location = "team.local:5000"
[[registry]]
prefix = "*.corp.io"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "example.com/team/app:1"),
            [("team.local:5000/app:1".into(), false)]
        );
        assert_eq!(
            sources(&c, "example.com/teamx/app:1"),
            [("mirror.local/all/teamx/app:1".into(), false)]
        );
        assert_eq!(
            sources(&c, "other.com/app:1"),
            [("other.com/app:1".into(), false)]
        );
        let s = c.sources(&name("reg.corp.io:5000/app")).unwrap();
        assert_eq!(s[0].name.to_string(), "reg.corp.io:5000/app:latest");
        assert_eq!(s[0].insecure, Some(true));
        assert_eq!(c.sources(&name("corp.io/app")).unwrap()[0].insecure, None);
    }

    #[test]
    fn mirrors_come_first_and_respect_pull_from_mirror() {
        let c = conf(
            r#"
[[registry]]
location = "gcr.io"
[[registry.mirror]]
location = "m1.local/gcr"
[[registry.mirror]]
location = "m2.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m3.local"
pull-from-mirror = "tag-only"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "gcr.io/x/y:1"),
            [
                ("m1.local/gcr/x/y:1".into(), true),
                ("m3.local/x/y:1".into(), true),
                ("gcr.io/x/y:1".into(), false)
            ]
        );
        let d = format!("gcr.io/x/y@{DIGEST}");
        assert_eq!(
            sources(&c, &d),
            [
                (format!("m1.local/gcr/x/y@{DIGEST}"), true),
                (format!("m2.local/x/y@{DIGEST}"), true),
                (d.clone(), false)
            ]
        );
    }

    #[test]
    fn mirror_by_digest_only_keeps_tags_on_the_primary() {
        let c = conf(
            "[[registry]]\nlocation = \"docker.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.local\"\n",
        );
        assert_eq!(
            sources(&c, "docker.io/library/busybox:1"),
            [("docker.io/library/busybox:1".into(), false)]
        );
        assert_eq!(
            sources(
                &c,
                &format!("busybox@{DIGEST}").replace("busybox", "docker.io/busybox")
            )[0],
            (format!("m.local/library/busybox@{DIGEST}"), true)
        );
    }

    #[test]
    fn blocked_registries_have_no_source() {
        let c = conf(
            "[[registry]]\nprefix = \"evil.io\"\nblocked = true\n[[registry]]\nprefix = \"evil.io/ok\"\n",
        );
        assert_eq!(
            c.sources(&name("evil.io/x")),
            Err(LookupError::Blocked {
                prefix: "evil.io".into(),
                file: "/etc/r.conf".into()
            })
        );
        // A longer, unblocked prefix wins.
        assert!(c.sources(&name("evil.io/ok/x")).is_ok());
        // Prefixes match whole path components.
        assert!(c.sources(&name("evil.iox/x")).is_ok());
    }

    #[test]
    fn aliases_carry_the_short_names_reference() {
        let c = conf("[aliases]\n\"box\" = \"quay.io/org/busybox\"\n\"hub\" = \"docker.io/hub\"\n");
        let short = crate::names::short_name("box:1.2").unwrap();
        assert_eq!(
            c.alias(&short).unwrap().unwrap().0.to_string(),
            "quay.io/org/busybox:1.2"
        );
        let short = crate::names::short_name("hub").unwrap();
        assert_eq!(
            c.alias(&short).unwrap().unwrap().0.to_string(),
            "docker.io/library/hub:latest"
        );
        assert!(
            c.alias(&crate::names::short_name("other").unwrap())
                .is_none()
        );
        assert_eq!(
            c.short_name_mode(),
            ShortNameMode::Enforcing,
            "a file was read"
        );
        assert_eq!(
            RegistriesConf::default().short_name_mode(),
            ShortNameMode::Permissive
        );
    }
}
