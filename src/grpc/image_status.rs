//! ImageStatus → `ImageService::status`. A missing image is OK with `image` unset.

use tonic::Status;

use super::{convert, status};
use crate::image::ImageService;
use crate::proto;

pub async fn handle(
    svc: &ImageService,
    req: proto::ImageStatusRequest,
) -> Result<proto::ImageStatusResponse, Status> {
    let name = req.image.map(|s| s.image).unwrap_or_default();
    let info = svc.status(&name).await.map_err(status::from_error)?;
    let extra = match (&info, req.verbose) {
        (Some(i), true) => crate::image::verbose_info(i, svc.root())
            .into_iter()
            .collect(),
        _ => Default::default(),
    };
    Ok(proto::ImageStatusResponse {
        image: info.as_ref().map(convert::image),
        info: extra,
    })
}
