//! The cri-imaged binary: parse flags and config, open the store, serve until a signal.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cri_imaged::config::{Cli, Config};
use cri_imaged::grpc::CriImageService;
use cri_imaged::image::{ImageService, Settings};
use cri_imaged::oci::Platform;
use cri_imaged::registry::RegistryClient;
use cri_imaged::store::Store;
use cri_imaged::{daemon, telemetry};

/// sysexits' EX_CONFIG-style code for a bad configuration.
const EXIT_CONFIG: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cri-imaged: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    telemetry::init(&config.log_level);
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
    let store = Store::open(&config.root)
        .with_context(|| format!("opening store {}", config.root.display()))?;
    let registry = RegistryClient::new(config.insecure.clone(), Platform::current());
    let settings = Settings {
        registries: config.registries.clone(),
        default_transport: config.default_transport.clone(),
        max_concurrent_downloads: config.max_concurrent_downloads,
        imports: config.imports.clone(),
    };
    let image = ImageService::new(store, registry, settings);
    let listener = daemon::bind(&config.listen)
        .with_context(|| format!("listening on {}", config.listen.display()))?;
    tracing::info!(socket = %config.listen.display(), root = %config.root.display(), "serving CRI image service");
    let stopping = image.clone();
    let closing = image.clone();
    let shutdown = async move {
        daemon::signal().await;
        stopping.shutdown();
    };
    let served = daemon::serve(listener, CriImageService::new(image), shutdown).await;
    let _ = std::fs::remove_file(&config.listen);
    // Cancelled pulls have let go of their work; let the store finish what it started.
    closing.close().await;
    served.context("serving gRPC")?;
    tracing::info!("stopped");
    Ok(())
}
