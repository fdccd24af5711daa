//! What the service reports about an image, computed from a store record and the cached
//! config metadata: tags, repo digests, size and user.

use std::collections::HashSet;

use super::{Error, ImageMeta, ImageService};
use crate::names::{Digest, ImageId};
use crate::oci;
use crate::store::ImageRecord;

/// Fewer misses than this are read one by one.
const PREFILL_MIN: usize = 32;

/// The user an image runs as, from its config `User` cut at the first `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageUser {
    None,
    Uid(i64),
    Name(String),
}

impl ImageUser {
    pub fn from_config(user: &str) -> ImageUser {
        let user = user.split(':').next().unwrap_or_default();
        if user.is_empty() {
            return ImageUser::None;
        }
        match user.parse::<i64>() {
            Ok(uid) => ImageUser::Uid(uid),
            Err(_) => ImageUser::Name(user.to_owned()),
        }
    }
}

/// One image as the service reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: ImageId,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub user: ImageUser,
    /// The config `User` as written.
    pub config_user: String,
    pub pinned: bool,
    /// Manifest digest and media type of the first name, for verbose status.
    pub manifest_digest: String,
    pub manifest_media_type: std::borrow::Cow<'static, str>,
}

/// Tags, then repo digests: the recorded digest names first, then `repo@<pulled-by>` for
/// every tag, each once, in order (CRI-O's `sortNamesByType` + `makeRepoDigests`, with the
/// digest kept per name).
pub fn names_of(record: &ImageRecord) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    let mut seen = HashSet::new();
    for n in record.names.iter().filter(|n| n.name.is_digest_name()) {
        let s = exact(n.name.to_string());
        if seen.insert(s.clone()) {
            digests.push(s);
        }
    }
    for n in record.names.iter().filter(|n| !n.name.is_digest_name()) {
        tags.push(exact(n.name.to_string()));
        let s = exact(n.name.with_digest(&n.pulled_by).to_string());
        if seen.insert(s.clone()) {
            digests.push(s);
        }
    }
    // The full listing keeps these for every image: no spare room (a push leaves room
    // for four names, a formatted name up to twice its length).
    tags.shrink_to_fit();
    digests.shrink_to_fit();
    (tags, digests)
}

fn exact(mut s: String) -> String {
    s.shrink_to_fit();
    s
}

