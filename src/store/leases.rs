//! Leases: the blobs in-flight pulls rely on. A lease keeps its blobs from being collected
//! while it lives; when the last lease on a blob goes and nothing else needs it (the pull
//! failed or was cancelled), the blob is collected ([`super::gc`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{Shared, Store, gc};
use crate::names::Digest;

/// How many leases hold each blob. Lock order: see the store module.
pub(super) type LeaseCounts = Mutex<HashMap<Digest, usize>>;

/// Keeps blobs from being deleted while it lives. When the last lease on a blob goes and
/// no image references it (the pull failed or was cancelled), the blob is deleted.
pub struct Lease {
    shared: Arc<Shared>,
    digests: Vec<Digest>,
}

impl Store {
    /// Marks blobs as in use by an in-flight pull until the lease is dropped.
    pub fn lease(&self, digests: impl IntoIterator<Item = Digest>) -> Lease {
        let digests: Vec<Digest> = digests.into_iter().collect();
        let mut map = self.shared.leases.lock().unwrap_or_else(|p| p.into_inner());
        for d in &digests {
            *map.entry(d.clone()).or_default() += 1;
        }
        Lease {
            shared: self.shared.clone(),
            digests,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.shared.release(std::mem::take(&mut self.digests));
    }
}

impl Shared {
    /// Drops one hold on each of `digests` (a lease, or a kept interrupted pull's).
    pub(super) fn release(self: &Arc<Self>, digests: Vec<Digest>) {
        let mut released = Vec::new();
        {
            let mut map = self.leases.lock().unwrap_or_else(|p| p.into_inner());
            for d in digests {
                if let Some(n) = map.get_mut(&d) {
                    *n -= 1;
                    if *n == 0 {
                        map.remove(&d);
                        released.push(d);
                    }
                }
            }
        }
        // Usually every released blob is referenced (the image was recorded): that is
        // decided in memory. Only real orphans (a failed or cancelled pull) cost file
        // system work, on a blocking thread the store's `close` waits for.
        let orphans = self.unneeded(released);
        if !orphans.is_empty() {
            let shared = self.clone();
            let work = move || gc::unlink_trash(shared.collect(orphans));
            if tokio::runtime::Handle::try_current().is_ok() {
                drop(self.tasks.spawn_blocking(work));
            } else {
                work();
            }
        }
    }
}
