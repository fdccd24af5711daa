//! Any `:authority`, or none, on the CRI socket: the bytes crictl v1.29 (grpc-go 1.58.3,
//! the socket path percent-encoded) and v1.36 (grpc-go 1.80, `localhost`) really send,
//! replayed; raw HTTP/2 requests with the socket path plain, percent-encoded, `localhost`
//! and absent; a header block in CONTINUATION frames; one connection whose client indexes
//! every field in the HPACK dynamic table over hundreds of requests, with size updates.
//! Every one must get a normal gRPC answer from the real daemon.

use cri_imaged::proto::{
    ImageFsInfoResponse, ImageStatusRequest, ListImagesRequest, ListImagesResponse, VersionRequest,
    VersionResponse,
};
use loona_hpack::Encoder;

use crate::support::h2raw::{
    self, CONTINUATION, END_HEADERS, END_STREAM, HEADERS, RawConn, encode, frame, grpc_data,
    grpc_fields,
};
use crate::support::{DaemonBuilder, tempdir};

const LIST: &str = "/runtime.v1.ImageService/ListImages";

const CAPTURES: [(&str, &[u8]); 3] = [
    (
        "crictl v1.29.0 images",
        include_bytes!("../fixtures/grpc-clients/crictl-v1.29.0-images.bin"),
    ),
    (
        "crictl v1.29.0 version",
        include_bytes!("../fixtures/grpc-clients/crictl-v1.29.0-version.bin"),
    ),
    (
        "crictl v1.36.0 images",
        include_bytes!("../fixtures/grpc-clients/crictl-v1.36.0-images.bin"),
    ),
];

#[tokio::test]
async fn what_real_crictl_versions_send_is_answered() {
    let dir = tempdir();
    let mut daemon = DaemonBuilder::new(dir.path()).start().await;
    for (client, capture) in CAPTURES {
        let mut conn = RawConn::open(&daemon.socket, false).await;
        conn.send(h2raw::up_to_first_data(capture)).await;
        let answer = conn.answer(1).await;
        if client.ends_with("version") {
            let v: VersionResponse = answer.message(client);
            assert_eq!(v.runtime_api_version, "v1", "{client}: {v:?}");
        } else {
            let fs: ImageFsInfoResponse = answer.message(client);
            assert_eq!(fs.image_filesystems.len(), 1, "{client}: {fs:?}");
        }
        drop(conn);
    }
    daemon.stop().await;
    let log = daemon.output();
    assert!(!log.contains("PROTOCOL_ERROR"), "{log}");
}

#[tokio::test]
async fn any_authority_or_none_gets_a_normal_answer() {
    let dir = tempdir();
    let mut daemon = DaemonBuilder::new(dir.path()).start().await;
    let own = daemon.socket.display().to_string();
    let encoded = own.replace('/', "%2F");
    let authorities = [
        Some("/run/x.sock"),
        Some("%2Frun%2Fx.sock"),
        Some("localhost"),
        Some(own.as_str()),
        Some(encoded.as_str()),
        Some("unix:/run/x.sock"),
        Some(""),
        None,
    ];
    // Each on a new connection, then all on one.
    for authority in authorities {
        let mut conn = RawConn::open(&daemon.socket, true).await;
        let block = encode(&mut Encoder::new(), &grpc_fields(LIST, authority, &[]));
        conn.send(&frame(HEADERS, END_HEADERS, 1, &block)).await;
        conn.send(&grpc_data(1, &ListImagesRequest::default()))
            .await;
        let list: ListImagesResponse = conn.answer(1).await.message(&format!("{authority:?}"));
        assert!(list.images.is_empty(), "{list:?}");
    }
    let mut conn = RawConn::open(&daemon.socket, true).await;
    let mut encoder = Encoder::new();
    for (i, authority) in authorities.iter().enumerate() {
        let id = 1 + 2 * i as u32;
        let block = encode(&mut encoder, &grpc_fields(LIST, *authority, &[]));
        conn.send(&frame(HEADERS, END_HEADERS, id, &block)).await;
        conn.send(&grpc_data(id, &ListImagesRequest::default()))
            .await;
        let _: ListImagesResponse = conn
            .answer(id)
            .await
            .message(&format!("{authority:?} on a shared connection"));
    }
    // An error still comes back as the call's own status, not as a reset.
    let block = encode(
        &mut encoder,
        &grpc_fields(
            "/runtime.v1.ImageService/ImageStatus",
            Some("%2Frun%2Fx.sock"),
            &[],
        ),
    );
    let id = 1 + 2 * authorities.len() as u32;
    conn.send(&frame(HEADERS, END_HEADERS, id, &block)).await;
    conn.send(&grpc_data(id, &ImageStatusRequest::default()))
        .await;
    let answer = conn.answer(id).await;
    assert_eq!(answer.reset, None, "{answer:?}");
    assert_eq!(
        answer.field("grpc-status"),
        Some("3"),
        "InvalidArgument for an empty image: {answer:?}"
    );
    drop(conn);
    daemon.stop().await;
}

