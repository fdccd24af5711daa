//! The store's in-memory view of its images, and the pure changes made to it.
//!
//! `index.json` is the only persistent record: one entry per image name pointing at the
//! manifest that name was pulled as, annotated with the digest it was pulled by. This module
//! turns those entries into images (grouped by config digest = image ID) and applies tag,
//! untag and remove changes to a copy before the copy is persisted.
//!
//! The maps are persistent (`imbl`): the store copies the records on every change, and a
//! copy shares all but the paths it changes, so a change costs O(log images) instead of
//! O(images). Each record also keeps its `index.json` entries as rendered, so a write of
//! the whole index renders only the records a change touched.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use crate::names::{Digest, ImageId, ImageName};
use crate::oci::Descriptor;

/// One name of an image, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameRecord {
    pub name: ImageName,
    /// The manifest this name resolves to (the platform manifest for multi-arch pulls).
    pub manifest: Descriptor,
    /// The digest the name was pulled by: the index digest for a multi-arch pull.
    pub pulled_by: Digest,
}

/// An image: its ID, its names in the order they were added, and the manifests those
/// names point at (each with its config and layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: ImageId,
    pub names: Vec<NameRecord>,
    /// One entry per manifest some name points at; none other is kept.
    pub manifests: Vec<ManifestBlobs>,
    /// Bytes of the config and layers (compressed, as stored) of the first name's
    /// manifest. The manifest is not counted: it is stored in OCI form, whatever format
    /// the registry served.
    pub size: u64,
    /// This record's names as `index.json` entries, rendered when first written.
    pub rendered: Rendered,
}

/// A record's `index.json` entries, rendered once: a copy (made only to be changed) and
/// a changed record start without them, and they never take part in comparisons.
#[derive(Default)]
pub struct Rendered(OnceLock<Box<[u8]>>);

impl Rendered {
    /// The entries, rendered by `render` the first time.
    pub fn get_or_render(&self, render: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.0.get_or_init(|| render().into_boxed_slice())
    }
}

impl Clone for Rendered {
    fn clone(&self) -> Self {
        Rendered::default()
    }
}

impl PartialEq for Rendered {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Rendered {}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Rendered"
        } else {
            "Unrendered"
        })
    }
}

impl ImageRecord {
    /// This record's names as `index.json` entries, rendered once per version of it.
    pub fn index_entries(&self) -> &[u8] {
        self.rendered.get_or_render(|| {
            super::layout::render_entries(
                self.names
                    .iter()
                    .map(|n| (&n.name, &n.manifest, &n.pulled_by)),
            )
        })
    }

    fn empty(id: ImageId) -> ImageRecord {
        ImageRecord {
            id,
            names: Vec::new(),
            manifests: Vec::new(),
            size: 0,
            rendered: Rendered::default(),
        }
    }

    /// Every blob the image needs (a blob shared by two manifests appears twice).
    pub fn blobs(&self) -> impl Iterator<Item = &Descriptor> {
        self.manifests.iter().flat_map(ManifestBlobs::all)
    }

    /// Drops manifests no name points at any more and recomputes the size.
    fn prune(&mut self) {
        let names = &self.names;
        self.manifests
            .retain(|m| names.iter().any(|n| n.manifest.digest == m.manifest.digest));
        let first = names.first().and_then(|n| {
            self.manifests
                .iter()
                .find(|m| m.manifest.digest == n.manifest.digest)
        });
        self.size = first.map_or(0, |m| {
            m.config.size + m.layers.iter().map(|d| d.size).sum::<u64>()
        });
        // A push leaves room for four; with 20,000 images of one name that spare room
        // was a fifth of the daemon's memory.
        self.names.shrink_to_fit();
        self.manifests.shrink_to_fit();
    }
}

/// The blobs one manifest brings: the manifest itself, its config and its layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestBlobs {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ManifestBlobs {
    pub fn all(&self) -> impl Iterator<Item = &Descriptor> {
        std::iter::once(&self.manifest)
            .chain(std::iter::once(&self.config))
            .chain(self.layers.iter())
    }
}

