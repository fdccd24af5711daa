//! ImageStatus: one image by ID, ID prefix, or any of its names.

use std::collections::BTreeMap;

use super::{Error, ImageInfo, ImageService, ImageUser};

impl ImageService {
    /// The image `name` refers to, or `None` when there is none (never an error for a
    /// missing image: kubelet pulls on `None`).
    pub async fn status(&self, name: &str) -> Result<Option<ImageInfo>, Error> {
        match self.find(name)? {
            Some(record) => self.info_if_present(&record).await,
            None => Ok(None),
        }
    }
}

/// The verbose `info` map: every value is a JSON document (objects start with `{`).
pub fn verbose_info(info: &ImageInfo, root: &std::path::Path) -> BTreeMap<String, String> {
    let user = match &info.user {
        ImageUser::None => serde_json::Value::Null,
        ImageUser::Uid(u) => (*u).into(),
        ImageUser::Name(n) => n.clone().into(),
    };
    let doc = serde_json::json!({
        "id": info.id.to_string(),
        "repoTags": info.repo_tags,
        "repoDigests": info.repo_digests,
        "size": info.size,
        "configUser": info.config_user,
        "user": user,
        "manifestDigest": info.manifest_digest,
        "manifestMediaType": info.manifest_media_type,
        "store": root.display().to_string(),
    });
    BTreeMap::from([("info".to_owned(), doc.to_string())])
}
