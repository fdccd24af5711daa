//! The runtime spec (`config.json`) of a bundle: runc's own default spec (`runc spec`:
//! its mounts, namespaces, masked and read-only paths, capabilities, device rule) with the
//! process taken from the image config — args = Entrypoint + Cmd, Env (PATH added when the
//! image sets none), WorkingDir, User resolved in the image — and `terminal: false`.

use std::path::Path;

use serde_json::{Value, json};

use super::user;

/// Where `bundle --remove` finds the container snapshot's key.
pub const KEY_ANNOTATION: &str = "io.cri-imaged.container-key";
/// The PATH a container gets when its image sets none (containerd's and runc's).
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn strings(v: &Value) -> Result<Vec<String>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or("not a string".to_owned())
            })
            .collect(),
        _ => Err("not a list of strings".into()),
    }
}

/// The spec for the image whose config is `image_config`, its rootfs mounted at `rootfs`.
pub fn runtime_spec(image_config: &Value, rootfs: &Path, key: &str) -> Result<Value, String> {
    let cfg = &image_config["config"];
    let field = |name: &str| strings(&cfg[name]).map_err(|e| format!("config.{name}: {e}"));
    let mut args = field("Entrypoint")?;
    args.extend(field("Cmd")?);
    if args.is_empty() {
        return Err("the image config has neither Entrypoint nor Cmd: nothing to run".into());
    }
    let mut env = field("Env")?;
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.into());
    }
    let cwd = cfg["WorkingDir"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(format!("config.WorkingDir {cwd:?} is not absolute"));
    }
    let user_spec = cfg["User"].as_str().unwrap_or("");
    let user = user::resolve(user_spec, rootfs)?;
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    Ok(json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {
                "uid": user.uid,
                "gid": user.gid,
                "additionalGids": user.additional_gids,
            },
            "args": args,
            "env": env,
            "cwd": cwd,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps,
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "cri-imaged",
        "annotations": {KEY_ANNOTATION: key},
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"},
                {"type": "mount"},
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
            ],
        },
    }))
}
