//! Configuration: the TOML file and the flags — one set of keys ([`file::Keys`]), the
//! flags layered over the file ([`file::layered`]) — validated into a typed [`Config`]
//! before anything starts, one step per group of keys. Every problem is reported at once,
//! naming the file and key. Pure: no directory is created and no socket opened here.

pub mod address;
pub mod cli;
pub mod duration;
pub mod file;

use std::path::{Path, PathBuf};

pub use address::MetricsAddress;
pub use cli::{BundleArgs, CheckArgs, Cli, Command, OutputFormat, PullsArgs};
use file::Keys;

use crate::image::{Pinned, Settings};
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
    pub insecure: InsecureRegistries,
    pub log_level: String,
    /// Where `/metrics` is served; `None`: nowhere but the admin socket.
    pub metrics_address: Option<MetricsAddress>,
    /// The root-only socket serving `/pulls` and `/metrics`.
    pub admin_socket: PathBuf,
    /// Log one JSON object per line instead of text.
    pub log_json: bool,
    /// Where registries.conf, the auth file and certs.d are (read again on SIGHUP).
    pub registry_paths: registries::Paths,
    /// Where the signature policies and registries.d are (read again on SIGHUP).
    pub trust_paths: crate::trust::Paths,
    /// How the store is opened.
    pub store: crate::store::Options,
    /// Unpack pulled layers into snapshots.
    pub unpack: bool,
    /// Where the snapshots and container snapshots live (the root unless set).
    pub snapshot_root: PathBuf,
    /// The core service's settings, as it takes them (registries.conf and friends as
    /// they were at start in `service.node`).
    pub service: Settings,
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
    /// Reads the file (absent is fine), layers the flags over it, and validates everything.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        validate(
            &cli.config,
            file::layered(read_file(&cli.config)?, &cli.keys),
        )
    }
}

