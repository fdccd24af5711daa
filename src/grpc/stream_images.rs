//! StreamImages → `ImageService::list`, sent as a stream of chunks.

use tonic::Status;

use super::{ImageStream, convert, status};
use crate::image::ImageService;
use crate::proto;

/// Images per streamed chunk: keeps each message far below the 16 MiB clients accept.
const CHUNK: usize = 500;

pub async fn handle(
    svc: &ImageService,
    req: proto::StreamImagesRequest,
) -> Result<ImageStream, Status> {
    let filter = convert::filter_name(req.filter);
    let images = svc.list(Some(&filter)).await.map_err(status::from_error)?;
    let mut images: Vec<proto::Image> = images.iter().map(convert::image).collect();
    let mut chunks = Vec::new();
    while !images.is_empty() {
        let rest = images.split_off(images.len().min(CHUNK));
        chunks.push(Ok(proto::StreamImagesResponse { images }));
        images = rest;
    }
    Ok(Box::pin(futures_util::stream::iter(chunks)))
}
