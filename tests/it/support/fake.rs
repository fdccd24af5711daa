//! An in-process fake registry on 127.0.0.1 for faults a real registry never makes: a blob
//! that stalls mid-body, a blob whose bytes do not match its digest, a manifest that is not
//! an image or does not hash to the digest it is served under.
//!
//! It speaks a minimal HTTP/1.1 by hand (one request per connection, `Connection: close`,
//! every answer with a `Content-Length`): `GET /v2/` answers 200; manifests are served by
//! tag or digest with `Content-Type` and `Docker-Content-Digest`; blobs honour
//! `Range: bytes=N-` (206, as Debian's docker-registry does) unless told to ignore it. A connection that starts with
//! a TLS record (the daemon tries HTTPS first on loopback) is closed at once.
//!
//! Faults for retries and resumes are queued per blob ([`FakeRegistry::push_faults`]): each
//! request for the blob takes the next one (an error status, `429` with `Retry-After`, a
//! body cut short by a clean close or a reset), and requests after the queue is empty get
//! the blob's behaviour. Body bytes sent are counted per blob
//! ([`FakeRegistry::served_bytes`]), so a test sees what a resume saved.
//!
//! Everything runs on the test's tokio runtime: one accept task owning a `JoinSet` of
//! connection tasks. Dropping the [`FakeRegistry`] aborts the accept task, which drops the
//! set and so aborts every connection, stalled ones included.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

use super::images::{TestImage, sha256_digest};

/// Largest request head read; a longer one is answered 431 and closed.
const MAX_HEAD: usize = 64 * 1024;
/// Upper bound for a client to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a held blob request to wait for a stall.
const HOLD_LIMIT: Duration = Duration::from_secs(30);

/// What the fake does when a blob is requested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobBehavior {
    /// Serve the blob.
    Normal,
    /// Send the headers (with the full `Content-Length`) and the first `after` bytes of the
    /// body, then nothing more; the connection stays open until the fake is dropped.
    Stall { after: usize },
    /// Serve bytes of the right length whose sha256 differs from the digest (the headers,
    /// `Docker-Content-Digest` included, claim the requested digest).
    WrongBytes,
    /// Send the first `after` bytes like `Stall`, then the rest once
    /// [`FakeRegistry::open_gate`] is called: a pull held in flight, then let finish.
    Gate { after: usize },
    /// Send the body one byte every 100 ms (bounded by the body's length).
    Trickle,
}

/// A one-off fault for one request of a blob (see [`FakeRegistry::push_faults`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with an OCI error body) instead of the blob; `retry_after`
    /// adds a `Retry-After` header (seconds).
    Status { code: u16, retry_after: Option<u32> },
    /// Send the headers (full `Content-Length`) and `after` body bytes, then close cleanly.
    Cut { after: usize },
    /// Send the headers and `after` body bytes, then reset the connection (RST).
    Reset { after: usize },
}

#[derive(Clone, Debug)]
struct ServedManifest {
    content_type: String,
    body: Vec<u8>,
    digest_header: String,
}

#[derive(Default)]
struct State {
    /// (repository, tag or digest) → manifest.
    manifests: HashMap<(String, String), ServedManifest>,
    /// (repository, digest) → blob bytes.
    blobs: HashMap<(String, String), Vec<u8>>,
    /// digest → behaviour (absent: Normal).
    behaviors: HashMap<String, BlobBehavior>,
    /// request path (no query) → number of requests.
    requests: HashMap<String, usize>,
    /// Blob digests whose requests wait until a stalled connection exists.
    held: HashSet<String>,
    /// Answer blob requests 200 with the whole blob, whatever `Range` asks.
    ignore_range: bool,
    /// digest → faults for its next requests, in order.
    faults: HashMap<String, VecDeque<Fault>>,
    /// digest → body bytes sent for it.
    served: HashMap<String, u64>,
    /// (digest, offset) of every blob request, in order (offset 0 without `Range`).
    ranges: Vec<(String, usize)>,
}

