//! The wire layer: CRI `runtime.v1` over tonic. Every RPC is one line here that calls its
//! file's `handle`, which validates, converts, makes exactly one core call and converts
//! back. No resolution, store access or locking happens in this module.

mod convert;
mod encoded;
mod image_fs_info;
mod image_status;
mod list_images;
mod observe;
mod pull_image;
mod remove_image;
pub mod status;
mod stream_images;
mod version;

use std::pin::Pin;

use tonic::{Request, Response, Status};

use crate::image::ImageService;
use crate::proto;

pub use encoded::ImageServer;
pub use version::VersionService;

/// The CRI image service served over gRPC.
#[derive(Clone)]
pub struct CriImageService {
    image: ImageService,
    /// The full listing's encoding (`encoded.rs`).
    listing: encoded::EncodedListing,
}

impl CriImageService {
    pub fn new(image: ImageService) -> CriImageService {
        CriImageService {
            image,
            listing: encoded::EncodedListing::default(),
        }
    }
}

type ImageStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<proto::StreamImagesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl proto::image_service_server::ImageService for CriImageService {
    async fn list_images(
        &self,
        req: Request<proto::ListImagesRequest>,
    ) -> Result<Response<proto::ListImagesResponse>, Status> {
        let handler = list_images::handle(&self.image, req.into_inner());
        observe::timed(self.image.metrics(), "ListImages", handler)
            .await
            .map(Response::new)
    }

    type StreamImagesStream = ImageStream;

    async fn stream_images(
        &self,
        req: Request<proto::StreamImagesRequest>,
    ) -> Result<Response<ImageStream>, Status> {
        let handler = stream_images::handle(&self.image, req.into_inner());
        observe::timed(self.image.metrics(), "StreamImages", handler)
            .await
            .map(Response::new)
    }

    async fn image_status(
        &self,
        req: Request<proto::ImageStatusRequest>,
    ) -> Result<Response<proto::ImageStatusResponse>, Status> {
        let handler = image_status::handle(&self.image, req.into_inner());
        observe::timed(self.image.metrics(), "ImageStatus", handler)
            .await
            .map(Response::new)
    }

    async fn pull_image(
        &self,
        req: Request<proto::PullImageRequest>,
    ) -> Result<Response<proto::PullImageResponse>, Status> {
        let handler = pull_image::handle(&self.image, req.into_inner());
        observe::timed(self.image.metrics(), "PullImage", handler)
            .await
            .map(Response::new)
    }

    async fn remove_image(
        &self,
        req: Request<proto::RemoveImageRequest>,
    ) -> Result<Response<proto::RemoveImageResponse>, Status> {
        let handler = remove_image::handle(&self.image, req.into_inner());
        observe::timed(self.image.metrics(), "RemoveImage", handler)
            .await
            .map(Response::new)
    }

    async fn image_fs_info(
        &self,
        _req: Request<proto::ImageFsInfoRequest>,
    ) -> Result<Response<proto::ImageFsInfoResponse>, Status> {
        let handler = async { Ok(image_fs_info::handle(&self.image)) };
        observe::timed(self.image.metrics(), "ImageFsInfo", handler)
            .await
            .map(Response::new)
    }
}