/// The key of an image in the maps.
fn id_key(id: &ImageId) -> [u8; 32] {
    id.digest().sha256()
}

#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Each record behind its own `Arc`: a change copies the paths to the records it
    /// touches and those records, nothing else.
    /// Keyed by the ID's sha256 bytes (the same order as the IDs' text).
    images: imbl::OrdMap<[u8; 32], Arc<ImageRecord>>,
    /// B-trees, not imbl's hash maps: a hash trie node keeps room for all its slots, and
    /// at 20,000 images these two maps took ~15 MB as tries against ~4 MB as trees.
    by_name: imbl::OrdMap<String, [u8; 32]>,
    /// How often each blob appears in the images' manifests (by its sha256 bytes, so
    /// 20,000 images keep no second copy of their digests): kept with every change, so
    /// "is this blob still referenced?" is one lookup, not a scan of every image.
    refs: imbl::OrdMap<[u8; 32], u32>,
}

impl Records {
    pub fn images(&self) -> impl Iterator<Item = &ImageRecord> {
        self.images.values().map(|i| &**i)
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    pub fn get(&self, id: &ImageId) -> Option<&ImageRecord> {
        self.images.get(&id_key(id)).map(|i| &**i)
    }

    /// The image a name belongs to. A digest name also matches an image that has a name in
    /// the same repository pulled by, or resolving to, that digest.
    pub fn by_name(&self, name: &ImageName) -> Option<&ImageRecord> {
        if let Some(k) = self.by_name.get(&name.to_string()) {
            return self.images.get(k).map(|i| &**i);
        }
        let digest = name.digest()?;
        let repo = name.repo();
        self.images().find(|img| {
            img.names.iter().any(|n| {
                n.name.repo() == repo && (&n.pulled_by == digest || &n.manifest.digest == digest)
            })
        })
    }

    /// The one image whose ID hex starts with `hex_prefix` (None when none or several).
    pub fn by_id_prefix(&self, hex_prefix: &str) -> Option<&ImageRecord> {
        // The smallest ID with that prefix: the prefix padded with zeros.
        let mut start = [0u8; 32];
        let padded = format!("{hex_prefix:0<64}");
        if padded.len() != 64 || hex::decode_to_slice(&padded, &mut start).is_err() {
            return None;
        }
        let mut it = self
            .images
            .range(start..)
            .take_while(|(_, r)| r.id.digest().hex().starts_with(hex_prefix));
        let first = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(&**first.1)
    }

    /// Every blob some image references, by a scan: what the kept counts
    /// ([`Records::references`]) are checked against in tests.
    #[cfg(test)]
    pub fn referenced_blobs(&self) -> HashSet<Digest> {
        self.referenced().into_iter().cloned().collect()
    }

    /// [`Records::referenced_blobs`], borrowed (no digest is copied).
    #[cfg(test)]
    pub fn referenced(&self) -> HashSet<&Digest> {
        self.images()
            .flat_map(|i| i.blobs().map(|d| &d.digest))
            .collect()
    }

    /// Whether some image references blob `d`.
    pub fn references(&self, d: &Digest) -> bool {
        self.refs.contains_key(&d.sha256())
    }

    /// The blobs of images this snapshot holds that `newer` no longer holds as they were
    /// (removed, or changed by the update that made `newer` from a copy of this one): the
    /// only blobs that update can have orphaned. The two snapshots share every node the
    /// update did not touch, and the walk skips those.
    pub fn blobs_changed_in<'a>(&'a self, newer: &Records) -> HashSet<&'a Digest> {
        use imbl::ordmap::DiffItem;
        let mut out = HashSet::new();
        for item in self.images.diff(&newer.images) {
            match item {
                DiffItem::Update { old: (_, r), .. } | DiffItem::Remove(_, r) => {
                    out.extend(r.blobs().map(|d| &d.digest));
                }
                DiffItem::Add(..) => {}
            }
        }
        out
    }

    /// Changes image `id` (a new, empty one when there is none) through `f`, keeping the
    /// blob counts; the image goes when `f` leaves it without names. The only way a
    /// record is changed, so no change can miss the counts or keep a stale rendering.
    fn edit<R>(&mut self, id: &ImageId, f: impl FnOnce(&mut ImageRecord) -> R) -> R {
        let mut record = match self.images.remove(&id_key(id)) {
            Some(r) => {
                self.count(&r, false);
                r
            }
            None => Arc::new(ImageRecord::empty(id.clone())),
        };
        let img = Arc::make_mut(&mut record);
        img.rendered = Rendered::default();
        let out = f(img);
        if !record.names.is_empty() {
            self.count(&record, true);
            self.images.insert(id_key(id), record);
        }
        out
    }

    /// Adds (or takes away) one reference per blob occurrence in `img`.
    fn count(&mut self, img: &ImageRecord, add: bool) {
        for d in img.blobs() {
            let key = d.digest.sha256();
            if add {
                *self.refs.entry(key).or_insert(0) += 1;
            } else if let Some(n) = self.refs.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.refs.remove(&key);
                }
            }
        }
    }

    /// Adds `name` to image `id` (creating it from `blobs`), taking the name from any image
    /// that had it. An image that loses a tag keeps a digest name for the content it was
    /// pulled as, so it stays addressable until removed. Returns whether anything changed
    /// (a re-pull of unchanged content changes nothing).
    pub fn tag(&mut self, id: &ImageId, blobs: &ManifestBlobs, name: NameRecord) -> bool {
        let mut key = name.name.to_string();
        key.shrink_to_fit();
        if let Some(old) = self.by_name.get(&key).copied() {
            if old == id_key(id) {
                // Same image: refresh where the name came from (a re-pull).
                let changes = self
                    .get(id)
                    .and_then(|img| img.names.iter().find(|n| n.name == name.name))
                    .is_some_and(|n| *n != name);
                if !changes {
                    return false;
                }
                self.edit(id, |img| {
                    if let Some(n) = img.names.iter_mut().find(|n| n.name == name.name) {
                        *n = name;
                    }
                    if !img.manifests.contains(blobs) {
                        img.manifests.push(blobs.clone());
                    }
                    img.prune();
                });
                return true;
            }
            if let Some(old) = self.images.get(&old).map(|r| r.id.clone()) {
                self.take_name(&old, &name.name, true);
            }
        }
        self.edit(id, |img| {
            img.names.push(name);
            if !img.manifests.contains(blobs) {
                img.manifests.push(blobs.clone());
            }
            img.prune();
        });
        self.by_name.insert(key, id_key(id));
        true
    }

    /// Removes one name from an image; the image goes when no name remains. With
    /// `keep_digest`, a moved tag leaves its repo digest behind.
    fn take_name(&mut self, id: &ImageId, name: &ImageName, keep_digest: bool) {
        let Some(img) = self.get(id) else {
            return;
        };
        let Some(pos) = img.names.iter().position(|n| &n.name == name) else {
            return;
        };
        let removed = img.names[pos].clone();
        let mut keep = None;
        if keep_digest && !removed.name.is_digest_name() {
            let digest_name = removed.name.with_digest(&removed.pulled_by);
            let key = digest_name.to_string();
            let others = || img.names.iter().enumerate().filter(|(i, _)| *i != pos);
            let known = others().any(|(_, n)| n.name == digest_name)
                || others().any(|(_, n)| {
                    n.name.repo() == removed.name.repo() && n.pulled_by == removed.pulled_by
                });
            if !known && !self.by_name.contains_key(&key) {
                keep = Some((key, digest_name));
            }
        }
        self.by_name.remove(&name.to_string());
        let digest_name = keep.as_ref().map(|(_, n)| n.clone());
        self.edit(id, |img| {
            let removed = img.names.remove(pos);
            if let Some(name) = digest_name {
                img.names.push(NameRecord { name, ..removed });
            }
            img.prune();
        });
        if let Some((key, _)) = keep {
            self.by_name.insert(key, id_key(id));
        }
    }

    /// Removes a name; the image goes with its last name. Returns whether anything changed.
    pub fn untag(&mut self, name: &ImageName) -> bool {
        let Some(id) = self.by_name(name).map(|i| i.id.clone()) else {
            return false;
        };
        let exact = self.images[&id_key(&id)]
            .names
            .iter()
            .find(|n| &n.name == name)
            .map(|n| n.name.clone());
        match exact {
            Some(n) => self.take_name(&id, &n, false),
            // A digest that matches through a tag's pulled-by digest removes the image.
            None => return self.remove(&id),
        }
        true
    }

    /// Removes an image with all its names. Returns whether it existed.
    pub fn remove(&mut self, id: &ImageId) -> bool {
        let Some(img) = self.images.remove(&id_key(id)) else {
            return false;
        };
        self.count(&img, false);
        for n in &img.names {
            self.by_name.remove(&n.name.to_string());
        }
        true
    }

    /// Every name record, image by image, for persisting.
    pub fn entries(&self) -> impl Iterator<Item = &NameRecord> {
        self.images.values().flat_map(|i| i.names.iter())
    }

    /// Builds the records from persisted name entries and each manifest's blobs.
    pub fn from_entries(entries: Vec<(NameRecord, ManifestBlobs)>) -> Records {
        let mut r = Records::default();
        for (name, blobs) in entries {
            let id = ImageId::new(blobs.config.digest.clone());
            let _ = r.tag(&id, &blobs, name);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u8) -> Digest {
        Digest::parse(&format!("sha256:{}", format!("{n:02x}").repeat(32))).unwrap()
    }

    fn desc(n: u8, size: u64) -> Descriptor {
        Descriptor {
            media_type: "x".into(),
            digest: digest(n),
            size,
        }
    }

    fn blobs(manifest: u8, config: u8, layers: &[u8]) -> ManifestBlobs {
        ManifestBlobs {
            manifest: desc(manifest, 10),
            config: desc(config, 5),
            layers: layers.iter().map(|l| desc(*l, 100)).collect(),
        }
    }

    fn name(s: &str, b: &ManifestBlobs) -> NameRecord {
        NameRecord {
            name: ImageName::parse_qualified(s).unwrap(),
            manifest: b.manifest.clone(),
            pulled_by: b.manifest.digest.clone(),
        }
    }

    fn id(b: &ManifestBlobs) -> ImageId {
        ImageId::new(b.config.digest.clone())
    }

    #[test]
    fn same_config_under_two_repos_is_one_image() {
        let a = blobs(1, 2, &[3]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&a), &a, name("r.io/b:1", &a));
        assert_eq!(r.len(), 1);
        assert_eq!(r.get(&id(&a)).unwrap().names.len(), 2);
        assert_eq!(r.get(&id(&a)).unwrap().size, 105);
    }

    #[test]
    fn a_name_moved_to_another_manifest_of_the_same_image_frees_the_old_one() {
        // The same config served with a new manifest (recompressed layers).
        let old = blobs(1, 2, &[3]);
        let new = blobs(4, 2, &[5]);
        let mut r = Records::default();
        assert!(r.tag(&id(&old), &old, name("r.io/a:1", &old)));
        assert!(r.tag(&id(&new), &new, name("r.io/a:1", &new)));
        let refs = r.referenced_blobs();
        assert_eq!(
            refs,
            [4, 2, 5].iter().map(|n| digest(*n)).collect(),
            "old manifest and layer unreferenced"
        );
        assert_eq!(r.get(&id(&new)).unwrap().manifests, vec![new]);
    }

    #[test]
    fn untagging_one_of_two_manifests_frees_its_blobs() {
        let a = blobs(1, 2, &[3]);
        let b = blobs(4, 2, &[5]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&b), &b, name("q.io/b:1", &b));
        assert_eq!(r.referenced_blobs().len(), 5);
        assert!(r.untag(&ImageName::parse_qualified("q.io/b:1").unwrap()));
        assert_eq!(
            r.referenced_blobs(),
            [1, 2, 3].iter().map(|n| digest(*n)).collect()
        );
    }

    #[test]
    fn re_tagging_unchanged_content_changes_nothing() {
        let a = blobs(1, 2, &[3]);
        let mut r = Records::default();
        assert!(r.tag(&id(&a), &a, name("r.io/a:1", &a)));
        assert!(!r.tag(&id(&a), &a, name("r.io/a:1", &a)));
    }

    #[test]
    fn moved_tag_leaves_repo_digest_on_old_image() {
        let a = blobs(1, 2, &[3]);
        let b = blobs(4, 5, &[3]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&b), &b, name("r.io/a:1", &b));
        assert_eq!(r.len(), 2);
        let old = r.get(&id(&a)).unwrap();
        assert_eq!(old.names.len(), 1);
        assert!(old.names[0].name.is_digest_name());
        assert_eq!(
            r.by_name(&ImageName::parse_qualified("r.io/a:1").unwrap())
                .unwrap()
                .id,
            id(&b)
        );
    }

    #[test]
    fn digest_name_matches_tag_pulled_by_it() {
        let a = blobs(1, 2, &[3]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        let by_digest = ImageName::parse_qualified(&format!("r.io/a@{}", digest(1))).unwrap();
        assert_eq!(r.by_name(&by_digest).unwrap().id, id(&a));
        let other_repo = ImageName::parse_qualified(&format!("r.io/b@{}", digest(1))).unwrap();
        assert!(r.by_name(&other_repo).is_none());
    }

    #[test]
    fn untag_last_name_removes_image() {
        let a = blobs(1, 2, &[3]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&a), &a, name("r.io/a:2", &a));
        assert!(r.untag(&ImageName::parse_qualified("r.io/a:1").unwrap()));
        assert_eq!(r.len(), 1);
        assert!(r.untag(&ImageName::parse_qualified("r.io/a:2").unwrap()));
        assert!(r.is_empty());
        assert!(!r.untag(&ImageName::parse_qualified("r.io/a:2").unwrap()));
    }

    #[test]
    fn id_prefix_must_be_unambiguous() {
        let a = blobs(1, 0x22, &[]);
        let b = blobs(3, 0x23, &[]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&b), &b, name("r.io/b:1", &b));
        assert!(r.by_id_prefix("2").is_none());
        assert_eq!(r.by_id_prefix("222").unwrap().id, id(&a));
        assert!(r.by_id_prefix("999").is_none());
    }

    #[test]
    fn referenced_blobs_cover_every_image() {
        let a = blobs(1, 2, &[3, 4]);
        let b = blobs(5, 6, &[4]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&b), &b, name("r.io/b:1", &b));
        assert_eq!(r.referenced_blobs().len(), 6);
        r.remove(&id(&a));
        assert_eq!(
            r.referenced_blobs(),
            [5, 6, 4].iter().map(|n| digest(*n)).collect()
        );
    }

    #[test]
    fn only_changed_images_offer_blobs_to_collect() {
        let a = blobs(1, 2, &[3]);
        let b = blobs(4, 5, &[3, 6]);
        let mut before = Records::default();
        before.tag(&id(&a), &a, name("r.io/a:1", &a));
        before.tag(&id(&b), &b, name("r.io/b:1", &b));
        let set = |ds: &[u8]| ds.iter().map(|n| digest(*n)).collect::<HashSet<_>>();
        let owned = |c: HashSet<&Digest>| c.into_iter().cloned().collect::<HashSet<_>>();

        // A new image changes no existing record.
        let c = blobs(7, 8, &[3]);
        let mut after = before.clone();
        after.tag(&id(&c), &c, name("r.io/c:1", &c));
        assert!(before.blobs_changed_in(&after).is_empty());

        // A removed image offers all its blobs, the shared layer included.
        let mut after = before.clone();
        after.remove(&id(&b));
        assert_eq!(owned(before.blobs_changed_in(&after)), set(&[4, 5, 3, 6]));
        assert!(after.references(&digest(3)), "layer 3 is still a's");
        assert!(!after.references(&digest(6)));
        assert!(
            before.references(&digest(6)),
            "the copy left the original as it was"
        );

        // A tag moved to another image changes the image it left.
        let mut after = before.clone();
        after.tag(&id(&b), &b, name("r.io/a:1", &b));
        assert_eq!(
            owned(before.blobs_changed_in(&after)),
            set(&[1, 2, 3, 4, 5, 6])
        );
    }

    /// What `index.json` gets from the kept renderings, against a fresh rendering of
    /// every entry.
    fn index_bytes(r: &Records) -> (Vec<u8>, Vec<u8>) {
        let mut kept = Vec::new();
        super::super::layout::write_index_chunks(
            &mut kept,
            r.images().map(|i| i.index_entries()),
            &[],
        )
        .unwrap();
        let fresh = super::super::layout::render_index(
            r.entries().map(|n| (&n.name, &n.manifest, &n.pulled_by)),
            &[],
        );
        (kept, fresh)
    }

    #[test]
    fn kept_renderings_follow_every_change() {
        let a = blobs(1, 2, &[3]);
        let b = blobs(4, 5, &[6]);
        let mut r = Records::default();
        r.tag(&id(&a), &a, name("r.io/a:1", &a));
        r.tag(&id(&b), &b, name("r.io/b:1", &b));
        let (kept, fresh) = index_bytes(&r);
        assert_eq!(kept, fresh);
        let text = String::from_utf8(kept).unwrap();
        assert!(
            text.contains("r.io/a:1") && text.contains("r.io/b:1"),
            "{text}"
        );

        // Every record was rendered above; each change must show in the next write, in
        // the copy, while the original keeps what it was.
        let mut next = r.clone();
        next.tag(&id(&b), &b, name("r.io/a:1", &b));
        next.tag(&id(&b), &b, name("r.io/b:2", &b));
        let (kept, fresh) = index_bytes(&next);
        assert_eq!(kept, fresh);
        let text = String::from_utf8(kept).unwrap();
        assert!(text.contains("r.io/b:2"), "{text}");
        assert!(
            text.contains(&format!("r.io/a@{}", digest(1))),
            "the moved tag left its digest name: {text}"
        );
        assert_eq!(index_bytes(&r).0, index_bytes(&r).1);
        assert!(
            !String::from_utf8(index_bytes(&r).0)
                .unwrap()
                .contains("r.io/b:2")
        );

        next.untag(&ImageName::parse_qualified("r.io/b:1").unwrap());
        next.remove(&id(&a));
        let (kept, fresh) = index_bytes(&next);
        assert_eq!(kept, fresh);
        assert!(!String::from_utf8(kept).unwrap().contains("r.io/b:1"));
    }

    #[test]
    fn blob_counts_match_a_scan_after_every_change() {
        // Images sharing layers and configs, names moved between them, untagged, removed:
        // after each step "is it referenced?" answers what a scan of every image says.
        let images = [
            blobs(1, 2, &[3, 4]),
            blobs(5, 2, &[3, 6]),
            blobs(7, 8, &[3, 3, 4]),
            blobs(9, 10, &[]),
        ];
        let all: Vec<Digest> = (1..=12).map(digest).collect();
        let mut r = Records::default();
        let step = |r: &Records, what: &str| {
            let scan = r.referenced();
            for d in &all {
                assert_eq!(r.references(d), scan.contains(d), "{what}: blob {d}");
            }
        };
        for round in 0..3u8 {
            for (i, img) in images.iter().enumerate() {
                let n = format!("r.io/{}:{}", (b'a' + (i as u8 + round) % 3) as char, round);
                r.tag(&id(img), img, name(&n, img));
                step(&r, &format!("tag {n}"));
            }
            let moved = &images[(round as usize + 1) % images.len()];
            r.tag(&id(moved), moved, name("r.io/a:0", moved));
            step(&r, "move r.io/a:0");
            let copy = r.clone();
            r.untag(&ImageName::parse_qualified("r.io/b:0").unwrap());
            step(&r, "untag r.io/b:0");
            r.remove(&id(&images[round as usize]));
            step(&r, "remove");
            step(&copy, "the copy before untag and remove");
        }
        for img in &images {
            r.remove(&id(img));
        }
        step(&r, "all removed");
        assert!(r.is_empty());
        assert!(all.iter().all(|d| !r.references(d)));
    }
}
