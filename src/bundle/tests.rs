//! The runtime spec from image configs, and users resolved inside a rootfs that tries to
//! point outside it.

use std::os::unix::fs::symlink;

use serde_json::json;

use super::spec::{KEY_ANNOTATION, runtime_spec};
use super::user::{User, resolve};

fn rootfs(passwd: &str, group: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("etc")).unwrap();
    std::fs::write(dir.path().join("etc/passwd"), passwd).unwrap();
    std::fs::write(dir.path().join("etc/group"), group).unwrap();
    dir
}

const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\n";
const GROUP: &str = "root:x:0:\napp:x:1001:\nwheel:x:10:app,other\ndocker:x:998:app\n";

#[test]
fn users_resolve_as_runc_resolves_them() {
    let r = rootfs(PASSWD, GROUP);
    let user = |spec: &str| resolve(spec, r.path());
    let u = |uid, gid, extra: &[u32]| User {
        uid,
        gid,
        additional_gids: extra.to_vec(),
    };
    assert_eq!(user("").unwrap(), u(0, 0, &[]));
    assert_eq!(user("app").unwrap(), u(1000, 1001, &[10, 998]));
    assert_eq!(user("1000").unwrap(), u(1000, 1001, &[10, 998]));
    assert_eq!(
        user("4242").unwrap(),
        u(4242, 0, &[]),
        "a uid not in passwd"
    );
    assert_eq!(user("app:wheel").unwrap(), u(1000, 10, &[]));
    assert_eq!(user("app:77").unwrap(), u(1000, 77, &[]));
    assert_eq!(user("5:6").unwrap(), u(5, 6, &[]));
    let e = user("nobody").unwrap_err();
    assert!(e.contains("\"nobody\"") && e.contains("/etc/passwd"), "{e}");
    let e = user("app:staff").unwrap_err();
    assert!(e.contains("\"staff\"") && e.contains("/etc/group"), "{e}");
}

#[test]
fn an_image_passwd_that_points_outside_stays_inside() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
    let r = tempfile::tempdir().unwrap();
    std::fs::create_dir(r.path().join("etc")).unwrap();
    // Absolute and relative links out of the rootfs: resolved inside it, they name
    // nothing, so the user is unknown (not the host's file).
    symlink(outside.path().join("passwd"), r.path().join("etc/passwd")).unwrap();
    let e = resolve("evil", r.path()).unwrap_err();
    assert!(e.contains("not in the image's /etc/passwd"), "{e}");
    std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
    let up = "../".repeat(20) + outside.path().join("passwd").to_str().unwrap();
    symlink(up, r.path().join("etc/passwd")).unwrap();
    assert!(resolve("evil", r.path()).is_err());
}

#[test]
fn the_spec_takes_the_process_from_the_image_config() {
    let r = rootfs(PASSWD, GROUP);
    let config = json!({"config": {
        "Entrypoint": ["/bin/app", "--serve"],
        "Cmd": ["--port", "80"],
        "Env": ["A=1"],
        "WorkingDir": "/srv",
        "User": "app",
    }});
    let spec = runtime_spec(&config, r.path(), "bundle-k").unwrap();
    let p = &spec["process"];
    assert_eq!(p["args"], json!(["/bin/app", "--serve", "--port", "80"]));
    assert_eq!(
        p["env"],
        json!([
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "A=1"
        ])
    );
    assert_eq!(p["cwd"], "/srv");
    assert_eq!(p["terminal"], false);
    assert_eq!(
        p["user"],
        json!({"uid": 1000, "gid": 1001, "additionalGids": [10, 998]})
    );
    assert_eq!(spec["root"], json!({"path": "rootfs", "readonly": false}));
    assert_eq!(spec["annotations"][KEY_ANNOTATION], "bundle-k");
    assert!(spec["linux"]["maskedPaths"].as_array().unwrap().len() >= 10);

    let cmd_only = json!({"config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]}});
    let spec = runtime_spec(&cmd_only, r.path(), "k").unwrap();
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    assert_eq!(
        spec["process"]["env"],
        json!(["PATH=/bin"]),
        "the image's PATH kept"
    );
    assert_eq!(spec["process"]["cwd"], "/");
}

#[test]
fn configs_that_cannot_run_are_refused_naming_the_field() {
    let r = rootfs(PASSWD, GROUP);
    let cases = [
        (json!({"config": {}}), "neither Entrypoint nor Cmd"),
        (json!({}), "neither Entrypoint nor Cmd"),
        (json!({"config": {"Cmd": "sh"}}), "config.Cmd"),
        (json!({"config": {"Cmd": ["sh"], "Env": [1]}}), "config.Env"),
        (
            json!({"config": {"Cmd": ["sh"], "WorkingDir": "srv"}}),
            "WorkingDir \"srv\"",
        ),
        (
            json!({"config": {"Cmd": ["sh"], "User": "ghost"}}),
            "\"ghost\"",
        ),
    ];
    for (config, want) in cases {
        let e = runtime_spec(&config, r.path(), "k").unwrap_err();
        assert!(e.contains(want), "{config}: {e}");
    }
}
