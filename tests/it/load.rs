//! Load: 50 clients, each on its own connection to the daemon's socket, make 2,000 mixed
//! calls (PullImage, ListImages, ImageStatus, RemoveImage) over an overlapping set of
//! images from the real registry (they share a base layer). No call may fail, the whole
//! run is bounded (a deadlock fails it instead of hanging), and `cri-imaged check` passes
//! on the store afterwards.

use std::time::{Duration, Instant};

use cri_imaged::proto::image_service_client::ImageServiceClient;
use cri_imaged::proto::{ImageStatusRequest, ListImagesRequest};

use crate::support::daemon::connect;
use crate::support::{
    ImageBuilder, Setup, assert_check_passes, random_layer, spec, try_pull, try_remove,
};

const CLIENTS: usize = 50;
const CALLS_PER_CLIENT: usize = 40;
/// Upper bound for the whole run: beyond it the daemon is taken as deadlocked.
const RUN_LIMIT: Duration = Duration::from_secs(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_make_two_thousand_mixed_calls_without_error_and_leave_a_sound_store() {
    let mut s = Setup::new().await;
    let base = random_layer(32 * 1024);
    let mut names = Vec::new();
    let mut ids = Vec::new();
    for i in 0..4 {
        let img = ImageBuilder::new()
            .layers(vec![base.clone(), random_layer(16 * 1024)])
            .build();
        img.push(&s.registry, &format!("test/load{i}"), "1").await;
        names.push(s.name(&format!("test/load{i}:1")));
        ids.push(img.id());
    }
    let socket = s.daemon.socket.clone();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let (socket, names, ids) = (socket.clone(), names.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let channel = connect(&socket).await.expect("connect to the daemon");
            let mut c = ImageServiceClient::new(channel);
            let mut failures = Vec::new();
            for call in 0..CALLS_PER_CLIENT {
                let pick = rand::random_range(0..names.len());
                let name = &names[pick];
                let kind = (client + call) % 4;
                let result = match kind {
                    0 => try_pull(&mut c, name).await.and_then(|id| {
                        if id == ids[pick] {
                            Ok(())
                        } else {
                            Err(tonic::Status::internal(format!("{name}: got {id}")))
                        }
                    }),
                    1 => c
                        .list_images(ListImagesRequest { filter: None })
                        .await
                        .map(|_| ()),
                    2 => c
                        .image_status(ImageStatusRequest {
                            image: Some(spec(name)),
                            verbose: false,
                        })
                        .await
                        .map(|_| ()),
                    _ => try_remove(&mut c, name).await,
                };
                if let Err(e) = result {
                    failures.push(format!(
                        "call {kind} on {name}: {:?}: {}",
                        e.code(),
                        e.message()
                    ));
                }
            }
            failures
        }));
    }
    let all = tokio::time::timeout(RUN_LIMIT, futures_util::future::join_all(tasks))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} calls did not finish within {RUN_LIMIT:?}: deadlock?",
                CLIENTS * CALLS_PER_CLIENT
            )
        });
    let failures: Vec<String> = all
        .into_iter()
        .flat_map(|r| r.expect("client task"))
        .collect();
    eprintln!(
        "{} calls by {CLIENTS} clients in {:.1}s",
        CLIENTS * CALLS_PER_CLIENT,
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let root = s.daemon.root.clone();
    s.daemon.stop().await;
    assert_check_passes(s.dir.path(), &root, "after the load");
}
