//! The rewrite on bytes: real clients' captures, CONTINUATION, padding, the dynamic
//! table across many blocks, and what must pass untouched.

use bytes::BytesMut;
use loona_hpack::{Decoder, Encoder};

use super::frame::{self, Head};
use super::inbound::Inbound;
use super::outbound::{Announced, Outbound};

const FIXTURES: [(&str, &[u8]); 3] = [
    (
        "crictl-v1.29.0-images",
        include_bytes!("../../tests/fixtures/grpc-clients/crictl-v1.29.0-images.bin"),
    ),
    (
        "crictl-v1.29.0-version",
        include_bytes!("../../tests/fixtures/grpc-clients/crictl-v1.29.0-version.bin"),
    ),
    (
        "crictl-v1.36.0-images",
        include_bytes!("../../tests/fixtures/grpc-clients/crictl-v1.36.0-images.bin"),
    ),
];

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// Runs `bytes` through a new [`Inbound`] in chunks of `chunk` bytes.
fn rewrite(bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut inbound = Inbound::new();
    rewrite_with(&mut inbound, bytes, chunk)
}

fn rewrite_with(inbound: &mut Inbound, bytes: &[u8], chunk: usize) -> Vec<u8> {
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(chunk) {
        input.extend_from_slice(piece);
        inbound.process(&mut input, &mut out);
    }
    assert!(input.is_empty(), "{} bytes left unprocessed", input.len());
    out
}

/// The frames after the preface: each header and payload.
fn frames(bytes: &[u8]) -> Vec<(Head, Vec<u8>)> {
    assert_eq!(&bytes[..24], frame::PREFACE, "the preface passes first");
    let mut rest = &bytes[24..];
    let mut all = Vec::new();
    while !rest.is_empty() {
        let head = Head::parse(rest);
        all.push((head, rest[9..9 + head.len].to_vec()));
        rest = &rest[9 + head.len..];
    }
    all
}

/// The fields of every header block in `frames`, in order, decoded with one decoder.
fn blocks(frames: &[(Head, Vec<u8>)], decoder: &mut Decoder) -> Vec<Fields> {
    let mut out = Vec::new();
    let mut block = Vec::new();
    for (head, payload) in frames {
        match head.kind {
            frame::HEADERS => {
                let mut p = &payload[..];
                let mut pad = 0;
                if head.flags & frame::PADDED != 0 {
                    pad = usize::from(p[0]);
                    p = &p[1..];
                }
                if head.flags & frame::PRIORITY != 0 {
                    p = &p[5..];
                }
                block = p[..p.len() - pad].to_vec();
            }
            frame::CONTINUATION => block.extend_from_slice(payload),
            _ => continue,
        }
        if head.flags & frame::END_HEADERS != 0 {
            out.push(decoder.decode(&block).expect("the block decodes"));
        }
    }
    out
}

fn without_authority(fields: &Fields) -> Fields {
    fields
        .iter()
        .filter(|(n, _)| n != b":authority")
        .cloned()
        .collect()
}

fn preface_and(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut bytes = frame::PREFACE.to_vec();
    for f in frames {
        bytes.extend_from_slice(f);
    }
    bytes
}

fn frame_bytes(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    Head {
        len: payload.len(),
        kind,
        flags,
        stream,
    }
    .write(&mut out);
    out.extend_from_slice(payload);
    out
}

fn request(authority: &[u8], extra: &[(&[u8], &[u8])]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut fields: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), b"POST".to_vec()),
        (b":scheme".to_vec(), b"http".to_vec()),
        (
            b":path".to_vec(),
            b"/runtime.v1.ImageService/ListImages".to_vec(),
        ),
        (b":authority".to_vec(), authority.to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
    ];
    for (n, v) in extra {
        fields.push((n.to_vec(), v.to_vec()));
    }
    fields
}

