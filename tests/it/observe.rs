//! Watching pulls: `/metrics` counters and histograms move by the right amounts (success,
//! not found, auth failure), `cri-imaged pulls` shows a pull held in flight with its bytes
//! and waiters (and the mirror serving it) and forgets it once done, a summary log line is written per pull (text and
//! JSON), and no credential shows up anywhere.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_imaged::image::PullSnapshot;
use cri_imaged::proto::{AuthConfig, PullImageRequest};
use tonic::Code;

use crate::support::fake::{BlobBehavior, FakeRegistry};
use crate::support::registry::{AUTH_PASSWORD, AUTH_USER, closed_port};
use crate::support::{
    Client, Daemon, DaemonBuilder, ImageBuilder, Registry, eventually, pull, run_tool, spec,
    tempdir, try_pull,
};

const BIN: &str = env!("CARGO_BIN_EXE_cri-imaged");
const LIMIT: Duration = Duration::from_secs(30);

/// A daemon on `registry_host` with `/metrics` on a loopback port; returns it and the port.
async fn daemon_with_metrics(dir: &Path, registry_host: &str, extra: &[&str]) -> (Daemon, u16) {
    let port = closed_port();
    let mut b = DaemonBuilder::new(dir)
        .registry(registry_host)
        .arg("--metrics-address")
        .arg(&format!("127.0.0.1:{port}"));
    for a in extra {
        b = b.arg(a);
    }
    (b.start().await, port)
}

/// `GET /metrics`: the body, after checking the status and the OpenMetrics content type.
pub(crate) async fn scrape(port: u16) -> String {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .timeout(LIMIT)
        .build()
        .expect("HTTP client")
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET /metrics on 127.0.0.1:{port}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "GET /metrics");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        ct, "application/openmetrics-text; version=1.0.0; charset=utf-8",
        "content type of /metrics"
    );
    let text = resp.text().await.expect("read /metrics");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics ends with # EOF");
    text
}

/// The value of the sample `series` (`name{labels}` exactly as exposed); 0 when absent.
pub(crate) fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| {
            v.split(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{series}: bad value in {v:?}"))
        })
        .unwrap_or(0.0)
}

/// How much `series` grew from `before` to `after`.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    sample(after, series) - sample(before, series)
}

fn pulls_series(result: &str, class: &str) -> String {
    format!("cri_imaged_pulls_total{{result=\"{result}\",error_class=\"{class}\"}}")
}

fn request_count(rpc: &str, code: &str) -> String {
    format!("cri_imaged_cri_request_duration_seconds_count{{rpc=\"{rpc}\",code=\"{code}\"}}")
}

/// The admin socket a daemon started by `DaemonBuilder` serves (`x.sock` → `x-admin.sock`).
fn admin_socket(d: &Daemon) -> PathBuf {
    cri_imaged::config::default_admin_socket(&d.socket)
}

/// Runs `cri-imaged pulls <args> --admin-socket <socket>`; it must succeed.
async fn pulls_command(dir: &Path, socket: &Path, args: &[&str]) -> String {
    let (dir, socket) = (dir.to_owned(), socket.display().to_string());
    let mut argv: Vec<String> = vec!["pulls".into()];
    argv.extend(args.iter().map(|a| a.to_string()));
    argv.extend(["--admin-socket".to_owned(), socket]);
    let out = tokio::task::spawn_blocking(move || {
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        run_tool(&dir, BIN, &argv, LIMIT)
    })
    .await
    .expect("run cri-imaged pulls");
    assert!(
        out.status.success(),
        "cri-imaged pulls {args:?} failed: {}\n{}",
        out.status,
        out.stderr
    );
    out.stdout
}

async fn pulls_json(dir: &Path, socket: &Path) -> Vec<PullSnapshot> {
    let text = pulls_command(dir, socket, &["--output", "json"]).await;
    let doc: cri_imaged::admin::PullsResponse = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("cri-imaged pulls --output json is not JSON ({e}):\n{text}"));
    doc.pulls
}

