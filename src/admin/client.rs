//! The client side of the admin socket: one HTTP/1 GET over a unix socket (hyper), for
//! `cri-imaged pulls`.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::PullsResponse;

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
    #[error("admin socket {}: GET {path}: invalid JSON: {source}", socket.display())]
    Json {
        socket: PathBuf,
        path: String,
        source: serde_json::Error,
    },
}

/// `GET path` on the admin socket; the body of a 200 answer.
pub async fn get(socket: &Path, path: &str) -> Result<Bytes, ClientError> {
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
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
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
    if status != 200 {
        return Err(ClientError::Status {
            socket: socket.to_owned(),
            path: path.to_owned(),
            status,
        });
    }
    Ok(body)
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
