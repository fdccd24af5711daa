//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 in front of a real [`Registry`]: the
//! daemon is pointed at the proxy as its registry, images are pushed to the registry
//! directly, and every request the daemon makes is forwarded (method, path and query,
//! headers such as `Authorization` and `Range`, body) and its answer served back, unless
//! a fault configured for the request's path fires first.
//!
//! Faults ([`Fault`]) are set per path substring (a blob digest, `/manifests/`) and fire
//! on the next `times` GET requests whose path contains it, in the order they were set:
//! a body reset or cut short, a stall, a trickle, an error status, a 429 with
//! `Retry-After`, or wrong bytes of the right length. The proxy counts body bytes served
//! per path and records each GET's `Range` header, so a test sees what a resume saved.
//! [`Proxy::limit_rate`] slows every body down to a link's speed.
//!
//! It runs on the test's tokio runtime (axum's server, reqwest to the registry). The
//! answer is read whole from the registry before it is served (test blobs are a few MB),
//! so a fault acts on exact byte offsets. Dropping the [`Proxy`] stops the server and
//! releases every stalled or trickling body.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Registry;

/// Body chunk served at once (a fault's offset is exact whatever the chunk).
const CHUNK: usize = 64 * 1024;
/// Upper bound for a stalled or trickling body to hold its connection.
const HOLD_LIMIT: Duration = Duration::from_secs(60);
/// How long a [`Fault::Reset`] body waits after its last byte before it breaks.
const RESET_DELAY: Duration = Duration::from_millis(500);
/// Upper bound for one request to the registry.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// What the proxy does to one request instead of (or to) the registry's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Serve the headers (full `Content-Length`) and `after` body bytes, wait half a
    /// second (so those bytes reach the client), then abort the connection: the client
    /// sees a broken body.
    Reset { after: usize },
    /// Serve `after` body bytes as a complete answer (`Content-Length: after`): a body
    /// that ends cleanly, but short.
    Truncate { after: usize },
    /// Serve the headers and `after` body bytes, then nothing more (the connection is
    /// held until the proxy is dropped, at most a minute).
    Stall { after: usize },
    /// Serve the body one byte per second.
    Trickle,
    /// Answer this status (with an OCI error body) without asking the registry.
    Status(u16),
    /// Answer 429 with `Retry-After: <seconds>` and an error body with this OCI error
    /// code (docker-registry sends `TOOMANYREQUESTS`) without asking the registry.
    TooMany {
        retry_after: u32,
        code: &'static str,
    },
    /// Serve the registry's answer with every body byte flipped (same length).
    WrongBytes,
}

struct Rule {
    pattern: String,
    fault: Fault,
    left: usize,
}

#[derive(Default)]
struct Counts {
    rules: Vec<Rule>,
    /// Request path (no query) → body bytes served for it.
    served: HashMap<String, u64>,
    /// (path, `Range` header) of every GET, in order.
    gets: Vec<(String, Option<String>)>,
    /// Body bytes per second each answer is served at (`None`: as fast as it goes).
    rate: Option<u64>,
}

struct Shared {
    counts: Mutex<Counts>,
    upstream: String,
    http: reqwest::Client,
    cancel: CancellationToken,
}