#[tokio::test]
async fn a_header_block_split_over_continuation_frames_is_answered() {
    let dir = tempdir();
    let mut daemon = DaemonBuilder::new(dir.path()).start().await;
    let mut conn = RawConn::open(&daemon.socket, true).await;
    let long = "x".repeat(2000);
    let fields = grpc_fields(
        LIST,
        Some("%2Frun%2Fcri-imaged%2Fcri-imaged.sock"),
        &[("x-long", &long)],
    );
    let block = encode(&mut Encoder::new(), &fields);
    let pieces: Vec<&[u8]> = block.chunks(97).collect();
    let mut bytes = frame(HEADERS, 0, 1, pieces[0]);
    for (i, piece) in pieces.iter().enumerate().skip(1) {
        let flags = if i == pieces.len() - 1 {
            END_HEADERS
        } else {
            0
        };
        bytes.extend(frame(CONTINUATION, flags, 1, piece));
    }
    assert!(pieces.len() > 10, "{} frames", pieces.len());
    // Written a few bytes at a time, so frames also arrive cut.
    for part in bytes.chunks(13) {
        conn.send(part).await;
    }
    conn.send(&grpc_data(1, &ListImagesRequest::default()))
        .await;
    let _: ListImagesResponse = conn.answer(1).await.message("CONTINUATION");
    drop(conn);
    daemon.stop().await;
}

/// grpc-go indexes `:authority`, `user-agent` and its custom metadata in the dynamic
/// table; here every field is indexed, values change on every call (so entries are evicted
/// all along), the table shrinks and grows again, and the calls interleave a RuntimeService
/// call: all 400 are answered on one connection.
#[tokio::test]
async fn a_client_that_uses_the_dynamic_table_across_many_requests_is_answered() {
    let dir = tempdir();
    let mut daemon = DaemonBuilder::new(dir.path()).start().await;
    let mut conn = RawConn::open(&daemon.socket, true).await;
    let mut encoder = Encoder::new();
    for n in 0..400u32 {
        let id = 1 + 2 * n;
        let mut block = Vec::new();
        if n % 100 == 50 {
            let size = if n % 200 == 50 { 128 } else { 4096 };
            encoder.set_max_table_size(size);
            loona_hpack::encoder::encode_integer_into(size, 5, 0x20, &mut block).unwrap();
        }
        let authority = format!("%2Frun%2Fnode{}%2Fcri.sock", n % 9);
        let request_id = format!("req-{n}");
        let version = n % 5 == 0;
        let path = if version {
            "/runtime.v1.RuntimeService/Version"
        } else {
            LIST
        };
        let fields = grpc_fields(path, Some(&authority), &[("x-request-id", &request_id)]);
        block.extend(encode(&mut encoder, &fields));
        conn.send(&frame(HEADERS, END_HEADERS, id, &block)).await;
        let answer = if version {
            conn.send(&grpc_data(id, &VersionRequest::default())).await;
            let v: VersionResponse = conn.answer(id).await.message(&format!("call {n}"));
            assert_eq!(v.runtime_api_version, "v1");
            continue;
        } else {
            conn.send(&grpc_data(id, &ListImagesRequest::default()))
                .await;
            conn.answer(id).await
        };
        let _: ListImagesResponse = answer.message(&format!("call {n}"));
    }
    // END_STREAM on the HEADERS itself (no DATA): still an answer, not a reset.
    let block = encode(&mut encoder, &grpc_fields(LIST, Some("/run/x.sock"), &[]));
    conn.send(&frame(HEADERS, END_HEADERS | END_STREAM, 801, &block))
        .await;
    let answer = conn.answer(801).await;
    assert_eq!(answer.reset, None, "{answer:?}");
    assert!(answer.field("grpc-status").is_some(), "{answer:?}");
    drop(conn);
    daemon.stop().await;
}