fn read_file(file: &Path) -> Result<Keys, ConfigError> {
    let fail = |p: String| ConfigError {
        file: file.to_owned(),
        problems: vec![p],
    };
    match std::fs::read_to_string(file) {
        Ok(text) => toml::from_str::<Keys>(&text)
            .map_err(|e| fail(e.to_string().trim().replace('\n', "\n  "))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Keys::default()),
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

/// The store root and the snapshot root a configuration file names (defaults where it
/// names none), for `cri-imaged check`.
pub fn roots_of(file: &Path) -> Result<(PathBuf, PathBuf), ConfigError> {
    let keys = read_file(file)?;
    let root = keys.root.unwrap_or_else(|| DEFAULT_ROOT.into());
    let snapshot_root = keys.snapshot_root.unwrap_or_else(|| root.clone());
    Ok((root, snapshot_root))
}

/// What validation found wrong, in the order found.
type Problems = Vec<String>;

/// Checks that the path of `key` is absolute; returns it either way.
fn absolute(problems: &mut Problems, key: &str, p: PathBuf) -> PathBuf {
    if !p.is_absolute() {
        problems.push(format!(
            "{key} = {:?}: must be an absolute path",
            p.display().to_string()
        ));
    }
    p
}

fn validate(file: &Path, keys: Keys) -> Result<Config, ConfigError> {
    let mut problems = Problems::new();
    let p = &mut problems;
    let (root, listen) = places(p, &keys);
    let observe = observability(p, &keys, &listen);
    let (registry_paths, node) = registry_files(p, &keys);
    let (trust_paths, trust) = trust_files(p, &keys);
    let service = Settings {
        registries: search_registries(p, &keys),
        default_transport: default_transport(p, &keys),
        max_concurrent_downloads: max_concurrent_downloads(p, &keys),
        imports: imports(p, &keys),
        node,
        pinned: pinned(p, &keys),
        retry: Default::default(),
        progress_timeout: pull_progress_timeout(p, &keys),
        min_rate: keys.pull_min_rate.unwrap_or(0),
        trust: std::sync::Arc::new(trust),
        credential_helper_cache: credential_helper_cache(p, &keys),
    };
    let store = crate::store::Options {
        interrupted_grace: interrupted_pull_grace(p, &keys),
    };
    let snapshot_root = match keys.snapshot_root.clone() {
        Some(dir) => absolute(&mut problems, "snapshot_root", dir),
        None => root.clone(),
    };
    let insecure = InsecureRegistries::new(&keys.insecure_registries.unwrap_or_default())
        .unwrap_or_else(|e| {
            problems.push(format!("insecure_registries: {e}"));
            InsecureRegistries::default()
        });
    if !problems.is_empty() {
        return Err(ConfigError {
            file: file.to_owned(),
            problems,
        });
    }
    Ok(Config {
        root,
        listen,
        insecure,
        log_level: observe.log_level,
        metrics_address: observe.metrics_address,
        admin_socket: observe.admin_socket,
        log_json: observe.log_json,
        registry_paths,
        trust_paths,
        service,
        store,
        snapshot_root,
        // Whiteouts (device nodes) and owners need root: unprivileged, blobs only.
        unpack: keys
            .unpack
            .unwrap_or_else(|| rustix::process::geteuid().is_root()),
    })
}

/// `root` and `listen`.
fn places(problems: &mut Problems, keys: &Keys) -> (PathBuf, PathBuf) {
    let root = absolute(
        problems,
        "root",
        keys.root.clone().unwrap_or_else(|| DEFAULT_ROOT.into()),
    );
    let listen = absolute(
        problems,
        "listen",
        keys.listen.clone().unwrap_or_else(|| DEFAULT_LISTEN.into()),
    );
    if root.to_str().is_some_and(|r| r.contains(':')) {
        problems.push(format!(
            "root = {:?}: must not contain ':' (OCI layout references split at it)",
            root.display().to_string()
        ));
    }
    (root, listen)
}

/// The logging and metrics keys.
struct Observability {
    log_level: String,
    log_json: bool,
    metrics_address: Option<MetricsAddress>,
    admin_socket: PathBuf,
}

/// `log_level`, `log_format`, `metrics_address`, `admin_socket`: three sockets that
/// must differ.
fn observability(problems: &mut Problems, keys: &Keys, listen: &Path) -> Observability {
    let log_level = keys.log_level.clone().unwrap_or_else(|| "info".into());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&log_level) {
        problems.push(format!("log_level = {log_level:?}: {e}"));
    }
    let metrics_address = keys.metrics_address.as_ref().and_then(|a| {
        MetricsAddress::parse(a)
            .map_err(|e| problems.push(format!("metrics_address = {a:?}: {e}")))
            .ok()
    });
    let admin_socket = keys
        .admin_socket
        .clone()
        .unwrap_or_else(|| default_admin_socket(listen));
    if !admin_socket.is_absolute() || admin_socket == listen {
        problems.push(format!(
            "admin_socket = {:?}: must be an absolute path other than listen",
            admin_socket.display().to_string()
        ));
    }
    if let Some(MetricsAddress::Unix(p)) = &metrics_address
        && (p == listen || *p == admin_socket)
    {
        problems.push(format!(
            "metrics_address = \"unix:{}\": must differ from listen and admin_socket",
            p.display()
        ));
    }
    let log_format = keys.log_format.clone().unwrap_or_else(|| "text".into());
    if log_format != "text" && log_format != "json" {
        problems.push(format!(
            "log_format = {log_format:?}: must be \"text\" or \"json\""
        ));
    }
    Observability {
        log_level,
        log_json: log_format == "json",
        metrics_address,
        admin_socket,
    }
}

/// `registries`: each a registry host, with an optional namespace.
fn search_registries(problems: &mut Problems, keys: &Keys) -> Vec<String> {
    let registries = keys.registries.clone().unwrap_or_default();
    for r in &registries {
        // A registry host has a '.' or ':' or is localhost (else names recorded under it
        // would read back as Docker Hub names); an optional namespace may follow.
        if ImageName::parse_qualified(&format!("{r}/probe")).is_err() {
            problems.push(format!(
                "registries: entry {r:?} is not a registry host[:port][/namespace] (a host needs a '.' or ':' or must be localhost)"
            ));
        }
    }
    registries
}

/// `default_transport`: only `docker` today.
fn default_transport(problems: &mut Problems, keys: &Keys) -> String {
    let t = keys
        .default_transport
        .clone()
        .unwrap_or_else(|| "docker".into());
    if t != "docker" {
        problems.push(format!(
            "default_transport = {t:?}: only \"docker\" is supported"
        ));
    }
    t
}

/// `max_concurrent_downloads`: 1 to 64.
fn max_concurrent_downloads(problems: &mut Problems, keys: &Keys) -> usize {
    let n = keys
        .max_concurrent_downloads
        .unwrap_or(DEFAULT_MAX_CONCURRENT_DOWNLOADS);
    if !(1..=64).contains(&n) {
        problems.push(format!(
            "max_concurrent_downloads = {n}: must be between 1 and 64"
        ));
    }
    n
}

/// `pinned_images` and `pause_image`.
fn pinned(problems: &mut Problems, keys: &Keys) -> Pinned {
    let mut patterns = keys.pinned_images.clone().unwrap_or_default();
    patterns.push(
        keys.pause_image
            .clone()
            .unwrap_or_else(|| DEFAULT_PAUSE_IMAGE.into()),
    );
    Pinned::new(&patterns).unwrap_or_else(|e| {
        problems.push(format!("pinned_images/pause_image: {e}"));
        Pinned::default()
    })
}

/// `pull_progress_timeout`: a duration; 0 turns the watch off.
fn pull_progress_timeout(problems: &mut Problems, keys: &Keys) -> Option<std::time::Duration> {
    match &keys.pull_progress_timeout {
        None => Some(DEFAULT_PULL_PROGRESS_TIMEOUT),
        Some(v) => match v.parse() {
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                problems.push(format!("pull_progress_timeout = {v}: {e}"));
                None
            }
        },
    }
}

