//! ImageFsInfo → `ImageService::fs_info`: one entry, reported for images and containers.

use super::convert;
use crate::image::ImageService;
use crate::proto;

pub fn handle(svc: &ImageService) -> proto::ImageFsInfoResponse {
    let usage = convert::fs_usage(svc.fs_info());
    proto::ImageFsInfoResponse {
        image_filesystems: vec![usage.clone()],
        container_filesystems: vec![usage],
    }
}
