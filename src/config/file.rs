//! The TOML configuration file, as written. Every key is optional; unknown keys are refused.

use std::path::PathBuf;

use serde::Deserialize;

/// `/etc/cri-imaged/config.toml`. See `contrib/cri-imaged.toml` for a commented example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Store root. Default `/var/lib/cri-imaged`.
    pub root: Option<PathBuf>,
    /// Unix socket to serve on. Default `/run/cri-imaged/cri-imaged.sock`.
    pub listen: Option<PathBuf>,
    /// Registries for short names, in order. Default: none (short names are refused).
    pub registries: Option<Vec<String>>,
    /// Hosts (`host[:port]`) and CIDRs reached without TLS verification (plain HTTP
    /// allowed). 127.0.0.0/8 and ::1 are always included. Default: none.
    pub insecure_registries: Option<Vec<String>>,
    /// Transport of names without one. Default `docker`.
    pub default_transport: Option<String>,
    /// Blob downloads at once, across all pulls. Default 3.
    pub max_concurrent_downloads: Option<usize>,
    /// Local transports to allow besides `docker`: `oci`, `oci-archive`, `docker-archive`,
    /// `dir`. Default: none.
    pub transports: Option<Vec<String>>,
    /// Directories images from local transports may be read from (symlinks resolved).
    /// Default: none.
    pub import_dirs: Option<Vec<PathBuf>>,
    /// The skopeo binary that reads local transports. Default `skopeo` (from `PATH`).
    pub skopeo: Option<PathBuf>,
    /// Log filter: `error`, `warn`, `info`, `debug`, `trace` or a tracing directive. Default `info`.
    pub log_level: Option<String>,
    /// Serve Prometheus metrics on this loopback `ip:port` or unix socket. Default: off.
    pub metrics_address: Option<String>,
    /// Root-only (0600) unix socket serving `/pulls` and `/metrics` to `cri-imaged pulls`.
    /// Default: `<listen without .sock>-admin.sock`.
    pub admin_socket: Option<PathBuf>,
    /// `text` (default) or `json` (one object per line, for journald/fluentd collectors).
    pub log_format: Option<String>,
    /// containers-registries.conf(5) v2 file; drop-ins are read from `<file>.d/*.conf`.
    /// A missing file is fine. Default `/etc/containers/registries.conf`.
    pub registries_conf: Option<PathBuf>,
    /// Node-wide credentials (containers-auth.json(5) / docker config.json). A missing
    /// file is fine. Default `/run/containers/0/auth.json`.
    pub auth_file: Option<PathBuf>,
    /// Per-registry TLS: `<dir>/<host[:port]>/*.crt` CA bundles. Default
    /// `/etc/containers/certs.d`.
    pub certs_dir: Option<PathBuf>,
    /// Images reported as pinned: exact qualified names or `prefix*` globs. Default: none
    /// (besides `pause_image`).
    pub pinned_images: Option<Vec<String>>,
    /// The pause (sandbox) image, always pinned. Default `registry.k8s.io/pause:3.10`.
    pub pause_image: Option<String>,
    /// A blob download receiving no bytes for this long fails: `"30s"`, `"1m"`, or
    /// seconds; `0` turns the watch off. Default 1 minute.
    pub pull_progress_timeout: Option<super::duration::DurationValue>,
    /// Bytes per second a download must average over each `pull_progress_timeout` window
    /// (a trickle below it counts as a stall). Default 0: any byte is progress.
    pub pull_min_rate: Option<u64>,
}