impl Shared {
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy on 127.0.0.1:<port> forwarding to one registry.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy in front of `registry` (plain HTTP, no credentials of its own).
    pub async fn start(registry: &Registry) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy on 127.0.0.1:0");
        let port = listener.local_addr().expect("proxy address").port();
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(UPSTREAM_TIMEOUT)
            .build()
            .expect("build the proxy's HTTP client");
        let shared = Arc::new(Shared {
            counts: Mutex::new(Counts::default()),
            upstream: registry.url(),
            http,
            cancel: CancellationToken::new(),
        });
        let app = Router::new().fallback(forward).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { port, shared, task }
    }

    /// `127.0.0.1:<port>`, the registry part of image names pulled through the proxy.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The next `times` GET requests whose path contains `pattern` get `fault`.
    pub fn fault(&self, pattern: &str, fault: Fault, times: usize) {
        self.shared.counts().rules.push(Rule {
            pattern: pattern.to_owned(),
            fault,
            left: times,
        });
    }

    /// Serves every body at most `bytes_per_second` (each answer on its own: parallel
    /// downloads each get the rate), like a slow link to the registry.
    pub fn limit_rate(&self, bytes_per_second: u64) {
        self.shared.counts().rate = Some(bytes_per_second.max(1));
    }

    /// How many faults set for `pattern` have not fired yet.
    pub fn faults_left(&self, pattern: &str) -> usize {
        let c = self.shared.counts();
        c.rules
            .iter()
            .filter(|r| r.pattern == pattern)
            .map(|r| r.left)
            .sum()
    }

    /// Body bytes served for requests whose path contains `pattern`.
    pub fn served(&self, pattern: &str) -> u64 {
        let c = self.shared.counts();
        c.served
            .iter()
            .filter(|(p, _)| p.contains(pattern))
            .map(|(_, n)| n)
            .sum()
    }

    /// The `Range` header of each GET whose path contains `pattern`, in order.
    pub fn ranges(&self, pattern: &str) -> Vec<Option<String>> {
        let c = self.shared.counts();
        c.gets
            .iter()
            .filter(|(p, _)| p.contains(pattern))
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// How many GET requests had a path containing `pattern`.
    pub fn gets(&self, pattern: &str) -> usize {
        self.ranges(pattern).len()
    }

    /// Forgets the bytes served and the requests seen (faults stay).
    pub fn reset_counts(&self) {
        let mut c = self.shared.counts();
        c.served.clear();
        c.gets.clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
        self.task.abort();
    }
}

/// `N` of a `Range: bytes=N-` header, if `range` is one.
pub fn range_start(range: &str) -> Option<u64> {
    range
        .strip_prefix("bytes=")?
        .strip_suffix('-')?
        .parse()
        .ok()
}

fn plain(code: u16, headers: &[(header::HeaderName, String)], body: String) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(code).expect("a valid status code");
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (k, v) in headers {
        h.insert(k.clone(), HeaderValue::from_str(v).expect("a header value"));
    }
    r
}

/// An OCI error envelope, as docker-registry sends (`TOOMANYREQUESTS` for a 429).
fn error_body(code: u16) -> String {
    envelope(
        if code == 429 {
            "TOOMANYREQUESTS"
        } else {
            "UNAVAILABLE"
        },
        code,
    )
}

fn envelope(name: &str, code: u16) -> String {
    format!(
        r#"{{"errors":[{{"code":"{name}","message":"status {code} injected by the test proxy"}}]}}"#
    )
}

/// Headers that describe one hop's connection or framing, not the message.
fn hop_by_hop(name: &header::HeaderName) -> bool {
    [
        header::HOST,
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
    ]
    .contains(name)
}

