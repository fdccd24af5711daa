//! Command-line flags; each overrides the matching config file key.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// cri-imaged: a Kubernetes CRI image service (runtime.v1 ImageService) on a Unix socket.
#[derive(Debug, Parser)]
#[command(name = "cri-imaged", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Configuration file (TOML). A missing file means defaults.
    #[arg(long, value_name = "FILE", default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Store root: an OCI image layout [config: root] [default: /var/lib/cri-imaged]
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Unix socket to serve CRI on [config: listen] [default: /run/cri-imaged/cri-imaged.sock]
    #[arg(long, value_name = "PATH")]
    pub listen: Option<PathBuf>,
    /// Registry for short names; repeat for several, tried in order. Replaces the config list [config: registries]
    #[arg(long = "registry", value_name = "HOST[:PORT]")]
    pub registries: Vec<String>,
    /// Registry host or CIDR reached without TLS verification; repeatable. Loopback always is. Replaces the config list [config: insecure_registries]
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]|CIDR")]
    pub insecure_registries: Vec<String>,
    /// Transport for names without one [config: default_transport] [default: docker]
    #[arg(long, value_name = "TRANSPORT")]
    pub default_transport: Option<String>,
    /// Blob downloads running at once, across all pulls [config: max_concurrent_downloads] [default: 3]
    #[arg(long, value_name = "N")]
    pub max_concurrent_downloads: Option<usize>,
    /// Local transport to allow besides docker (oci, oci-archive, docker-archive, dir); repeatable. Replaces the config list [config: transports]
    #[arg(long = "transport", value_name = "TRANSPORT")]
    pub transports: Vec<String>,
    /// Directory images from local transports may be read from; repeatable. Replaces the config list [config: import_dirs]
    #[arg(long = "import-dir", value_name = "DIR")]
    pub import_dirs: Vec<PathBuf>,
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
    /// Image reported as pinned: a qualified name or a prefix* glob; repeatable. Replaces the config list [config: pinned_images]
    #[arg(long = "pinned-image", value_name = "NAME|PREFIX*")]
    pub pinned_images: Vec<String>,
    /// The pause image, always pinned [config: pause_image] [default: registry.k8s.io/pause:3.10]
    #[arg(long, value_name = "NAME")]
    pub pause_image: Option<String>,
    /// A blob download receiving nothing for this long fails: 30s, 1m, or seconds; 0 = off [config: pull_progress_timeout] [default: 1m]
    #[arg(long, value_name = "DURATION")]
    pub pull_progress_timeout: Option<String>,
    /// Bytes/s a download must average over each pull_progress_timeout window [config: pull_min_rate] [default: 0]
    #[arg(long, value_name = "BYTES_PER_SECOND")]
    pub pull_min_rate: Option<u64>,
    /// Without a command, cri-imaged runs the daemon.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands besides the daemon: `pulls` talks to a running one, `check` reads a store.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the pulls in flight: image, source registry, bytes per layer, rate, ETA, waiting
    /// callers (read from the daemon's admin socket)
    Pulls(PullsArgs),
    /// Verify a store offline: every blob's digest and size, every index.json reference;
    /// prints each problem and exits 1 on any (--repair removes what cannot be trusted)
    Check(CheckArgs),
}

/// `cri-imaged check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The store root; default: the root of the configuration file
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// The daemon's configuration file, read to find the root
    #[arg(long, value_name = "FILE", default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Remove corrupt blobs (and the names using them), unreferenced blobs and ingest
    /// files; refused while a daemon holds the store's lock
    #[arg(long)]
    pub repair: bool,
}

/// `cri-imaged pulls`.
#[derive(Debug, Args)]
pub struct PullsArgs {
    /// Keep the view open, updated live with progress bars, until interrupted
    #[arg(long)]
    pub watch: bool,
    /// Output: text, or json (with --watch, one JSON document per line per update)
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// The daemon's configuration file, read to find its admin socket
    #[arg(long, value_name = "FILE", default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The daemon's admin socket; overrides the configuration
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
}

/// How `cri-imaged pulls` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}