struct Shared {
    state: Mutex<State>,
    /// Gated blobs send their rest once this is set.
    gate_open: std::sync::atomic::AtomicBool,
    /// Connections that sent the first bytes of a stalled blob and now hold still.
    stalled: AtomicUsize,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The fake registry; see the module documentation.
pub struct FakeRegistry {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl FakeRegistry {
    /// Binds 127.0.0.1:0 and starts serving on the current tokio runtime.
    pub async fn start() -> FakeRegistry {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake registry on 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake registry address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            gate_open: std::sync::atomic::AtomicBool::new(false),
            stalled: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        FakeRegistry {
            addr,
            shared,
            accept,
        }
    }

    /// `127.0.0.1:<port>`, the registry part of image names.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Serves `img` as `repo:tag` and `repo@<manifest digest>`, with its config and layers.
    pub fn add_image(&self, repo: &str, tag: &str, img: &TestImage) {
        let ct = img.format.manifest_type();
        self.add_manifest(repo, tag, ct, &img.manifest.data);
        self.add_manifest(repo, &img.manifest.digest, ct, &img.manifest.data);
        self.add_blob(repo, &img.config.data);
        for l in &img.layers {
            self.add_blob(repo, &l.blob.data);
        }
    }

    /// Serves `body` as `repo`'s manifest `reference` (a tag or a digest), with
    /// `Docker-Content-Digest` set to the body's own digest.
    pub fn add_manifest(&self, repo: &str, reference: &str, content_type: &str, body: &[u8]) {
        self.add_manifest_with_digest_header(
            repo,
            reference,
            content_type,
            body,
            &sha256_digest(body),
        );
    }

    /// Like [`FakeRegistry::add_manifest`] with any `Docker-Content-Digest` (a lie, say).
    pub fn add_manifest_with_digest_header(
        &self,
        repo: &str,
        reference: &str,
        content_type: &str,
        body: &[u8],
        digest_header: &str,
    ) {
        self.shared.state().manifests.insert(
            (repo.to_owned(), reference.to_owned()),
            ServedManifest {
                content_type: content_type.to_owned(),
                body: body.to_vec(),
                digest_header: digest_header.to_owned(),
            },
        );
    }

    /// Serves `data` as a blob of `repo` under its own digest, which is returned.
    pub fn add_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256_digest(data);
        self.shared
            .state()
            .blobs
            .insert((repo.to_owned(), digest.clone()), data.to_vec());
        digest
    }

    /// Sets what requests for the blob `digest` get from now on (in every repository).
    pub fn set_blob(&self, digest: &str, behavior: BlobBehavior) {
        self.shared
            .state()
            .behaviors
            .insert(digest.to_owned(), behavior);
    }

    /// From now on, blob requests get 200 and the whole blob even with a `Range` header
    /// (allowed by HTTP; some registries and proxies do it).
    pub fn ignore_range(&self) {
        self.shared.state().ignore_range = true;
    }

    /// Makes requests for the blob `digest` wait until some connection is stalled (at most
    /// 30 s, then they are answered anyway): orders a fault after a stall began.
    pub fn hold_until_stalled(&self, digest: &str) {
        self.shared.state().held.insert(digest.to_owned());
    }

    /// How many requests for `path` (e.g. `/v2/`, `/v2/test/app/blobs/sha256:…`) arrived.
    pub fn requests(&self, path: &str) -> usize {
        self.shared.state().requests.get(path).copied().unwrap_or(0)
    }

    /// How many requests for `repo`'s blob `digest` arrived.
    pub fn blob_requests(&self, repo: &str, digest: &str) -> usize {
        self.requests(&format!("/v2/{repo}/blobs/{digest}"))
    }

