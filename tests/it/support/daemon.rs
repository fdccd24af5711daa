//! The real `cri-imaged` binary on a temporary socket and store root.
//!
//! [`DaemonBuilder`] collects the arguments (always `--config`, and `--root`/`--listen` in
//! the test's temporary directory unless a config file provides them); [`Daemon`] owns the
//! child process, its stderr file and a connected channel. `stop()` sends SIGTERM to the
//! PID it started and waits (bounded, SIGKILL after the limit); `Drop` does the same, so a
//! failing test never leaves a daemon behind. Starting again on the same root is a restart.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cri_imaged::proto::ImageFsInfoRequest;
use cri_imaged::proto::image_service_client::ImageServiceClient;
use cri_imaged::proto::runtime_service_client::RuntimeServiceClient;
use rustix::process::{Pid, Signal, kill_process};
use tonic::transport::{Channel, Endpoint};

use super::{Client, ToolOutput, run_tool, wait_bounded};

const BIN: &str = env!("CARGO_BIN_EXE_cri-imaged");
const READY_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(20);

static SPAWNED: AtomicUsize = AtomicUsize::new(0);

/// Upper bound for `cri-imaged check` on a test store.
const CHECK_LIMIT: Duration = Duration::from_secs(60);

/// Runs `cri-imaged check --root ROOT` (with `--repair` if asked); output files go to `dir`.
pub fn run_check(dir: &Path, root: &Path, repair: bool) -> ToolOutput {
    let root = root.display().to_string();
    let mut args = vec!["check", "--root", root.as_str()];
    if repair {
        args.push("--repair");
    }
    run_tool(dir, BIN, &args, CHECK_LIMIT)
}

