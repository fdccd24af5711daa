//! The store's in-memory view of its images, and the pure changes made to it.
//!
//! `index.json` is the only persistent record: one entry per image name pointing at the
//! manifest that name was pulled as, annotated with the digest it was pulled by. This module
//! turns those entries into images (grouped by config digest = image ID) and applies tag,
//! untag and remove changes to a copy before the copy is persisted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

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
}

impl ImageRecord {
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

#[derive(Debug, Clone, Default)]
pub struct Records {
    /// Each record behind its own `Arc`: a change copies the map and the records it
    /// touches, not every record (the store copies the records on every change).
    images: BTreeMap<String, Arc<ImageRecord>>,
    by_name: HashMap<String, ImageId>,
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
        self.images.get(id.as_str()).map(|i| &**i)
    }

    /// The image a name belongs to. A digest name also matches an image that has a name in
    /// the same repository pulled by, or resolving to, that digest.
    pub fn by_name(&self, name: &ImageName) -> Option<&ImageRecord> {
        if let Some(id) = self.by_name.get(&name.to_string()) {
            return self.get(id);
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
        let start = format!("sha256:{hex_prefix}");
        let mut it = self
            .images
            .range(start.clone()..)
            .take_while(|(id, _)| id.starts_with(&start));
        let first = it.next()?;
        if it.next().is_some() {
            return None;
        }
        Some(&**first.1)
    }

    /// Every blob some image references.
    pub fn referenced_blobs(&self) -> HashSet<Digest> {
        self.referenced().into_iter().cloned().collect()
    }

    /// Every blob some image references, borrowed (no digest is copied).
    pub fn referenced(&self) -> HashSet<&Digest> {
        self.images()
            .flat_map(|i| i.blobs().map(|d| &d.digest))
            .collect()
    }

    /// Answers "does an image reference this blob?" (see [`ReferenceCheck`]).
    pub fn reference_check(&self) -> ReferenceCheck<'_> {
        ReferenceCheck {
            records: self,
            asked: 0,
            set: None,
        }
    }

    /// The blobs of images this snapshot holds that `newer` no longer holds as they were
    /// (removed, or changed by the update that made `newer` from a copy of this one): the
    /// only blobs that update can have orphaned. Unchanged images share their record
    /// (`Arc`) between the two snapshots, so nothing else is compared or hashed.
    pub fn blobs_changed_in<'a>(&'a self, newer: &Records) -> HashSet<&'a Digest> {
        let mut out = HashSet::new();
        let mut theirs = newer.images.iter().peekable();
        for (key, record) in &self.images {
            while theirs.next_if(|(k, _)| k.as_str() < key.as_str()).is_some() {}
            let same = theirs
                .peek()
                .is_some_and(|(k, r)| *k == key && Arc::ptr_eq(r, record));
            if !same {
                out.extend(record.blobs().map(|d| &d.digest));
            }
        }
        out
    }

    /// Adds `name` to image `id` (creating it from `blobs`), taking the name from any image
    /// that had it. An image that loses a tag keeps a digest name for the content it was
    /// pulled as, so it stays addressable until removed. Returns whether anything changed
    /// (a re-pull of unchanged content changes nothing).
    pub fn tag(&mut self, id: &ImageId, blobs: &ManifestBlobs, name: NameRecord) -> bool {
        let key = name.name.to_string();
        if let Some(old) = self.by_name.get(&key).cloned() {
            if &old == id {
                // Same image: refresh where the name came from (a re-pull).
                let Some(img) = self.images.get_mut(id.as_str()).map(Arc::make_mut) else {
                    return false;
                };
                let Some(n) = img.names.iter_mut().find(|n| n.name == name.name) else {
                    return false;
                };
                if *n == name {
                    return false;
                }
                *n = name;
                if !img.manifests.contains(blobs) {
                    img.manifests.push(blobs.clone());
                }
                img.prune();
                return true;
            }
            self.take_name(&old, &name.name, true);
        }
        let img = self
            .images
            .entry(id.as_str().to_owned())
            .or_insert_with(|| {
                Arc::new(ImageRecord {
                    id: id.clone(),
                    names: Vec::new(),
                    manifests: Vec::new(),
                    size: 0,
                })
            });
        let img = Arc::make_mut(img);
        img.names.push(name);
        if !img.manifests.contains(blobs) {
            img.manifests.push(blobs.clone());
        }
        img.prune();
        self.by_name.insert(key, id.clone());
        true
    }

    /// Removes one name from an image; the image goes when no name remains. With
    /// `keep_digest`, a moved tag leaves its repo digest behind.
    fn take_name(&mut self, id: &ImageId, name: &ImageName, keep_digest: bool) {
        let Some(img) = self.images.get_mut(id.as_str()).map(Arc::make_mut) else {
            return;
        };
        let Some(pos) = img.names.iter().position(|n| &n.name == name) else {
            return;
        };
        let removed = img.names.remove(pos);
        self.by_name.remove(&name.to_string());
        if keep_digest && !removed.name.is_digest_name() {
            let digest_name = removed.name.with_digest(&removed.pulled_by);
            let key = digest_name.to_string();
            let known = img.names.iter().any(|n| n.name == digest_name)
                || img.names.iter().any(|n| {
                    n.name.repo() == removed.name.repo() && n.pulled_by == removed.pulled_by
                });
            if !known && !self.by_name.contains_key(&key) {
                img.names.push(NameRecord {
                    name: digest_name,
                    ..removed
                });
                self.by_name.insert(key, id.clone());
            }
        }
        if img.names.is_empty() {
            self.images.remove(id.as_str());
        } else {
            img.prune();
        }
    }

    /// Removes a name; the image goes with its last name. Returns whether anything changed.
    pub fn untag(&mut self, name: &ImageName) -> bool {
        let Some(id) = self.by_name(name).map(|i| i.id.clone()) else {
            return false;
        };
        let exact = self.images[id.as_str()]
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
        let Some(img) = self.images.remove(id.as_str()) else {
            return false;
        };
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

/// Whether images reference blobs: a scan for each of the first few digests asked (cheap
/// for the handful a pull releases), the full set once more are asked.
pub struct ReferenceCheck<'a> {
    records: &'a Records,
    asked: usize,
    set: Option<HashSet<&'a Digest>>,
}

impl ReferenceCheck<'_> {
    /// Digests checked by scanning before the set is built.
    const SCANS: usize = 8;

    pub fn contains(&mut self, d: &Digest) -> bool {
        self.asked += 1;
        if self.set.is_none() && self.asked <= Self::SCANS {
            return self
                .records
                .images()
                .any(|i| i.blobs().any(|b| &b.digest == d));
        }
        self.set
            .get_or_insert_with(|| self.records.referenced())
            .contains(d)
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
        let mut check = after.reference_check();
        assert!(check.contains(&digest(3)), "layer 3 is still a's");
        assert!(!check.contains(&digest(6)));

        // A tag moved to another image changes the image it left.
        let mut after = before.clone();
        after.tag(&id(&b), &b, name("r.io/a:1", &b));
        assert_eq!(
            owned(before.blobs_changed_in(&after)),
            set(&[1, 2, 3, 4, 5, 6])
        );
    }
}
