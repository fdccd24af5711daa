//! The socket's life and serving: create the directory, replace a stale socket, set its
//! mode, serve CRI until shutdown, remove the socket. Knows nothing about images or config.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::{Connected, UdsConnectInfo};

use crate::grpc::{CriImageService, ImageServer, VersionService};
use crate::http2::AnyAuthority;
use crate::proto::image_service_server::ImageServiceServer;
use crate::proto::runtime_service_server::RuntimeServiceServer;

/// Largest message accepted or sent, as kubelet and crictl use.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// Binds the socket: its directory is created, a stale socket (nothing listening) is
/// replaced, a live one or a non-socket file is refused; mode 0660.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    bind_with_mode(path, 0o660)
}

/// [`bind`] with another mode (the admin socket is 0600).
pub fn bind_with_mode(path: &Path, mode: u32) -> std::io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(std::io::Error::other(format!(
                "{} exists and is not a socket",
                path.display()
            )));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::other(format!(
                "{} is in use by a running server",
                path.display()
            )));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Serves CRI on `listener` until `shutdown` completes, then lets in-flight calls finish.
/// Every connection goes through [`AnyAuthority`], so clients that send the socket path
/// as `:authority` are answered like any other.
pub async fn serve(
    listener: UnixListener,
    image: CriImageService,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(ImageServer::new(
            ImageServiceServer::new(image.clone())
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            image,
            MAX_MESSAGE,
        ))
        .add_service(RuntimeServiceServer::new(VersionService))
        .serve_with_incoming_shutdown(
            UnixListenerStream::new(listener).map(|conn| conn.map(AnyAuthority::new)),
            shutdown,
        )
        .await
}

impl Connected for AnyAuthority<UnixStream> {
    type ConnectInfo = UdsConnectInfo;

    fn connect_info(&self) -> UdsConnectInfo {
        self.get_ref().connect_info()
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the daemon can still be stopped by SIGKILL.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
        _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
    }
}

/// The SIGHUP stream, installed now (before the socket is served, so a SIGHUP that
/// arrives once the daemon is ready can no longer kill it).
pub fn hangups() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
}

/// Keeps SIGXFSZ from killing the daemon. Under a file-size limit (RLIMIT_FSIZE, e.g.
/// systemd's `LimitFSIZE=`) a write past it raises SIGXFSZ, whose default action ends the
/// process mid-pull; with a handler installed the write fails with EFBIG instead, which
/// the store reports as ResourceExhausted and cleans up like a full disk. The handler
/// stays installed for the life of the process (tokio never removes one); the returned
/// stream only counts the signals and may be dropped.
pub fn survive_file_size_limit() -> std::io::Result<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(
        rustix::process::Signal::XFSZ.as_raw(),
    ))
}
