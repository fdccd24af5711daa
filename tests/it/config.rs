//! The config file: every key is honoured, flags override it, and a bad file stops the
//! daemon with exit code 64 and a message naming the file and the key.

use std::path::Path;
use std::time::Duration;

use crate::support::{DaemonBuilder, ImageBuilder, Registry, fs_info, pull, status_of, tempdir};

/// Starts the daemon with `config` and expects exit code 64 naming the file and `key`.
async fn expect_config_refused(contents: &str, key: &str) {
    let dir = tempdir();
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, contents).expect("write config");
    let b = DaemonBuilder::new(dir.path()).config(&config);
    let mut d = b.spawn();
    let st = d
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("a daemon with a bad config must exit by itself");
    let out = d.output();
    assert_eq!(
        st.code(),
        Some(64),
        "exit code for a bad config; output:\n{out}"
    );
    assert!(
        out.contains(&config.display().to_string()),
        "the message must name the file {}:\n{out}",
        config.display()
    );
    assert!(
        out.contains(key),
        "the message must name the key {key}:\n{out}"
    );
    assert!(
        !b.listen_path().exists(),
        "no socket may be created for a bad config"
    );
}

fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_config_key_exits_64_naming_file_and_key() {
    expect_config_refused(
        "log_level = \"info\"\nregistry_mirrorz = [\"x\"]\n",
        "registry_mirrorz",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_value_exits_64_naming_file_and_key() {
    expect_config_refused(
        "max_concurrent_downloads = \"lots\"\n",
        "max_concurrent_downloads",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_insecure_registry_exits_64_naming_file_and_key() {
    expect_config_refused(
        "insecure_registries = [\"10.0.0.0/99\"]\n",
        "insecure_registries",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_with_every_key_is_honoured() {
    let reg = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&reg, "test/app", "1").await;

    let dir = tempdir();
    let root = dir.path().join("cfg-root");
    let listen = dir.path().join("cfg-run").join("imaged.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = {}\nlisten = {}\nregistries = [{:?}]\n\
             insecure_registries = [\"10.0.0.0/8\", \"registry.example:5000\"]\n\
             default_transport = \"docker\"\nmax_concurrent_downloads = 2\nlog_level = \"debug\"\n",
            toml_str(&root),
            toml_str(&listen),
            reg.host()
        ),
    )
    .expect("write config");

    let d = DaemonBuilder::new(dir.path())
        .config(&config)
        .paths_from_config(&root, &listen)
        .start()
        .await;
    assert!(listen.exists(), "socket at the configured listen path");
    let mut c = d.client();
    let fs = fs_info(&mut c).await;
    assert_eq!(
        fs.image_filesystems[0]
            .fs_id
            .as_ref()
            .map(|f| f.mountpoint.clone()),
        Some(root.display().to_string()),
        "the store is at the configured root"
    );
    // The configured registry resolves short names.
    assert_eq!(pull(&mut c, "test/app:1").await, img.id());
    let got = status_of(&mut c, "test/app:1").await;
    assert_eq!(got.repo_tags, vec![format!("{}/test/app:1", reg.host())]);
    assert!(
        root.join("blobs")
            .join("sha256")
            .join(&img.id()["sha256:".len()..])
            .is_file(),
        "the config blob is stored under the configured root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_line_flags_override_the_config_file() {
    let from_file = Registry::start().await;
    let from_flag = Registry::start().await;
    let file_img = ImageBuilder::new().build();
    let flag_img = ImageBuilder::new().build();
    file_img.push(&from_file, "test/app", "1").await;
    flag_img.push(&from_flag, "test/app", "1").await;

    let dir = tempdir();
    let file_root = dir.path().join("file-root");
    let file_listen = dir.path().join("file-run").join("imaged.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "root = {}\nlisten = {}\nregistries = [{:?}]\n",
            toml_str(&file_root),
            toml_str(&file_listen),
            from_file.host()
        ),
    )
    .expect("write config");

    // DaemonBuilder passes --root and --listen; add --registry.
    let b = DaemonBuilder::new(dir.path())
        .config(&config)
        .registry(&from_flag.host());
    let d = b.start().await;
    let mut c = d.client();
    assert!(
        !file_listen.exists(),
        "the config's listen path must not be used"
    );
    let fs = fs_info(&mut c).await;
    assert_eq!(
        fs.image_filesystems[0]
            .fs_id
            .as_ref()
            .map(|f| f.mountpoint.clone()),
        Some(b.root_path().display().to_string()),
        "--root overrides the config's root"
    );
    assert_eq!(
        pull(&mut c, "test/app:1").await,
        flag_img.id(),
        "--registry replaces the config's registries"
    );
    assert!(
        !file_root.join("index.json").exists(),
        "nothing may be stored under the config's root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_line_flag_is_accepted() {
    let reg = Registry::start().await;
    let img = ImageBuilder::new().build();
    img.push(&reg, "test/app", "1").await;
    let dir = tempdir();
    let d = DaemonBuilder::new(dir.path())
        .registry(&reg.host())
        .arg("--insecure-registry")
        .arg("10.0.0.0/8")
        .arg("--insecure-registry")
        .arg("registry.example:5000")
        .arg("--default-transport")
        .arg("docker")
        .arg("--max-concurrent-downloads")
        .arg("1")
        .arg("--log-level")
        .arg("debug")
        .start()
        .await;
    let mut c = d.client();
    assert_eq!(pull(&mut c, "test/app:1").await, img.id());
    assert_eq!(
        status_of(&mut c, &img.id()).await.repo_tags,
        vec![format!("{}/test/app:1", reg.host())]
    );
}

/// Every key with a value the daemon must refuse, as TOML. Each row is tried in the file
/// and as its flag; both must stop the start naming the key (a typed file value that does
/// not parse names it too). `skopeo` takes any path: its effect (a missing binary is a
/// FailedPrecondition naming it) is `import::…nonexistent skopeo…`'s; `unpack` and the
/// numbers are checked for their type.
const BAD_VALUES: &[(&str, &str)] = &[
    ("root", "\"relative/root\""),
    ("listen", "\"relative.sock\""),
    ("registries", "[\"Bad Host\"]"),
    ("insecure_registries", "[\"10.0.0.0/99\"]"),
    ("default_transport", "\"oci\""),
    ("max_concurrent_downloads", "0"),
    ("transports", "[\"ftp\"]"),
    ("import_dirs", "[\"relative\"]"),
    ("log_level", "\"[[not a filter\""),
    ("metrics_address", "\"0.0.0.0:9464\""),
    ("admin_socket", "\"relative-admin.sock\""),
    ("log_format", "\"xml\""),
    ("registries_conf", "\"relative.conf\""),
    ("auth_file", "\"relative.json\""),
    ("certs_dir", "\"relative.d\""),
    ("pinned_images", "[\"busybox\"]"),
    ("pause_image", "\"Not A Name!\""),
    ("pull_progress_timeout", "\"soon\""),
    ("pull_min_rate", "\"fast\""),
    ("interrupted_pull_grace", "\"a while\""),
    ("unpack", "\"maybe\""),
    ("snapshot_root", "\"relative/snapshots\""),
    ("signature_policy", "\"relative.json\""),
    ("signature_policy_dir", "\"relative.d\""),
    ("registries_d", "\"relative.d\""),
    ("credential_helper_cache", "\"a while\""),
];

/// Keys with no refusable value, covered by an effect elsewhere.
const EFFECT_ELSEWHERE: &[&str] = &["skopeo"];

/// The flag of a key, as `--help` names it.
fn flag_of(help: &str, key: &str) -> String {
    let marker = format!("[config: {key}]");
    let mut last_flag = None;
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with("--") {
            last_flag = t.split_whitespace().next().map(str::to_owned);
        }
        if line.contains(&marker) {
            return last_flag.unwrap_or_else(|| panic!("no flag before {marker}"));
        }
    }
    panic!("--help documents no flag for key {key}:\n{help}");
}

fn help() -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cri-imaged"))
        .arg("--help")
        .output()
        .expect("run cri-imaged --help");
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_key_and_flag_is_in_the_table() {
    let help = help();
    let documented: std::collections::BTreeSet<String> = help
        .match_indices("[config: ")
        .map(|(i, m)| {
            let rest = &help[i + m.len()..];
            rest[..rest.find(']').unwrap()].to_owned()
        })
        .collect();
    let covered: std::collections::BTreeSet<String> = BAD_VALUES
        .iter()
        .map(|(k, _)| k.to_string())
        .chain(EFFECT_ELSEWHERE.iter().map(|k| k.to_string()))
        .collect();
    assert_eq!(
        documented, covered,
        "a key or flag the table does not cover"
    );
    // And the file takes exactly these keys (one field each, a flag each).
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/config/file.rs"))
        .unwrap();
    let fields: std::collections::BTreeSet<String> = src
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub "))
        .filter_map(|l| l.split_once(": Option<").map(|(n, _)| n.to_owned()))
        .collect();
    assert_eq!(fields, covered, "src/config/file.rs keys vs the table");
}

/// Runs the daemon binary (nothing else on its command line: the file's values must not
/// be overridden) with `config` and `args`, expecting it to refuse to start naming
/// `needle`; returns its output.
fn refused(dir: &Path, config: &str, args: &[String], needle: &str) -> String {
    let file = dir.join("c.toml");
    std::fs::write(&file, config).unwrap();
    let mut all = vec!["--config".to_owned(), file.display().to_string()];
    all.extend(args.iter().cloned());
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = crate::support::run_tool(
        dir,
        env!("CARGO_BIN_EXE_cri-imaged"),
        &all,
        Duration::from_secs(30),
    );
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        matches!(out.status.code(), Some(64) | Some(2)),
        "{needle} {args:?}: exit {}; output:\n{text}",
        out.status
    );
    assert!(text.contains(needle), "the refusal names {needle}:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_refuses_a_bad_value_in_the_file_and_as_its_flag() {
    let help = help();
    for (key, bad) in BAD_VALUES {
        let dir = tempdir();
        refused(dir.path(), &format!("{key} = {bad}\n"), &[], key);
        let flag = flag_of(&help, key);
        // A TOML list becomes the flag repeated; a string its text.
        let values: Vec<String> = match bad.strip_prefix('[') {
            Some(list) => list
                .trim_end_matches(']')
                .split(',')
                .map(|v| v.trim().trim_matches('"').to_owned())
                .collect(),
            None => vec![bad.trim_matches('"').to_owned()],
        };
        let args: Vec<String> = values
            .iter()
            .flat_map(|v| [flag.clone(), v.clone()])
            .collect();
        let dir = tempdir();
        let out = refused(dir.path(), "", &args, "");
        assert!(
            out.contains(key) || out.contains(&flag),
            "{flag} {values:?}: the refusal names {key} or {flag}:\n{out}"
        );
    }
}
