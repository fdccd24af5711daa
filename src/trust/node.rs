//! The node's trust configuration, loaded whole at start and on SIGHUP (a reload that
//! fails keeps the previous one): the global policy file, one policy per pod namespace
//! from the policy directory (CRI-O's `--signature-policy-dir`: `DIR/<namespace>.json`),
//! and registries.d. Every key a policy names is read and parsed at load, so a bad key
//! stops the start instead of failing pulls later.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::keys::Keys;
use super::policy::{Policy, Requirement};
use super::registries_d::RegistriesD;

/// containers/image's default policy file.
pub const DEFAULT_POLICY: &str = "/etc/containers/policy.json";
/// containers/image's default registries.d.
pub const DEFAULT_REGISTRIES_D: &str = "/etc/containers/registries.d";

/// Where the trust files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub policy: PathBuf,
    /// Whether `policy` was named by the operator: then it must exist. The default file
    /// may be missing (accept anything, as before policies existed).
    pub policy_named: bool,
    pub policy_dir: Option<PathBuf>,
    pub registries_d: PathBuf,
}

impl Default for Paths {
    fn default() -> Paths {
        Paths {
            policy: DEFAULT_POLICY.into(),
            policy_named: false,
            policy_dir: None,
            registries_d: DEFAULT_REGISTRIES_D.into(),
        }
    }
}

/// One policy file, parsed, with its keys.
#[derive(Debug)]
pub struct Loaded {
    /// The file, for messages and logs ("built-in" for the missing default).
    pub file: String,
    pub policy: Policy,
    /// The keys of each requirement, in [`all_requirements`] order (`None`: it names none).
    keys: Vec<Option<Keys>>,
}

/// Where a requirement sits in its policy: `default[i]` or `transports.T."scope"[i]`;
/// formatted only for an error.
struct Place<'a> {
    scope: Option<(&'a str, &'a str)>,
    index: usize,
}

impl std::fmt::Display for Place<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scope {
            None => write!(f, "default[{}]", self.index),
            Some((t, scope)) => write!(f, "transports.{t}.{scope:?}[{}]", self.index),
        }
    }
}

/// Every requirement of `policy` with its place, in a fixed order.
fn all_requirements(policy: &Policy) -> impl Iterator<Item = (Place<'_>, &Requirement)> {
    let default = policy
        .default
        .iter()
        .enumerate()
        .map(|(index, r)| (Place { scope: None, index }, r));
    let scoped = policy.transports.iter().flat_map(|(t, scopes)| {
        scopes.iter().flat_map(move |(scope, reqs)| {
            reqs.iter().enumerate().map(move |(index, r)| {
                let scope = Some((t.as_str(), scope.as_str()));
                (Place { scope, index }, r)
            })
        })
    });
    default.chain(scoped)
}

impl Loaded {
    fn new(file: String, policy: Policy) -> Result<Loaded, String> {
        let keys = all_requirements(&policy)
            .map(|(place, r)| Keys::load(r).map_err(|e| format!("{file}: {place}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(Loaded { file, policy, keys })
    }

    /// The keys loaded for `r` (a requirement of this policy that names keys).
    pub fn keys(&self, r: &Requirement) -> Option<&Keys> {
        all_requirements(&self.policy)
            .position(|(_, q)| std::ptr::eq(q, r))
            .and_then(|i| self.keys.get(i))
            .and_then(Option::as_ref)
    }
}

/// The whole trust configuration in force.
#[derive(Debug)]
pub struct NodeTrust {
    pub paths: Paths,
    global: Arc<Loaded>,
    namespaces: BTreeMap<String, Arc<Loaded>>,
    pub registries_d: RegistriesD,
}

impl NodeTrust {
    /// Accept anything, nothing configured (what a missing default policy means).
    pub fn accept_anything() -> NodeTrust {
        NodeTrust {
            paths: Paths::default(),
            global: Arc::new(Loaded {
                file: "built-in (no policy file)".into(),
                policy: Policy::accept_anything(),
                keys: Vec::new(),
            }),
            namespaces: BTreeMap::new(),
            registries_d: RegistriesD::default(),
        }
    }

    /// Reads everything `paths` names. The error names the file and what is wrong.
    pub fn load(paths: &Paths) -> Result<NodeTrust, String> {
        let global = match std::fs::read(&paths.policy) {
            Ok(bytes) => load_file(&paths.policy, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !paths.policy_named => {
                NodeTrust::accept_anything().global
            }
            Err(e) => return Err(format!("signature policy {}: {e}", paths.policy.display())),
        };
        let mut namespaces = BTreeMap::new();
        if let Some(dir) = &paths.policy_dir {
            let files = crate::registries::files_in(dir, "json")
                .map_err(|e| format!("signature policy directory {}: {e}", dir.display()))?;
            for path in files.unwrap_or_default() {
                let Some(ns) = namespace_of(&path) else {
                    continue;
                };
                let bytes = std::fs::read(&path)
                    .map_err(|e| format!("signature policy {}: {e}", path.display()))?;
                namespaces.insert(ns, load_file(&path, &bytes)?);
            }
        }
        let registries_d =
            RegistriesD::load(&paths.registries_d).map_err(|e| format!("registries.d: {e}"))?;
        Ok(NodeTrust {
            paths: paths.clone(),
            global,
            namespaces,
            registries_d,
        })
    }

    /// The policy for a pull made for a pod of `namespace` (`None`: no pod given).
    pub fn policy_for(&self, namespace: Option<&str>) -> &Arc<Loaded> {
        namespace
            .and_then(|ns| self.namespaces.get(ns))
            .unwrap_or(&self.global)
    }

    /// The namespaces with a policy of their own.
    pub fn namespaces(&self) -> impl Iterator<Item = &str> {
        self.namespaces.keys().map(String::as_str)
    }

    pub fn global_file(&self) -> &str {
        &self.global.file
    }
}

fn load_file(path: &Path, bytes: &[u8]) -> Result<Arc<Loaded>, String> {
    let file = path.display().to_string();
    let policy = Policy::parse(&file, bytes).map_err(|e| e.to_string())?;
    Loaded::new(file, policy).map(Arc::new)
}

/// `DIR/<namespace>.json` → the namespace, when it is a Kubernetes namespace name (a DNS
/// label); other files are not policies of a namespace.
fn namespace_of(path: &Path) -> Option<String> {
    let ns = path.file_stem()?.to_str()?;
    let label = !ns.is_empty()
        && ns.len() <= 63
        && ns
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !ns.starts_with('-')
        && !ns.ends_with('-');
    label.then(|| ns.to_owned())
}
