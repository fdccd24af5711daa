//! `signedIdentity`: whether the identity a signature names (its payload's
//! `critical.identity.docker-reference`) is acceptable for the image pulled — the rules of
//! containers/image's `policy_reference_match.go`. Names are compared in their canonical
//! qualified form (`docker.io/library/busybox:1`), so `busybox:1` and its long form match.

use super::policy::SignedIdentity;
use crate::names::ImageName;

impl SignedIdentity {
    /// Whether a signature naming `signed` vouches for `pulled`.
    pub fn matches(&self, pulled: &ImageName, signed: &str) -> bool {
        let Ok(signed) = ImageName::parse_qualified(signed) else {
            return false;
        };
        match self {
            SignedIdentity::MatchExact => exact(pulled, &signed),
            SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(pulled, &signed),
            SignedIdentity::MatchRepository => pulled.repo() == signed.repo(),
            SignedIdentity::ExactReference { docker_reference } => {
                ImageName::parse_qualified(docker_reference).is_ok_and(|r| exact(&r, &signed))
            }
            SignedIdentity::ExactRepository { docker_repository } => {
                ImageName::parse_qualified(docker_repository)
                    .is_ok_and(|r| r.repo() == signed.repo())
            }
            SignedIdentity::RemapIdentity {
                prefix,
                signed_prefix,
            } => {
                let whole = pulled.to_string();
                let remapped = remap(&whole, prefix, signed_prefix)
                    .and_then(|s| ImageName::parse_qualified(&s).ok());
                match remapped {
                    Some(r) => repo_digest_or_exact(&r, &signed),
                    None => repo_digest_or_exact(pulled, &signed),
                }
            }
        }
    }
}

/// The same name with the same tag, or the same digest.
fn exact(a: &ImageName, b: &ImageName) -> bool {
    a.to_string() == b.to_string()
}

/// Pulled by digest: any signature of that repository (the digest is checked apart);
/// pulled by tag: exactly that tag.
fn repo_digest_or_exact(pulled: &ImageName, signed: &ImageName) -> bool {
    if pulled.digest().is_some() {
        pulled.repo() == signed.repo()
    } else {
        exact(pulled, signed)
    }
}

/// `name` with `prefix` replaced by `to`, when `prefix` matches at a component boundary
/// (`example.com/a` matches `example.com/a/b:1` and `example.com/a:1`, not
/// `example.com/ab`).
fn remap(name: &str, prefix: &str, to: &str) -> Option<String> {
    let rest = name.strip_prefix(prefix)?;
    let boundary = rest.is_empty() || rest.starts_with(['/', ':', '@']);
    boundary.then(|| format!("{to}{rest}"))
}
