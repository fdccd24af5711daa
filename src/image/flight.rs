//! At most one operation in flight per key: callers asking for a key that is already being
//! worked on wait for that work's result instead of starting their own.
//!
//! The map holds only weak references: the work belongs to its waiters. When the last
//! waiter goes away (a client cancelled, a sibling layer failed, the pull was cancelled at
//! shutdown), the work future is dropped with everything it owns, such as a partial blob
//! file, and the next caller starts afresh.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::Mutex;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, WeakShared};

/// What one pull in flight is for: pulls with equal keys are one pull.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PullKey {
    /// A registry pull of a qualified name with one set of credentials (a hash of them:
    /// the key never holds a secret).
    Registry {
        name: crate::names::ImageName,
        credentials: u64,
    },
    /// An import of a local source, as admitted (`oci-archive:/x.tar`).
    Import { source: String, policy: String },
}

impl PullKey {
    /// The key of a registry pull of `name` with `creds`.
    pub fn registry(name: &crate::names::ImageName, creds: &impl Hash) -> PullKey {
        use std::hash::Hasher;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        creds.hash(&mut h);
        PullKey::Registry {
            name: name.clone(),
            credentials: h.finish(),
        }
    }
}

/// The work in flight per key `K`, each producing a `T`.
pub struct Flights<K, T: Clone> {
    map: Mutex<HashMap<K, WeakShared<BoxFuture<'static, T>>>>,
}

impl<K, T: Clone> Default for Flights<K, T> {
    fn default() -> Self {
        Flights {
            map: Mutex::default(),
        }
    }
}

impl<K: Eq + Hash + Clone, T: Clone + Send + Sync + 'static> Flights<K, T> {
    /// Runs `make()`'s future for `key`, or joins the one already running. The flag says
    /// whether this caller started the work (false: it joined another caller's).
    pub async fn run<F>(&self, key: K, make: impl FnOnce() -> F) -> (T, bool)
    where
        F: Future<Output = T> + Send + 'static,
    {
        let (fut, led): (Shared<BoxFuture<'static, T>>, bool) = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key).and_then(WeakShared::upgrade) {
                Some(f) => (f, false),
                None => {
                    map.retain(|_, w| w.upgrade().is_some());
                    let f = make().boxed().shared();
                    if let Some(weak) = f.downgrade() {
                        map.insert(key.clone(), weak);
                    }
                    (f, true)
                }
            }
        };
        let out = fut.clone().await;
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&key)
            .and_then(WeakShared::upgrade)
            .is_none_or(|f| f.ptr_eq(&fut))
        {
            map.remove(&key);
        }
        (out, led)
    }

    /// Whether no key is in flight.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().all(|w| w.upgrade().is_none())
    }
}

/// Aborts a spawned task when dropped: a task whose every waiter went away stops.
pub struct AbortOnDrop(pub tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = Arc::new(Flights::<&str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (flights, runs) = (flights.clone(), runs.clone());
                tokio::spawn(async move {
                    flights
                        .run("k", || async move {
                            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                            runs.fetch_add(1, Ordering::SeqCst)
                        })
                        .await
                        .0
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), 0);
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    struct SetOnDrop(Arc<AtomicUsize>);

    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn work_is_dropped_when_its_last_waiter_goes_and_the_next_caller_starts_afresh() {
        let flights = Arc::new(Flights::<&str, usize>::default());
        let dropped = Arc::new(AtomicUsize::new(0));
        let d = dropped.clone();
        let waiter = {
            let flights = flights.clone();
            tokio::spawn(async move {
                flights
                    .run("k", move || async move {
                        let _guard = SetOnDrop(d);
                        std::future::pending::<usize>().await
                    })
                    .await
                    .0
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            0,
            "work runs while a waiter waits"
        );
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "work dropped with its last waiter"
        );
        assert!(flights.is_empty());
        assert_eq!(
            flights.run("k", || async { 7 }).await,
            (7, true),
            "a fresh run"
        );
    }
}
