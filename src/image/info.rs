//! What the service reports about an image, computed from a store record and the cached
//! config metadata: tags, repo digests, size and user.

use std::collections::HashSet;

use super::{Error, ImageMeta, ImageService};
use crate::names::ImageId;
use crate::oci;
use crate::store::ImageRecord;

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
    pub manifest_media_type: String,
}

/// Tags, then repo digests: the recorded digest names first, then `repo@<pulled-by>` for
/// every tag, each once, in order (CRI-O's `sortNamesByType` + `makeRepoDigests`, with the
/// digest kept per name).
pub fn names_of(record: &ImageRecord) -> (Vec<String>, Vec<String>) {
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    let mut seen = HashSet::new();
    for n in record.names.iter().filter(|n| n.name.is_digest_name()) {
        let s = n.name.to_string();
        if seen.insert(s.clone()) {
            digests.push(s);
        }
    }
    for n in record.names.iter().filter(|n| !n.name.is_digest_name()) {
        tags.push(n.name.to_string());
        let s = n.name.with_digest(&n.pulled_by).to_string();
        if seen.insert(s.clone()) {
            digests.push(s);
        }
    }
    (tags, digests)
}

impl ImageService {
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
            pinned: false,
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
}