/// Asserts that `cri-imaged check` passes on `root`.
pub fn assert_check_passes(dir: &Path, root: &Path, when: &str) {
    let out = run_check(dir, root, false);
    assert!(
        out.status.success(),
        "{when}: cri-imaged check must pass ({}); stdout:\n{}\nstderr:\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
}

/// Arguments for one daemon process.
#[derive(Clone, Debug)]
pub struct DaemonBuilder {
    base: PathBuf,
    root: PathBuf,
    listen: PathBuf,
    config: PathBuf,
    pass_paths: bool,
    extra: Vec<String>,
    /// A command the daemon runs under (`prlimit --fsize=N --`): it must exec the daemon,
    /// so the PID started is the daemon's.
    wrapper: Vec<String>,
    /// Environment variables set for the daemon.
    env: Vec<(String, String)>,
}

impl DaemonBuilder {
    /// Root `<base>/root`, socket `<base>/run/cri-imaged.sock`, config `<base>/none.toml`
    /// (absent, so defaults apply).
    pub fn new(base: &Path) -> Self {
        let policy = base.join("policy.json");
        if !policy.exists() {
            std::fs::create_dir_all(base).expect("create the daemon's base directory");
            std::fs::write(
                &policy,
                r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
            )
            .expect("write the accept-anything policy");
        }
        DaemonBuilder {
            base: base.to_owned(),
            root: base.join("root"),
            listen: base.join("run").join("cri-imaged.sock"),
            config: base.join("none.toml"),
            pass_paths: true,
            extra: Vec::new(),
            wrapper: Vec::new(),
            env: Vec::new(),
        }
    }
    /// Adds `--registry HOST` (short names resolve against these, in order).
    pub fn registry(mut self, host: &str) -> Self {
        self.extra.push("--registry".into());
        self.extra.push(host.into());
        self
    }
    /// Runs the daemon as `program args… cri-imaged …`; `program` must exec the daemon.
    pub fn wrapped(mut self, program: &str, args: &[&str]) -> Self {
        self.wrapper = std::iter::once(program)
            .chain(args.iter().copied())
            .map(str::to_owned)
            .collect();
        self
    }
    /// Sets an environment variable of the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    /// Adds a raw argument.
    /// Adds `--unpack true`: layers unpacked into snapshots (the default as root; said
    /// outright so these tests mean it whatever the default becomes).
    pub fn unpacking(self) -> Self {
        self.arg("--unpack").arg("true")
    }
    pub fn arg(mut self, a: &str) -> Self {
        self.extra.push(a.into());
        self
    }
    pub fn listen(mut self, listen: &Path) -> Self {
        self.listen = listen.to_owned();
        self
    }
    pub fn config(mut self, config: &Path) -> Self {
        self.config = config.to_owned();
        self
    }
    /// Do not pass `--root`/`--listen`: the config file sets them to `root` and `listen`.
    pub fn paths_from_config(mut self, root: &Path, listen: &Path) -> Self {
        self.pass_paths = false;
        self.root = root.to_owned();
        self.listen = listen.to_owned();
        self
    }
    pub fn root_path(&self) -> &Path {
        &self.root
    }
    pub fn listen_path(&self) -> &Path {
        &self.listen
    }

    /// `<base>/registries.conf` (drop-ins in `<base>/registries.conf.d/`), passed as
    /// `--registries-conf`: absent unless the test writes it, so the machine's
    /// /etc/containers never leaks into a test.
    pub fn registries_conf(&self) -> PathBuf {
        self.base.join("registries.conf")
    }
    /// `<base>/auth.json`, passed as `--auth-file`.
    pub fn auth_file(&self) -> PathBuf {
        self.base.join("auth.json")
    }
    /// `<base>/certs.d`, passed as `--certs-dir`.
    pub fn certs_dir(&self) -> PathBuf {
        self.base.join("certs.d")
    }
    /// `<base>/policy.json`, passed as `--signature-policy`: written accepting anything
    /// when the builder is made (a test replaces it), so the machine's
    /// /etc/containers/policy.json never decides a test.
    pub fn signature_policy(&self) -> PathBuf {
        self.base.join("policy.json")
    }
    /// `<base>/registries.d`, passed as `--registries-d` (absent unless the test makes it).
    pub fn registries_d(&self) -> PathBuf {
        self.base.join("registries.d")
    }

    fn args(&self) -> Vec<String> {
        let mut a = vec!["--config".to_owned(), self.config.display().to_string()];
        for (flag, path) in [
            ("--registries-conf", self.registries_conf()),
            ("--auth-file", self.auth_file()),
            ("--certs-dir", self.certs_dir()),
            ("--signature-policy", self.signature_policy()),
            ("--registries-d", self.registries_d()),
        ] {
            a.push(flag.into());
            a.push(path.display().to_string());
        }
        if self.pass_paths {
            a.push("--root".into());
            a.push(self.root.display().to_string());
            a.push("--listen".into());
            a.push(self.listen.display().to_string());
        }
        a.extend(self.extra.iter().cloned());
        a
    }

    /// Starts the process without waiting for it to serve.
    pub fn spawn(&self) -> Daemon {
        let n = SPAWNED.fetch_add(1, Ordering::SeqCst);
        let log_path = self.base.join(format!("daemon-{n}.log"));
        let log = File::create(&log_path).expect("create daemon log");
        let log2 = log.try_clone().expect("clone daemon log handle");
        let args = self.args();
        let mut command = match self.wrapper.split_first() {
            Some((program, wrapper_args)) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(&args)
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
        Daemon {
            child: Some(child),
            args,
            root: self.root.clone(),
            socket: self.listen.clone(),
            log_path,
            channel: None,
        }
    }

    /// Starts the process and waits until it answers ImageFsInfo.
    pub async fn start(&self) -> Daemon {
        let mut d = self.spawn();
        d.wait_ready().await;
        d
    }
}

/// A running (or exited) `cri-imaged` process.
pub struct Daemon {
    child: Option<Child>,
    args: Vec<String>,
    pub root: PathBuf,
    pub socket: PathBuf,
    log_path: PathBuf,
    channel: Option<Channel>,
}

/// A channel to the Unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("unix://{}", path.display()))?
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
}

impl Daemon {
    /// What the daemon wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Pid {
        Pid::from_child(self.child.as_ref().expect("daemon process"))
    }

    /// Waits (≤ 30 s) until a connect plus ImageFsInfo succeeds. Panics with the daemon's
    /// output if it exits first or never gets ready.
    pub async fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            let child = self.child.as_mut().expect("daemon process");
            if let Ok(Some(st)) = child.try_wait() {
                panic!(
                    "cri-imaged {:?} exited early with {st}; output:\n{}",
                    self.args,
                    self.output()
                );
            }
            if self.socket.exists()
                && let Ok(Ok(ch)) =
                    tokio::time::timeout(Duration::from_secs(3), connect(&self.socket)).await
            {
                let mut c = ImageServiceClient::new(ch.clone());
                let probe = tokio::time::timeout(
                    Duration::from_secs(3),
                    c.image_fs_info(ImageFsInfoRequest {}),
                )
                .await;
                if let Ok(Ok(_)) = probe {
                    self.channel = Some(ch);
                    return;
                }
            }
            if Instant::now() >= deadline {
                panic!(
                    "cri-imaged {:?} did not answer ImageFsInfo within {READY_LIMIT:?}; output:\n{}",
                    self.args,
                    self.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A client on the connection made by `wait_ready`.
    pub fn client(&self) -> Client {
        ImageServiceClient::new(self.channel.clone().expect("daemon not ready"))
    }

    pub fn runtime_client(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone().expect("daemon not ready"))
    }

    /// Sends `sig` to the daemon's PID.
    pub fn signal(&self, sig: Signal) {
        kill_process(self.pid(), sig).expect("signal the daemon");
    }

    /// Waits (bounded) for the process to exit on its own; `None` if it had to be killed.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        self.channel = None;
        let deadline = Instant::now() + limit;
        loop {
            let child = self.child.as_mut().expect("daemon process");
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then wait (≤ 20 s, SIGKILL after). Returns the exit status, or `None`
    /// when the daemon ignored SIGTERM and had to be killed.
    pub async fn stop(&mut self) -> Option<ExitStatus> {
        self.stop_with(Signal::TERM).await
    }

    /// Like [`Daemon::stop`] with another signal (SIGINT).
    pub async fn stop_with(&mut self, sig: Signal) -> Option<ExitStatus> {
        self.channel = None;
        let child = self.child.as_mut().expect("daemon process");
        if let Ok(Some(st)) = child.try_wait() {
            self.child = None;
            return Some(st);
        }
        self.signal(sig);
        self.wait_exit(STOP_LIMIT).await
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.channel = None;
        if let Some(child) = self.child.as_mut()
            && let Ok(None) = child.try_wait()
        {
            let _ = kill_process(Pid::from_child(child), Signal::TERM);
            // wait_bounded SIGKILLs the PID if SIGTERM is not enough.
            let _ = wait_bounded(child, STOP_LIMIT);
        }
    }
}
