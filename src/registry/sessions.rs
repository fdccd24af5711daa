//! Sessions kept between pulls: one per (registry, scheme, credentials, TLS material).
//!
//! Building a session costs a fresh reqwest client, whose TLS set-up reads and parses the
//! whole system certificate store: on a nearby registry that is as long as pulling a
//! 1 MiB image. A kept session
//! also keeps its registry connections and tokens warm. Sessions are shared only by pulls
//! with equal credentials, so one pod's token never serves another's pull, and only with
//! the same certs.d CAs and client certificate (a reload that changes them gets new
//! sessions); a session
//! unused for [`IDLE`] is dropped (with the credentials it holds), and at most [`MAX`] are
//! kept.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Credentials, RegistryError, Scheme, Session, SourceTls};

/// How long an unused session is kept.
const IDLE: Duration = Duration::from_secs(300);
/// Sessions kept at most; the least recently used goes first.
const MAX: usize = 32;

type Key = (String, Scheme, Credentials, SourceTls);

#[derive(Default)]
pub(super) struct Sessions {
    /// A std `Mutex`: held only for map operations, never while a client is built.
    map: Mutex<HashMap<Key, (Session, Instant)>>,
}

impl Sessions {
    /// The kept session for this key, or a new one from `create` (then kept).
    pub(super) fn get_or_create(
        &self,
        registry: &str,
        scheme: Scheme,
        creds: &Credentials,
        tls: &SourceTls,
        create: impl FnOnce() -> Result<Session, RegistryError>,
    ) -> Result<Session, RegistryError> {
        let key = (registry.to_owned(), scheme, creds.clone(), tls.clone());
        let now = Instant::now();
        if let Some((s, used)) = self.lock().get_mut(&key) {
            *used = now;
            return Ok(s.clone());
        }
        let session = create()?;
        let mut map = self.lock();
        map.retain(|_, (_, used)| now.duration_since(*used) < IDLE);
        while map.len() >= MAX {
            let Some(oldest) = map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            map.remove(&oldest);
        }
        map.insert(key, (session.clone(), now));
        Ok(session)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, (Session, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
