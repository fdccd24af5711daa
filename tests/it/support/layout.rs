//! Image sources on disk for the import tests (`oci:`, `oci-archive:`, `docker-archive:`,
//! `dir:`), made from the images of [`super::images`]; nothing is stored in the repository.
//!
//! How each is made:
//! - an OCI image layout ([`OciLayout`]) is written file by file: `oci-layout`,
//!   `blobs/sha256/<hex>` for every blob, and `index.json` with one entry per added image
//!   (its manifest, or for a [`TestIndex`] the index), annotated with
//!   `org.opencontainers.image.ref.name` when a reference is given;
//! - an `oci-archive` is that directory tarred by [`tar_layout`] (the `tar` crate);
//! - `docker-archive` and `dir:` sources are written by the real `skopeo copy`
//!   ([`skopeo_copy`]), from an image pushed to the test registry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};

use super::images::{Blob, TestImage, TestIndex};
use super::{INSTALL_HINT, hex_of, require_tool, run_tool};

/// Where Debian installs skopeo.
pub const SKOPEO: &str = "/usr/bin/skopeo";
/// The annotation an OCI layout names its images with.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Upper bound for one `skopeo copy` of a small test image.
const SKOPEO_LIMIT: Duration = Duration::from_secs(60);

/// An OCI image layout being written into a directory.
pub struct OciLayout {
    dir: PathBuf,
    entries: Vec<Value>,
}

impl OciLayout {
    /// Creates `dir` (and its parents) with the `oci-layout` file and an empty index.
    pub fn create(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs").join("sha256"))
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("write oci-layout");
        let layout = OciLayout {
            dir: dir.to_owned(),
            entries: Vec::new(),
        };
        layout.write_index();
        layout
    }

    /// The file blob `digest` is stored in.
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(hex_of(digest))
    }

    fn write_blob(&self, blob: &Blob) {
        let path = self.blob_path(&blob.digest);
        std::fs::write(&path, &blob.data)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    fn write_image_blobs(&self, img: &TestImage) {
        self.write_blob(&img.config);
        for l in &img.layers {
            self.write_blob(&l.blob);
        }
        self.write_blob(&img.manifest);
    }

    fn add_entry(&mut self, media_type: &str, blob: &Blob, ref_name: Option<&str>) {
        let mut entry = json!({
            "mediaType": media_type,
            "digest": blob.digest,
            "size": blob.len(),
        });
        if let Some(r) = ref_name {
            entry["annotations"] = json!({ REF_NAME: r });
        }
        self.entries.push(entry);
        self.write_index();
    }

    fn write_index(&self) {
        let index = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": self.entries,
        });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialize index.json"),
        )
        .expect("write index.json");
    }

    /// Adds a single-platform image: its blobs, and an `index.json` entry for its manifest.
    pub fn add_image(&mut self, img: &TestImage, ref_name: Option<&str>) -> &mut Self {
        self.write_image_blobs(img);
        self.add_entry(img.format.manifest_type(), &img.manifest, ref_name);
        self
    }

    /// Adds a multi-platform image: every child's blobs, the index blob, and an
    /// `index.json` entry for the index.
    pub fn add_index(&mut self, index: &TestIndex, ref_name: Option<&str>) -> &mut Self {
        for c in &index.children {
            self.write_image_blobs(c);
        }
        self.write_blob(&index.index);
        self.add_entry(index.format.index_type(), &index.index, ref_name);
        self
    }
}

/// Tars the OCI layout in `dir` into `archive` (an `oci-archive`): `oci-layout`,
/// `index.json`, then `blobs/sha256/*`, with their directories, paths relative to the
/// layout.
pub fn tar_layout(dir: &Path, archive: &Path) {
    let file = std::fs::File::create(archive)
        .unwrap_or_else(|e| panic!("create {}: {e}", archive.display()));
    let mut tar = tar::Builder::new(file);
    tar.follow_symlinks(false);
    for name in ["oci-layout", "index.json"] {
        tar.append_path_with_name(dir.join(name), name)
            .unwrap_or_else(|e| panic!("tar {name}: {e}"));
    }
    for d in ["blobs", "blobs/sha256"] {
        tar.append_dir(d, dir.join(d))
            .unwrap_or_else(|e| panic!("tar {d}/: {e}"));
    }
    let blobs = dir.join("blobs").join("sha256");
    let mut names: Vec<String> = std::fs::read_dir(&blobs)
        .unwrap_or_else(|e| panic!("read {}: {e}", blobs.display()))
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    for n in names {
        tar.append_path_with_name(blobs.join(&n), format!("blobs/sha256/{n}"))
            .unwrap_or_else(|e| panic!("tar blob {n}: {e}"));
    }
    tar.into_inner()
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("finish {}: {e}", archive.display()));
}

/// Overwrites bytes in the middle of `path` with their complement: same size, other
/// content, so its digest no longer matches.
pub fn corrupt(path: &Path) {
    let mut data = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        data.len() >= 64,
        "{} is too small to corrupt",
        path.display()
    );
    let mid = data.len() / 2;
    for b in &mut data[mid..mid + 16] {
        *b = !*b;
    }
    std::fs::write(path, &data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// `skopeo --insecure-policy copy [--src-tls-verify=false] SRC DST`, which must succeed;
/// `work` holds its output files while it runs. Panics with an install hint when skopeo
/// is missing.
pub fn skopeo_copy(work: &Path, src: &str, dst: &str) {
    require_tool(SKOPEO, "skopeo");
    let mut args = vec!["--insecure-policy", "copy"];
    if src.starts_with("docker://") {
        args.push("--src-tls-verify=false");
    }
    args.extend([src, dst]);
    let out = run_tool(work, SKOPEO, &args, SKOPEO_LIMIT);
    assert!(
        out.status.success(),
        "skopeo {args:?} failed ({}; {INSTALL_HINT}):\n{}{}",
        out.status,
        out.stdout,
        out.stderr
    );
}
