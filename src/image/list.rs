//! ListImages: every image, or the one a filter names.

use super::{Error, ImageInfo, ImageService};

impl ImageService {
    /// All images (filter `None` or empty), or the image the filter names (an unknown
    /// filter gives an empty list). A full listing drops cache entries of removed images.
    pub async fn list(&self, filter: Option<&str>) -> Result<Vec<ImageInfo>, Error> {
        if let Some(f) = filter.filter(|f| !f.is_empty()) {
            return match self.find(f) {
                Ok(Some(record)) => Ok(self.info_if_present(&record).await?.into_iter().collect()),
                Ok(None) => Ok(Vec::new()),
                // A filter that is no valid name matches nothing.
                Err(Error::Name(_)) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
        }
        let records = self.inner.store.records();
        let mut out = Vec::with_capacity(records.len());
        for record in records.images() {
            out.extend(self.info_if_present(record).await?);
        }
        self.inner.cache.retain(|id| records.get(id).is_some());
        Ok(out)
    }
}
