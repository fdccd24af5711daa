//! The OCI image layout files: `oci-layout`, `index.json` and blob paths.
//!
//! `index.json` has one entry per image name; the entry's
//! `org.opencontainers.image.ref.name` annotation is the full name, so
//! `skopeo inspect oci:<root>:<name>` reads what cri-imaged pulled. It is replaced
//! atomically (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::StoreError;
use crate::names::{Digest, ImageName};
use crate::oci::{Descriptor, media};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The digest a name was pulled by (the index digest for a multi-arch pull).
pub const PULLED_BY: &str = "io.github.cri-imaged.pulled-by";

pub const INDEX_FILE: &str = "index.json";
pub const LAYOUT_FILE: &str = "oci-layout";
pub const LOCK_FILE: &str = "cri-imaged.lock";
pub const INGEST_DIR: &str = "ingest";

pub fn blobs_dir(root: &Path) -> PathBuf {
    root.join("blobs").join("sha256")
}

/// The path of a blob: only ever built from a validated [`Digest`].
pub fn blob_path(root: &Path, digest: &Digest) -> PathBuf {
    blobs_dir(root).join(digest.hex())
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexJson {
    schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Vec<serde_json::Value>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// One `index.json` entry as cri-imaged reads it.
#[derive(Debug, Clone)]
pub enum IndexEntry {
    /// A name cri-imaged recorded.
    Named {
        name: ImageName,
        manifest: Descriptor,
        pulled_by: Digest,
        /// The entry as read, kept in case it turns out not to be an image of ours.
        raw: serde_json::Value,
    },
    /// An entry cri-imaged did not write (or cannot read): kept verbatim, with the
    /// manifest it points to protected from clean-up when its digest is valid.
    Foreign {
        raw: serde_json::Value,
        manifest: Option<Digest>,
    },
}

fn read_entry(raw: serde_json::Value) -> IndexEntry {
    let foreign = |raw: serde_json::Value| {
        let manifest = raw
            .get("digest")
            .and_then(|d| d.as_str())
            .and_then(|d| Digest::parse(d).ok());
        IndexEntry::Foreign { raw, manifest }
    };
    let Ok(e) = Entry::deserialize(&raw) else {
        return foreign(raw);
    };
    let (Some(name), Ok(digest)) = (e.annotations.get(REF_NAME), Digest::parse(&e.digest)) else {
        return foreign(raw);
    };
    // cri-imaged records image manifests only; an index entry (say from
    // `skopeo copy --all … oci:<root>:<name>`) is someone else's.
    if crate::oci::media::is_index(&e.media_type) {
        return foreign(raw);
    }
    let Ok(name) = ImageName::parse_qualified(name) else {
        return foreign(raw);
    };
    let pulled_by = match e.annotations.get(PULLED_BY).map(|d| Digest::parse(d)) {
        Some(Ok(d)) => d,
        Some(Err(_)) => return foreign(raw),
        None => digest.clone(),
    };
    IndexEntry::Named {
        name,
        manifest: Descriptor {
            media_type: media::intern(&e.media_type),
            digest,
            size: e.size,
        },
        pulled_by,
        raw,
    }
}

/// Reads `index.json`; a missing file is an empty store.
pub fn read_index(root: &Path) -> Result<Vec<IndexEntry>, StoreError> {
    let path = root.join(INDEX_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StoreError::io(root, "read", &path, e)),
    };
    let index: IndexJson = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        root: root.to_owned(),
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok(index.manifests.into_iter().map(read_entry).collect())
}

/// Serialises the entries as an OCI index.
pub fn render_index<'a>(
    named: impl Iterator<Item = (&'a ImageName, &'a Descriptor, &'a Digest)>,
    foreign: &[serde_json::Value],
) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = write_index(&mut out, named, foreign);
    out
}

/// One name's entry as serde writes it. Keys are in the order a `Value` map sorts them, so
/// the file reads the same as one rendered through `Value`s (compact, as skopeo and umoci
/// write it).
struct Named<'a>(&'a ImageName, &'a Descriptor, &'a Digest);

/// A name written through its `Display`, without a `String` per entry.
struct Shown<'a>(&'a ImageName);

struct Annotations<'a>(&'a Named<'a>);

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

impl Serialize for Annotations<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Named(name, manifest, pulled_by) = self.0;
        let mut m = s.serialize_map(None)?;
        if *pulled_by != &manifest.digest {
            m.serialize_entry(PULLED_BY, pulled_by)?;
        }
        m.serialize_key(REF_NAME)?;
        m.serialize_value(&Shown(name))?;
        m.end()
    }
}

impl Serialize for Named<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut e = s.serialize_struct("Entry", 4)?;
        e.serialize_field("annotations", &Annotations(self))?;
        e.serialize_field("digest", &self.1.digest)?;
        e.serialize_field("mediaType", &self.1.media_type)?;
        e.serialize_field("size", &self.1.size)?;
        e.end()
    }
}

/// Renders name entries as `index.json` holds them, comma-separated: a record's share of
/// the file, which the records keep so a write renders only what changed.
pub fn render_entries<'a>(
    named: impl Iterator<Item = (&'a ImageName, &'a Descriptor, &'a Digest)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, (n, m, p)) in named.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        // Writing into a `Vec` cannot fail, and these types always serialise.
        let _ = serde_json::to_writer(&mut out, &Named(n, m, p));
    }
    out
}