    /// Queues faults for the next requests of the blob `digest` (or of manifests by the
    /// tag or digest `digest`: only `Status` faults apply to them), one per request.
    pub fn push_faults(&self, digest: &str, faults: impl IntoIterator<Item = Fault>) {
        self.shared
            .state()
            .faults
            .entry(digest.to_owned())
            .or_default()
            .extend(faults);
    }

    /// Faults still queued for `digest`.
    pub fn faults_left(&self, digest: &str) -> usize {
        self.shared
            .state()
            .faults
            .get(digest)
            .map_or(0, VecDeque::len)
    }

    /// Body bytes sent for the blob `digest` so far (every repository, every request).
    pub fn served_bytes(&self, digest: &str) -> u64 {
        self.shared.state().served.get(digest).copied().unwrap_or(0)
    }

    /// Forgets the byte counts and the requested ranges.
    pub fn reset_served(&self) {
        let mut st = self.shared.state();
        st.served.clear();
        st.ranges.clear();
    }

    /// The start offsets requested for the blob `digest`, in order (0: no `Range`).
    pub fn range_starts(&self, digest: &str) -> Vec<usize> {
        self.shared
            .state()
            .ranges
            .iter()
            .filter(|(d, _)| d == digest)
            .map(|(_, o)| *o)
            .collect()
    }

    /// Lets every gated blob send the rest of its body.
    pub fn open_gate(&self) {
        self.shared.gate_open.store(true, Ordering::SeqCst);
    }

    /// How many connections are holding still in the middle of a stalled blob.
    pub fn stalled(&self) -> usize {
        self.shared.stalled.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        // Dropping the accept future drops its JoinSet, which aborts every connection task.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((sock, _)) => {
                conns.spawn(serve_connection(sock, shared.clone()));
            }
            // Out of descriptors and the like: back off a little instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// A parsed request head.
struct Request {
    method: String,
    path: String,
    range_start: Option<usize>,
}

enum Head {
    Request(Request),
    Tls,
    TooLarge,
    Bad,
}

async fn read_head(sock: &mut TcpStream) -> Option<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        // A TLS record of type handshake (ClientHello) starts with 0x16.
        if buf[0] == 0x16 {
            return Some(Head::Tls);
        }
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(parse_head(&buf[..end]));
        }
        if buf.len() > MAX_HEAD {
            return Some(Head::TooLarge);
        }
    }
}

fn parse_head(head: &[u8]) -> Head {
    let Ok(text) = std::str::from_utf8(head) else {
        return Head::Bad;
    };
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Head::Bad;
    };
    if !version.starts_with("HTTP/1.") {
        return Head::Bad;
    }
    let path = target.split('?').next().unwrap_or("").to_owned();
    let mut range_start = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("range")
        {
            range_start = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(start, _)| start.trim().parse().ok());
        }
    }
    Head::Request(Request {
        method: method.to_owned(),
        path,
        range_start,
    })
}

/// One answer: status, extra headers, body, and how to send the body.
struct Answer {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    /// `Some(n)`: send only the first `n` body bytes, then hold the connection still.
    stall_after: Option<usize>,
    /// With `stall_after`: send the rest once the gate opens instead of holding forever.
    gated: bool,
    /// `Some((n, reset))`: send `n` body bytes, then close (reset: with RST).
    cut: Option<(usize, bool)>,
    /// Send the body one byte at a time, slowly.
    trickle: bool,
    /// The blob digest the body belongs to (for counting bytes sent).
    blob: Option<String>,
}