/// `credential_helper_cache`: a duration (0: no caching).
fn credential_helper_cache(problems: &mut Problems, keys: &Keys) -> std::time::Duration {
    let default = std::time::Duration::from_secs(60);
    match &keys.credential_helper_cache {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|e| {
            problems.push(format!("credential_helper_cache = {v}: {e}"));
            default
        }),
    }
}

/// `interrupted_pull_grace`: a duration (0: an interrupted pull's blobs go at the next
/// start, as unreferenced blobs do).
fn interrupted_pull_grace(problems: &mut Problems, keys: &Keys) -> std::time::Duration {
    let default = crate::store::intents::DEFAULT_GRACE;
    match &keys.interrupted_pull_grace {
        None => default,
        Some(v) => v.parse().unwrap_or_else(|e| {
            problems.push(format!("interrupted_pull_grace = {v}: {e}"));
            default
        }),
    }
}

/// `registries_conf`, `auth_file`, `certs_dir`: absolute paths, and their content valid.
fn registry_files(problems: &mut Problems, keys: &Keys) -> (registries::Paths, NodeRegistries) {
    let defaults = registries::Paths::default();
    let mut pick = |key: &str, given: &Option<PathBuf>, default: PathBuf| {
        absolute(problems, key, given.clone().unwrap_or(default))
    };
    let paths = registries::Paths {
        registries_conf: pick(
            "registries_conf",
            &keys.registries_conf,
            defaults.registries_conf,
        ),
        auth_file: pick("auth_file", &keys.auth_file, defaults.auth_file),
        certs_dir: pick("certs_dir", &keys.certs_dir, defaults.certs_dir),
    };
    let node = registries::load(&paths).unwrap_or_else(|e| {
        problems.push(format!("registry configuration: {e}"));
        NodeRegistries::default()
    });
    (paths, node)
}

/// `signature_policy`, `signature_policy_dir`, `registries_d`: absolute paths, and every
/// policy, key and registries.d file valid.
fn trust_files(
    problems: &mut Problems,
    keys: &Keys,
) -> (crate::trust::Paths, crate::trust::NodeTrust) {
    let defaults = crate::trust::Paths::default();
    let paths = crate::trust::Paths {
        policy_named: keys.signature_policy.is_some(),
        policy: absolute(
            problems,
            "signature_policy",
            keys.signature_policy.clone().unwrap_or(defaults.policy),
        ),
        policy_dir: keys
            .signature_policy_dir
            .clone()
            .map(|d| absolute(problems, "signature_policy_dir", d)),
        registries_d: absolute(
            problems,
            "registries_d",
            keys.registries_d.clone().unwrap_or(defaults.registries_d),
        ),
    };
    let trust = crate::trust::NodeTrust::load(&paths).unwrap_or_else(|e| {
        problems.push(e);
        crate::trust::NodeTrust::accept_anything()
    });
    (paths, trust)
}

/// `transports`, `import_dirs` and `skopeo`: an enabled local transport needs somewhere
/// to read from.
fn imports(problems: &mut Problems, keys: &Keys) -> ImportPolicy {
    let names = keys.transports.clone().unwrap_or_default();
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
    let import_dirs = keys.import_dirs.clone().unwrap_or_default();
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
        skopeo: keys.skopeo.clone().unwrap_or_else(|| "skopeo".into()),
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
        assert_eq!(c.service.max_concurrent_downloads, 3);
        assert!(c.service.registries.is_empty());
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
        assert_eq!(c.service.registries, vec!["r.io".to_string()]);
        assert_eq!(c.service.max_concurrent_downloads, 5);
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
        assert_eq!(
            c.service.node.conf.search(),
            Some(&["quay.io".to_string()][..])
        );
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
                c.service
                    .pinned
                    .matches(&ImageName::parse_qualified(n).unwrap()),
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
        assert_eq!(
            c.service.progress_timeout,
            Some(DEFAULT_PULL_PROGRESS_TIMEOUT)
        );
        assert_eq!(c.service.min_rate, 0);
        let c = load(
            "pull_progress_timeout = \"1m30s\"\npull_min_rate = 1024\n",
            &[],
        )
        .unwrap();
        assert_eq!(
            c.service.progress_timeout,
            Some(std::time::Duration::from_secs(90))
        );
        assert_eq!(c.service.min_rate, 1024);
        let c = load("pull_progress_timeout = 45\n", &[]).unwrap();
        assert_eq!(
            c.service.progress_timeout,
            Some(std::time::Duration::from_secs(45))
        );
        let c = load(
            "pull_progress_timeout = 45\n",
            &["--pull-progress-timeout", "0"],
        )
        .unwrap();
        assert_eq!(c.service.progress_timeout, None, "0 turns the watch off");
        let c = load("", &["--pull-progress-timeout", "500ms"]).unwrap();
        assert_eq!(
            c.service.progress_timeout,
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
        assert!(c.service.imports.transports.is_empty());
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
            c.service.imports.transports,
            [LocalTransport::Dir, LocalTransport::OciArchive]
        );
        assert_eq!(
            c.service.imports.import_dirs,
            [PathBuf::from("/srv/images")]
        );
    }
}
