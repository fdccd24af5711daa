//! One header block rewritten: decoded with the client's HPACK table (which this decoder
//! keeps in step by seeing every block of the connection, in order), every field but
//! `:authority` re-encoded as a literal that is never added to a table, and cut into a
//! HEADERS frame and CONTINUATION frames no larger than every peer accepts. Because
//! nothing is indexed, h2's own decoder table stays empty and the two can never disagree.

use loona_hpack::Decoder;
use loona_hpack::decoder::DecoderError;
use loona_hpack::encoder::encode_integer_into;

use super::frame::{self, Head};

/// The largest rewritten block: past it the block is handed to h2 as the client sent it,
/// for h2's own limit (16 KiB of headers as tonic configures it) to refuse.
pub const MAX_BLOCK: usize = 1 << 20;

/// Why a block was not rewritten.
#[derive(Debug, thiserror::Error)]
pub enum Unwritable {
    #[error("the header block does not decode: {0:?}")]
    Hpack(DecoderError),
    #[error("the header block decodes to more than {MAX_BLOCK} bytes")]
    TooLarge,
}

/// The client's side of the connection's header compression.
pub struct Rewriter {
    decoder: Decoder<'static>,
}

impl Rewriter {
    pub fn new() -> Rewriter {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(frame::DEFAULT_HEADER_TABLE);
        Rewriter { decoder }
    }

    /// The server announced a header table of `size` bytes: the client's dynamic table
    /// size updates may go up to it.
    pub fn allow_table_size(&mut self, size: usize) {
        self.decoder.set_max_allowed_table_size(size);
    }

    /// Decodes `block` and returns it without `:authority`, every field a literal.
    pub fn rewrite(&mut self, block: &[u8]) -> Result<Vec<u8>, Unwritable> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let mut too_large = false;
        self.decoder
            .decode_with_cb(block, |name, value| {
                if too_large || &*name == b":authority" {
                    return;
                }
                literal(&name, &value, &mut out);
                too_large = out.len() > MAX_BLOCK;
            })
            .map_err(Unwritable::Hpack)?;
        if too_large {
            return Err(Unwritable::TooLarge);
        }
        Ok(out)
    }
}

/// A "literal header field without indexing — new name" (RFC 7541 §6.2.2), no Huffman.
fn literal(name: &[u8], value: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    for s in [name, value] {
        // Writing to a Vec cannot fail.
        let _ = encode_integer_into(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// Appends `block` as one HEADERS frame on `stream` followed by as many CONTINUATION
/// frames as it needs, none longer than [`frame::DEFAULT_MAX_FRAME`]. Of `flags`, only
/// END_STREAM and PRIORITY are kept (padding is gone); `priority` is the 5 bytes PRIORITY
/// carries.
pub fn frames(stream: u32, flags: u8, priority: Option<[u8; 5]>, block: &[u8], out: &mut Vec<u8>) {
    let prio = priority.map_or(0, |_| 5);
    let first = block.len().min(frame::DEFAULT_MAX_FRAME - prio);
    let (head, mut rest) = block.split_at(first);
    let mut kept = flags & (frame::END_STREAM | frame::PRIORITY);
    if priority.is_none() {
        kept &= !frame::PRIORITY;
    }
    let end = if rest.is_empty() {
        frame::END_HEADERS
    } else {
        0
    };
    Head {
        len: prio + head.len(),
        kind: frame::HEADERS,
        flags: kept | end,
        stream,
    }
    .write(out);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, more) = rest.split_at(rest.len().min(frame::DEFAULT_MAX_FRAME));
        rest = more;
        let end = if rest.is_empty() {
            frame::END_HEADERS
        } else {
            0
        };
        Head {
            len: chunk.len(),
            kind: frame::CONTINUATION,
            flags: end,
            stream,
        }
        .write(out);
        out.extend_from_slice(chunk);
    }
}