impl Answer {
    fn new(status: u16, content_type: &str, body: Vec<u8>) -> Answer {
        Answer {
            status,
            headers: vec![("Content-Type", content_type.to_owned())],
            body,
            stall_after: None,
            gated: false,
            cut: None,
            trickle: false,
            blob: None,
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Answer {
        let body = serde_json::json!({
            "errors": [{"code": code, "message": message, "detail": null}]
        });
        Answer::new(
            status,
            "application/json; charset=utf-8",
            serde_json::to_vec(&body).expect("serialize error body"),
        )
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        _ => "Unknown",
    }
}

async fn serve_connection(mut sock: TcpStream, shared: Arc<Shared>) {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut sock)).await {
        Ok(Some(h)) => h,
        // Closed, failed or too slow: nothing to answer.
        _ => return,
    };
    let (answer, head_only) = match head {
        // The daemon tries HTTPS first on loopback: refuse, it falls back to HTTP.
        Head::Tls => return,
        Head::TooLarge => (Answer::error(431, "UNSUPPORTED", "head too large"), false),
        Head::Bad => (Answer::error(400, "UNSUPPORTED", "bad request"), false),
        Head::Request(req) => {
            *shared.state().requests.entry(req.path.clone()).or_insert(0) += 1;
            let held = req
                .path
                .rsplit_once("/blobs/")
                .is_some_and(|(_, d)| shared.state().held.contains(d));
            if held {
                let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
                while shared.stalled.load(Ordering::SeqCst) == 0
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
            let head_only = req.method == "HEAD";
            let answer = if req.method == "GET" || head_only {
                route(&shared, &req)
            } else {
                Answer::error(405, "UNSUPPORTED", "the fake registry only reads")
            };
            (answer, head_only)
        }
    };
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Length: {}\r\nDocker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status),
        answer.body.len()
    );
    for (name, value) in &answer.headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    let count = |n: usize| {
        if let Some(d) = &answer.blob {
            *shared.state().served.entry(d.clone()).or_insert(0) += n as u64;
        }
    };
    if head_only {
        let _ = sock.write_all(&bytes).await;
        let _ = sock.shutdown().await;
        return;
    }
    if answer.trickle {
        if sock.write_all(&bytes).await.is_err() {
            return;
        }
        for b in &answer.body {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if sock.write_all(std::slice::from_ref(b)).await.is_err() {
                return;
            }
            count(1);
        }
        let _ = sock.shutdown().await;
        return;
    }
    if let Some((n, reset)) = answer.cut {
        let n = n.min(answer.body.len());
        bytes.extend_from_slice(&answer.body[..n]);
        if sock.write_all(&bytes).await.is_err() || sock.flush().await.is_err() {
            return;
        }
        count(n);
        if reset {
            // Dropping a socket with SO_LINGER 0 sends RST instead of FIN.
            let _ = sock.set_zero_linger();
            drop(sock);
        } else {
            let _ = sock.shutdown().await;
        }
        return;
    }
    let n = answer
        .stall_after
        .unwrap_or(answer.body.len())
        .min(answer.body.len());
    bytes.extend_from_slice(&answer.body[..n]);
    if sock.write_all(&bytes).await.is_err() || sock.flush().await.is_err() {
        return;
    }
    count(n);
    if let (Some(sent), true) = (answer.stall_after, answer.gated) {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        // Bounded: a gate never opened ends the answer short after HOLD_LIMIT.
        let deadline = tokio::time::Instant::now() + HOLD_LIMIT;
        while !shared.gate_open.load(Ordering::SeqCst) {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        shared.stalled.fetch_sub(1, Ordering::SeqCst);
        let rest = &answer.body[sent.min(answer.body.len())..];
        if sock.write_all(rest).await.is_err() || sock.flush().await.is_err() {
            return;
        }
        count(rest.len());
    } else if answer.stall_after.is_some() {
        shared.stalled.fetch_add(1, Ordering::SeqCst);
        // Hold the connection, sending nothing, until the task is aborted (fake dropped).
        std::future::pending::<()>().await;
    }
    let _ = sock.shutdown().await;
}

