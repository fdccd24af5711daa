//! ListImages → `ImageService::list`.

use tonic::Status;

use super::{convert, status};
use crate::image::ImageService;
use crate::proto;

pub async fn handle(
    svc: &ImageService,
    req: proto::ListImagesRequest,
) -> Result<proto::ListImagesResponse, Status> {
    let filter = convert::filter_name(req.filter);
    let images = svc.list(Some(&filter)).await.map_err(status::from_error)?;
    Ok(proto::ListImagesResponse {
        images: images.iter().map(convert::image).collect(),
    })
}