/// Serialises the entries as an OCI index into `w` (see [`write_index_chunks`]).
pub fn write_index<'a>(
    w: impl Write,
    named: impl Iterator<Item = (&'a ImageName, &'a Descriptor, &'a Digest)>,
    foreign: &[serde_json::Value],
) -> std::io::Result<()> {
    let entries = render_entries(named);
    write_index_chunks(w, std::iter::once(&entries[..]), foreign)
}

/// Writes an OCI index from entries already rendered (each chunk one or more of
/// [`render_entries`]' comma-separated entries; empty chunks are skipped) and the foreign
/// entries, compact: at 20,000 images indentation alone was a third of the file, written
/// and fsynced at every change. The bytes are those serde writes for the whole index.
pub fn write_index_chunks<'a>(
    mut w: impl Write,
    chunks: impl Iterator<Item = &'a [u8]>,
    foreign: &[serde_json::Value],
) -> std::io::Result<()> {
    w.write_all(b"{\"schemaVersion\":2,\"mediaType\":")?;
    serde_json::to_writer(&mut w, media::OCI_INDEX)?;
    w.write_all(b",\"manifests\":[")?;
    let mut first = true;
    let mut comma = |w: &mut dyn Write| {
        let sep: &[u8] = if first { b"" } else { b"," };
        first = false;
        w.write_all(sep)
    };
    for chunk in chunks.filter(|c| !c.is_empty()) {
        comma(&mut w)?;
        w.write_all(chunk)?;
    }
    for v in foreign {
        comma(&mut w)?;
        serde_json::to_writer(&mut w, v)?;
    }
    w.write_all(b"]}")
}

/// Replaces `index.json` atomically with the given entries (see [`write_index`]).
pub fn write_index_atomic<'a>(
    root: &Path,
    named: impl Iterator<Item = (&'a ImageName, &'a Descriptor, &'a Digest)>,
    foreign: &[serde_json::Value],
) -> Result<(), StoreError> {
    let entries = render_entries(named);
    write_index_chunks_atomic(root, std::iter::once(&entries[..]), foreign)
}

/// Replaces `index.json` atomically with rendered entries (see [`write_index_chunks`]),
/// written as they come.
pub fn write_index_chunks_atomic<'a>(
    root: &Path,
    chunks: impl Iterator<Item = &'a [u8]>,
    foreign: &[serde_json::Value],
) -> Result<(), StoreError> {
    write_atomic_with(root, INDEX_FILE, |f| {
        let mut w = std::io::BufWriter::with_capacity(64 << 10, f);
        write_index_chunks(&mut w, chunks, foreign)?;
        w.flush()
    })
}

/// Replaces `root/<file>` atomically with `bytes`.
pub fn write_atomic(root: &Path, file: &str, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(root, file, |f| f.write_all(bytes))
}

/// Replaces `root/<file>` atomically with what `fill` writes: temp file, fsync, rename,
/// fsync of the directory.
fn write_atomic_with(
    root: &Path,
    file: &str,
    fill: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), StoreError> {
    let tmp = root.join(format!("{file}.tmp"));
    let dest = root.join(file);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        StoreError::io(root, "write", &tmp, e)
    })?;
    std::fs::rename(&tmp, &dest).map_err(|e| StoreError::io(root, "rename", &dest, e))?;
    sync_dir(root, root)
}

pub fn sync_dir(root: &Path, dir: &Path) -> Result<(), StoreError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io(root, "fsync", dir, e))
}

/// What identifies one version of `index.json`: size, modification time, inode. A
/// change means someone else wrote it.
pub type Stamp = (u64, std::time::SystemTime, u64);

pub fn stamp(root: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(root.join(INDEX_FILE)).ok()?;
    Some((m.len(), m.modified().ok()?, m.ino()))
}

/// Writes `oci-layout` when missing.
pub fn ensure_layout_file(root: &Path) -> Result<(), StoreError> {
    if root.join(LAYOUT_FILE).exists() {
        return Ok(());
    }
    write_atomic(root, LAYOUT_FILE, br#"{"imageLayoutVersion":"1.0.0"}"#)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_foreign_entries_survive() {
        let dir = tempfile::tempdir().unwrap();
        let name = ImageName::parse_qualified("r.io/a:1").unwrap();
        let d = Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap();
        let list = Digest::parse(&format!("sha256:{}", "cd".repeat(32))).unwrap();
        let m = Descriptor {
            media_type: media::OCI_MANIFEST.into(),
            digest: d.clone(),
            size: 3,
        };
        let foreign = serde_json::json!({"mediaType": media::OCI_MANIFEST, "digest": d.to_string(), "size": 3, "annotations": {REF_NAME: "v1"}});
        let bytes = render_index(
            std::iter::once((&name, &m, &list)),
            std::slice::from_ref(&foreign),
        );
        // Compact: no indentation written (and fsynced) per change.
        assert!(
            !bytes.contains(&b'\n'),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        write_atomic(dir.path(), INDEX_FILE, &bytes).unwrap();
        let entries = read_index(dir.path()).unwrap();
        assert_eq!(entries.len(), 2);
        match &entries[0] {
            IndexEntry::Named {
                name: n,
                manifest,
                pulled_by,
                ..
            } => {
                assert_eq!(n, &name);
                assert_eq!(manifest, &m);
                assert_eq!(pulled_by, &list);
            }
            other => panic!("expected a named entry, got {other:?}"),
        }
        assert!(matches!(&entries[1], IndexEntry::Foreign { manifest: Some(x), .. } if x == &d));
    }

    #[test]
    fn missing_index_is_empty_and_garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_index(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join(INDEX_FILE), b"{not json").unwrap();
        assert!(matches!(
            read_index(dir.path()),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
