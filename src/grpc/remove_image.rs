//! RemoveImage → `ImageService::remove`: the whole image, idempotent.

use tonic::Status;

use super::status;
use crate::image::ImageService;
use crate::proto;

pub async fn handle(
    svc: &ImageService,
    req: proto::RemoveImageRequest,
) -> Result<proto::RemoveImageResponse, Status> {
    let name = req.image.map(|s| s.image).unwrap_or_default();
    svc.remove(&name).await.map_err(status::from_error)?;
    Ok(proto::RemoveImageResponse {})
}
