//! ListImages: every image, or the one a filter names.
//!
//! A full listing is built once per records snapshot and shared until the records change
//! (a pull, a tag, a removal): kubelet lists far more often than it pulls, and rebuilding
//! thousands of entries (names formatted, metadata looked up) for every call costs
//! milliseconds. The snapshot is exact: an entry depends only on its record and on the
//! image's config, which never changes under its ID.

use std::sync::{Arc, Mutex};

use super::{Error, ImageInfo, ImageService};
use crate::store::Records;

/// Images as the service reports them; cheap to clone.
pub type Images = Arc<Vec<ImageInfo>>;

/// The last full listing and the records snapshot it was built from.
#[derive(Default)]
pub(super) struct Listing {
    /// A std `Mutex`: held only to read or replace the pair, never across an `.await`.
    last: Mutex<Option<(Arc<Records>, Images)>>,
}

impl Listing {
    fn get(&self, records: &Arc<Records>) -> Option<Images> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((r, images)) if Arc::ptr_eq(r, records) => Some(images.clone()),
            _ => None,
        }
    }

    fn set(&self, records: Arc<Records>, images: Images) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((records, images));
    }
}

impl ImageService {
    /// All images (filter `None` or empty), or the image the filter names (an unknown
    /// filter gives an empty list). A full listing drops cache entries of removed images.
    pub async fn list(&self, filter: Option<&str>) -> Result<Images, Error> {
        if let Some(f) = filter.filter(|f| !f.is_empty()) {
            return match self.find(f) {
                Ok(Some(record)) => Ok(Arc::new(
                    self.info_if_present(&record).await?.into_iter().collect(),
                )),
                Ok(None) => Ok(Images::default()),
                // A filter that is no valid name matches nothing.
                Err(Error::Name(_)) => Ok(Images::default()),
                Err(e) => Err(e),
            };
        }
        let records = self.inner.store.records();
        if let Some(images) = self.inner.listing.get(&records) {
            return Ok(images);
        }
        self.prefill_meta(records.images()).await;
        let mut out = Vec::with_capacity(records.len());
        for record in records.images() {
            out.extend(self.info_if_present(record).await?);
        }
        self.inner.cache.retain(|id| records.get(id).is_some());
        let images = Arc::new(out);
        self.inner.listing.set(records, images.clone());
        // Building it read configs and formatted names on several threads.
        crate::memory::trim_soon();
        Ok(images)
    }
}
