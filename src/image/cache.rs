//! The per-image metadata cache: what listing needs that only the config blob holds.
//!
//! A std `Mutex` behind a synchronous API (`get`, `insert`, `retain`): no guard can be held
//! across an `.await`, and the metadata is computed (a disk read) outside the lock. Full
//! listings drop the entries of images that are gone.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::names::ImageId;

/// Metadata of one image, computed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMeta {
    /// `config.User` of the image config, as written.
    pub user: String,
}

#[derive(Default)]
pub struct Cache {
    map: Mutex<HashMap<ImageId, ImageMeta>>,
}

impl Cache {
    pub fn get(&self, id: &ImageId) -> Option<ImageMeta> {
        self.lock().get(id).cloned()
    }

    pub fn insert(&self, id: ImageId, meta: ImageMeta) {
        self.lock().insert(id, meta);
    }

    pub fn retain(&self, keep: impl Fn(&ImageId) -> bool) {
        self.lock().retain(|id, _| keep(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ImageId, ImageMeta>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
