//! Configuration: the TOML file and the flags, validated into a typed [`Config`] before
//! anything starts. Every problem is reported at once, naming the file and key. Pure: no
//! directory is created and no socket opened here.

pub mod address;
pub mod cli;
pub mod duration;
pub mod file;

use std::path::{Path, PathBuf};

pub use address::MetricsAddress;
pub use cli::{CheckArgs, Cli, Command, OutputFormat, PullsArgs};
use file::FileConfig;

use crate::image::Pinned;
use crate::names::{ImageName, InsecureRegistries};
use crate::registries::{self, NodeRegistries};
use crate::transport::{ImportPolicy, LocalTransport};

pub const DEFAULT_CONFIG: &str = "/etc/cri-imaged/config.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/cri-imaged";
pub const DEFAULT_LISTEN: &str = "/run/cri-imaged/cri-imaged.sock";
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;
pub const DEFAULT_PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
pub const DEFAULT_PULL_PROGRESS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub listen: PathBuf,
    pub registries: Vec<String>,
    pub insecure: InsecureRegistries,
    pub default_transport: String,
    pub max_concurrent_downloads: usize,
    pub imports: ImportPolicy,
    pub log_level: String,
    /// Where `/metrics` is served; `None`: nowhere but the admin socket.
    pub metrics_address: Option<MetricsAddress>,
    /// The root-only socket serving `/pulls` and `/metrics`.
    pub admin_socket: PathBuf,
    /// Log one JSON object per line instead of text.
    pub log_json: bool,
    /// Where registries.conf, the auth file and certs.d are (read again on SIGHUP).
    pub registry_paths: registries::Paths,
    /// What they held at start.
    pub node: NodeRegistries,
    /// `pinned_images` plus `pause_image`.
    pub pinned: Pinned,
    /// A blob download receiving nothing for this long fails; `None`: never.
    pub pull_progress_timeout: Option<std::time::Duration>,
    /// Bytes per second each `pull_progress_timeout` window must bring on average.
    pub pull_min_rate: u64,
}

/// The admin socket next to `listen`: `x.sock` → `x-admin.sock` (else `x` → `x-admin.sock`).
pub fn default_admin_socket(listen: &Path) -> PathBuf {
    let name = listen
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".sock").unwrap_or(&name);
    listen.with_file_name(format!("{stem}-admin.sock"))
}

/// Every problem found in the configuration.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration in {}:\n  {}", file.display(), problems.join("\n  "))]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<String>,
}

impl Config {
    /// Reads the file (absent is fine), applies the flags, and validates everything.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        validate(&cli.config, read_file(&cli.config)?, cli)
    }
}

