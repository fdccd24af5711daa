//! The keys a signed requirement names (`keyPath`, `keyPaths`, `keyData`), read and
//! parsed once when the policy is loaded: GPG keyrings for `signedBy`, PEM public keys
//! for `sigstoreSigned`.

use super::gpg::Keyring;
use super::policy::{KeySource, Requirement};
use super::sig_error::SignatureError;
use super::sigstore;

/// The largest key file read.
const MAX_KEY_FILE: u64 = 1 << 20;

/// One requirement's trusted keys.
#[derive(Debug, Clone)]
pub enum Keys {
    Gpg(Keyring),
    Sigstore(Vec<sigstore::Key>),
}

impl Keys {
    /// The keys of `r`; `None` for a requirement that names none.
    pub fn load(r: &Requirement) -> Result<Option<Keys>, SignatureError> {
        match r {
            Requirement::SignedBy { keys, .. } => {
                let mut ring = Keyring::default();
                for k in keys {
                    let (bytes, name) = read(k)?;
                    ring.extend(Keyring::parse(&bytes, &name)?);
                }
                Ok(Some(Keys::Gpg(ring)))
            }
            Requirement::SigstoreSigned { keys, .. } => keys
                .iter()
                .map(|k| read(k).and_then(|(bytes, name)| sigstore::Key::from_pem(&bytes, &name)))
                .collect::<Result<_, _>>()
                .map(|v| Some(Keys::Sigstore(v))),
            _ => Ok(None),
        }
    }
}

fn read(k: &KeySource) -> Result<(Vec<u8>, String), SignatureError> {
    match k {
        KeySource::Data(bytes) => Ok((bytes.clone(), "keyData".to_owned())),
        KeySource::Path(path) => {
            let name = path.display().to_string();
            let bad = |why: String| SignatureError::Key {
                name: name.clone(),
                why,
            };
            let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
            if meta.len() > MAX_KEY_FILE {
                return Err(bad(format!("larger than {MAX_KEY_FILE} bytes")));
            }
            let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            Ok((bytes, name))
        }
    }
}
