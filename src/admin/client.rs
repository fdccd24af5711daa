//! The client side of the admin socket: one HTTP/1 request over a unix socket (hyper), for
//! `cri-imaged pulls` (`GET /pulls`) and `cri-imaged bundle` (the mount API).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::PullsResponse;
use super::containers::{ErrorBody, PrepareRequest};
use crate::image::containers::Prepared;
use crate::snapshot::ContainerRecord;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the admin socket {}: {source} (is cri-imaged running, and are you root?)",
        socket.display()
    )]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("admin socket {}: {reason}", socket.display())]
    Http { socket: PathBuf, reason: String },
    #[error("admin socket {}: GET {path} answered HTTP {status}", socket.display())]
    Status {
        socket: PathBuf,
        path: String,
        status: u16,
    },
    /// The daemon refused the call; `message` is its own.
    #[error("{message} ({code})")]
    Refused { code: String, message: String },
    #[error("admin socket {}: {path}: invalid JSON: {source}", socket.display())]
    Json {
        socket: PathBuf,
        path: String,
        source: serde_json::Error,
    },
}

/// `GET path` on the admin socket; the body of a 200 answer.
pub async fn get(socket: &Path, path: &str) -> Result<Bytes, ClientError> {
    let (status, body) = request(socket, hyper::Method::GET, path, Bytes::new()).await?;
    if status != 200 {
        return Err(ClientError::Status {
            socket: socket.to_owned(),
            path: path.to_owned(),
            status,
        });
    }
    Ok(body)
}

/// One request on the admin socket: the answer's status and body.
async fn request(
    socket: &Path,
    method: hyper::Method,
    path: &str,
    body: Bytes,
) -> Result<(u16, Bytes), ClientError> {
    let http = |reason: String| ClientError::Http {
        socket: socket.to_owned(),
        reason,
    };
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|source| ClientError::Connect {
            socket: socket.to_owned(),
            source,
        })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| http(e.to_string()))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| http(e.to_string()))?
        .to_bytes();
    conn.abort();
    Ok((status, body))
}

/// A 2xx answer's JSON, or the daemon's refusal.
fn answer<T: serde::de::DeserializeOwned>(
    socket: &Path,
    path: &str,
    (status, body): (u16, Bytes),
) -> Result<T, ClientError> {
    if !(200..300).contains(&status) {
        return Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => ClientError::Refused {
                code: e.code,
                message: e.message,
            },
            Err(_) => ClientError::Status {
                socket: socket.to_owned(),
                path: path.to_owned(),
                status,
            },
        });
    }
    serde_json::from_slice(&body).map_err(|source| ClientError::Json {
        socket: socket.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// `POST /containers`: a container snapshot `key` on `image`.
pub async fn prepare_container(
    socket: &Path,
    key: &str,
    image: &str,
) -> Result<Prepared, ClientError> {
    let body = serde_json::to_vec(&PrepareRequest {
        key: key.to_owned(),
        image: image.to_owned(),
    })
    .unwrap_or_default();
    let got = request(socket, hyper::Method::POST, "/containers", body.into()).await?;
    answer(socket, "/containers", got)
}

/// `DELETE /containers/{key}`.
pub async fn remove_container(socket: &Path, key: &str) -> Result<ContainerRecord, ClientError> {
    let path = format!("/containers/{key}");
    let got = request(socket, hyper::Method::DELETE, &path, Bytes::new()).await?;
    answer(socket, &path, got)
}

/// The pulls in flight, from `GET /pulls`.
pub async fn pulls(socket: &Path) -> Result<PullsResponse, ClientError> {
    let body = get(socket, "/pulls").await?;
    serde_json::from_slice(&body).map_err(|source| ClientError::Json {
        socket: socket.to_owned(),
        path: "/pulls".into(),
        source,
    })
}
