//! Images from files: the containers/image transports `oci:`, `oci-archive:`,
//! `docker-archive:` and `dir:`, read through `containers-image-proxy` driving
//! `skopeo experimental-image-proxy` (the same code CRI-O reads them with).
//!
//! The only module that knows skopeo exists. It owns parsing a source reference
//! ([`SourceRef`]), the import policy (which transports are on, which directories files may
//! come from: [`ImportPolicy`]), the names a source carries ([`embedded`]), and a running
//! proxy ([`Source`]) that hands out the manifest and streams blobs. Writing blobs into the
//! store, verified, is the core's job (`image::import`).

pub mod embedded;
pub mod error;
pub mod policy;
mod proxy;

use std::fmt;
use std::path::PathBuf;

pub use error::TransportError;
pub use policy::ImportPolicy;
pub use proxy::{Blob, LocalImage, Source};

/// A containers/image transport that reads local files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LocalTransport {
    Oci,
    OciArchive,
    DockerArchive,
    Dir,
}

impl LocalTransport {
    pub const ALL: [LocalTransport; 4] = [
        LocalTransport::Oci,
        LocalTransport::OciArchive,
        LocalTransport::DockerArchive,
        LocalTransport::Dir,
    ];

    /// The transport's containers/image name, as written before the `:`.
    pub fn name(self) -> &'static str {
        match self {
            LocalTransport::Oci => "oci",
            LocalTransport::OciArchive => "oci-archive",
            LocalTransport::DockerArchive => "docker-archive",
            LocalTransport::Dir => "dir",
        }
    }

    pub fn from_name(name: &str) -> Option<LocalTransport> {
        LocalTransport::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Whether the source is one file (an archive) rather than a directory.
    pub fn is_archive(self) -> bool {
        matches!(
            self,
            LocalTransport::OciArchive | LocalTransport::DockerArchive
        )
    }
}

impl fmt::Display for LocalTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `TRANSPORT:PATH[:REF]`: where the image is and, for layouts and archives holding
/// several, which one (`oci`: the `org.opencontainers.image.ref.name`; `docker-archive`:
/// a repo tag or `@N`). `dir:` takes no reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceRef {
    pub transport: LocalTransport,
    pub path: PathBuf,
    pub reference: Option<String>,
}

impl SourceRef {
    /// Splits what follows `TRANSPORT:` at its first `:` (containers/image does the same,
    /// so a path cannot contain one).
    pub fn parse(transport: LocalTransport, rest: &str) -> Result<SourceRef, TransportError> {
        let (path, reference) = match rest.split_once(':') {
            Some((p, r)) => (p, Some(r)),
            None => (rest, None),
        };
        let invalid = |reason: &str| TransportError::InvalidReference {
            reference: format!("{transport}:{rest}"),
            reason: reason.to_owned(),
        };
        if path.is_empty() {
            return Err(invalid("no path"));
        }
        if transport == LocalTransport::Dir && reference.is_some() {
            return Err(invalid(
                "dir: takes a directory only (a path cannot contain ':')",
            ));
        }
        if reference.is_some_and(str::is_empty) {
            return Err(invalid("empty reference after ':'"));
        }
        Ok(SourceRef {
            transport,
            path: PathBuf::from(path),
            reference: reference.map(str::to_owned),
        })
    }
}

impl fmt::Display for SourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.transport, self.path.display())?;
        if let Some(r) = &self.reference {
            write!(f, ":{r}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_first_colon() {
        let r = SourceRef::parse(LocalTransport::DockerArchive, "/i/a.tar:busybox:1").unwrap();
        assert_eq!(r.path, PathBuf::from("/i/a.tar"));
        assert_eq!(r.reference.as_deref(), Some("busybox:1"));
        assert_eq!(r.to_string(), "docker-archive:/i/a.tar:busybox:1");
        let r = SourceRef::parse(LocalTransport::Oci, "/i/layout").unwrap();
        assert_eq!(r.reference, None);
        for (t, bad) in [
            (LocalTransport::Oci, ""),
            (LocalTransport::Oci, ":x"),
            (LocalTransport::Oci, "/i/layout:"),
            (LocalTransport::Dir, "/i/d:ref"),
        ] {
            let e = SourceRef::parse(t, bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{t}:{bad}")), "{e}");
        }
    }
}
