//! A userspace link shaper for `bench/pull.sh`'s network case (this machine has no
//! `tc netem`): a TCP forwarder between the pulling engine and the registry that gives
//! every byte the path a node's pull takes over a real network.
//!
//! ```text
//! shape-proxy LISTEN UPSTREAM MBIT_PER_S RTT_MS REQUEST_LOG
//! ```
//!
//! - **Latency**: a new connection waits one RTT before its first byte moves (the TCP
//!   handshake), and every chunk arrives half an RTT after it left, in each direction, so
//!   a request and its answer cost one RTT.
//! - **Bandwidth**: one link per direction shared by every connection (a node's NIC): a
//!   chunk leaves when the link is free and occupies it for `len / rate`. The reader waits
//!   for the link before it reads more, so the upstream is held back as TCP's window would.
//! - **Requests**: the request line of every HTTP/1.1 request the engine sends goes to
//!   REQUEST_LOG, one a line (`METHOD PATH`), for the requests-per-pull column. A pull over
//!   plain HTTP sends requests without bodies, so each request line starts a chunk's
//!   search for `" HTTP/1.1\r\n"`.
//!
//! It runs until killed; the bench stops it by PID.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How far ahead of now the link may be booked before the reader waits.
const SLACK: Duration = Duration::from_millis(4);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// One direction of the link: when it is next free, and how fast it drains.
struct Link {
    free_at: Mutex<Instant>,
    bytes_per_s: f64,
}

impl Link {
    /// Books the link for `len` bytes; returns when they have left.
    fn book(&self, len: usize) -> Instant {
        let mut free = self.free_at.lock().unwrap_or_else(|p| p.into_inner());
        let start = (*free).max(Instant::now());
        *free = start + Duration::from_secs_f64(len as f64 / self.bytes_per_s);
        *free
    }
}

struct Shape {
    up: Link,
    down: Link,
    half_rtt: Duration,
    log: Mutex<std::fs::File>,
}

/// Request lines in `chunk`: each `METHOD PATH` before a `" HTTP/1.1\r\n"`.
fn request_lines(chunk: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(chunk);
    let mut out = Vec::new();
    let mut rest: &str = &text;
    while let Some(end) = rest.find(" HTTP/1.1\r\n") {
        let line_start = rest[..end].rfind('\n').map_or(0, |i| i + 1);
        out.push(rest[line_start..end].to_owned());
        rest = &rest[end + 11..];
    }
    out
}

/// Moves bytes from `from` to `to` through `link`, `half_rtt` late; logs request lines
/// when `log_requests`.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    shape: Arc<Shape>,
    upstream: bool,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let link = if upstream { &shape.up } else { &shape.down };
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if upstream {
            let lines = request_lines(&buf[..n]);
            if !lines.is_empty() {
                let mut log = shape.log.lock().unwrap_or_else(|p| p.into_inner());
                for l in lines {
                    let _ = writeln!(log, "{l}");
                }
            }
        }
        let left = link.book(n);
        if tx
            .send((left + shape.half_rtt, buf[..n].to_vec()))
            .await
            .is_err()
        {
            break;
        }
        // Hold the reader back only once the link is booked ahead by more than the
        // timer's granularity (1 ms): sleeping per chunk would cap a fast link.
        if left > Instant::now() + SLACK {
            tokio::time::sleep_until(left - SLACK).await;
        }
    }
    drop(tx);
    let _ = writer.await;
}

async fn serve(client: TcpStream, upstream: String, shape: Arc<Shape>) -> Res<()> {
    let server = TcpStream::connect(&upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    // The handshake's round trip.
    tokio::time::sleep(shape.half_rtt * 2).await;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = tokio::spawn(pump(cr, sw, shape.clone(), true));
    pump(sr, cw, shape, false).await;
    let _ = up.await;
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: shape-proxy LISTEN UPSTREAM MBIT_PER_S RTT_MS REQUEST_LOG";
    let [listen, upstream, mbit, rtt, log] = args.as_slice() else {
        return Err(usage.into());
    };
    let bytes_per_s = mbit.parse::<f64>()? * 1e6 / 8.0;
    let half_rtt = Duration::from_secs_f64(rtt.parse::<f64>()? / 2000.0);
    let now = Instant::now();
    let shape = Arc::new(Shape {
        up: Link {
            free_at: Mutex::new(now),
            bytes_per_s,
        },
        down: Link {
            free_at: Mutex::new(now),
            bytes_per_s,
        },
        half_rtt,
        log: Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        ),
    });
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (client, _) = listener.accept().await?;
        let (upstream, shape) = (upstream.clone(), shape.clone());
        tokio::spawn(async move {
            if let Err(e) = serve(client, upstream, shape).await {
                eprintln!("shape-proxy: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn request_lines_are_found_in_a_chunk() {
        let chunk = b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\nHEAD /v2/a/manifests/1 HTTP/1.1\r\n\r\n";
        assert_eq!(
            super::request_lines(chunk),
            ["GET /v2/", "HEAD /v2/a/manifests/1"]
        );
    }
}
