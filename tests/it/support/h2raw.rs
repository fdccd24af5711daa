//! A raw HTTP/2 client for the CRI socket: the test chooses every byte of the request
//! (its `:authority` or none, how the header block is framed, what the HPACK dynamic table
//! holds) and reads the answer frame by frame, as grpc-go, grpcio or grpc-java would.

use std::path::Path;
use std::time::Duration;

use loona_hpack::{Decoder, Encoder};
use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;
pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// How long one answer may take.
const ANSWER_LIMIT: Duration = Duration::from_secs(20);

/// One frame's bytes.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// The DATA frame that carries one gRPC request message and ends the stream.
pub fn grpc_data(stream: u32, message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut payload = vec![0];
    payload.extend_from_slice(&(body.len() as u32).to_be_bytes());
    payload.extend_from_slice(&body);
    frame(DATA, END_STREAM, stream, &payload)
}

/// The fields of a gRPC call to `path`, with `authority` as its `:authority` (none when
/// `None`) and `extra` after the usual ones.
pub fn grpc_fields(
    path: &str,
    authority: Option<&str>,
    extra: &[(&str, &str)],
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields = vec![(":method", "POST"), (":scheme", "http"), (":path", path)];
    if let Some(a) = authority {
        fields.push((":authority", a));
    }
    fields.extend([
        ("content-type", "application/grpc"),
        ("user-agent", "grpc-go/1.58.3"),
        ("te", "trailers"),
    ]);
    fields.extend(extra.iter().copied());
    fields
        .into_iter()
        .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
        .collect()
}

/// HPACK-encodes `fields` with `encoder` (which indexes every new field, as grpc-go does).
pub fn encode(encoder: &mut Encoder, fields: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

/// How the server ended one stream.
#[derive(Debug, Default)]
pub struct Answer {
    /// Every field of its header blocks (headers and trailers), in order.
    pub fields: Vec<(String, String)>,
    /// The DATA payloads, joined.
    pub data: Vec<u8>,
    /// RST_STREAM's error code, if the stream was reset.
    pub reset: Option<u32>,
    /// GOAWAY's error code and debug data, if the connection was closed.
    pub goaway: Option<(u32, String)>,
}

impl Answer {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Asserts a normal gRPC answer (HTTP 200, `grpc-status: 0`) and decodes its message.
    pub fn message<M: Message + Default>(&self, what: &str) -> M {
        assert_eq!(self.reset, None, "{what}: stream reset: {self:?}");
        assert_eq!(self.goaway, None, "{what}: connection closed: {self:?}");
        assert_eq!(self.field(":status"), Some("200"), "{what}: {self:?}");
        assert_eq!(
            self.field("grpc-status"),
            Some("0"),
            "{what}: grpc-message {:?}",
            self.field("grpc-message")
        );
        assert!(self.data.len() >= 5, "{what}: a gRPC message: {self:?}");
        let len = u32::from_be_bytes([self.data[1], self.data[2], self.data[3], self.data[4]]);
        assert_eq!(self.data.len(), 5 + len as usize, "{what}: one message");
        M::decode(&self.data[5..]).unwrap_or_else(|e| panic!("{what}: {e}"))
    }
}

/// One connection to the socket.
pub struct RawConn {
    stream: UnixStream,
    decoder: Decoder<'static>,
    /// Whether this side acknowledges the server's SETTINGS (a replayed capture carries
    /// its own acknowledgement, and a second one is a protocol error).
    acks: bool,
}

impl RawConn {
    /// Connects; with `greet`, writes the client preface and an empty SETTINGS frame and
    /// acknowledges the server's (without, the test sends all of that itself).
    pub async fn open(socket: &Path, greet: bool) -> RawConn {
        let stream = UnixStream::connect(socket)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
        let mut conn = RawConn {
            stream,
            decoder: Decoder::new(),
            acks: greet,
        };
        if greet {
            let mut hello = PREFACE.to_vec();
            hello.extend(frame(SETTINGS, 0, 0, &[]));
            conn.send(&hello).await;
        }
        conn
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .await
            .expect("write to the socket");
    }

    /// Reads frames until `stream` ends, is reset, or the connection goes away;
    /// acknowledges the server's SETTINGS and PINGs on the way.
    pub async fn answer(&mut self, stream: u32) -> Answer {
        tokio::time::timeout(ANSWER_LIMIT, self.read_answer(stream))
            .await
            .unwrap_or_else(|_| panic!("no answer on stream {stream} in {ANSWER_LIMIT:?}"))
    }

    async fn read_answer(&mut self, stream: u32) -> Answer {
        let mut answer = Answer::default();
        let mut block = Vec::new();
        let mut ends = false;
        loop {
            let mut head = [0u8; 9];
            if self.stream.read_exact(&mut head).await.is_err() {
                panic!("the connection closed before stream {stream} ended: {answer:?}");
            }
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            self.stream
                .read_exact(&mut payload)
                .await
                .expect("a whole frame");
            match kind {
                SETTINGS if flags & 1 == 0 && self.acks => {
                    self.send(&frame(SETTINGS, 1, 0, &[])).await
                }
                PING if flags & 1 == 0 => self.send(&frame(PING, 1, 0, &payload)).await,
                GOAWAY => {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    let debug = String::from_utf8_lossy(&payload[8..]).into_owned();
                    answer.goaway = Some((code, debug));
                    return answer;
                }
                HEADERS | CONTINUATION => {
                    // Every block is decoded, whichever stream, to keep the table in step.
                    block.extend_from_slice(&payload);
                    if kind == HEADERS && flags & END_STREAM != 0 && id == stream {
                        ends = true;
                    }
                    if flags & END_HEADERS != 0 {
                        let fields = self.decoder.decode(&block).expect("server HPACK");
                        block.clear();
                        if id == stream {
                            answer.fields.extend(fields.into_iter().map(|(n, v)| {
                                (
                                    String::from_utf8_lossy(&n).into_owned(),
                                    String::from_utf8_lossy(&v).into_owned(),
                                )
                            }));
                            if ends {
                                return answer;
                            }
                        }
                    }
                }
                DATA if id == stream => {
                    answer.data.extend_from_slice(&payload);
                    if flags & END_STREAM != 0 {
                        return answer;
                    }
                }
                RST_STREAM if id == stream => {
                    answer.reset = Some(u32::from_be_bytes([
                        payload[0], payload[1], payload[2], payload[3],
                    ]));
                    return answer;
                }
                _ => {}
            }
        }
    }
}

/// A capture's bytes up to and including its first DATA frame (what the client sent
/// before it gave up and reset the stream).
pub fn up_to_first_data(capture: &[u8]) -> &[u8] {
    assert_eq!(&capture[..PREFACE.len()], PREFACE, "a client capture");
    let mut at = PREFACE.len();
    while at + 9 <= capture.len() {
        let len = u32::from_be_bytes([0, capture[at], capture[at + 1], capture[at + 2]]) as usize;
        let kind = capture[at + 3];
        at += 9 + len;
        if kind == DATA {
            return &capture[..at];
        }
    }
    panic!("no DATA frame in the capture");
}
