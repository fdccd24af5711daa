//! The node's platform and choosing a manifest for it from an index.

use super::manifest::{Descriptor, Index};

/// An OS/architecture/variant triple, in OCI (GOARCH) spelling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this binary runs on.
    pub fn current() -> Platform {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            other => (other, None),
        };
        Platform {
            os: std::env::consts::OS.to_owned(),
            architecture: architecture.to_owned(),
            variant: variant.map(str::to_owned),
        }
    }

    /// Picks the first image manifest for this platform (entries of another media type,
    /// e.g. nested indexes or artifacts, are passed over). An entry without a variant
    /// matches any variant; arm64 entries with variant "v8" or none are the same platform.
    pub fn select<'a>(&self, index: &'a Index) -> Option<&'a Descriptor> {
        let variant_ok = |v: &Option<String>| match (v.as_deref(), self.variant.as_deref()) {
            (None, _) => true,
            (Some(a), Some(b)) => a == b,
            (Some(a), None) => self.architecture == "arm64" && a == "v8",
        };
        index
            .manifests
            .iter()
            .filter(|e| {
                let t = &e.descriptor.media_type;
                t.is_empty() || super::media::is_manifest(t)
            })
            .find(|e| {
                e.os == self.os && e.architecture == self.architecture && variant_ok(&e.variant)
            })
            .map(|e| &e.descriptor)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::Digest;
    use crate::oci::manifest::IndexEntry;

    fn entry(arch: &str, variant: Option<&str>, n: char) -> IndexEntry {
        IndexEntry {
            descriptor: Descriptor {
                media_type: "".into(),
                digest: Digest::parse(&format!("sha256:{}", n.to_string().repeat(64))).unwrap(),
                size: 1,
            },
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    fn platform(arch: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: "linux".into(),
            architecture: arch.into(),
            variant: variant.map(Into::into),
        }
    }

    #[test]
    fn selects_by_architecture_and_variant() {
        let index = Index {
            media_type: "".into(),
            manifests: vec![
                entry("arm", Some("v6"), '1'),
                entry("arm", Some("v7"), '2'),
                entry("amd64", None, '3'),
            ],
        };
        let d = |p: &Platform| p.select(&index).map(|d| d.digest.hex()[..1].to_owned());
        assert_eq!(d(&platform("arm", Some("v7"))).as_deref(), Some("2"));
        assert_eq!(d(&platform("amd64", None)).as_deref(), Some("3"));
        assert_eq!(d(&platform("arm64", Some("v8"))), None);
    }

    #[test]
    fn arm64_without_variant_matches_v8() {
        let index = Index {
            media_type: "".into(),
            manifests: vec![entry("arm64", Some("v8"), '4')],
        };
        assert!(platform("arm64", None).select(&index).is_some());
        assert!(platform("arm64", Some("v8")).select(&index).is_some());
    }
}
