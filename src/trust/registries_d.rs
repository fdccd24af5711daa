//! registries.d (containers-registries.d(5)): where an image's signatures are. Every
//! `*.yaml` file of the directory, in name order: `default-docker` (at most one file sets
//! it) and `docker` scopes (each in one file only), each with `lookaside` (or its old name
//! `sigstore`: the base URL of GPG simple signatures, `file://` or `http(s)://`) and
//! `use-sigstore-attachments` (sigstore signatures as the `sha256-<hex>.sig` tag of the
//! image's repository). The `-staging` keys are for writers and are ignored. For an image,
//! the most specific scope that sets a key wins: `host/repo`, `host/ns…`, `host`,
//! `*.domain`, then `default-docker`; with no lookaside configured anywhere, GPG
//! signatures are read from `file:///var/lib/containers/sigstore`, as containers/image
//! does for a root process.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// containers/image's lookaside for reading when none is configured.
pub const DEFAULT_LOOKASIDE: &str = "file:///var/lib/containers/sigstore";

/// One scope's settings.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Namespace {
    #[serde(default)]
    lookaside: Option<String>,
    #[serde(default)]
    lookaside_staging: Option<String>,
    #[serde(default)]
    sigstore: Option<String>,
    #[serde(default)]
    sigstore_staging: Option<String>,
    #[serde(default)]
    use_sigstore_attachments: Option<bool>,
}

impl Namespace {
    fn lookaside(&self) -> Option<&str> {
        self.lookaside
            .as_deref()
            .or(self.sigstore.as_deref())
            .filter(|s| !s.is_empty())
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    #[serde(default)]
    default_docker: Option<Namespace>,
    #[serde(default)]
    docker: BTreeMap<String, Namespace>,
}

/// The merged configuration of a registries.d directory.
#[derive(Debug, Clone, Default)]
pub struct RegistriesD {
    default: Namespace,
    scopes: BTreeMap<String, Namespace>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Where one image's signatures are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureSources {
    /// The lookaside base URL (before `/<repo path>@sha256=<hex>/signature-N`).
    pub lookaside: String,
    pub use_sigstore_attachments: bool,
}

impl RegistriesD {
    /// Reads every `*.yaml` of `dir`; a missing directory is an empty configuration. Errors
    /// name the file and, for YAML, the line and column.
    pub fn load(dir: &Path) -> Result<RegistriesD, String> {
        let Some(files) = crate::registries::files_in(dir, "yaml")
            .map_err(|e| format!("{}: {e}", dir.display()))?
        else {
            return Ok(Self::default());
        };
        let mut out = RegistriesD::default();
        let mut default_from: Option<PathBuf> = None;
        for path in &files {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let file = parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            if let Some(d) = file.default_docker {
                if let Some(first) = &default_from {
                    return Err(format!(
                        "{}: default-docker is set here and in {}",
                        path.display(),
                        first.display()
                    ));
                }
                default_from = Some(path.clone());
                out.default = d;
            }
            for (scope, ns) in file.docker {
                check_scope(&scope).map_err(|e| format!("{}: docker: {e}", path.display()))?;
                if out.scopes.insert(scope.clone(), ns).is_some() {
                    return Err(format!(
                        "{}: docker scope {scope:?} is configured in more than one file",
                        path.display()
                    ));
                }
            }
        }
        out.files = files;
        Ok(out)
    }

    /// Where the signatures of `registry/repository` are.
    pub fn sources(&self, registry: &str, repository: &str) -> SignatureSources {
        let scopes = super::scope::registry_candidates(&format!("{registry}/{repository}"));
        let nss = || {
            scopes
                .iter()
                .filter_map(|s| self.scopes.get(s))
                .chain(std::iter::once(&self.default))
        };
        SignatureSources {
            lookaside: nss()
                .find_map(Namespace::lookaside)
                .unwrap_or(DEFAULT_LOOKASIDE)
                .to_owned(),
            use_sigstore_attachments: nss()
                .find_map(|n| n.use_sigstore_attachments)
                .unwrap_or(false),
        }
    }
}

/// Parses one file's text (an empty file is an empty configuration).
fn parse(text: &str) -> Result<File, String> {
    if text.trim().is_empty() {
        return Ok(File::default());
    }
    serde_yaml_ng::from_str::<Option<File>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|e| match e.location() {
            Some(l) => format!("line {} column {}: {e}", l.line(), l.column()),
            None => e.to_string(),
        })
}