impl ImageService {
    /// Reads, on blocking threads and without a task per file, the configs of the images
    /// in `records` whose metadata is not cached: a daemon started on 20,000 images answers
    /// its first ListImages without 20,000 scheduled reads. Best effort: an image whose
    /// config cannot be read here is left to [`ImageService::meta`], which says why.
    pub(super) async fn prefill_meta<'a>(&self, records: impl Iterator<Item = &'a ImageRecord>) {
        let missing: Vec<Digest> = records
            .filter(|r| self.inner.cache.get(&r.id).is_none())
            .map(|r| r.id.digest().clone())
            .collect();
        if missing.len() < PREFILL_MIN {
            return;
        }
        let read = self
            .inner
            .store
            .read_blobs_with(missing, |bytes| {
                oci::manifest::parse_config(bytes)
                    .ok()
                    .map(|c| ImageMeta { user: c.user })
            })
            .await;
        for (digest, meta) in read {
            self.inner.cache.insert(ImageId::new(digest), meta);
        }
    }

    /// The cached metadata of an image, reading its config on a miss.
    pub(super) async fn meta(&self, record: &ImageRecord) -> Result<ImageMeta, Error> {
        if let Some(m) = self.inner.cache.get(&record.id) {
            return Ok(m);
        }
        let image = record
            .names
            .first()
            .map(|n| n.name.to_string())
            .unwrap_or_else(|| record.id.to_string());
        let bytes = self
            .inner
            .store
            .read_blob(record.id.digest())
            .await
            .map_err(|source| Error::Store {
                image: image.clone(),
                source,
            })?;
        let config = oci::manifest::parse_config(&bytes).map_err(|e| {
            Error::Internal(format!("image {image}: stored config {}: {e}", record.id))
        })?;
        let meta = ImageMeta { user: config.user };
        self.inner.cache.insert(record.id.clone(), meta.clone());
        Ok(meta)
    }

    /// The image's info, or `None` when it was removed while being looked at (its config
    /// blob went with it): a concurrent removal is not an error for List or Status.
    pub(super) async fn info_if_present(
        &self,
        record: &ImageRecord,
    ) -> Result<Option<ImageInfo>, Error> {
        match self.info(record).await {
            Ok(info) => Ok(Some(info)),
            Err(_) if self.inner.store.records().get(&record.id).is_none() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn info(&self, record: &ImageRecord) -> Result<ImageInfo, Error> {
        let meta = self.meta(record).await?;
        let (repo_tags, repo_digests) = names_of(record);
        let first = record.names.first();
        Ok(ImageInfo {
            id: record.id.clone(),
            repo_tags,
            repo_digests,
            size: record.size.max(1),
            user: ImageUser::from_config(&meta.user),
            config_user: meta.user,
            pinned: record
                .names
                .iter()
                .any(|n| self.inner.settings.pinned.matches(&n.name)),
            manifest_digest: first
                .map(|n| n.manifest.digest.to_string())
                .unwrap_or_default(),
            manifest_media_type: first
                .map(|n| n.manifest.media_type.clone())
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_cut_at_first_colon() {
        let cases = [
            ("", ImageUser::None),
            ("1002", ImageUser::Uid(1002)),
            ("0", ImageUser::Uid(0)),
            ("www-data", ImageUser::Name("www-data".into())),
            ("1003:1004", ImageUser::Uid(1003)),
            ("www-data:1004", ImageUser::Name("www-data".into())),
            (":1004", ImageUser::None),
        ];
        for (input, want) in cases {
            assert_eq!(ImageUser::from_config(input), want, "user {input:?}");
        }
    }

    fn record(names: &[(&str, char, char)]) -> ImageRecord {
        use crate::names::{Digest, ImageName};
        use crate::oci::Descriptor;
        use crate::store::NameRecord;
        let d = |c: char| Digest::parse(&format!("sha256:{}", c.to_string().repeat(64))).unwrap();
        ImageRecord {
            id: ImageId::new(d('f')),
            names: names
                .iter()
                .map(|(n, manifest, pulled_by)| NameRecord {
                    name: ImageName::parse_qualified(n).unwrap(),
                    manifest: Descriptor {
                        media_type: "".into(),
                        digest: d(*manifest),
                        size: 1,
                    },
                    pulled_by: d(*pulled_by),
                })
                .collect(),
            manifests: Vec::new(),
            size: 1,
            rendered: Default::default(),
        }
    }

    #[test]
    fn repo_digests_follow_make_repo_digests() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let c = "c".repeat(64);
        type Case<'a> = (&'a [(&'a str, char, char)], Vec<String>, Vec<String>);
        let cases: Vec<Case> = vec![
            // A tag: its repo at the digest it was pulled by.
            (
                &[("r.io/x:1", 'a', 'a')],
                vec!["r.io/x:1".into()],
                vec![format!("r.io/x@sha256:{a}")],
            ),
            // Pulled through an index: the index digest, not the platform manifest's.
            (
                &[("r.io/x:1", 'a', 'b')],
                vec!["r.io/x:1".into()],
                vec![format!("r.io/x@sha256:{b}")],
            ),
            // Two tags of one repo pulled by the same digest: one repo digest.
            (
                &[("r.io/x:1", 'a', 'a'), ("r.io/x:2", 'a', 'a')],
                vec!["r.io/x:1".into(), "r.io/x:2".into()],
                vec![format!("r.io/x@sha256:{a}")],
            ),
            // Digest names first, then one per tag; each repo shows its own digest.
            (
                &[
                    ("q.io/y:1", 'c', 'c'),
                    (
                        "r.io/x@sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb",
                        'a',
                        'b',
                    ),
                ],
                vec!["q.io/y:1".into()],
                vec![format!("r.io/x@sha256:{b}"), format!("q.io/y@sha256:{c}")],
            ),
            // No tags: only the digest name.
            (
                &[(
                    "r.io/x@sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                    'a',
                    'a',
                )],
                vec![],
                vec![format!("r.io/x@sha256:{a}")],
            ),
        ];
        for (names, tags, digests) in cases {
            assert_eq!(names_of(&record(names)), (tags, digests), "names {names:?}");
        }
    }
}