/// The grpcio version scripts/test.sh installs from PyPI.
const GRPCIO: &str = "1.85.3";

/// Runs tests/clients/grpcio_call.py: each (method, request) once, in order; returns per
/// call `Ok(response bytes)` or `Err((code name, details))`.
fn grpcio(
    dir: &std::path::Path,
    socket: &std::path::Path,
    authority: Option<&str>,
    calls: &[(&str, Vec<u8>)],
) -> Vec<Result<Vec<u8>, (String, String)>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/grpcio_call.py");
    let mut args = vec![
        script.to_string(),
        socket.display().to_string(),
        authority.unwrap_or("-").to_string(),
    ];
    for (method, request) in calls {
        args.push(method.to_string());
        args.push(hex::encode(request));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = crate::support::run_tool(dir, "python3", &args, std::time::Duration::from_secs(120));
    assert!(
        out.status.success(),
        "python3 grpcio_call.py failed (needs `pip install grpcio=={GRPCIO}`, which \
         scripts/test.sh does): {}",
        out.stderr
    );
    out.stdout
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("ok"), Some(h), _) => Ok(hex::decode(h).expect("hex")),
                (Some("ok"), None, _) => Ok(Vec::new()),
                (Some("err"), Some(code), details) => {
                    Err((code.to_string(), details.unwrap_or("").to_string()))
                }
                _ => panic!("unexpected grpcio_call.py line {line:?}"),
            }
        })
        .collect()
}

/// Python grpcio on `unix:` with its default authority (the socket path, percent-encoded),
/// and with grpc-java's form (the plain path): a pull, a list, an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_with_its_default_authority_is_answered() {
    use cri_imaged::proto::{ImageSpec, PullImageRequest, PullImageResponse};
    use prost::Message;

    let s = crate::support::Setup::new().await;
    let image = crate::support::ImageBuilder::new().build();
    image.push(&s.registry, "test/grpcio", "1").await;
    let pull = PullImageRequest {
        image: Some(ImageSpec {
            image: s.name("test/grpcio:1"),
            ..Default::default()
        }),
        ..Default::default()
    };
    for authority in [None, Some("/run/cri-imaged/cri-imaged.sock")] {
        let answers = grpcio(
            s.dir.path(),
            &s.daemon.socket,
            authority,
            &[
                ("/runtime.v1.ImageService/PullImage", pull.encode_to_vec()),
                (
                    "/runtime.v1.ImageService/ListImages",
                    ListImagesRequest::default().encode_to_vec(),
                ),
                (
                    "/runtime.v1.ImageService/ImageStatus",
                    ImageStatusRequest::default().encode_to_vec(),
                ),
                (
                    "/runtime.v1.RuntimeService/Version",
                    VersionRequest::default().encode_to_vec(),
                ),
            ],
        );
        let what = format!("grpcio {GRPCIO}, authority {authority:?}");
        assert_eq!(answers.len(), 4, "{what}: {answers:?}");
        let pulled = PullImageResponse::decode(&answers[0].clone().expect(&what)[..]).unwrap();
        assert_eq!(pulled.image_ref, image.id(), "{what}");
        let list = ListImagesResponse::decode(&answers[1].clone().expect(&what)[..]).unwrap();
        assert_eq!(
            list.images.iter().map(|i| &i.id).collect::<Vec<_>>(),
            vec![&image.id()],
            "{what}"
        );
        let (code, details) = answers[2].clone().expect_err(&what);
        assert_eq!(code, "INVALID_ARGUMENT", "{what}: {details}");
        let v = VersionResponse::decode(&answers[3].clone().expect(&what)[..]).unwrap();
        assert_eq!(v.runtime_name, "cri-imaged", "{what}");
    }
}