fn check_scope(scope: &str) -> Result<(), String> {
    let bad = scope.is_empty()
        || scope.contains("://")
        || scope.contains('@')
        || scope.ends_with('/')
        || scope.chars().any(char::is_whitespace)
        || (scope.contains('*') && !scope.starts_with("*."))
        || scope.get(1..).is_some_and(|r| r.contains('*'));
    if bad {
        return Err(format!(
            "{scope:?} is not a scope (host[:port][/namespace…] or *.domain)"
        ));
    }
    Ok(())
}

/// The URL of the `index`-th (from 1) GPG signature of manifest `digest` of `repository`
/// (its path without the registry, as containers/image lays the lookaside out).
pub fn signature_url(
    base: &str,
    repository: &str,
    digest: &crate::names::Digest,
    index: usize,
) -> String {
    format!(
        "{}/{repository}@{}={}/signature-{index}",
        base.trim_end_matches('/'),
        digest.algorithm(),
        digest.hex()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(d.path().join(name), text).unwrap();
        }
        d
    }

    #[test]
    fn the_most_specific_scope_wins_per_key() {
        let d = dir_with(&[
            (
                "default.yaml",
                "default-docker:\n  lookaside: file:///var/sigs\n",
            ),
            (
                "example.yaml",
                "docker:\n  example.com:\n    lookaside: https://sigs.example.com/\n    use-sigstore-attachments: true\n  example.com/team/app:\n    use-sigstore-attachments: false\n  '*.corp.net':\n    sigstore: file:///corp\n",
            ),
            ("ignored.txt", "not yaml at all: ["),
        ]);
        let r = RegistriesD::load(d.path()).unwrap();
        assert_eq!(r.files.len(), 2);
        let s = r.sources("example.com", "team/app");
        assert_eq!(s.lookaside, "https://sigs.example.com/");
        assert!(!s.use_sigstore_attachments);
        let s = r.sources("example.com", "team/other");
        assert!(s.use_sigstore_attachments);
        assert_eq!(
            r.sources("a.b.corp.net:5000", "x").lookaside,
            "file:///corp"
        );
        assert_eq!(r.sources("other.org", "x").lookaside, "file:///var/sigs");
        let empty = RegistriesD::load(&d.path().join("missing")).unwrap();
        assert_eq!(empty.sources("other.org", "x").lookaside, DEFAULT_LOOKASIDE);
    }

    #[test]
    fn bad_files_are_refused_naming_file_and_place() {
        for (files, want) in [
            (
                vec![("a.yaml", "docker:\n  x.io:\n    lookaside: [\n")],
                "a.yaml: line",
            ),
            (
                vec![("a.yaml", "docker:\n  x.io:\n    lookside: file:///x\n")],
                "lookside",
            ),
            (
                vec![
                    ("a.yaml", "default-docker:\n  lookaside: file:///a\n"),
                    ("b.yaml", "default-docker:\n  lookaside: file:///b\n"),
                ],
                "b.yaml: default-docker is set here and in",
            ),
            (
                vec![
                    ("a.yaml", "docker:\n  x.io:\n    lookaside: file:///a\n"),
                    ("b.yaml", "docker:\n  x.io:\n    lookaside: file:///b\n"),
                ],
                "more than one file",
            ),
            (
                vec![("a.yaml", "docker:\n  'x.io/*':\n    lookaside: file:///a\n")],
                "not a scope",
            ),
        ] {
            let d = dir_with(&files);
            let e = RegistriesD::load(d.path()).unwrap_err();
            assert!(e.contains(want), "{e} should contain {want}");
        }
    }

    #[test]
    fn signature_urls_are_laid_out_like_containers_image() {
        let d = crate::names::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        assert_eq!(
            signature_url("file:///sigs/", "team/app", &d, 1),
            format!(
                "file:///sigs/team/app@sha256={}/signature-1",
                "ab".repeat(32)
            )
        );
    }
}
