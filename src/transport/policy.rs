//! Which local transports are on and which directories images may be read from. A path
//! is admitted when it lies under an import directory both as written and after every
//! symlink is resolved; the resolved path is what skopeo gets.

use std::path::{Component, Path, PathBuf};

use super::{LocalTransport, SourceRef, TransportError};

/// The import settings. The default admits nothing: every local transport is off.
#[derive(Debug, Clone, Default)]
pub struct ImportPolicy {
    pub transports: Vec<LocalTransport>,
    pub import_dirs: Vec<PathBuf>,
    /// The skopeo binary (a name looked up in `PATH`, or a path).
    pub skopeo: PathBuf,
}

impl ImportPolicy {
    /// Checks `src` against the policy and returns it with its path resolved.
    pub async fn admit(&self, src: SourceRef) -> Result<SourceRef, TransportError> {
        if !self.transports.contains(&src.transport) {
            return Err(TransportError::Disabled {
                transport: src.transport.name().to_owned(),
            });
        }
        let path = &src.path;
        if !path.is_absolute() {
            return Err(TransportError::RelativePath { path: path.clone() });
        }
        let outside = || TransportError::OutsideImportDirs {
            path: path.clone(),
            dirs: self.import_dirs.clone(),
        };
        // As written first, so nothing is learnt about paths elsewhere (not even whether
        // they exist).
        let lexical = normalize(path);
        if !self
            .import_dirs
            .iter()
            .any(|d| lexical.starts_with(normalize(d)))
        {
            return Err(outside());
        }
        let resolved = match tokio::fs::canonicalize(path).await {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(TransportError::NotFound { path: path.clone() });
            }
            Err(e) => {
                return Err(TransportError::Unreadable {
                    source_ref: src.to_string(),
                    reason: e.to_string(),
                });
            }
        };
        let mut inside = false;
        for dir in &self.import_dirs {
            if let Ok(d) = tokio::fs::canonicalize(dir).await
                && resolved.starts_with(&d)
                && resolved != d
            {
                inside = true;
                break;
            }
        }
        if !inside {
            return Err(outside());
        }
        check_tree(&src, &resolved).await?;
        if resolved.to_string_lossy().contains(':') {
            return Err(TransportError::ColonInPath {
                path: path.clone(),
                resolved,
            });
        }
        Ok(SourceRef {
            path: resolved,
            ..src
        })
    }
}

/// Entries looked at inside a directory source, at most.
const MAX_ENTRIES: usize = 1_000_000;

/// An archive must be a regular file; a directory source a directory holding no symlinks
/// (a link inside an admitted layout could point anywhere: skopeo and cri-imaged would
/// read outside the import directories).
async fn check_tree(src: &SourceRef, resolved: &Path) -> Result<(), TransportError> {
    let (path, resolved) = (src.path.clone(), resolved.to_owned());
    let archive = src.transport.is_archive();
    let unsafe_source = |reason: String| TransportError::UnsafeSource {
        path: path.clone(),
        reason,
    };
    let result = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let meta = std::fs::metadata(&resolved).map_err(|e| e.to_string())?;
        if archive {
            return if meta.is_file() {
                Ok(())
            } else {
                Err("an archive must be a regular file".into())
            };
        }
        if !meta.is_dir() {
            return Err("a layout or dir: source must be a directory".into());
        }
        let (mut pending, mut seen) = (vec![resolved], 0usize);
        while let Some(dir) = pending.pop() {
            for entry in std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
                let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
                seen += 1;
                if seen > MAX_ENTRIES {
                    return Err(format!("more than {MAX_ENTRIES} entries"));
                }
                let kind = entry
                    .file_type()
                    .map_err(|e| format!("{}: {e}", entry.path().display()))?;
                if kind.is_symlink() {
                    return Err(format!(
                        "{} is a symbolic link (not followed inside a source)",
                        entry.path().display()
                    ));
                }
                if kind.is_dir() {
                    pending.push(entry.path());
                }
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| unsafe_source(e.to_string()))?;
    result.map_err(unsafe_source)
}

