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
    /// Every configuration key, as a flag.
    #[command(flatten)]
    pub keys: super::file::Keys,
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
    /// Make an OCI runtime bundle of a pulled image: DIR/config.json and DIR/rootfs (an
    /// overlay of the image's snapshots), so `cd DIR && runc run ID` runs it; `--remove DIR`
    /// unmounts and frees it (through the daemon's admin socket; needs `unpack = true`)
    Bundle(BundleArgs),
}

/// `cri-imaged bundle IMAGE DIR` / `cri-imaged bundle --remove DIR`.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// Unmount and free the bundle in DIR
    #[arg(long)]
    pub remove: bool,
    /// IMAGE DIR (IMAGE: a name or ID of a pulled image), or DIR with --remove
    #[arg(value_name = "IMAGE DIR", required = true, num_args = 1..=2)]
    pub targets: Vec<String>,
    /// The daemon's configuration file, read to find its admin socket
    #[arg(long, value_name = "FILE", default_value = super::DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// The daemon's admin socket; overrides the configuration
    #[arg(long, value_name = "PATH")]
    pub admin_socket: Option<PathBuf>,
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
    /// Where the snapshots are; default: the configuration file's snapshot_root, or the
    /// root given with --root
    #[arg(long, value_name = "DIR")]
    pub snapshot_root: Option<PathBuf>,
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