async fn forward(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let path_q = req
        .uri()
        .path_and_query()
        .map_or_else(|| path.clone(), |p| p.as_str().to_owned());
    let headers = req.headers().clone();
    let fault = (method == Method::GET)
        .then(|| {
            let mut c = shared.counts();
            let range = headers
                .get(header::RANGE)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            c.gets.push((path.clone(), range));
            let rule = c
                .rules
                .iter_mut()
                .find(|r| r.left > 0 && path.contains(&r.pattern))?;
            rule.left -= 1;
            Some(rule.fault)
        })
        .flatten();
    match fault {
        Some(Fault::Status(code)) => return plain(code, &[], error_body(code)),
        Some(Fault::TooMany { retry_after, code }) => {
            return plain(
                429,
                &[(header::RETRY_AFTER, retry_after.to_string())],
                envelope(code, 429),
            );
        }
        _ => {}
    }
    let body = match axum::body::to_bytes(req.into_body(), usize::MAX).await {
        Ok(b) => b,
        Err(e) => return plain(400, &[], format!("reading the request body: {e}")),
    };
    let mut up = shared
        .http
        .request(method, format!("{}{path_q}", shared.upstream));
    for (k, v) in &headers {
        if !hop_by_hop(k) {
            up = up.header(k, v);
        }
    }
    let answer = match up.body(body).send().await {
        Ok(a) => a,
        Err(e) => return plain(502, &[], format!("the registry did not answer: {e}")),
    };
    let status = answer.status();
    let mut out_headers = HeaderMap::new();
    for (k, v) in answer.headers() {
        if !hop_by_hop(k) {
            out_headers.append(k, v.clone());
        }
    }
    let data = match answer.bytes().await {
        Ok(d) => d,
        Err(e) => return plain(502, &[], format!("reading the registry's answer: {e}")),
    };
    let length = match fault {
        Some(Fault::Truncate { after }) => after.min(data.len()),
        _ => data.len(),
    };
    out_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let body = Body::from_stream(body_stream(shared, path, data, fault));
    let mut r = Response::new(body);
    *r.status_mut() = status;
    *r.headers_mut() = out_headers;
    r
}

/// The state of one answer's body as it is served.
struct Serving {
    shared: Arc<Shared>,
    path: String,
    data: Bytes,
    pos: usize,
    fault: Option<Fault>,
    done: bool,
}

type Item = Result<Bytes, std::io::Error>;

/// The answer's body, chunk by chunk, with `fault` applied and every byte counted.
fn body_stream(
    shared: Arc<Shared>,
    path: String,
    data: Bytes,
    fault: Option<Fault>,
) -> impl futures_util::Stream<Item = Item> + Send + 'static {
    let s = Serving {
        shared,
        path,
        data,
        pos: 0,
        fault,
        done: false,
    };
    futures_util::stream::unfold(s, |mut s| async move {
        let item = next_chunk(&mut s).await?;
        Some((item, s))
    })
}

async fn next_chunk(s: &mut Serving) -> Option<Item> {
    if s.done {
        return None;
    }
    let len = s.data.len();
    let limit = match s.fault {
        Some(Fault::Reset { after } | Fault::Truncate { after } | Fault::Stall { after }) => {
            after.min(len)
        }
        _ => len,
    };
    if s.pos < limit {
        let size = if s.fault == Some(Fault::Trickle) {
            tokio::select! {
                _ = s.shared.cancel.cancelled() => {
                    s.done = true;
                    return Some(Err(std::io::Error::other("the proxy stopped")));
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            1
        } else {
            CHUNK.min(limit - s.pos)
        };
        let rate = s.shared.counts().rate;
        if let Some(rate) = rate {
            let pause = Duration::from_secs_f64(size as f64 / rate as f64);
            tokio::select! {
                _ = s.shared.cancel.cancelled() => {
                    s.done = true;
                    return Some(Err(std::io::Error::other("the proxy stopped")));
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
        let mut chunk = s.data.slice(s.pos..s.pos + size);
        if s.fault == Some(Fault::WrongBytes) {
            chunk = chunk.iter().map(|b| b ^ 0xff).collect::<Vec<u8>>().into();
        }
        s.pos += size;
        *s.shared.counts().served.entry(s.path.clone()).or_default() += size as u64;
        return Some(Ok(chunk));
    }
    s.done = true;
    match s.fault {
        Some(Fault::Reset { .. }) if limit < len => {
            // Give the bytes served time to leave hyper's buffer and reach the client:
            // aborting at once would drop them, and the client would see nothing.
            tokio::select! {
                _ = s.shared.cancel.cancelled() => {}
                _ = tokio::time::sleep(RESET_DELAY) => {}
            }
            Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "reset by the test proxy",
            )))
        }
        Some(Fault::Stall { .. }) => {
            tokio::select! {
                _ = s.shared.cancel.cancelled() => {}
                _ = tokio::time::sleep(HOLD_LIMIT) => {}
            }
            Some(Err(std::io::Error::other("stall over")))
        }
        _ => None,
    }
}
