//! The mount API on the admin socket, its only calls that change state (ARCHITECTURE.md:
//! root only, the socket is 0600, never on the metrics address):
//! `POST /containers` `{"key", "image"}` prepares a container snapshot and answers its
//! mounts and the image config; `DELETE /containers/{key}` removes it; `GET /containers`
//! lists them. Errors answer the HTTP status of their kind with `{"code", "message"}`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use crate::image::{Error, ImageService};
use crate::kind::Code;
use crate::snapshot::ContainerRecord;

/// The body of `POST /containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrepareRequest {
    pub key: String,
    /// An image name or ID, as ImageStatus takes it.
    pub image: String,
}

/// The body of `GET /containers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainersResponse {
    pub containers: Vec<ContainerRecord>,
}

/// The body of an error answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The gRPC code name the same failure has on the CRI socket.
    pub code: String,
    pub message: String,
}

fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json")],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

fn failure(e: Error) -> Response {
    let code = e.kind().code();
    let status = match code {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::ResourceExhausted => StatusCode::INSUFFICIENT_STORAGE,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    };
    json(
        status,
        &ErrorBody {
            code: format!("{code:?}"),
            message: e.to_string(),
        },
    )
}

pub async fn prepare(State(image): State<ImageService>, body: axum::body::Bytes) -> Response {
    let req: PrepareRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                &ErrorBody {
                    code: "InvalidArgument".into(),
                    message: format!("POST /containers wants {{\"key\": …, \"image\": …}}: {e}"),
                },
            );
        }
    };
    match image.prepare_container(&req.key, &req.image).await {
        Ok(p) => json(StatusCode::CREATED, &p),
        Err(e) => failure(e),
    }
}

pub async fn remove(State(image): State<ImageService>, Path(key): Path<String>) -> Response {
    match image.remove_container(&key).await {
        Ok(removed) => json(StatusCode::OK, &removed),
        Err(e) => failure(e),
    }
}

pub async fn list(State(image): State<ImageService>) -> Response {
    json(
        StatusCode::OK,
        &ContainersResponse {
            containers: image.containers(),
        },
    )
}
