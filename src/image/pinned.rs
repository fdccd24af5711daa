//! [`Pinned`]: which images CRI reports as `pinned` (kubelet's image garbage collection
//! never removes them): the configured pause image and the `pinned_images` patterns, each
//! an exact qualified name or a `prefix*` glob matched against an image's names.

use crate::names::ImageName;

/// The pinned-image patterns, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pinned {
    exact: Vec<ImageName>,
    prefixes: Vec<String>,
}

impl Pinned {
    /// Validates `patterns`; an error names the pattern and why.
    pub fn new(patterns: &[String]) -> Result<Pinned, String> {
        let mut p = Pinned::default();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) if !prefix.contains('*') && !prefix.is_empty() => {
                    p.prefixes.push(prefix.to_owned())
                }
                _ if pattern.contains('*') => {
                    return Err(format!(
                        "{pattern:?}: a glob is a non-empty prefix followed by one '*' at the end"
                    ));
                }
                _ => p.exact.push(
                    ImageName::parse_qualified(pattern).map_err(|e| format!("{pattern:?}: {e}"))?,
                ),
            }
        }
        Ok(p)
    }

    /// Whether an image with this name is pinned.
    pub fn matches(&self, name: &ImageName) -> bool {
        if self.exact.contains(name) {
            return true;
        }
        let s = name.to_string();
        self.prefixes.iter().any(|p| s.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pinned(p: &[&str]) -> Pinned {
        Pinned::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_names_and_prefix_globs_match() {
        let p = pinned(&[
            "registry.k8s.io/pause:3.10",
            "quay.io/org/*",
            "docker.io/busybox",
        ]);
        let cases = [
            ("registry.k8s.io/pause:3.10", true),
            ("registry.k8s.io/pause:3.9", false),
            ("quay.io/org/app:1", true),
            ("quay.io/orgx/app:1", false),
            ("docker.io/library/busybox:latest", true),
            ("docker.io/library/busybox:1", false),
        ];
        for (n, want) in cases {
            assert_eq!(
                p.matches(&ImageName::parse_qualified(n).unwrap()),
                want,
                "{n}"
            );
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in ["*", "a*b*", "busybox", "quay.io/*/x", "Bad/Name"] {
            assert!(Pinned::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }
}
