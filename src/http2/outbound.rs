//! The server-to-client byte stream, watched and never changed: frame headers are counted
//! past (payloads are skipped, not copied), and the server's own SETTINGS frames are read
//! for the two values the inbound rewrite must honour: the header table size the client's
//! encoder may use, and the largest frame the server accepts.

use super::frame::{self, Head};

/// The largest SETTINGS payload read (an endpoint sends a few entries of 6 bytes).
const MAX_SETTINGS: usize = 1024;

/// What the server announced in one SETTINGS frame.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Announced {
    pub header_table: Option<usize>,
    pub max_frame: Option<usize>,
}

enum State {
    /// Collecting a frame header: these bytes so far.
    Head {
        bytes: [u8; frame::HEADER_LEN],
        have: usize,
    },
    /// Skipping a payload.
    Skip(usize),
    /// Collecting a SETTINGS payload of this length.
    Settings(usize),
}

/// The server side of one connection.
pub struct Outbound {
    state: State,
    settings: Vec<u8>,
}

impl Default for Outbound {
    fn default() -> Self {
        Outbound::new()
    }
}

impl Outbound {
    pub fn new() -> Outbound {
        Outbound {
            state: State::Head {
                bytes: [0; frame::HEADER_LEN],
                have: 0,
            },
            settings: Vec::new(),
        }
    }

    /// Looks at the next `bytes` the server wrote; returns each SETTINGS frame completed
    /// in them to `seen`.
    pub fn observe(&mut self, mut bytes: &[u8], mut seen: impl FnMut(Announced)) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Head { bytes: head, have } => {
                    let n = bytes.len().min(frame::HEADER_LEN - *have);
                    head[*have..*have + n].copy_from_slice(&bytes[..n]);
                    *have += n;
                    bytes = &bytes[n..];
                    if *have < frame::HEADER_LEN {
                        continue;
                    }
                    let head = Head::parse(head);
                    let settings = head.kind == frame::SETTINGS
                        && head.flags & frame::ACK == 0
                        && head.len <= MAX_SETTINGS;
                    self.state = if settings {
                        self.settings.clear();
                        State::Settings(head.len)
                    } else {
                        State::Skip(head.len)
                    };
                    if head.len == 0 {
                        self.end_of_payload(&mut seen);
                    }
                }
                State::Skip(left) => {
                    let n = bytes.len().min(*left);
                    *left -= n;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.end_of_payload(&mut seen);
                    }
                }
                State::Settings(len) => {
                    let n = bytes.len().min(*len - self.settings.len());
                    self.settings.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if self.settings.len() == *len {
                        self.end_of_payload(&mut seen);
                    }
                }
            }
        }
    }

    fn end_of_payload(&mut self, seen: &mut impl FnMut(Announced)) {
        if let State::Settings(_) = self.state {
            seen(parse_settings(&self.settings));
        }
        self.state = State::Head {
            bytes: [0; frame::HEADER_LEN],
            have: 0,
        };
    }
}

/// The entries of a SETTINGS payload (6 bytes each: a 16-bit id, a 32-bit value).
fn parse_settings(payload: &[u8]) -> Announced {
    let mut announced = Announced::default();
    for entry in payload.chunks_exact(6) {
        let id = u16::from_be_bytes([entry[0], entry[1]]);
        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]) as usize;
        match id {
            frame::SETTINGS_HEADER_TABLE_SIZE => announced.header_table = Some(value),
            frame::SETTINGS_MAX_FRAME_SIZE => announced.max_frame = Some(value),
            _ => {}
        }
    }
    announced
}
