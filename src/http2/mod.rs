//! The CRI socket's HTTP/2 connections, made acceptable to h2 whatever `:authority` the
//! client sends. h2 (under tonic) parses `:authority` as a URI authority and resets the
//! stream when it is not one, but older grpc-go (1.58.3 in crictl and kubelet v1.29),
//! Python grpcio and grpc-java send the socket path there (`%2Frun%2F…sock`,
//! `/run/…sock`). [`AnyAuthority`] sits between the accepted socket and tonic's HTTP/2
//! server: it drops `:authority` from every header block the client sends (HPACK decoded
//! with the client's table, re-encoded without one; `inbound.rs`, `block.rs`) and watches
//! the server's SETTINGS for the limits that rewrite honours (`outbound.rs`). On a Unix
//! socket the authority means nothing, so nothing is lost; ARCHITECTURE.md says why this
//! and not a patched h2.

mod block;
mod frame;
mod inbound;
mod outbound;
#[cfg(test)]
mod tests;

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use inbound::Inbound;
use outbound::Outbound;

/// How much is read from the socket at once.
const READ_CHUNK: usize = 16 * 1024;

/// A connection whose client may send any `:authority`, or none.
pub struct AnyAuthority<S> {
    io: S,
    inbound: Inbound,
    outbound: Outbound,
    /// Read from the client, not yet processed.
    input: BytesMut,
    /// Processed, not yet read by h2 (from `out_at` on).
    out: Vec<u8>,
    out_at: usize,
    eof: bool,
}

impl<S> AnyAuthority<S> {
    pub fn new(io: S) -> AnyAuthority<S> {
        AnyAuthority {
            io,
            inbound: Inbound::new(),
            outbound: Outbound::new(),
            input: BytesMut::new(),
            out: Vec::new(),
            out_at: 0,
            eof: false,
        }
    }

    /// The accepted socket.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    fn observe_written(&mut self, written: &[u8]) {
        let inbound = &mut self.inbound;
        self.outbound.observe(written, |a| {
            inbound.server_settings(a.header_table, a.max_frame)
        });
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for AnyAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_at < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_at);
                buf.put_slice(&this.out[this.out_at..this.out_at + n]);
                this.out_at += n;
                if this.out_at == this.out.len() {
                    this.out.clear();
                    this.out_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            if this.inbound.is_raw() && this.input.is_empty() {
                // Untouched from here on: straight into h2's buffer.
                return Pin::new(&mut this.io).poll_read(cx, buf);
            }
            this.input.reserve(READ_CHUNK);
            let n = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.input
            ))?;
            if n == 0 {
                // A frame cut short by the client's close goes to h2 as it is.
                this.eof = true;
                this.out.extend_from_slice(&this.input);
                this.input.clear();
                continue;
            }
            this.inbound.process(&mut this.input, &mut this.out);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AnyAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.observe_written(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let n = ready!(Pin::new(&mut this.io).poll_write_vectored(cx, bufs))?;
        let mut left = n;
        for b in bufs {
            if left == 0 {
                break;
            }
            let k = left.min(b.len());
            this.observe_written(&b[..k]);
            left -= k;
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
