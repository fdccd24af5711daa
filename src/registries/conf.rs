//! [`RegistriesConf`]: registries.conf and its drop-ins, validated and merged.
//!
//! Merging follows containers-registries.conf.d(5): files are applied in order (the main
//! file, then `*.conf` drop-ins in lexical order); a later `unqualified-search-registries`
//! or `short-name-mode` replaces an earlier one, a later `[[registry]]` with the same prefix
//! replaces the earlier entry, and `[aliases]` are merged key by key (the later file wins).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::LoadError;
use super::raw::{RawFile, RawMirror, RawRegistry};
use crate::names::{ImageName, short_name};

/// How an ambiguous short name (no alias, several search registries) is handled. Without
/// a terminal there is nobody to prompt, so `enforcing` refuses it and the others try
/// every candidate in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShortNameMode {
    Enforcing,
    Permissive,
    Disabled,
}

/// Which pulls a mirror serves (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFrom {
    All,
    DigestOnly,
    TagOnly,
}

/// A `[[registry.mirror]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    /// `None`: not set (the node's insecure list and certs.d decide).
    pub insecure: Option<bool>,
    pub pull_from: PullFrom,
}

/// A `[[registry]]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryEntry {
    /// `host[:port][/path]`, or `*.domain` (a wildcard matching sub-domains).
    pub prefix: String,
    /// Where names under `prefix` are fetched from; `None`: from where they say.
    pub location: Option<String>,
    pub insecure: Option<bool>,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    /// The file that defined it (named in errors).
    pub file: PathBuf,
}

impl RegistryEntry {
    pub fn is_wildcard(&self) -> bool {
        self.prefix.starts_with("*.")
    }
}

/// The `credential-helpers` entry meaning the auth file.
pub const AUTH_FILES: &str = "containers-auth.json";

/// A `credential-helpers` entry: the auth file, or a helper's name (no path, no spaces:
/// it becomes `docker-credential-NAME`, looked up on `PATH`).
fn check_helper(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a credential helper name ({AUTH_FILES:?} or NAME for docker-credential-NAME: letters, digits, '-', '_', '.')"
        ))
    }
}

/// registries.conf and its drop-ins, merged and validated.
#[derive(Debug, Clone, Default)]
pub struct RegistriesConf {
    pub(super) search: Option<Vec<String>>,
    pub(super) mode: Option<ShortNameMode>,
    pub(super) registries: Vec<RegistryEntry>,
    /// Short name → (qualified repository, file that set it).
    pub(super) aliases: BTreeMap<String, (String, PathBuf)>,
    /// `credential-helpers`, if any file set it (a later file replaces it).
    helpers: Option<Vec<String>>,
    files: Vec<PathBuf>,
    warnings: Vec<String>,
}

impl RegistriesConf {
    /// `unqualified-search-registries`, if any file set it.
    pub fn search(&self) -> Option<&[String]> {
        self.search.as_deref()
    }

    /// `short-name-mode`; unset, it is `enforcing` (containers' default) when a file was
    /// read, and `permissive` (cri-imaged's own `registries` list, tried in order) when none
    /// was.
    pub fn short_name_mode(&self) -> ShortNameMode {
        self.mode.unwrap_or(if self.files.is_empty() {
            ShortNameMode::Permissive
        } else {
            ShortNameMode::Enforcing
        })
    }

    /// `credential-helpers`: where credentials are looked for, in order, for a source
    /// without CRI credentials — [`AUTH_FILES`] (the auth file: `auths`, then its
    /// `credHelpers`/`credsStore`) or a helper name (`docker-credential-NAME`). Unset, the
    /// auth file only, as in containers/image.
    pub fn credential_helpers(&self) -> Vec<&str> {
        match &self.helpers {
            Some(h) => h.iter().map(String::as_str).collect(),
            None => vec![AUTH_FILES],
        }
    }

    /// The files read, in the order applied.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Keys that were read but are not acted on.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn registries(&self) -> &[RegistryEntry] {
        &self.registries
    }

    /// Applies one file on top of what was read before.
    pub(super) fn apply(&mut self, file: &Path, raw: RawFile) -> Result<(), LoadError> {
        let err = |key: String, reason: String| LoadError {
            file: file.to_owned(),
            key,
            reason,
        };
        self.files.push(file.to_owned());
        for key in raw.other.keys() {
            self.warnings.push(format!(
                "{}: key {key:?} is not supported by cri-imaged; ignored",
                file.display()
            ));
        }
        if raw.other.contains_key("registries") {
            return Err(err(
                "registries".into(),
                "the version 1 format ([registries.search] etc.) is not supported; use version 2 ([[registry]] tables)".into(),
            ));
        }
        if let Some(helpers) = raw.credential_helpers {
            for h in &helpers {
                check_helper(h).map_err(|reason| err("credential-helpers".into(), reason))?;
            }
            if helpers.is_empty() {
                return Err(err(
                    "credential-helpers".into(),
                    format!("an empty list would look nowhere; leave it out for [{AUTH_FILES:?}]"),
                ));
            }
            self.helpers = Some(helpers);
        }
        if let Some(search) = raw.unqualified_search_registries {
            for r in &search {
                check_location(r).map_err(|reason| {
                    err(format!("unqualified-search-registries {r:?}"), reason)
                })?;
            }
            self.search = Some(search);
        }
        if let Some(mode) = raw.short_name_mode {
            self.mode = Some(match mode.as_str() {
                "enforcing" => ShortNameMode::Enforcing,
                "permissive" => ShortNameMode::Permissive,
                "disabled" => ShortNameMode::Disabled,
                other => {
                    return Err(err(
                        "short-name-mode".into(),
                        format!("{other:?}: must be \"enforcing\", \"permissive\" or \"disabled\""),
                    ));
                }
            });
        }
        for (i, r) in raw.registry.into_iter().flatten().enumerate() {
            let entry = registry_entry(file, r)
                .map_err(|(key, reason)| err(format!("[[registry]] #{}{key}", i + 1), reason))?;
            match self
                .registries
                .iter_mut()
                .find(|e| e.prefix == entry.prefix)
            {
                Some(old) => *old = entry,
                None => self.registries.push(entry),
            }
        }
        for (short, target) in raw.aliases.into_iter().flatten() {
            check_alias(&short, &target)
                .map_err(|reason| err(format!("aliases.{short:?}"), reason))?;
            self.aliases.insert(short, (target, file.to_owned()));
        }
        Ok(())
    }
}