fn read_file(file: &Path) -> Result<FileConfig, ConfigError> {
    let fail = |p: String| ConfigError {
        file: file.to_owned(),
        problems: vec![p],
    };
    match std::fs::read_to_string(file) {
        Ok(text) => toml::from_str::<FileConfig>(&text)
            .map_err(|e| fail(e.to_string().trim().replace('\n', "\n  "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(FileConfig::default()),
        Err(e) => Err(fail(format!("cannot read: {e}"))),
    }
}

/// The admin socket of a daemon configured by `file` (for `cri-imaged pulls`).
pub fn admin_socket_of(file: &Path) -> Result<PathBuf, ConfigError> {
    let raw = read_file(file)?;
    Ok(raw.admin_socket.unwrap_or_else(|| {
        default_admin_socket(&raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into()))
    }))
}

/// The store root a daemon configured by `file` uses (for `cri-imaged check`).
pub fn root_of(file: &Path) -> Result<PathBuf, ConfigError> {
    Ok(read_file(file)?.root.unwrap_or_else(|| DEFAULT_ROOT.into()))
}

fn validate(file: &Path, raw: FileConfig, cli: &Cli) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let imports = imports(&mut problems, &raw, cli);
    let (registry_paths, node) = registry_files(&mut problems, &raw, cli);
    let mut check_path = |key: &str, p: PathBuf| {
        if !p.is_absolute() {
            problems.push(format!(
                "{key} = {:?}: must be an absolute path",
                p.display().to_string()
            ));
        }
        p
    };
    let root = check_path(
        "root",
        cli.root
            .clone()
            .or(raw.root)
            .unwrap_or_else(|| DEFAULT_ROOT.into()),
    );
    let listen = check_path(
        "listen",
        cli.listen
            .clone()
            .or(raw.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into()),
    );
    if root.to_str().is_some_and(|r| r.contains(':')) {
        problems.push(format!(
            "root = {:?}: must not contain ':' (OCI layout references split at it)",
            root.display().to_string()
        ));
    }

    let registries = if cli.registries.is_empty() {
        raw.registries.unwrap_or_default()
    } else {
        cli.registries.clone()
    };
    for r in &registries {
        // A registry host has a '.' or ':' or is localhost (else names recorded under it
        // would read back as Docker Hub names); an optional namespace may follow.
        if ImageName::parse_qualified(&format!("{r}/probe")).is_err() {
            problems.push(format!(
                "registries: entry {r:?} is not a registry host[:port][/namespace] (a host needs a '.' or ':' or must be localhost)"
            ));
        }
    }
    let insecure_entries = if cli.insecure_registries.is_empty() {
        raw.insecure_registries.unwrap_or_default()
    } else {
        cli.insecure_registries.clone()
    };
    let insecure = InsecureRegistries::new(&insecure_entries).unwrap_or_else(|e| {
        problems.push(format!("insecure_registries: {e}"));
        InsecureRegistries::default()
    });
    let default_transport = cli
        .default_transport
        .clone()
        .or(raw.default_transport)
        .unwrap_or_else(|| "docker".into());
    if default_transport != "docker" {
        problems.push(format!(
            "default_transport = {default_transport:?}: only \"docker\" is supported"
        ));
    }
    let max_concurrent_downloads = cli
        .max_concurrent_downloads
        .or(raw.max_concurrent_downloads)
        .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
    if !(1..=64).contains(&max_concurrent_downloads) {
        problems.push(format!(
            "max_concurrent_downloads = {max_concurrent_downloads}: must be between 1 and 64"
        ));
    }
    let log_level = cli
        .log_level
        .clone()
        .or(raw.log_level)
        .unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        problems.push(format!("log_level = {log_level:?}: {e}"));
    }
    let metrics_address = cli
        .metrics_address
        .clone()
        .or(raw.metrics_address)
        .and_then(|a| {
            MetricsAddress::parse(&a)
                .map_err(|e| problems.push(format!("metrics_address = {a:?}: {e}")))
                .ok()
        });
    let admin_socket = cli
        .admin_socket
        .clone()
        .or(raw.admin_socket)
        .unwrap_or_else(|| default_admin_socket(&listen));
    if !admin_socket.is_absolute() || admin_socket == listen {
        problems.push(format!(
            "admin_socket = {:?}: must be an absolute path other than listen",
            admin_socket.display().to_string()
        ));
    }
    if let Some(MetricsAddress::Unix(p)) = &metrics_address
        && (*p == listen || *p == admin_socket)
    {
        problems.push(format!(
            "metrics_address = \"unix:{}\": must differ from listen and admin_socket",
            p.display()
        ));
    }
    let log_format = cli
        .log_format
        .clone()
        .or(raw.log_format)
        .unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        problems.push(format!(
            "log_format = {log_format:?}: must be \"text\" or \"json\""
        ));
    }
    let mut pinned_patterns = if cli.pinned_images.is_empty() {
        raw.pinned_images.unwrap_or_default()
    } else {
        cli.pinned_images.clone()
    };
    pinned_patterns.push(
        cli.pause_image
            .clone()
            .or(raw.pause_image)
            .unwrap_or_else(|| DEFAULT_PAUSE_IMAGE.into()),
    );
    let pinned = Pinned::new(&pinned_patterns).unwrap_or_else(|e| {
        problems.push(format!("pinned_images/pause_image: {e}"));
        Pinned::default()
    });
    let pull_progress_timeout = match cli
        .pull_progress_timeout
        .clone()
        .map(duration::DurationValue::Text)
        .or(raw.pull_progress_timeout)
    {
        None => Some(DEFAULT_PULL_PROGRESS_TIMEOUT),
        Some(v) => match v.parse() {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("pull_progress_timeout = {v}: {e}"));
                None
            }
        },
    };
    let pull_min_rate = cli.pull_min_rate.or(raw.pull_min_rate).unwrap_or(0);
    if !problems.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            problems,
        });
    }
    Ok(Config {
        root,
        listen,
        registries,
        insecure,
        default_transport,
        max_concurrent_downloads,
        imports,
        log_level,
        metrics_address,
        admin_socket,
        log_json: log_format == "json",
        registry_paths,
        node,
        pinned,
        pull_progress_timeout,
        pull_min_rate,
    })
}

