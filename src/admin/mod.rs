//! The daemon's HTTP endpoints (axum over HTTP/1): `/metrics` (OpenMetrics text) on the
//! metrics address, and `/pulls` (the pulls in flight, JSON) plus `/metrics` on the
//! root-only admin socket — all read-only. The one exception, on the admin socket only:
//! [`containers`], the mount API, which prepares and removes container snapshots.
//! [`client`] is the other end, used by `cri-imaged pulls` and `cri-imaged bundle`.

pub mod client;
pub mod containers;

use std::future::Future;
use std::path::Path;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{delete, get};
use serde::{Deserialize, Serialize};

use crate::config::MetricsAddress;
use crate::image::{ImageService, PullSnapshot};
use crate::metrics;

/// The body of `GET /pulls`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullsResponse {
    /// Every pull in flight, oldest first.
    pub pulls: Vec<PullSnapshot>,
}

async fn serve_metrics(State(image): State<ImageService>) -> impl IntoResponse {
    let (images, bytes) = image.store_totals();
    let m = image.metrics();
    m.set_state(
        image.pulls_in_flight().len(),
        image.pull_waiters(),
        images,
        bytes,
    );
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], m.encode())
}

async fn serve_pulls(State(image): State<ImageService>) -> impl IntoResponse {
    let body = PullsResponse {
        pulls: image.pulls_in_flight(),
    };
    (
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_string(&body).unwrap_or_default(),
    )
}

/// `/metrics` only: for the metrics address.
pub fn metrics_router(image: ImageService) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(serve_metrics))
        .with_state(image)
}

/// `/metrics`, `/pulls` and the mount API (`/containers`): for the admin socket.
pub fn admin_router(image: ImageService) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/pulls", get(serve_pulls))
        .route(
            "/containers",
            get(containers::list).post(containers::prepare),
        )
        .route("/containers/{key}", delete(containers::remove))
        .with_state(image)
}

/// A bound listener for one of the endpoints.
pub enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener),
}

/// Binds the metrics address (a unix socket gets mode 0660, like the CRI socket).
pub async fn bind_metrics(addr: &MetricsAddress) -> std::io::Result<Listener> {
    match addr {
        MetricsAddress::Tcp(a) => Ok(Listener::Tcp(tokio::net::TcpListener::bind(a).await?)),
        MetricsAddress::Unix(p) => Ok(Listener::Unix(crate::daemon::bind_with_mode(p, 0o660)?)),
    }
}

/// Binds the admin socket, mode 0600 (root only when the daemon runs as root).
pub fn bind_admin(path: &Path) -> std::io::Result<Listener> {
    Ok(Listener::Unix(crate::daemon::bind_with_mode(path, 0o600)?))
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: Listener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match listener {
        Listener::Tcp(l) => {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Listener::Unix(l) => {
            axum::serve(l, router)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}