async fn pull_with_auth(
    c: &mut Client,
    image: &str,
    user: &str,
    password: &str,
) -> Result<String, tonic::Status> {
    let req = PullImageRequest {
        image: Some(spec(image)),
        auth: Some(AuthConfig {
            username: user.to_owned(),
            password: password.to_owned(),
            ..Default::default()
        }),
        sandbox_config: None,
    };
    tokio::time::timeout(Duration::from_secs(120), c.pull_image(req))
        .await
        .unwrap_or_else(|_| panic!("PullImage({image}) did not finish"))
        .map(|r| r.into_inner().image_ref)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_success_a_not_found_and_the_bytes_fetched_and_skipped() {
    let registry = Registry::start().await;
    let dir = tempdir();
    let (daemon, port) = daemon_with_metrics(dir.path(), &registry.host(), &[]).await;
    let img = ImageBuilder::new().layer_sizes(&[40_000, 20_000]).build();
    img.push(&registry, "test/app", "1").await;
    let mut c = daemon.client();
    let name = format!("{}/test/app:1", registry.host());
    let fetched = format!(
        "cri_imaged_pull_fetched_bytes_total{{registry=\"{}\"}}",
        registry.host()
    );
    let skipped = "cri_imaged_pull_skipped_bytes_total";

    let m0 = scrape(port).await;
    assert_eq!(sample(&m0, "cri_imaged_store_images"), 0.0);
    assert_eq!(pull(&mut c, &name).await, img.id());
    let m1 = scrape(port).await;
    assert_eq!(delta(&m0, &m1, &pulls_series("success", "none")), 1.0);
    assert_eq!(
        delta(&m0, &m1, &fetched),
        img.size() as f64,
        "a first pull downloads the config and every layer"
    );
    assert_eq!(delta(&m0, &m1, skipped), 0.0);
    assert_eq!(
        delta(
            &m0,
            &m1,
            "cri_imaged_pull_duration_seconds_count{result=\"success\"}"
        ),
        1.0
    );
    assert!(
        delta(
            &m0,
            &m1,
            "cri_imaged_pull_duration_seconds_sum{result=\"success\"}"
        ) > 0.0
    );
    assert_eq!(delta(&m0, &m1, &request_count("PullImage", "OK")), 1.0);
    assert_eq!(sample(&m1, "cri_imaged_store_images"), 1.0);
    assert!(
        sample(&m1, "cri_imaged_store_bytes") >= img.size() as f64,
        "the store holds at least the image's bytes"
    );
    assert_eq!(sample(&m1, "cri_imaged_pulls_in_flight"), 0.0);
    assert_eq!(sample(&m1, "cri_imaged_pull_waiters"), 0.0);

    let missing = format!("{}/test/absent:1", registry.host());
    let err = try_pull(&mut c, &missing).await.expect_err("absent image");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let m2 = scrape(port).await;
    assert_eq!(delta(&m1, &m2, &pulls_series("failure", "not_found")), 1.0);
    assert_eq!(delta(&m1, &m2, &pulls_series("success", "none")), 0.0);
    assert_eq!(
        delta(
            &m1,
            &m2,
            "cri_imaged_pull_duration_seconds_count{result=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(
        delta(&m1, &m2, &request_count("PullImage", "NotFound")),
        1.0
    );
    assert_eq!(delta(&m1, &m2, &fetched), 0.0);

    // kubelet re-pulls present images: nothing is downloaded, everything is skipped.
    assert_eq!(pull(&mut c, &name).await, img.id());
    let m3 = scrape(port).await;
    println!("/metrics after two pulls and a not-found:\n{m3}");
    assert_eq!(delta(&m2, &m3, &pulls_series("success", "none")), 1.0);
    assert_eq!(delta(&m2, &m3, &fetched), 0.0);
    assert_eq!(delta(&m2, &m3, skipped), img.size() as f64);
    assert_eq!(sample(&m3, "cri_imaged_store_images"), 1.0);

    crate::support::status(&mut c, &name).await;
    let m4 = scrape(port).await;
    assert_eq!(delta(&m3, &m4, &request_count("ImageStatus", "OK")), 1.0);

    // The admin socket serves the same metrics, root-only.
    let socket = admin_socket(&daemon);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&socket)
            .expect("admin socket exists")
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "admin socket mode");
    let via_admin = cri_imaged::admin::client::get(&socket, "/metrics")
        .await
        .expect("GET /metrics on the admin socket");
    let via_admin = String::from_utf8_lossy(&via_admin);
    assert_eq!(sample(&via_admin, &pulls_series("success", "none")), 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_failure_is_counted_and_no_credential_appears_in_logs_metrics_or_pulls() {
    let registry = Registry::start_with_auth().await;
    let dir = tempdir();
    // Trace logs (every crate) in JSON: the most a collector could be sent.
    let (mut daemon, port) = daemon_with_metrics(
        dir.path(),
        &registry.host(),
        &["--log-format", "json", "--log-level", "trace"],
    )
    .await;
    let img = ImageBuilder::new().layer_sizes(&[10_000]).build();
    img.push(&registry, "test/private", "1").await;
    let mut c = daemon.client();
    let name = format!("{}/test/private:1", registry.host());
    let wrong = "Wrong-Pw-93d0a7";

    let m0 = scrape(port).await;
    let err = pull_with_auth(&mut c, &name, AUTH_USER, wrong)
        .await
        .expect_err("a wrong password must fail");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let err = try_pull(&mut c, &name)
        .await
        .expect_err("no credentials must fail");
    assert_eq!(err.code(), Code::Unauthenticated, "{}", err.message());
    let m1 = scrape(port).await;
    assert_eq!(delta(&m0, &m1, &pulls_series("failure", "auth")), 2.0);
    assert_eq!(
        delta(&m0, &m1, &request_count("PullImage", "Unauthenticated")),
        2.0
    );

    let id = pull_with_auth(&mut c, &name, AUTH_USER, AUTH_PASSWORD)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "pull with the right password: {:?}: {}",
                e.code(),
                e.message()
            )
        });
    assert_eq!(id, img.id());
    let m2 = scrape(port).await;
    assert_eq!(delta(&m1, &m2, &pulls_series("success", "none")), 1.0);

    let pulls_text = pulls_command(dir.path(), &admin_socket(&daemon), &[]).await;
    let pulls_json = pulls_command(dir.path(), &admin_socket(&daemon), &["--output", "json"]).await;
    daemon.stop().await;
    let log = daemon.output();

    // One JSON object per line, and the summary line of the successful pull.
    let mut summary = None;
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("--log-format json wrote a non-JSON line ({e}): {line}"));
        if v["message"] == "pulled image" && v["image"] == name.as_str() {
            summary = Some(v);
        }
    }
    let summary = summary.unwrap_or_else(|| panic!("no \"pulled image\" line for {name}:\n{log}"));
    assert_eq!(summary["id"], img.id().as_str(), "{summary}");
    assert_eq!(summary["source"], registry.host().as_str(), "{summary}");
    assert_eq!(summary["fetched_bytes"], img.size(), "{summary}");
    assert_eq!(summary["layers_fetched"], 1, "{summary}");
    assert_eq!(summary["layers_present"], 0, "{summary}");
    assert!(
        log.contains("\"error_class\":\"auth\""),
        "a failed pull is logged with its class:\n{log}"
    );

    // The whole run's log, read after the daemon stopped, and every other output.
    for (what, text) in [
        ("daemon log", log.as_str()),
        ("/metrics", m2.as_str()),
        ("cri-imaged pulls", pulls_text.as_str()),
        ("cri-imaged pulls --output json", pulls_json.as_str()),
    ] {
        crate::support::leaks::assert_no_leaks(what, text, AUTH_USER, &[AUTH_PASSWORD, wrong]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_shows_a_pull_in_flight_with_its_bytes_and_waiters_then_forgets_it() {
    const AFTER: usize = 64 * 1024;
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[512 * 1024]).build();
    let layer = &img.layers[0].blob;
    fake.add_image("test/slow", "1", &img);
    fake.set_blob(&layer.digest, BlobBehavior::Gate { after: AFTER });
    let dir = tempdir();
    let (daemon, port) = daemon_with_metrics(dir.path(), &fake.host(), &[]).await;
    let socket = admin_socket(&daemon);
    let name = format!("{}/test/slow:1", fake.host());

    assert!(
        pulls_json(dir.path(), &socket).await.is_empty(),
        "nothing in flight yet"
    );
    // Two callers of the same image: one pull, two waiters.
    let tasks: Vec<_> = (0..2)
        .map(|_| {
            let mut c = daemon.client();
            let name = name.clone();
            tokio::spawn(async move { try_pull(&mut c, &name).await })
        })
        .collect();
    let seen = std::sync::Mutex::new(Vec::new());
    let held = eventually(LIMIT, || async {
        let now = pulls_json(dir.path(), &socket).await;
        let ok = now.len() == 1
            && now[0].waiters == 2
            && now[0].blobs.get(1).is_some_and(|b| b.done == AFTER as u64);
        *seen.lock().unwrap() = now;
        ok
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(
        held,
        "the held pull never showed {AFTER} bytes with 2 waiters: {seen:#?}"
    );
    let p = &seen[0];
    assert_eq!(p.image, name);
    assert_eq!(p.source, fake.host());
    assert_eq!(p.bytes_total, img.size());
    assert_eq!(p.bytes_done, img.config.len() + AFTER as u64);
    assert_eq!(p.blobs.len(), 2, "config and one layer");
    assert_eq!(p.blobs[0].digest, img.config.digest);
    assert_eq!(p.blobs[0].state, "done");
    assert_eq!(p.blobs[1].digest, layer.digest);
    assert_eq!(p.blobs[1].size, layer.len());
    assert_eq!(p.blobs[1].state, "downloading");
    assert!(p.bytes_per_second > 0.0 && p.eta_seconds.is_some(), "{p:?}");

    let text = pulls_command(dir.path(), &socket, &[]).await;
    println!("cri-imaged pulls, while held:\n{text}");
    assert!(
        text.lines()
            .next()
            .is_some_and(|l| l.starts_with(&name) && l.contains("2 waiting")),
        "{text}"
    );
    assert!(text.contains("downloading"), "{text}");
    let m = scrape(port).await;
    assert_eq!(sample(&m, "cri_imaged_pulls_in_flight"), 1.0);
    assert_eq!(sample(&m, "cri_imaged_pull_waiters"), 2.0);

    fake.open_gate();
    for t in tasks {
        let r = tokio::time::timeout(LIMIT, t)
            .await
            .expect("pull returns once the gate opens")
            .expect("pull task");
        assert_eq!(r.expect("the released pull succeeds"), img.id());
    }
    assert!(
        pulls_json(dir.path(), &socket).await.is_empty(),
        "a finished pull is gone from the view"
    );
    assert_eq!(
        pulls_command(dir.path(), &socket, &[]).await.trim(),
        "no pulls in flight"
    );
    let m = scrape(port).await;
    assert_eq!(sample(&m, "cri_imaged_pulls_in_flight"), 0.0);
    assert_eq!(sample(&m, "cri_imaged_pull_waiters"), 0.0);
    assert_eq!(
        sample(&m, &pulls_series("success", "none")),
        2.0,
        "both callers count"
    );

    let log = daemon.output();
    let summary: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pulled image") && l.contains(&format!("image={name}")))
        .collect();
    assert_eq!(
        summary.len(),
        1,
        "one summary line for the one pull:\n{log}"
    );
    for field in [
        format!("id={}", img.id()),
        format!("fetched_bytes={}", img.size()),
        format!("source={}", fake.host()),
        "layers_fetched=1".to_owned(),
        "layers_present=0".to_owned(),
    ] {
        assert!(
            summary[0].contains(&field),
            "{field} missing: {}",
            summary[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_names_the_mirror_that_serves_a_pull() {
    let fake = FakeRegistry::start().await;
    let img = ImageBuilder::new().layer_sizes(&[256 * 1024]).build();
    fake.add_image("team/app", "1", &img);
    fake.set_blob(
        &img.layers[0].blob.digest,
        BlobBehavior::Gate { after: 1024 },
    );
    // The primary is a port nobody listens on: only the mirror can serve.
    let primary = format!("127.0.0.1:{}", closed_port());
    let dir = tempdir();
    let b = DaemonBuilder::new(dir.path());
    std::fs::write(
        b.registries_conf(),
        format!(
            "[[registry]]\nlocation = \"{primary}\"\n[[registry.mirror]]\nlocation = \"{}\"\n",
            fake.host()
        ),
    )
    .unwrap();
    let daemon = b.start().await;
    let socket = admin_socket(&daemon);
    let name = format!("{primary}/team/app:1");
    let mut c = daemon.client();
    let task = tokio::spawn(async move { try_pull(&mut c, &name).await });
    let seen = std::sync::Mutex::new(Vec::new());
    let held = eventually(LIMIT, || async {
        let now = pulls_json(dir.path(), &socket).await;
        let ok = now.len() == 1 && now[0].blobs.len() == 2;
        *seen.lock().unwrap() = now;
        ok
    })
    .await;
    let seen = seen.into_inner().unwrap();
    assert!(held, "the held pull never showed its blobs: {seen:#?}");
    assert_eq!(seen[0].image, format!("{primary}/team/app:1"));
    assert_eq!(seen[0].source, fake.host(), "the mirror serves the pull");
    let text = pulls_command(dir.path(), &socket, &[]).await;
    assert!(text.contains(&fake.host()), "{text}");
    fake.open_gate();
    let r = tokio::time::timeout(LIMIT, task)
        .await
        .expect("the pull returns once the gate opens")
        .expect("pull task");
    assert_eq!(r.expect("the mirror serves the image"), img.id());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_without_a_daemon_fails_naming_the_socket() {
    let dir = tempdir();
    let socket = dir.path().join("nothing-admin.sock");
    let out = run_tool(
        dir.path(),
        BIN,
        &["pulls", "--admin-socket", &socket.display().to_string()],
        LIMIT,
    );
    assert!(!out.status.success(), "pulls with no daemon must fail");
    assert!(
        out.stderr.contains(&socket.display().to_string()),
        "{}",
        out.stderr
    );
}
