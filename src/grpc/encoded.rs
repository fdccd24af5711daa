//! ListImages answered from bytes encoded once per listing.
//!
//! kubelet lists images every few seconds and pulls rarely; with thousands of images,
//! building and encoding a `ListImagesResponse` (one `proto::Image` per image, every name
//! cloned, then serialized) was most of a call's cost. The core already keeps one listing
//! per records snapshot (`image::list`); here its encoding is kept beside it and reused
//! while the core hands back the same listing (`Arc::ptr_eq`), so an unchanged listing is
//! answered with one copy of bytes. A filtered listing is encoded each time (it is small).
//!
//! [`ImageServer`] wraps the generated `ImageServiceServer`: the ListImages path is served
//! here, with a codec whose encoder writes those bytes as the message; every other path
//! goes to the generated server. The bytes are a `ListImagesResponse` encoded by prost
//! from the same proto, so the wire is the same as the generated path's.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes};
use prost::Message as _;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, EncodeBuf, Encoder};
use tonic::codegen::{Body, BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};

use super::{CriImageService, convert, observe, status};
use crate::image::Images;
use crate::proto;

/// The gRPC path this module answers.
const LIST_IMAGES: &str = "/runtime.v1.ImageService/ListImages";
/// From this size, the memory an answer's send buffer took is given back after it.
const BIG_ANSWER: usize = 1 << 20;

/// The last full listing's encoding, for the listing it was made from.
#[derive(Default, Clone)]
pub struct EncodedListing {
    last: Arc<Mutex<Option<(Images, Bytes)>>>,
}

impl EncodedListing {
    fn get(&self, images: &Images) -> Option<Bytes> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match &*last {
            Some((i, bytes)) if Arc::ptr_eq(i, images) => Some(bytes.clone()),
            _ => None,
        }
    }

    fn set(&self, images: Images, bytes: Bytes) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((images, bytes));
    }
}

fn encode(images: &Images) -> Bytes {
    Bytes::from(super::list_images::response(images).encode_to_vec())
}

/// ListImages → `ImageService::list`, answered as an encoded `ListImagesResponse`.
async fn list(svc: &CriImageService, req: proto::ListImagesRequest) -> Result<Bytes, Status> {
    let filter = convert::filter_name(req.filter);
    let images = svc
        .image
        .list(Some(&filter))
        .await
        .map_err(status::from_error)?;
    if !filter.is_empty() {
        return Ok(encode(&images));
    }
    if let Some(bytes) = svc.listing.get(&images) {
        if bytes.len() >= BIG_ANSWER {
            // tonic copies the bytes into its send buffer, garbage once sent.
            crate::memory::trim_soon();
        }
        return Ok(bytes);
    }
    let bytes = encode(&images);
    svc.listing.set(images, bytes.clone());
    Ok(bytes)
}

/// Messages whose bytes are already encoded.
struct BytesEncoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len());
        dst.put_slice(&item);
        Ok(())
    }
}

/// Requests decoded by prost; answers written as they are.
struct ListCodec;

/// prost's decoder for `ListImagesRequest`.
type RequestDecoder =
    <tonic_prost::ProstCodec<proto::ListImagesRequest, proto::ListImagesRequest> as Codec>::Decoder;

impl Codec for ListCodec {
    type Encode = Bytes;
    type Decode = proto::ListImagesRequest;
    type Encoder = BytesEncoder;
    type Decoder = RequestDecoder;

    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }

    fn decoder(&mut self) -> RequestDecoder {
        tonic_prost::ProstCodec::<proto::ListImagesRequest, proto::ListImagesRequest>::raw_decoder(
            BufferSettings::default(),
        )
    }
}

struct ListImagesSvc(CriImageService);

impl UnaryService<proto::ListImagesRequest> for ListImagesSvc {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<proto::ListImagesRequest>) -> Self::Future {
        let svc = self.0.clone();
        Box::pin(async move {
            let handler = list(&svc, request.into_inner());
            observe::timed(svc.image.metrics(), "ListImages", handler)
                .await
                .map(tonic::Response::new)
        })
    }
}

/// The CRI image service: ListImages from [`EncodedListing`], the rest from `inner` (the
/// generated server).
#[derive(Clone)]
pub struct ImageServer<S> {
    inner: S,
    svc: CriImageService,
    max_message: usize,
}

impl<S> ImageServer<S> {
    pub fn new(inner: S, svc: CriImageService, max_message: usize) -> ImageServer<S> {
        ImageServer {
            inner,
            svc,
            max_message,
        }
    }
}

impl<S, B> Service<http::Request<B>> for ImageServer<S>
where
    S: Service<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
            Future = BoxFuture<http::Response<tonic::body::Body>, Infallible>,
        >,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != LIST_IMAGES {
            return self.inner.call(req);
        }
        let (svc, max) = (self.svc.clone(), self.max_message);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ListCodec)
                .apply_max_message_size_config(Some(max), Some(max));
            Ok(grpc.unary(ListImagesSvc(svc), req).await)
        })
    }
}

impl<S: NamedService> NamedService for ImageServer<S> {
    const NAME: &'static str = S::NAME;
}
