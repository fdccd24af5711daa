//! Shared fixtures: the loopback registry, the daemon under test, the test-image builder,
//! and thin wrappers around the CRI calls that bound every call with a timeout.
//!
//! Every process started here is stopped by its own `Drop`, by the PID it was started with.

pub mod daemon;
pub mod fake;
pub mod forward;
pub mod h2raw;
pub mod images;
pub mod layout;
pub mod leaks;
pub mod proxy;
pub mod registry;
pub mod tls;
pub mod token;

use std::future::Future;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use cri_imaged::proto::image_service_client::ImageServiceClient;
use cri_imaged::proto::{
    Image, ImageFilter, ImageFsInfoRequest, ImageFsInfoResponse, ImageSpec, ImageStatusRequest,
    ImageStatusResponse, ListImagesRequest, PullImageRequest, RemoveImageRequest,
    StreamImagesRequest,
};
use tonic::transport::Channel;

pub use daemon::{Daemon, DaemonBuilder, assert_check_passes, run_check};
pub use images::{Format, ImageBuilder, TestImage, TestIndex, random_layer};
pub use registry::Registry;

/// The gRPC client every test uses.
pub type Client = ImageServiceClient<Channel>;

/// What a missing external tool makes a test print: never a skip, always a failure.
pub const INSTALL_HINT: &str = "apt-get install docker-registry skopeo";

/// Upper bound for a pull (image layers are small; a pull taking longer is a hang).
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for the calls crictl gives 2 s: kept generous so a loaded machine passes.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A mount a test made, unmounted (lazily) when dropped, even when the test panics.
pub struct Mounted(pub std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Panics with an install hint when `path` is not an executable file.
pub fn require_tool(path: &str, name: &str) {
    assert!(
        Path::new(path).is_file(),
        "{name} not found at {path}: {INSTALL_HINT}"
    );
}

/// A new temporary directory whose path has no ':' (the store path is used in `oci:` refs).
pub fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("cri-imaged-it-")
        .tempdir()
        .expect("create a temporary directory");
    assert!(
        !dir.path().to_string_lossy().contains(':'),
        "temporary directory {} contains ':'",
        dir.path().display()
    );
    dir
}

/// An `ImageSpec` naming `image` and nothing else.
pub fn spec(image: &str) -> ImageSpec {
    ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

async fn bounded<T>(what: &str, limit: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what} did not finish within {limit:?}"),
    }
}

/// PullImage; returns the `image_ref` or the gRPC status.
pub async fn try_pull(client: &mut Client, image: &str) -> Result<String, tonic::Status> {
    try_pull_with(client, image, None).await
}

/// PullImage with CRI credentials; returns the `image_ref` or the gRPC status.
pub async fn try_pull_with(
    client: &mut Client,
    image: &str,
    auth: Option<cri_imaged::proto::AuthConfig>,
) -> Result<String, tonic::Status> {
    let req = PullImageRequest {
        image: Some(spec(image)),
        auth,
        sandbox_config: None,
    };
    bounded(
        &format!("PullImage({image})"),
        PULL_TIMEOUT,
        client.pull_image(req),
    )
    .await
    .map(|r| r.into_inner().image_ref)
}

/// PullImage that must succeed.
pub async fn pull(client: &mut Client, image: &str) -> String {
    match try_pull(client, image).await {
        Ok(r) => r,
        Err(e) => panic!("PullImage({image}) failed: {:?}: {}", e.code(), e.message()),
    }
}

