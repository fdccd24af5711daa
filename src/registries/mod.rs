//! The registries as the node's operator configured them, outside cri-imaged's own file:
//! containers-registries.conf(5) v2 with its drop-ins (search registries, per-prefix
//! remapping, mirrors, blocking, insecure flags, short-name aliases and mode), the node's
//! auth file (containers-auth.json(5)), and the certs.d directory (containers-certs.d(5)).
//!
//! [`load`] reads all three into one [`NodeRegistries`] snapshot; the image service swaps
//! the whole snapshot on reload (SIGHUP), so a pull sees one consistent configuration from
//! its start to its end. Everything but [`load`] (and the `load` functions it calls) is
//! pure. It depends on `names` and on `registry`'s credential types only.

mod authfile;
mod certs;
mod conf;
mod load;
mod lookup;
mod raw;

use std::path::PathBuf;

pub use authfile::AuthFile;
pub use certs::{CertsDir, HostCerts};
pub use conf::{AUTH_FILES, Mirror, PullFrom, RegistriesConf, RegistryEntry, ShortNameMode};
pub use load::{drop_in_dir, files_in, load_conf};
pub use lookup::{LookupError, Source};

/// Default registries.conf (its drop-ins: `registries.conf.d/*.conf` beside it).
pub const DEFAULT_REGISTRIES_CONF: &str = "/etc/containers/registries.conf";
/// Default auth file, as containers-auth.json(5) gives it for root.
pub const DEFAULT_AUTH_FILE: &str = "/run/containers/0/auth.json";
/// Default certs.d directory.
pub const DEFAULT_CERTS_DIR: &str = "/etc/containers/certs.d";

/// A file that could not be used: which file, which key (empty when the whole file is
/// unreadable or not TOML/JSON), and why. Never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}{reason}", file.display(), if key.is_empty() { ": ".to_owned() } else { format!(": {key}: ") })]
pub struct LoadError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

/// Where the three inputs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub registries_conf: PathBuf,
    pub auth_file: PathBuf,
    pub certs_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            registries_conf: DEFAULT_REGISTRIES_CONF.into(),
            auth_file: DEFAULT_AUTH_FILE.into(),
            certs_dir: DEFAULT_CERTS_DIR.into(),
        }
    }
}

/// One consistent view of the operator's registry configuration.
#[derive(Debug, Clone, Default)]
pub struct NodeRegistries {
    pub conf: RegistriesConf,
    pub auth: AuthFile,
    pub certs: CertsDir,
    /// What was read but is not acted on (logged at start and on reload).
    pub warnings: Vec<String>,
}

/// Reads registries.conf (+ drop-ins), the auth file and certs.d. Missing files are empty;
/// the first invalid one is the error.
pub fn load(paths: &Paths) -> Result<NodeRegistries, LoadError> {
    let conf = load_conf(&paths.registries_conf)?;
    let mut warnings = conf.warnings().to_vec();
    let auth = AuthFile::load(&paths.auth_file, &mut warnings)?;
    let certs = CertsDir::load(&paths.certs_dir, &mut warnings)?;
    Ok(NodeRegistries {
        conf,
        auth,
        certs,
        warnings,
    })
}