fn encode(encoder: &mut Encoder, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

#[test]
fn real_clients_lose_only_their_authority() {
    for (name, bytes) in FIXTURES {
        let original = frames(bytes);
        let sent = blocks(&original, &mut Decoder::new());
        assert_eq!(sent.len(), 1, "{name}: one request");
        assert!(
            sent[0].iter().any(|(n, _)| n == b":authority"),
            "{name}: the capture carries an authority"
        );
        for chunk in [1, 7, bytes.len()] {
            let out = rewrite(bytes, chunk);
            let rewritten = frames(&out);
            assert_eq!(
                blocks(&rewritten, &mut Decoder::new()),
                vec![without_authority(&sent[0])],
                "{name} in chunks of {chunk}"
            );
            assert_eq!(rewritten.len(), original.len(), "{name}: as many frames");
            for ((a, pa), (b, pb)) in original.iter().zip(&rewritten) {
                assert_eq!(a.kind, b.kind, "{name}");
                assert_eq!(a.stream, b.stream, "{name}");
                if a.kind != frame::HEADERS {
                    assert_eq!((a, pa), (b, pb), "{name}: other frames pass unchanged");
                }
            }
        }
    }
}

#[test]
fn a_block_split_over_continuation_frames_is_joined() {
    let mut encoder = Encoder::new();
    let fields = request(b"/run/x.sock", &[(b"x-long", &[b'a'; 300])]);
    let block = encode(&mut encoder, &fields);
    let (a, rest) = block.split_at(40);
    let (b, c) = rest.split_at(100);
    let bytes = preface_and(&[
        frame_bytes(frame::HEADERS, frame::END_STREAM, 1, a),
        frame_bytes(frame::CONTINUATION, 0, 1, b),
        frame_bytes(frame::CONTINUATION, frame::END_HEADERS, 1, c),
    ]);
    for chunk in [1, 9, 10, bytes.len()] {
        let out = frames(&rewrite(&bytes, chunk));
        assert_eq!(out.len(), 1, "one HEADERS frame");
        assert_eq!(
            out[0].0.flags,
            frame::END_STREAM | frame::END_HEADERS,
            "END_STREAM kept"
        );
        assert_eq!(
            blocks(&out, &mut Decoder::new()),
            vec![without_authority(&fields)]
        );
    }
}

#[test]
fn padding_goes_and_priority_stays() {
    let fields = request(b"%2Frun%2Fx.sock", &[]);
    let block = encode(&mut Encoder::new(), &fields);
    let mut payload = vec![3u8];
    payload.extend_from_slice(&[0x80, 0, 0, 3, 15]);
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let flags = frame::PADDED | frame::PRIORITY | frame::END_HEADERS;
    let bytes = preface_and(&[frame_bytes(frame::HEADERS, flags, 3, &payload)]);
    let out = frames(&rewrite(&bytes, bytes.len()));
    assert_eq!(out[0].0.flags, frame::PRIORITY | frame::END_HEADERS);
    assert_eq!(
        &out[0].1[..5],
        &[0x80, 0, 0, 3, 15],
        "the priority bytes kept"
    );
    assert_eq!(
        blocks(&out, &mut Decoder::new()),
        vec![without_authority(&fields)]
    );
}

#[test]
fn a_large_block_is_cut_into_frames_every_server_accepts() {
    let value = vec![b'v'; 40_000];
    let fields = request(b"localhost", &[(b"x-big", &value)]);
    let block = encode(&mut Encoder::new(), &fields);
    // The client may send one HEADERS frame this large once the server allows it.
    let mut inbound = Inbound::new();
    inbound.server_settings(None, Some(1 << 20));
    let bytes = preface_and(&[frame_bytes(frame::HEADERS, frame::END_HEADERS, 1, &block)]);
    let out = frames(&rewrite_with(&mut inbound, &bytes, 5000));
    assert!(out.len() >= 3, "HEADERS and CONTINUATIONs: {}", out.len());
    assert_eq!(out[0].0.kind, frame::HEADERS);
    for (i, (head, _)) in out.iter().enumerate() {
        assert!(
            head.len <= frame::DEFAULT_MAX_FRAME,
            "frame {i}: {}",
            head.len
        );
        let last = i == out.len() - 1;
        assert_eq!(head.flags & frame::END_HEADERS != 0, last, "frame {i}");
        if i > 0 {
            assert_eq!(head.kind, frame::CONTINUATION);
        }
    }
    assert_eq!(
        blocks(&out, &mut Decoder::new()),
        vec![without_authority(&fields)]
    );
}

/// 300 requests on one connection from an encoder that indexes everything in a small
/// table (so entries are evicted all along), with size updates between: every block h2
/// gets decodes, with h2's one decoder, to what the client meant.
#[test]
fn the_client_table_is_followed_across_many_blocks() {
    let mut encoder = Encoder::new();
    let mut inbound = Inbound::new();
    let mut server = Decoder::new();
    let mut bytes = frame::PREFACE.to_vec();
    let mut expected = Vec::new();
    for n in 0..300u32 {
        let mut block = Vec::new();
        if n % 50 == 10 {
            // A dynamic table size update, as a client does after the server's SETTINGS.
            let size = if n % 100 == 10 { 256 } else { 4096 };
            encoder.set_max_table_size(size);
            loona_hpack::encoder::encode_integer_into(size, 5, 0x20, &mut block).unwrap();
        }
        let authority = format!("%2Frun%2Fx{}.sock", n % 7);
        let id = n.to_string();
        let fields = request(authority.as_bytes(), &[(b"x-request", id.as_bytes())]);
        block.extend_from_slice(&encode(&mut encoder, &fields));
        expected.push(without_authority(&fields));
        bytes.extend_from_slice(&frame_bytes(
            frame::HEADERS,
            frame::END_HEADERS | frame::END_STREAM,
            1 + 2 * n,
            &block,
        ));
    }
    let out = frames(&rewrite_with(&mut inbound, &bytes, 333));
    assert!(!inbound.is_raw(), "nothing given up");
    assert_eq!(blocks(&out, &mut server), expected);
}

#[test]
fn a_size_update_past_what_the_server_allows_is_left_to_h2() {
    let mut block = Vec::new();
    loona_hpack::encoder::encode_integer_into(1 << 20, 5, 0x20, &mut block).unwrap();
    block.extend_from_slice(&encode(&mut Encoder::new(), &request(b"/run/x.sock", &[])));
    let bytes = preface_and(&[frame_bytes(frame::HEADERS, frame::END_HEADERS, 1, &block)]);

    let mut inbound = Inbound::new();
    assert_eq!(
        rewrite_with(&mut inbound, &bytes, 64),
        bytes,
        "passed as sent"
    );
    assert!(inbound.is_raw());

    // Once the server announced a table that large, the same block is rewritten.
    let mut inbound = Inbound::new();
    let mut outbound = Outbound::new();
    let settings = frame_bytes(frame::SETTINGS, 0, 0, &[0, 1, 0, 0x10, 0, 0]);
    outbound.observe(&settings, |a| {
        inbound.server_settings(a.header_table, a.max_frame)
    });
    let out = rewrite_with(&mut inbound, &bytes, 64);
    assert!(!inbound.is_raw());
    assert_ne!(out, bytes);
}

#[test]
fn what_is_not_http2_as_a_client_sends_it_passes_untouched() {
    let http1 = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let headers = frame_bytes(frame::HEADERS, 0, 1, &[0x82]);
    let data = frame_bytes(frame::DATA, frame::END_STREAM, 1, &[0; 5]);
    let stray = frame_bytes(frame::CONTINUATION, frame::END_HEADERS, 1, &[0x82]);
    let garbage = frame_bytes(frame::HEADERS, frame::END_HEADERS, 1, &[0xff; 8]);
    let bad_padding = frame_bytes(frame::HEADERS, frame::PADDED | frame::END_HEADERS, 1, &[9]);
    let cases = [
        ("HTTP/1.1", http1),
        ("DATA inside a header block", preface_and(&[headers, data])),
        ("CONTINUATION without HEADERS", preface_and(&[stray])),
        ("a block that does not decode", preface_and(&[garbage])),
        ("padding longer than the frame", preface_and(&[bad_padding])),
    ];
    for (what, bytes) in cases {
        for chunk in [1, 4, bytes.len()] {
            let mut inbound = Inbound::new();
            assert_eq!(rewrite_with(&mut inbound, &bytes, chunk), bytes, "{what}");
            assert!(inbound.is_raw(), "{what}");
        }
    }
}

#[test]
fn other_frames_pass_unchanged_however_they_arrive() {
    let payload: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let bytes = preface_and(&[
        frame_bytes(frame::SETTINGS, 0, 0, &[0, 4, 0, 0x10, 0, 0]),
        frame_bytes(frame::DATA, 0, 1, &payload[..16_384]),
        frame_bytes(0x8, 0, 0, &[0, 1, 0, 0]),
        frame_bytes(0x6, 0, 0, &[1; 8]),
    ]);
    for chunk in [1, 1000, bytes.len()] {
        let mut inbound = Inbound::new();
        assert_eq!(rewrite_with(&mut inbound, &bytes, chunk), bytes);
        assert!(!inbound.is_raw());
    }
}

#[test]
fn the_server_settings_are_read_however_the_writes_split_them() {
    let mut stream = frame_bytes(frame::DATA, 0, 1, &[7; 100]);
    stream.extend(frame_bytes(frame::SETTINGS, frame::ACK, 0, &[]));
    stream.extend(frame_bytes(
        frame::SETTINGS,
        0,
        0,
        &[0, 1, 0, 0, 0x20, 0, 0, 5, 0, 0, 0x80, 0, 0, 3, 0, 0, 0, 100],
    ));
    stream.extend(frame_bytes(frame::SETTINGS, 0, 0, &[]));
    for chunk in [1, 2, 10, stream.len()] {
        let mut outbound = Outbound::new();
        let mut seen = Vec::new();
        for piece in stream.chunks(chunk) {
            outbound.observe(piece, |a| seen.push(a));
        }
        assert_eq!(
            seen,
            vec![
                Announced {
                    header_table: Some(8192),
                    max_frame: Some(32768),
                },
                Announced::default(),
            ],
            "in chunks of {chunk}"
        );
    }
}