/// A location or search registry: `host[:port]` optionally followed by a path, no scheme,
/// tag or digest.
fn check_location(loc: &str) -> Result<(), String> {
    if loc.contains("://") {
        return Err("must not have a scheme: give host[:port][/path]".into());
    }
    let tagged = loc
        .split_once('/')
        .is_some_and(|(_, path)| path.contains(':'));
    if loc.contains('@') || tagged {
        return Err("must not have a tag or digest".into());
    }
    ImageName::parse_qualified(&format!("{loc}/probe"))
        .map(|_| ())
        .map_err(|_| {
            "is not host[:port][/path] (a host needs a '.' or ':' or must be localhost)".into()
        })
}

fn check_alias(short: &str, target: &str) -> Result<(), String> {
    if short.contains(':') || short.contains('@') || short_name(short).is_none() {
        return Err("the key must be a short name without tag or digest".into());
    }
    check_location(target).map_err(|r| format!("value {target:?} {r}"))?;
    if !target.contains('/') {
        return Err(format!(
            "value {target:?} must be a fully qualified repository"
        ));
    }
    Ok(())
}

type KeyError = (String, String);

fn registry_entry(file: &Path, r: RawRegistry) -> Result<RegistryEntry, KeyError> {
    let at = |key: &str, reason: String| (format!(" {key}"), reason);
    if let Some(key) = r.other.keys().next() {
        return Err(at(key, "unknown key".into()));
    }
    let location = r.location.filter(|l| !l.is_empty());
    if let Some(l) = &location {
        check_location(l).map_err(|e| at("location", format!("{l:?} {e}")))?;
    }
    let prefix = match (r.prefix.filter(|p| !p.is_empty()), &location) {
        (Some(p), _) => p,
        (None, Some(l)) => l.clone(),
        (None, None) => {
            return Err(at(
                "prefix",
                "a registry needs a prefix or a location".into(),
            ));
        }
    };
    if let Some(domain) = prefix.strip_prefix("*.") {
        if domain.contains('/') || domain.contains('*') || domain.is_empty() {
            return Err(at(
                "prefix",
                format!("{prefix:?}: a wildcard prefix is \"*.domain\" only"),
            ));
        }
        if location.is_some() {
            return Err(at(
                "location",
                format!("must not be set with the wildcard prefix {prefix:?}"),
            ));
        }
    } else {
        check_location(&prefix).map_err(|e| at("prefix", format!("{prefix:?} {e}")))?;
    }
    let mut mirrors = Vec::new();
    for (i, m) in r.mirror.into_iter().flatten().enumerate() {
        mirrors.push(
            mirror(m)
                .map_err(|(k, reason)| (format!(" [[registry.mirror]] #{}{k}", i + 1), reason))?,
        );
    }
    Ok(RegistryEntry {
        prefix,
        location,
        insecure: r.insecure,
        blocked: r.blocked.unwrap_or(false),
        mirror_by_digest_only: r.mirror_by_digest_only.unwrap_or(false),
        mirrors,
        file: file.to_owned(),
    })
}

fn mirror(m: RawMirror) -> Result<Mirror, KeyError> {
    let at = |key: &str, reason: String| (format!(" {key}"), reason);
    if let Some(key) = m.other.keys().next() {
        return Err(at(key, "unknown key".into()));
    }
    let location = m
        .location
        .filter(|l| !l.is_empty())
        .ok_or_else(|| at("location", "a mirror needs a location".into()))?;
    check_location(&location).map_err(|e| at("location", format!("{location:?} {e}")))?;
    let pull_from = match m.pull_from_mirror.as_deref() {
        None | Some("all") => PullFrom::All,
        Some("digest-only") => PullFrom::DigestOnly,
        Some("tag-only") => PullFrom::TagOnly,
        Some(other) => {
            return Err(at(
                "pull-from-mirror",
                format!("{other:?}: must be \"all\", \"digest-only\" or \"tag-only\""),
            ));
        }
    };
    Ok(Mirror {
        location,
        insecure: m.insecure,
        pull_from,
    })
}