/// `registries_conf`, `auth_file`, `certs_dir`: absolute paths, and their content valid.
fn registry_files(
    problems: &mut Vec<String>,
    raw: &FileConfig,
    cli: &Cli,
) -> (registries::Paths, NodeRegistries) {
    let defaults = registries::Paths::default();
    let mut pick = |key: &str, flag: &Option<PathBuf>, file: &Option<PathBuf>, default: PathBuf| {
        let p = flag.clone().or(file.clone()).unwrap_or(default);
        if !p.is_absolute() {
            problems.push(format!(
                "{key} = {:?}: must be an absolute path",
                p.display().to_string()
            ));
        }
        p
    };
    let paths = registries::Paths {
        registries_conf: pick(
            "registries_conf",
            &cli.registries_conf,
            &raw.registries_conf,
            defaults.registries_conf,
        ),
        auth_file: pick(
            "auth_file",
            &cli.auth_file,
            &raw.auth_file,
            defaults.auth_file,
        ),
        certs_dir: pick(
            "certs_dir",
            &cli.certs_dir,
            &raw.certs_dir,
            defaults.certs_dir,
        ),
    };
    let node = registries::load(&paths).unwrap_or_else(|e| {
        problems.push(format!("registry configuration: {e}"));
        NodeRegistries::default()
    });
    (paths, node)
}

