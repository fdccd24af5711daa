//! The client-to-server byte stream, rewritten on its way to h2: the preface and every
//! frame but HEADERS/CONTINUATION pass unchanged (DATA payloads are copied through as they
//! arrive, never held whole); a header block is collected whole (HEADERS plus its
//! CONTINUATIONs), rewritten by [`Rewriter`] and framed again. Anything that is not HTTP/2
//! as RFC 9113 allows a client to send it — no preface, a CONTINUATION out of place, a
//! block that does not decode — makes the rest of the connection pass untouched, so h2
//! itself refuses it with the error it always gave.

use bytes::{Buf, BytesMut};

use super::block::{self, Rewriter};
use super::frame::{self, Head};

/// Where the stream is.
#[derive(Debug, PartialEq, Eq)]
enum State {
    /// This many bytes of the preface seen.
    Preface(usize),
    /// At a frame header.
    Head,
    /// Inside the payload of a frame that passes unchanged: this many bytes to go.
    Copy(usize),
    /// Everything passes untouched from here on.
    Raw,
}

/// A header block whose CONTINUATION frames are still to come.
struct Pending {
    stream: u32,
    flags: u8,
    priority: Option<[u8; 5]>,
    block: Vec<u8>,
    /// The frames as the client sent them, for h2 to judge if the block is given up.
    raw: Vec<u8>,
}

/// The client side of one connection.
pub struct Inbound {
    state: State,
    pending: Option<Pending>,
    rewriter: Rewriter,
    /// The largest frame the server said it accepts.
    max_frame: usize,
}

impl Default for Inbound {
    fn default() -> Self {
        Inbound::new()
    }
}

impl Inbound {
    pub fn new() -> Inbound {
        Inbound {
            state: State::Preface(0),
            pending: None,
            rewriter: Rewriter::new(),
            max_frame: frame::DEFAULT_MAX_FRAME,
        }
    }

    /// The server announced its SETTINGS.
    pub fn server_settings(&mut self, header_table: Option<usize>, max_frame: Option<usize>) {
        if let Some(size) = header_table {
            self.rewriter
                .allow_table_size(size.max(frame::DEFAULT_HEADER_TABLE));
        }
        if let Some(size) = max_frame {
            self.max_frame = self.max_frame.max(size);
        }
    }

    /// Whether everything passes untouched now.
    pub fn is_raw(&self) -> bool {
        self.state == State::Raw
    }

    /// Consumes what it can of `input` (an incomplete frame header or header frame stays
    /// there) and appends what h2 is to read to `out`.
    pub fn process(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) {
        loop {
            match self.state {
                State::Raw => {
                    out.extend_from_slice(input);
                    input.clear();
                    return;
                }
                State::Preface(seen) => {
                    let n = input.len().min(frame::PREFACE.len() - seen);
                    if input[..n] != frame::PREFACE[seen..seen + n] {
                        tracing::debug!("no HTTP/2 preface: the connection passes untouched");
                        self.state = State::Raw;
                        continue;
                    }
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    if seen + n < frame::PREFACE.len() {
                        self.state = State::Preface(seen + n);
                        return;
                    }
                    self.state = State::Head;
                }
                State::Copy(left) => {
                    let n = input.len().min(left);
                    out.extend_from_slice(&input[..n]);
                    input.advance(n);
                    if n < left {
                        self.state = State::Copy(left - n);
                        return;
                    }
                    self.state = State::Head;
                }
                State::Head => {
                    if input.len() < frame::HEADER_LEN {
                        return;
                    }
                    let head = Head::parse(input);
                    if !self.continues_pending(head) {
                        self.give_up(out, "a frame came between a HEADERS and its CONTINUATION");
                        continue;
                    }
                    if head.kind != frame::HEADERS && head.kind != frame::CONTINUATION {
                        out.extend_from_slice(&input[..frame::HEADER_LEN]);
                        input.advance(frame::HEADER_LEN);
                        self.state = State::Copy(head.len);
                        continue;
                    }
                    if head.len > self.max_frame {
                        self.give_up(out, "a header frame larger than the server accepts");
                        continue;
                    }
                    if input.len() < frame::HEADER_LEN + head.len {
                        return;
                    }
                    let whole = input.split_to(frame::HEADER_LEN + head.len);
                    self.header_frame(head, &whole, out);
                }
            }
        }
    }

    /// Whether a frame with `head` may come now: while a block is pending, only its
    /// CONTINUATION may; otherwise no CONTINUATION may.
    fn continues_pending(&self, head: Head) -> bool {
        match &self.pending {
            Some(p) => head.kind == frame::CONTINUATION && head.stream == p.stream,
            None => head.kind != frame::CONTINUATION,
        }
    }

    /// A whole HEADERS or CONTINUATION frame (`whole` = header + payload).
    fn header_frame(&mut self, head: Head, whole: &[u8], out: &mut Vec<u8>) {
        let payload = &whole[frame::HEADER_LEN..];
        if head.kind == frame::HEADERS {
            let Some((priority, fragment)) = split_headers(head.flags, payload) else {
                out.extend_from_slice(whole);
                self.give_up(
                    out,
                    "a HEADERS frame whose padding or priority does not fit",
                );
                return;
            };
            self.pending = Some(Pending {
                stream: head.stream,
                flags: head.flags,
                priority,
                block: fragment.to_vec(),
                raw: whole.to_vec(),
            });
        } else if let Some(p) = &mut self.pending {
            p.block.extend_from_slice(payload);
            p.raw.extend_from_slice(whole);
        }
        let Some(p) = &self.pending else { return };
        if p.block.len() > block::MAX_BLOCK {
            self.give_up(out, "a header block larger than 1 MiB");
            return;
        }
        if head.flags & frame::END_HEADERS == 0 {
            return;
        }
        let Some(p) = self.pending.take() else { return };
        match self.rewriter.rewrite(&p.block) {
            Ok(rewritten) => block::frames(p.stream, p.flags, p.priority, &rewritten, out),
            Err(e) => {
                tracing::debug!(error = %e, "header block not rewritten");
                self.pending = Some(p);
                self.give_up(out, "a header block that does not decode");
            }
        }
    }

    /// Hands h2 the pending frames as they came and lets the rest pass untouched.
    fn give_up(&mut self, out: &mut Vec<u8>, why: &str) {
        tracing::debug!(why, "the connection passes untouched from here on");
        if let Some(p) = self.pending.take() {
            out.extend_from_slice(&p.raw);
        }
        self.state = State::Raw;
    }
}

/// A HEADERS payload's priority bytes and block fragment, without its padding; `None` when
/// the flags announce more than the payload holds.
fn split_headers(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut rest = payload;
    let mut pad = 0;
    if flags & frame::PADDED != 0 {
        let (&n, tail) = rest.split_first()?;
        pad = usize::from(n);
        rest = tail;
    }
    let mut priority = None;
    if flags & frame::PRIORITY != 0 {
        let (p, tail) = rest.split_first_chunk::<5>()?;
        priority = Some(*p);
        rest = tail;
    }
    let end = rest.len().checked_sub(pad)?;
    Some((priority, &rest[..end]))
}
