//! PullImage → `ImageService::pull`. `image_ref` is the image ID (config digest).

use tonic::Status;

use super::{convert, status};
use crate::image::{ImageService, PullRequest};
use crate::proto;

pub async fn handle(
    svc: &ImageService,
    req: proto::PullImageRequest,
) -> Result<proto::PullImageResponse, Status> {
    let image = req.image.map(|s| s.image).unwrap_or_default();
    let namespace = req
        .sandbox_config
        .and_then(|c| c.metadata)
        .map(|m| m.namespace)
        .filter(|ns| !ns.is_empty());
    let pull = PullRequest {
        image,
        auth: req.auth.map(convert::auth),
        namespace,
    };
    let id = svc.pull(pull).await.map_err(status::from_error)?;
    Ok(proto::PullImageResponse {
        image_ref: id.to_string(),
    })
}
