//! The cri-imaged binary: parse flags and config, open the store, serve until a signal.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cri_imaged::config::{Cli, Command, Config};
use cri_imaged::grpc::CriImageService;
use cri_imaged::image::ImageService;
use cri_imaged::oci::Platform;
use cri_imaged::registry::RegistryClient;
use cri_imaged::store::Store;
use cri_imaged::{admin, config, daemon, pulls, registries, telemetry};
use tokio_util::sync::CancellationToken;

/// sysexits' EX_CONFIG-style code for a bad configuration.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    // Before the runtime's threads exist.
    cri_imaged::memory::tune();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(async_main()),
        Err(e) => {
            eprintln!("cri-imaged: starting the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        Some(Command::Pulls(args)) => return pulls_command(args).await,
        Some(Command::Check(args)) => return check_command(args),
        Some(Command::Bundle(args)) => return bundle_command(args).await,
        None => {}
    }
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-imaged: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(&config.log_level, config.log_json);
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("cri-imaged: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let store = Store::open_with(&config.root, config.store)
        .with_context(|| format!("opening store {}", config.root.display()))?;
    // Loading left the parsed index.json and manifests behind as garbage.
    cri_imaged::memory::trim();
    let proxy = cri_imaged::registry::ProxyConf::from_env()
        .context("reading the proxy variables of the environment")?;
    if proxy.is_set() {
        tracing::info!(proxies = %proxy.describe(), "registry requests go through HTTP proxies");
    }
    let registry = RegistryClient::with_proxy(config.insecure.clone(), Platform::current(), proxy);
    log_registry_files(&config.registry_paths, &config.service.node);
    let image = {
        let snapshots = if config.unpack {
            let s =
                cri_imaged::snapshot::Snapshots::open(&config.snapshot_root, Default::default())
                    .with_context(|| {
                        format!(
                            "opening the snapshots in {}",
                            config.snapshot_root.display()
                        )
                    })?;
            Some(s)
        } else {
            None
        };
        ImageService::with_snapshots(store, registry, config.service.clone(), snapshots)
    };
    let hangups = daemon::hangups().context("installing the SIGHUP handler")?;
    let _file_size = daemon::survive_file_size_limit().context("installing the SIGXFSZ handler")?;
    log_trust(&config.service.trust);
    tokio::spawn(reload_on_hangup(
        hangups,
        config.registry_paths.clone(),
        config.trust_paths.clone(),
        image.clone(),
    ));
    let listener = daemon::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen.display()))?;
    let http_stop = CancellationToken::new();
    let http = serve_http(&config, &image, &http_stop).await?;
    tracing::info!(socket = %config.listen.display(), root = %config.root.display(), "serving CRI image service");
    let stopping = image.clone();
    let closing = image.clone();
    let shutdown = async move {
        daemon::signal().await;
        stopping.shutdown();
    };
    let served = daemon::serve(listener, CriImageService::new(image), shutdown).await;
    let _ = std::fs::remove_file(&config.listen);
    http_stop.cancel();
    for task in http {
        let _ = task.await;
    }
    let _ = std::fs::remove_file(&config.admin_socket);
    if let Some(config::MetricsAddress::Unix(p)) = &config.metrics_address {
        let _ = std::fs::remove_file(p);
    }
    // Cancelled pulls have let go of their work; let the store finish what it started.
    closing.close().await;
    served.context("serving gRPC")?;
    tracing::info!("stopped");
    Ok(())
}

fn log_registry_files(paths: &registries::Paths, node: &registries::NodeRegistries) {
    for w in &node.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(
        registries_conf = %paths.registries_conf.display(),
        files = node.conf.files().len(),
        registries = node.conf.registries().len(),
        auth_file = %paths.auth_file.display(),
        credentials = node.auth.len(),
        certs_dir = %paths.certs_dir.display(),
        "registry configuration loaded"
    );
}

fn log_trust(trust: &cri_imaged::trust::NodeTrust) {
    tracing::info!(
        policy = %trust.global_file(),
        namespaces = trust.namespaces().count(),
        registries_d_files = trust.registries_d.files.len(),
        "signature policy loaded"
    );
}

/// On SIGHUP, reads registries.conf, the auth file and certs.d, and the signature policies
/// and registries.d, again and swaps each in; pulls in flight keep the configuration they
/// started with. A bad file keeps the old configuration of its kind, and says why.
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    paths: registries::Paths,
    trust_paths: cri_imaged::trust::Paths,
    image: ImageService,
) {
    while hangups.recv().await.is_some() {
        let p = trust_paths.clone();
        match tokio::task::spawn_blocking(move || cri_imaged::trust::NodeTrust::load(&p)).await {
            Ok(Ok(trust)) => {
                log_trust(&trust);
                image.reload_trust(trust);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reload failed; keeping the previous signature policy")
            }
            Err(e) => tracing::error!(error = %e, "signature policy reload failed"),
        }
        tracing::info!("SIGHUP received, reloading the registry configuration");
        let p = paths.clone();
        match tokio::task::spawn_blocking(move || registries::load(&p)).await {
            Ok(Ok(node)) => {
                log_registry_files(&paths, &node);
                image.reload_registries(node);
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reload failed; keeping the previous registry configuration")
            }
            Err(e) => tracing::error!(error = %e, "reload failed"),
        }
    }
}