/// `.` and `..` resolved textually (`/a/b/../c` → `/a/c`), symlinks not followed.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(dir: &Path) -> ImportPolicy {
        ImportPolicy {
            transports: vec![LocalTransport::OciArchive],
            import_dirs: vec![dir.join("imports")],
            skopeo: "skopeo".into(),
        }
    }

    fn src(path: PathBuf) -> SourceRef {
        SourceRef {
            transport: LocalTransport::OciArchive,
            path,
            reference: None,
        }
    }

    #[tokio::test]
    async fn paths_must_stay_inside_import_dirs_after_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let imports = tmp.path().join("imports");
        std::fs::create_dir(&imports).unwrap();
        std::fs::write(imports.join("a.tar"), b"x").unwrap();
        std::fs::write(tmp.path().join("secret.tar"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret.tar"), imports.join("link.tar"))
            .unwrap();
        let p = policy(tmp.path());

        let ok = p.admit(src(imports.join("a.tar"))).await.unwrap();
        assert_eq!(ok.path, imports.canonicalize().unwrap().join("a.tar"));

        for (path, want) in [
            (imports.join("link.tar"), "not inside an import directory"),
            (
                imports.join("../secret.tar"),
                "not inside an import directory",
            ),
            (
                tmp.path().join("secret.tar"),
                "not inside an import directory",
            ),
            (imports.clone(), "not inside an import directory"),
            (imports.join("missing.tar"), "does not exist"),
            (PathBuf::from("imports/a.tar"), "must be absolute"),
        ] {
            let e = p.admit(src(path.clone())).await.unwrap_err().to_string();
            assert!(e.contains(want), "{path:?}: {e}");
        }
        // Outside the import dirs, a missing path is not reported as missing.
        let e = p
            .admit(src(tmp.path().join("nope.tar")))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not inside an import directory"), "{e}");
    }

    #[tokio::test]
    async fn sources_must_be_what_their_transport_reads_and_hold_no_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let imports = tmp.path().join("imports");
        let layout = imports.join("layout");
        std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
        std::fs::write(layout.join("index.json"), b"{}").unwrap();
        std::fs::write(tmp.path().join("secret"), b"x").unwrap();
        let policy = ImportPolicy {
            transports: vec![LocalTransport::Oci, LocalTransport::OciArchive],
            import_dirs: vec![imports.clone()],
            skopeo: "skopeo".into(),
        };
        let oci = |path: PathBuf| SourceRef {
            transport: LocalTransport::Oci,
            path,
            reference: None,
        };
        policy.admit(oci(layout.clone())).await.unwrap();

        // A blob that is a link to a file elsewhere.
        let link = layout.join("blobs/sha256").join("a".repeat(64));
        std::os::unix::fs::symlink(tmp.path().join("secret"), &link).unwrap();
        let e = policy.admit(oci(layout.clone())).await.unwrap_err();
        assert!(matches!(e, TransportError::UnsafeSource { .. }), "{e}");
        assert!(e.to_string().contains("symbolic link"), "{e}");
        std::fs::remove_file(&link).unwrap();

        // An archive that is a directory, or a FIFO.
        let e = policy.admit(src(layout.clone())).await.unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        let fifo = imports.join("app.tar");
        let out = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .output()
            .unwrap();
        assert!(out.status.success(), "mkfifo: {out:?}");
        let e = policy.admit(src(fifo)).await.unwrap_err();
        assert!(e.to_string().contains("regular file"), "{e}");
        // A layout that is a file.
        std::fs::write(imports.join("file"), b"x").unwrap();
        let e = policy.admit(oci(imports.join("file"))).await.unwrap_err();
        assert!(e.to_string().contains("must be a directory"), "{e}");
    }

    #[tokio::test]
    async fn disabled_transports_are_refused_first() {
        let p = ImportPolicy::default();
        let e = p.admit(src("/x.tar".into())).await.unwrap_err().to_string();
        assert!(e.contains("\"oci-archive\" is disabled"), "{e}");
        assert!(e.contains("`transports`"), "{e}");
    }
}
