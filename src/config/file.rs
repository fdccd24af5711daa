//! The configuration keys, written once: each is a key of the TOML file and a flag
//! (the flag overrides the file; [`layered`]). A new key is one field here (its doc is
//! the flag's help) and its validation in `mod.rs`. Every key is optional; unknown file
//! keys are refused.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// `/etc/cri-imaged/config.toml` (see `contrib/cri-imaged.toml` for a commented example),
/// and the daemon's flags of the same names.
#[derive(Debug, Default, Deserialize, Serialize, clap::Args)]
#[serde(deny_unknown_fields)]
pub struct Keys {
    /// Store root: an OCI image layout [config: root] [default: /var/lib/cri-imaged]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Unix socket to serve CRI on [config: listen] [default: /run/cri-imaged/cri-imaged.sock]
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Registry for short names; repeat for several, tried in order. Replaces the config list [config: registries]
    #[arg(long = "registry", value_name = "HOST[:PORT]")]
    pub registries: Option<Vec<String>>,
    /// Registry host or CIDR reached without TLS verification; repeatable. Loopback always is. Replaces the config list [config: insecure_registries]
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]|CIDR")]
    pub insecure_registries: Option<Vec<String>>,
    /// Transport for names without one [config: default_transport] [default: docker]
    #[arg(long, value_name = "TRANSPORT")]
    pub default_transport: Option<String>,
    /// Blob downloads over 1 MiB running at once, across all pulls; blobs up to 1 MiB (a round trip each) may run 4× as many besides [config: max_concurrent_downloads] [default: 3]
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<usize>,
    /// Local transport to allow besides docker (oci, oci-archive, docker-archive, dir); repeatable. Replaces the config list [config: transports]
    #[arg(long = "transport", value_name = "TRANSPORT")]
    pub transports: Option<Vec<String>>,
    /// Directory images from local transports may be read from; repeatable. Replaces the config list [config: import_dirs]
    #[arg(long = "import-dir", value_name = "DIR")]
    pub import_dirs: Option<Vec<PathBuf>>,
    /// The skopeo binary for local transports [config: skopeo] [default: skopeo]
    #[arg(long, value_name = "PATH")]
    pub skopeo: Option<PathBuf>,
    /// Log filter: error, warn, info, debug, trace, or a tracing directive [config: log_level] [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on a loopback IP:PORT or a unix socket (unix:/path) [config: metrics_address] [default: off]
    #[arg(long, value_name = "ADDR")]
    pub metrics_address: Option<String>,
    /// Root-only unix socket for `cri-imaged pulls` [config: admin_socket] [default: the --listen path with -admin.sock for .sock]
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
    /// Log format: text or json (one object per line) [config: log_format] [default: text]
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// containers-registries.conf v2 file (drop-ins: FILE.d/*.conf); missing is fine [config: registries_conf] [default: /etc/containers/registries.conf]
    #[arg(long, value_name = "FILE")]
    pub registries_conf: Option<PathBuf>,
    /// Node-wide auth file (containers-auth.json / docker config.json); missing is fine [config: auth_file] [default: /run/containers/0/auth.json]
    #[arg(long, value_name = "FILE")]
    pub auth_file: Option<PathBuf>,
    /// Per-registry TLS directory (<host[:port]>/*.crt) [config: certs_dir] [default: /etc/containers/certs.d]
    #[arg(long, value_name = "DIR")]
    pub certs_dir: Option<PathBuf>,
    /// How long a credential helper's answer (auth file credHelpers / credsStore) is kept per registry: 30s, 5m, or seconds; 0 = ask every pull [config: credential_helper_cache] [default: 1m]
    #[arg(long, value_name = "DURATION")]
    pub credential_helper_cache: Option<super::duration::DurationValue>,
    /// containers-policy.json: which images the node trusts; the default file may be missing (accept anything), a named one must exist [config: signature_policy] [default: /etc/containers/policy.json]
    #[arg(long, value_name = "FILE")]
    pub signature_policy: Option<PathBuf>,
    /// Per-namespace policies: DIR/<namespace>.json is used for a pull whose sandbox config names that namespace, else the global policy [config: signature_policy_dir] [default: none]
    #[arg(long, value_name = "DIR")]
    pub signature_policy_dir: Option<PathBuf>,
    /// containers-registries.d: where signatures are (lookaside URLs, use-sigstore-attachments); missing is fine [config: registries_d] [default: /etc/containers/registries.d]
    #[arg(long = "registries-d", value_name = "DIR")]
    pub registries_d: Option<PathBuf>,
    /// Image reported as pinned: a qualified name or a prefix* glob; repeatable. Replaces the config list [config: pinned_images]
    #[arg(long = "pinned-image", value_name = "NAME|PREFIX*")]
    pub pinned_images: Option<Vec<String>>,
    /// The pause image, always pinned [config: pause_image] [default: registry.k8s.io/pause:3.10]
    #[arg(long, value_name = "NAME")]
    pub pause_image: Option<String>,
    /// A blob download receiving nothing for this long fails: 30s, 1m, or seconds; 0 = off [config: pull_progress_timeout] [default: 1m]
    #[arg(long, value_name = "DURATION")]
    pub pull_progress_timeout: Option<super::duration::DurationValue>,
    /// Bytes/s a download must average over each pull_progress_timeout window [config: pull_min_rate] [default: 0]
    #[arg(long, value_name = "BYTES_PER_SECOND")]
    pub pull_min_rate: Option<u64>,
    /// How long the verified blobs of a pull a crash interrupted are kept for the next pull of the image: 30s, 1h, 24h, or seconds [config: interrupted_pull_grace] [default: 24h]
    #[arg(long, value_name = "DURATION")]
    pub interrupted_pull_grace: Option<super::duration::DurationValue>,
    /// Unpack every pulled layer into an overlay-ready snapshot under ROOT/snapshots while it downloads, so a runtime can run the image (`cri-imaged bundle`, the mount API); false keeps a blob-only store [config: unpack] [default: true when running as root, as on a node; false otherwise: whiteouts and owners need root]
    #[arg(long, value_name = "BOOL")]
    pub unpack: Option<bool>,
    /// Where snapshots (snapshots/, containers/) live when unpacking: a directory on another filesystem than the blobs if wanted [config: snapshot_root] [default: the root]
    #[arg(long, value_name = "DIR")]
    pub snapshot_root: Option<PathBuf>,
}

/// The file's keys overridden by the flags given: one rule for every key (a list flag,
/// given at all, replaces the file's list).
pub fn layered(file: Keys, flags: &Keys) -> Keys {
    let (Ok(serde_json::Value::Object(mut merged)), Ok(serde_json::Value::Object(given))) =
        (serde_json::to_value(file), serde_json::to_value(flags))
    else {
        unreachable!("Keys serializes to a JSON object");
    };
    for (key, value) in given {
        if !value.is_null() {
            merged.insert(key, value);
        }
    }
    serde_json::from_value(serde_json::Value::Object(merged))
        .expect("the merge of two valid key sets is valid")
}