/// Starts the admin socket (always) and the metrics listener (when configured).
async fn serve_http(
    config: &Config,
    image: &ImageService,
    stop: &CancellationToken,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    let admin_listener = admin::bind_admin(&config.admin_socket).with_context(|| {
        format!(
            "listening on admin socket {}",
            config.admin_socket.display()
        )
    })?;
    let mut servers = vec![(
        admin_listener,
        admin::admin_router(image.clone()),
        format!("unix:{}", config.admin_socket.display()),
    )];
    if let Some(addr) = &config.metrics_address {
        let l = admin::bind_metrics(addr)
            .await
            .with_context(|| format!("listening for metrics on {addr}"))?;
        servers.push((l, admin::metrics_router(image.clone()), addr.to_string()));
        tracing::info!(address = %addr, "serving /metrics");
    }
    for (listener, router, what) in servers {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = admin::serve(listener, router, stop.cancelled_owned()).await {
                tracing::error!(address = %what, error = %e, "HTTP endpoint failed");
            }
        }));
    }
    Ok(tasks)
}

/// The admin socket a client command talks to: the one given, else the configuration's.
fn admin_socket(
    given: Option<&std::path::Path>,
    config_file: &std::path::Path,
) -> Result<std::path::PathBuf, ExitCode> {
    match given {
        Some(s) => Ok(s.to_owned()),
        None => config::admin_socket_of(config_file).map_err(|e| {
            eprintln!("cri-imaged: {e}");
            ExitCode::from(EXIT_CONFIG)
        }),
    }
}

/// `cri-imaged pulls`: a client of the running daemon's admin socket.
async fn pulls_command(args: &cri_imaged::config::PullsArgs) -> ExitCode {
    let socket = match admin_socket(args.admin_socket.as_deref(), &args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match pulls::run(args, &socket).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-imaged pulls: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cri-imaged bundle IMAGE DIR` / `--remove DIR`: a client of the admin socket.
async fn bundle_command(args: &cri_imaged::config::BundleArgs) -> ExitCode {
    let socket = match admin_socket(args.admin_socket.as_deref(), &args.config) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let done = match (args.remove, args.targets.as_slice()) {
        (false, [image, dir]) => cri_imaged::bundle::create(&socket, image, dir.as_ref())
            .await
            .map(|dir| println!("{}", dir.display())),
        (true, [dir]) => cri_imaged::bundle::remove(&socket, dir.as_ref()).await,
        _ => {
            eprintln!("usage: cri-imaged bundle IMAGE DIR | cri-imaged bundle --remove DIR");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-imaged bundle: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `cri-imaged check [--repair]`: verifies the store offline; exit 1 on any problem.
fn check_command(args: &cri_imaged::config::CheckArgs) -> ExitCode {
    // The roots given, else the configuration file's (read only then).
    let (root, snapshot_root) = match (&args.root, &args.snapshot_root) {
        (Some(r), s) => (r.clone(), s.clone().unwrap_or_else(|| r.clone())),
        (None, s) => match config::roots_of(&args.config) {
            Ok((r, from_file)) => (r, s.clone().unwrap_or(from_file)),
            Err(e) => {
                eprintln!("cri-imaged: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let result = if args.repair {
        cri_imaged::store::check::repair(&root)
    } else {
        cri_imaged::store::check::check(&root)
    };
    let report = match result {
        Ok(r) => r,
        Err(e @ cri_imaged::store::StoreError::Locked { .. }) => {
            eprintln!("cri-imaged check: refusing to repair: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("cri-imaged check: {e}");
            return ExitCode::FAILURE;
        }
    };
    let snaps = cri_imaged::snapshot::check::check(&snapshot_root);
    for line in &report.repaired {
        println!("repaired: {line}");
    }
    for line in report.notes.iter().chain(&snaps.notes) {
        println!("note: {line}");
    }
    for line in report.problems.iter().chain(&snaps.problems) {
        println!("problem: {line}");
    }
    let problems = report.problems.len() + snaps.problems.len();
    println!(
        "{}: {} image name(s), {} blob(s), {} snapshot(s), {} container snapshot(s) checked, {problems} problem(s)",
        root.display(),
        report.names,
        report.blobs,
        snaps.snapshots,
        snaps.containers,
    );
    if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