/// ImageStatus with `verbose`; the call itself must succeed.
pub async fn status_response(
    client: &mut Client,
    image: &str,
    verbose: bool,
) -> ImageStatusResponse {
    let req = ImageStatusRequest {
        image: Some(spec(image)),
        verbose,
    };
    match bounded(
        &format!("ImageStatus({image})"),
        CALL_TIMEOUT,
        client.image_status(req),
    )
    .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => panic!(
            "ImageStatus({image}) failed: {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

/// ImageStatus (not verbose): the image, or `None` when the daemon does not know it.
pub async fn status(client: &mut Client, image: &str) -> Option<Image> {
    status_response(client, image, false).await.image
}

/// ImageStatus of an image that must exist.
pub async fn status_of(client: &mut Client, image: &str) -> Image {
    match status(client, image).await {
        Some(i) => i,
        None => panic!("ImageStatus({image}) returned no image"),
    }
}

/// ListImages with an optional filter (`Some("")` sends a filter with an empty image).
pub async fn list(client: &mut Client, filter: Option<&str>) -> Vec<Image> {
    let req = ListImagesRequest {
        filter: filter.map(|f| ImageFilter {
            image: Some(spec(f)),
        }),
    };
    match bounded("ListImages", CALL_TIMEOUT, client.list_images(req)).await {
        Ok(r) => r.into_inner().images,
        Err(e) => panic!(
            "ListImages({filter:?}) failed: {:?}: {}",
            e.code(),
            e.message()
        ),
    }
}

/// StreamImages; returns every chunk received, in order.
pub async fn stream(client: &mut Client, filter: Option<&str>) -> Vec<Vec<Image>> {
    let req = StreamImagesRequest {
        filter: filter.map(|f| ImageFilter {
            image: Some(spec(f)),
        }),
    };
    bounded("StreamImages", CALL_TIMEOUT, async {
        let mut s = match client.stream_images(req).await {
            Ok(r) => r.into_inner(),
            Err(e) => panic!(
                "StreamImages({filter:?}) failed: {:?}: {}",
                e.code(),
                e.message()
            ),
        };
        let mut chunks = Vec::new();
        loop {
            match s.message().await {
                Ok(Some(chunk)) => chunks.push(chunk.images),
                Ok(None) => break,
                Err(e) => panic!(
                    "StreamImages stream failed: {:?}: {}",
                    e.code(),
                    e.message()
                ),
            }
        }
        chunks
    })
    .await
}

/// RemoveImage; returns the gRPC result.
pub async fn try_remove(client: &mut Client, image: &str) -> Result<(), tonic::Status> {
    let req = RemoveImageRequest {
        image: Some(spec(image)),
    };
    bounded(
        &format!("RemoveImage({image})"),
        CALL_TIMEOUT,
        client.remove_image(req),
    )
    .await
    .map(|_| ())
}

/// RemoveImage that must succeed.
pub async fn remove(client: &mut Client, image: &str) {
    if let Err(e) = try_remove(client, image).await {
        panic!(
            "RemoveImage({image}) failed: {:?}: {}",
            e.code(),
            e.message()
        );
    }
}

/// ImageFsInfo that must succeed.
pub async fn fs_info(client: &mut Client) -> ImageFsInfoResponse {
    match bounded(
        "ImageFsInfo",
        CALL_TIMEOUT,
        client.image_fs_info(ImageFsInfoRequest {}),
    )
    .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => panic!("ImageFsInfo failed: {:?}: {}", e.code(), e.message()),
    }
}

/// `v` sorted, for comparing name lists whose order the contract does not fix.
pub fn sorted<S: AsRef<str>>(v: &[S]) -> Vec<String> {
    let mut out: Vec<String> = v.iter().map(|s| s.as_ref().to_owned()).collect();
    out.sort();
    out
}

/// Images sorted by id, for comparing image lists.
pub fn by_id(mut images: Vec<Image>) -> Vec<Image> {
    images.sort_by(|a, b| a.id.cmp(&b.id));
    images
}

/// The hex part of a `sha256:<hex>` digest.
pub fn hex_of(digest: &str) -> &str {
    digest
        .strip_prefix("sha256:")
        .unwrap_or_else(|| panic!("{digest} is not a sha256 digest"))
}

/// The names of the files in `<root>/ingest/` (partial downloads; none if it is absent).
pub fn ingest_files(root: &Path) -> Vec<String> {
    std::fs::read_dir(root.join("ingest"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The length of the largest ingest file of the blob whose hex digest is `hex` (0: none).
pub fn ingest_len(root: &Path, hex: &str) -> u64 {
    std::fs::read_dir(root.join("ingest"))
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(hex))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

/// Polls `check` every 100 ms until it returns true or `limit` passes; returns the last
/// result. Used only where the contract allows work to finish after a call returns.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits for `child` to exit, at most `limit`; kills it (by its PID) if it does not.
/// Returns `None` when it had to be killed.
pub fn wait_bounded(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(e) => panic!("waiting for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Output of a short-lived tool run with a time bound.
pub struct ToolOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `program args` with stdout/stderr sent to files in `dir`, at most `limit`.
pub fn run_tool(dir: &Path, program: &str, args: &[&str], limit: Duration) -> ToolOutput {
    let stamp = format!("{}-{}", std::process::id(), rand::random::<u64>());
    let out_path = dir.join(format!("tool-{stamp}.stdout"));
    let err_path = dir.join(format!("tool-{stamp}.stderr"));
    let out = std::fs::File::create(&out_path).expect("create tool stdout file");
    let err = std::fs::File::create(&err_path).expect("create tool stderr file");
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e} ({INSTALL_HINT})"));
    let status = wait_bounded(&mut child, limit)
        .unwrap_or_else(|| panic!("{program} {args:?} did not finish within {limit:?}"));
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    ToolOutput {
        status,
        stdout,
        stderr,
    }
}

/// The usual fixture: one registry, and a daemon whose `--registry` is that registry.
/// Fields drop in order: daemon, registry, then the directory.
pub struct Setup {
    pub daemon: Daemon,
    pub registry: Registry,
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub async fn new() -> Setup {
        let registry = Registry::start().await;
        let dir = tempdir();
        let daemon = DaemonBuilder::new(dir.path())
            .registry(&registry.host())
            .start()
            .await;
        Setup {
            daemon,
            registry,
            dir,
        }
    }

    pub fn client(&self) -> Client {
        self.daemon.client()
    }

    /// `127.0.0.1:<port>/<rest>` on this setup's registry.
    pub fn name(&self, rest: &str) -> String {
        format!("{}/{rest}", self.registry.host())
    }
}
