//! Conversions between proto messages and core types.

use crate::image::{FsUsage, ImageInfo, ImageUser};
use crate::proto;
use crate::registry::AuthFields;

pub fn image(info: ImageInfo) -> proto::Image {
    let (uid, username) = match info.user {
        ImageUser::None => (None, String::new()),
        ImageUser::Uid(u) => (Some(proto::Int64Value { value: u }), String::new()),
        ImageUser::Name(n) => (None, n),
    };
    proto::Image {
        spec: Some(proto::ImageSpec {
            image: info.id.to_string(),
            ..Default::default()
        }),
        id: info.id.to_string(),
        repo_tags: info.repo_tags,
        repo_digests: info.repo_digests,
        size: info.size,
        uid,
        username,
        pinned: info.pinned,
    }
}

pub fn auth(a: proto::AuthConfig) -> AuthFields {
    AuthFields {
        username: a.username,
        password: a.password,
        auth: a.auth,
        server_address: a.server_address,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }
}

pub fn fs_usage(u: FsUsage) -> proto::FilesystemUsage {
    proto::FilesystemUsage {
        timestamp: u.timestamp_nanos,
        fs_id: Some(proto::FilesystemIdentifier {
            mountpoint: u.mountpoint.display().to_string(),
        }),
        used_bytes: Some(proto::UInt64Value {
            value: u.used_bytes,
        }),
        inodes_used: Some(proto::UInt64Value {
            value: u.inodes_used,
        }),
    }
}

/// The image name of an optional filter (empty means no filter).
pub fn filter_name(filter: Option<proto::ImageFilter>) -> String {
    filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .unwrap_or_default()
}
