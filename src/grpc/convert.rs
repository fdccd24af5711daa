//! Conversions between proto messages and core types.

use crate::image::{FsUsage, ImageInfo, ImageUser};
use crate::proto;
use crate::registry::AuthFields;

pub fn image(info: &ImageInfo) -> proto::Image {
    let (uid, username) = match &info.user {
        ImageUser::None => (None, String::new()),
        ImageUser::Uid(u) => (Some(proto::Int64Value { value: *u }), String::new()),
        ImageUser::Name(n) => (None, n.clone()),
    };
    let id = info.id.to_string();
    proto::Image {
        spec: Some(proto::ImageSpec {
            image: id.clone(),
            ..Default::default()
        }),
        id,
        repo_tags: info.repo_tags.clone(),
        repo_digests: info.repo_digests.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_config_debug_never_prints_secrets() {
        let a = proto::AuthConfig {
            username: "alice".into(),
            password: "pw-hunter2".into(),
            auth: "YWxpY2U6cHctaHVudGVyMg==".into(),
            server_address: "r.io".into(),
            identity_token: "id-tok-1".into(),
            registry_token: "reg-tok-1".into(),
        };
        let req = proto::PullImageRequest {
            auth: Some(a),
            ..Default::default()
        };
        let printed = format!("{req:?} {req:#?}");
        for secret in [
            "pw-hunter2",
            "YWxpY2U6cHctaHVudGVyMg==",
            "id-tok-1",
            "reg-tok-1",
        ] {
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }
        assert!(
            printed.contains("alice") && printed.contains("r.io") && printed.contains("<redacted>")
        );
    }

    #[test]
    fn user_maps_to_uid_xor_username() {
        let info = |user| crate::image::ImageInfo {
            id: crate::names::ImageId::parse(&format!("sha256:{}", "a".repeat(64))).unwrap(),
            repo_tags: vec![],
            repo_digests: vec![],
            size: 1,
            user,
            config_user: String::new(),
            pinned: false,
            manifest_digest: String::new(),
            manifest_media_type: "".into(),
        };
        let uid0 = image(&info(ImageUser::Uid(0)));
        assert_eq!(
            uid0.uid,
            Some(proto::Int64Value { value: 0 }),
            "uid 0 is set, not absent"
        );
        assert!(uid0.username.is_empty());
        let named = image(&info(ImageUser::Name("www-data".into())));
        assert_eq!((named.uid, named.username.as_str()), (None, "www-data"));
        let none = image(&info(ImageUser::None));
        assert_eq!((none.uid, none.username.as_str()), (None, ""));
    }
}
