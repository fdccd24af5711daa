//! ListImages → `ImageService::list`. The socket serves it through `encoded.rs` (the
//! full listing's bytes kept); both paths build the answer with [`response`].

use tonic::Status;

use super::{convert, status};
use crate::image::{ImageService, Images};
use crate::proto;

/// The answer for `images`.
pub fn response(images: &Images) -> proto::ListImagesResponse {
    proto::ListImagesResponse {
        images: images.iter().map(convert::image).collect(),
    }
}

pub async fn handle(
    svc: &ImageService,
    req: proto::ListImagesRequest,
) -> Result<proto::ListImagesResponse, Status> {
    let filter = convert::filter_name(req.filter);
    let images = svc.list(Some(&filter)).await.map_err(status::from_error)?;
    Ok(response(&images))
}
