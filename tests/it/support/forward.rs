//! A corporate forward proxy stand-in: `CONNECT host:port` tunnels on 127.0.0.1, every
//! target sent to one loopback port (the test's registry), whatever name it asked for. It
//! records each `CONNECT` target, whether it carried `Proxy-Authorization`, and the bytes
//! it carried back. Anything but `CONNECT` is answered 405.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

#[derive(Default)]
struct Seen {
    connects: Vec<(String, Option<String>)>,
    bytes_back: u64,
}

/// A running CONNECT proxy; stopped when dropped.
pub struct ForwardProxy {
    port: u16,
    seen: Arc<Mutex<Seen>>,
    task: JoinHandle<()>,
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn head(stream: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 16 * 1024 || stream.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        buf.push(byte[0]);
    }
    String::from_utf8(buf).ok()
}

async fn serve(mut client: TcpStream, target_port: u16, seen: Arc<Mutex<Seen>>) {
    let Some(head) = head(&mut client).await else {
        return;
    };
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_owned();
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if method != "CONNECT" {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
            .await;
        return;
    }
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proxy-authorization"))
        .map(|(_, v)| v.trim().to_owned());
    seen.lock()
        .unwrap()
        .connects
        .push((target.to_owned(), auth));
    let Ok(mut upstream) = TcpStream::connect(("127.0.0.1", target_port)).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let up = tokio::io::copy(&mut cr, &mut uw);
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match ur.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    seen.lock().unwrap().bytes_back += n as u64;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
        let _ = cw.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

impl ForwardProxy {
    /// A proxy whose tunnels all lead to 127.0.0.1:`target_port`.
    pub async fn start(target_port: u16) -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, target_port, s.clone()));
            }
        });
        ForwardProxy { port, seen, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `CONNECT` targets asked for, in order, with their `Proxy-Authorization`.
    pub fn connects(&self) -> Vec<(String, Option<String>)> {
        self.seen.lock().unwrap().connects.clone()
    }

    /// Bytes carried from the registry to the daemon.
    pub fn bytes_back(&self) -> u64 {
        self.seen.lock().unwrap().bytes_back
    }
}