/// `transports`, `import_dirs` and `skopeo`: an enabled local transport needs somewhere
/// to read from.
fn imports(problems: &mut Vec<String>, raw: &FileConfig, cli: &Cli) -> ImportPolicy {
    let names = if cli.transports.is_empty() {
        raw.transports.clone().unwrap_or_default()
    } else {
        cli.transports.clone()
    };
    let mut transports = Vec::new();
    for t in &names {
        match LocalTransport::from_name(t) {
            Some(t) => transports.push(t),
            None if t == "docker" => {}
            None => problems.push(format!(
                "transports: {t:?} is not a local transport (oci, oci-archive, docker-archive, dir)"
            )),
        }
    }
    let import_dirs = if cli.import_dirs.is_empty() {
        raw.import_dirs.clone().unwrap_or_default()
    } else {
        cli.import_dirs.clone()
    };
    for d in &import_dirs {
        if !d.is_absolute() || d.parent().is_none() {
            problems.push(format!(
                "import_dirs: {:?} must be an absolute path other than /",
                d.display().to_string()
            ));
        }
    }
    if !transports.is_empty() && import_dirs.is_empty() {
        problems.push(format!(
            "transports = {names:?} needs import_dirs: the directories images may be read from"
        ));
    }
    ImportPolicy {
        transports,
        import_dirs,
        skopeo: cli
            .skopeo
            .clone()
            .or(raw.skopeo.clone())
            .unwrap_or_else(|| "skopeo".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn load(toml: &str, args: &[&str]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let mut argv = vec!["cri-imaged", "--config", file.to_str().unwrap()];
        argv.extend_from_slice(args);
        Config::load(&Cli::parse_from(argv))
    }

    #[test]
    fn defaults_apply_when_the_file_is_absent() {
        let c = Config::load(&Cli::parse_from([
            "cri-imaged",
            "--config",
            "/nonexistent/x.toml",
        ]))
        .unwrap();
        assert_eq!(c.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(c.listen, PathBuf::from(DEFAULT_LISTEN));
        assert_eq!(c.max_concurrent_downloads, 3);
        assert!(c.registries.is_empty());
        assert_eq!(c.metrics_address, None, "metrics are off by default");
        assert_eq!(
            c.admin_socket,
            PathBuf::from("/run/cri-imaged/cri-imaged-admin.sock")
        );
        assert!(!c.log_json);
    }

    #[test]
    fn observability_keys_are_validated() {
        let c = load(
            "metrics_address = \"127.0.0.1:9464\"\nlog_format = \"json\"\n",
            &["--admin-socket", "/run/a.sock"],
        )
        .unwrap();
        assert_eq!(
            c.metrics_address,
            Some(MetricsAddress::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(c.admin_socket, PathBuf::from("/run/a.sock"));
        assert!(c.log_json);
        let e = load(
            "metrics_address = \"0.0.0.0:9464\"\nlog_format = \"xml\"\nadmin_socket = \"rel.sock\"\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 3, "{e}");
        for key in ["metrics_address", "log_format", "admin_socket"] {
            assert!(e.to_string().contains(key), "{key} not named in {e}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let c = load(
            "root = \"/a\"\nregistries = [\"quay.io\"]\nmax_concurrent_downloads = 5\n",
            &["--root", "/b", "--registry", "r.io"],
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/b"));
        assert_eq!(c.registries, vec!["r.io".to_string()]);
        assert_eq!(c.max_concurrent_downloads, 5);
    }

    #[test]
    fn unknown_keys_are_refused_with_the_key_named() {
        let e = load("rooot = \"/a\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("rooot"), "{e}");
        assert!(e.to_string().contains("c.toml"), "{e}");
    }

    #[test]
    fn registries_must_be_registry_hosts() {
        for ok in [
            "quay.io",
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "quay.io/org",
            "[::1]:5000",
        ] {
            assert!(load("", &["--registry", ok]).is_ok(), "{ok}");
        }
        for bad in ["myregistry", "Bad Host", "quay.io/", "https://quay.io"] {
            assert!(load("", &["--registry", bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_invalid_value_is_reported_at_once() {
        let e = load("root = \"rel\"\nmax_concurrent_downloads = 0\ndefault_transport = \"oci\"\ninsecure_registries = [\"10.0.0.0/99\"]\nregistries = [\"Bad Host\"]\n", &[]).unwrap_err();
        assert_eq!(e.problems.len(), 5, "{e}");
    }

    #[test]
    fn registry_files_are_read_and_an_invalid_one_refuses_start() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("registries.conf");
        std::fs::write(&conf, "unqualified-search-registries = [\"quay.io\"]\n").unwrap();
        let c = load(
            &format!("registries_conf = {:?}\n", conf.display().to_string()),
            &[
                "--auth-file",
                "/nonexistent/auth.json",
                "--certs-dir",
                "/nonexistent/certs.d",
            ],
        )
        .unwrap();
        assert_eq!(c.node.conf.search(), Some(&["quay.io".to_string()][..]));
        assert_eq!(c.registry_paths.registries_conf, conf);
        std::fs::write(
            &conf,
            "[[registry]]\nprefix = \"x.io\"\nblocked = \"yes\"\n",
        )
        .unwrap();
        let e = load("", &["--registries-conf", conf.to_str().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("registries.conf"), "{e}");
        assert!(e.to_string().contains("blocked"), "{e}");
        let e = load("auth_file = \"rel.json\"\n", &[]).unwrap_err();
        assert!(e.to_string().contains("auth_file"), "{e}");
    }

    #[test]
    fn the_pause_image_and_pinned_images_are_pinned() {
        let c = load(
            "pinned_images = [\"quay.io/org/*\"]\n",
            &["--pause-image", "r.io/pause:1"],
        )
        .unwrap();
        for (n, want) in [
            ("quay.io/org/a:1", true),
            ("r.io/pause:1", true),
            (DEFAULT_PAUSE_IMAGE, false),
        ] {
            assert_eq!(
                c.pinned.matches(&ImageName::parse_qualified(n).unwrap()),
                want,
                "{n}"
            );
        }
        let e = load("pinned_images = [\"busybox\"]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("busybox"), "{e}");
    }

    #[test]
    fn pull_progress_timeout_takes_humane_durations_or_seconds() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.pull_progress_timeout, Some(DEFAULT_PULL_PROGRESS_TIMEOUT));
        assert_eq!(c.pull_min_rate, 0);
        let c = load(
            "pull_progress_timeout = \"1m30s\"\npull_min_rate = 1024\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.pull_progress_timeout,
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(c.pull_min_rate, 1024);
        let c = load("pull_progress_timeout = 45\n", &[]).unwrap();
        assert_eq!(
            c.pull_progress_timeout,
            Some(std::time::Duration::from_secs(45))
        );
        let c = load(
            "pull_progress_timeout = 45\n",
            &["--pull-progress-timeout", "0"],
        )
        .unwrap();
        assert_eq!(c.pull_progress_timeout, None, "0 turns the watch off");
        let c = load("", &["--pull-progress-timeout", "500ms"]).unwrap();
        assert_eq!(
            c.pull_progress_timeout,
            Some(std::time::Duration::from_millis(500))
        );
        for bad in ["\"soon\"", "\"10 parsecs\"", "\"-1s\"", "\"\""] {
            let e = load(&format!("pull_progress_timeout = {bad}\n"), &[]).unwrap_err();
            assert!(
                e.to_string().contains("pull_progress_timeout"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn local_transports_need_import_dirs() {
        let c = load("", &[]).unwrap();
        assert!(c.imports.transports.is_empty());
        let e = load("transports = [\"oci-archive\"]\n", &[]).unwrap_err();
        assert!(e.to_string().contains("needs import_dirs"), "{e}");
        let e = load("transports = [\"ftp\"]\nimport_dirs = [\"rel\"]\n", &[]).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        let c = load(
            "transports = [\"docker\", \"oci\"]\nimport_dirs = [\"/srv/images\"]\n",
            &["--transport", "dir", "--transport", "oci-archive"],
        )
        .unwrap();
        assert_eq!(
            c.imports.transports,
            [LocalTransport::Dir, LocalTransport::OciArchive]
        );
        assert_eq!(c.imports.import_dirs, [PathBuf::from("/srv/images")]);
    }
}
