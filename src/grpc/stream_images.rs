//! StreamImages → `ImageService::list`, sent as a stream of chunks.

use tonic::Status;

use super::{ImageStream, convert, status};
use crate::image::ImageService;
use crate::proto;

/// Images per streamed chunk: keeps each message far below the 16 MiB clients accept.
const CHUNK: usize = 500;
/// From this many images, the memory a stream's messages took is given back after it.
const BIG_LISTING: usize = 1000;

pub async fn handle(
    svc: &ImageService,
    req: proto::StreamImagesRequest,
) -> Result<ImageStream, Status> {
    let filter = convert::filter_name(req.filter);
    let images = svc.list(Some(&filter)).await.map_err(status::from_error)?;
    if images.len() >= BIG_LISTING {
        // The chunks' messages are garbage once sent.
        crate::memory::trim_soon();
    }
    // Each chunk is converted when the stream gets to it, from the shared listing.
    let chunks = images.len().div_ceil(CHUNK);
    Ok(Box::pin(futures_util::stream::iter((0..chunks).map(
        move |i| {
            let chunk = &images[i * CHUNK..images.len().min((i + 1) * CHUNK)];
            Ok(proto::StreamImagesResponse {
                images: chunk.iter().map(convert::image).collect(),
            })
        },
    ))))
}
