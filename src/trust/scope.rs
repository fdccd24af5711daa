//! Which scope of a policy applies to an image, as containers/image decides it: for
//! `docker` (and `atomic`), the most specific of `host/repo:tag` (or `@digest`),
//! `host/repo`, each parent namespace `host/a/b`, `host/a`, then `host`, then wildcards
//! `*.b.example.com`, `*.example.com` (most specific first), then the transport's `""`
//! scope, then `default`; for the path transports, the path, each parent directory up to
//! `/`, then `""`, then `default`. Scope names are validated when the policy is parsed.

use super::policy::{Policy, Requirement};

/// The requirements that apply to one image, and the scope they come from.
#[derive(Debug)]
pub struct Applied<'a> {
    /// `docker:host/repo`, `docker:` for the transport's `""`, or `default`.
    pub scope: String,
    pub requirements: &'a [Requirement],
}

fn is_registry_transport(t: &str) -> bool {
    matches!(t, "docker" | "atomic")
}

impl Policy {
    /// The requirements for `reference` (a full image name for registry transports, an
    /// absolute path for local ones) pulled over `transport`.
    pub fn requirements_for(&self, transport: &str, reference: &str) -> Applied<'_> {
        if let Some(scopes) = self.transports.get(transport) {
            let candidates = if is_registry_transport(transport) {
                registry_candidates(reference)
            } else {
                path_candidates(reference)
            };
            for c in candidates.iter().map(String::as_str).chain([""]) {
                if let Some(reqs) = scopes.get(c) {
                    return Applied {
                        scope: format!("{transport}:{c}"),
                        requirements: reqs,
                    };
                }
            }
        }
        Applied {
            scope: "default".into(),
            requirements: &self.default,
        }
    }
}

/// `host/a/b:tag` → `host/a/b:tag`, `host/a/b`, `host/a`, `host`, `*.…` wildcards (also
/// registries.d's scopes, most specific first).
pub(super) fn registry_candidates(reference: &str) -> Vec<String> {
    let mut out = vec![reference.to_owned()];
    // The repository: cut a digest, then a tag after the last '/'.
    let mut repo = reference.split('@').next().unwrap_or(reference);
    let last = repo.rfind('/').map_or(0, |i| i + 1);
    if let Some(colon) = repo[last..].find(':') {
        repo = &repo[..last + colon];
    }
    let mut path = repo.to_owned();
    loop {
        if path != reference {
            out.push(path.clone());
        }
        match path.rfind('/') {
            Some(i) => path.truncate(i),
            None => break,
        }
    }
    let host = repo.split('/').next().unwrap_or(repo);
    let host = host.split(':').next().unwrap_or(host);
    let mut rest = host;
    while let Some((_, parent)) = rest.split_once('.') {
        out.push(format!("*.{parent}"));
        rest = parent;
    }
    out
}

/// `/a/b/c.tar` → itself, `/a/b`, `/a`, `/`. A reference after the path (`/x:tag`)
/// is part of the first candidate only.
fn path_candidates(reference: &str) -> Vec<String> {
    let mut out = vec![reference.to_owned()];
    let mut path = reference.split(':').next().unwrap_or(reference).to_owned();
    if path != reference {
        out.push(path.clone());
    }
    while let Some(i) = path.rfind('/') {
        path.truncate(i);
        out.push(if path.is_empty() {
            "/".into()
        } else {
            path.clone()
        });
        if path.is_empty() {
            break;
        }
    }
    out
}

/// Whether `scope` is a valid scope of `transport` (the transport's `""` always is).
pub(super) fn check_scope(transport: &str, scope: &str) -> Result<(), String> {
    if scope.is_empty() {
        return Ok(());
    }
    if !is_registry_transport(transport) {
        if !scope.starts_with('/') {
            return Err(format!("scope {scope:?} must be an absolute path"));
        }
        return Ok(());
    }
    let bad = |why: &str| Err(format!("scope {scope:?} {why}"));
    if scope.contains("://") || scope.chars().any(char::is_whitespace) {
        return bad("is not host[:port][/repository][:tag|@digest]");
    }
    if let Some(domain) = scope.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', ':', '*', '@']) {
            return bad("is not a wildcard domain (*.example.com)");
        }
        return Ok(());
    }
    if scope.contains('*') {
        return bad("may hold * only as a leading *. of a domain");
    }
    if scope.ends_with('/') || scope.contains("//") {
        return bad("has an empty path component");
    }
    let (host, path) = scope.split_once('/').unwrap_or((scope, ""));
    if host.is_empty() {
        return bad("has no host");
    }
    let repo = path.split('@').next().unwrap_or(path);
    let repo = repo.rsplit_once(':').map_or(repo, |(r, _)| r);
    if repo.chars().any(|c| c.is_ascii_uppercase()) {
        return bad("has an uppercase repository (repositories are lowercase)");
    }
    let tagged = path.contains('@') || path.rsplit('/').next().is_some_and(|l| l.contains(':'));
    if tagged {
        if path.is_empty() {
            return bad("has a tag or digest but no repository");
        }
        let name = crate::names::ImageName::parse_qualified(scope)
            .map_err(|e| format!("scope {scope:?}: {e}"))?;
        if name.tag().is_some() && name.digest().is_some() {
            return bad("has both a tag and a digest");
        }
    }
    Ok(())
}