fn route(shared: &Shared, req: &Request) -> Answer {
    if req.path == "/v2/" || req.path == "/v2" {
        return Answer::new(200, "application/json; charset=utf-8", b"{}".to_vec());
    }
    let Some(rest) = req.path.strip_prefix("/v2/") else {
        return Answer::error(404, "NOT_FOUND", "not a registry path");
    };
    if let Some((repo, reference)) = rest.rsplit_once("/manifests/") {
        let (found, fault) = {
            let mut st = shared.state();
            let fault = st.faults.get_mut(reference).and_then(VecDeque::pop_front);
            let found = st
                .manifests
                .get(&(repo.to_owned(), reference.to_owned()))
                .cloned();
            (found, fault)
        };
        if let Some(Fault::Status { code, .. }) = fault {
            return Answer::new(code, "text/plain", b"upstream trouble".to_vec());
        }
        return match found {
            Some(m) => {
                let mut a = Answer::new(200, &m.content_type, m.body);
                a.headers.push(("Docker-Content-Digest", m.digest_header));
                a
            }
            None => Answer::error(404, "MANIFEST_UNKNOWN", "manifest unknown"),
        };
    }
    if let Some((repo, digest)) = rest.rsplit_once("/blobs/") {
        let (data, behavior, range_start, fault) = {
            let mut st = shared.state();
            st.ranges
                .push((digest.to_owned(), req.range_start.unwrap_or(0)));
            let fault = st.faults.get_mut(digest).and_then(VecDeque::pop_front);
            (
                st.blobs.get(&(repo.to_owned(), digest.to_owned())).cloned(),
                st.behaviors
                    .get(digest)
                    .copied()
                    .unwrap_or(BlobBehavior::Normal),
                req.range_start.filter(|_| !st.ignore_range),
                fault,
            )
        };
        if let Some(Fault::Status { code, retry_after }) = fault {
            let error_code = match code {
                401 => "UNAUTHORIZED",
                429 => "TOOMANYREQUESTS",
                _ => "UNKNOWN",
            };
            let mut a = if code >= 500 {
                // Proxies and crashed backends answer 5xx with plain text, not JSON.
                Answer::new(code, "text/plain", b"upstream trouble".to_vec())
            } else {
                Answer::error(code, error_code, "injected fault")
            };
            if let Some(secs) = retry_after {
                a.headers.push(("Retry-After", secs.to_string()));
            }
            return a;
        }
        let Some(mut data) = data else {
            return Answer::error(404, "BLOB_UNKNOWN", "blob unknown to registry");
        };
        if behavior == BlobBehavior::WrongBytes {
            // Same length, different content (hence a different sha256).
            for b in &mut data {
                *b ^= 0xff;
            }
        }
        let total = data.len();
        let (status, body, content_range) = match range_start {
            Some(start) if start < total => (
                206,
                data[start..].to_vec(),
                Some(format!("bytes {start}-{}/{total}", total - 1)),
            ),
            Some(start) if start > 0 || total > 0 => {
                let mut a = Answer::error(416, "RANGE_INVALID", "range not satisfiable");
                a.headers
                    .push(("Content-Range", format!("bytes */{total}")));
                return a;
            }
            _ => (200, data, None),
        };
        let mut a = Answer::new(status, "application/octet-stream", body);
        a.headers.push(("Docker-Content-Digest", digest.to_owned()));
        a.headers.push(("Accept-Ranges", "bytes".to_owned()));
        if let Some(cr) = content_range {
            a.headers.push(("Content-Range", cr));
        }
        a.blob = Some(digest.to_owned());
        match fault {
            Some(Fault::Cut { after }) => a.cut = Some((after, false)),
            Some(Fault::Reset { after }) => a.cut = Some((after, true)),
            _ => {}
        }
        if a.cut.is_some() {
            return a;
        }
        if behavior == BlobBehavior::Trickle {
            a.trickle = true;
        }
        if let BlobBehavior::Stall { after } = behavior {
            a.stall_after = Some(after);
        }
        if let BlobBehavior::Gate { after } = behavior {
            a.stall_after = Some(after);
            a.gated = true;
        }
        return a;
    }
    Answer::error(404, "NOT_FOUND", "unknown path")
}
