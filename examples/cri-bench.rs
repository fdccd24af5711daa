//! The CRI side of `bench/pull.sh`: times `runtime.v1.ImageService` calls against any CRI
//! image service socket (cri-imaged's, or containerd's CRI plugin), with the same client.
//!
//! ```text
//! cri-bench --endpoint SOCK pull NAME            seconds of one PullImage; the ID on stderr
//! cri-bench --endpoint SOCK rmi NAME
//! cri-bench --endpoint SOCK fill REPO FROM COUNT [CONCURRENCY]   PullImage REPO:nFROM…
//! cri-bench --endpoint SOCK same NAME COUNT        COUNT PullImage of NAME at once
//! cri-bench --endpoint SOCK latency REPO ITERATIONS   p50/p99 of List, Status, FsInfo
//! cri-bench --endpoint SOCK ready TIMEOUT_SECONDS     waits until ListImages answers
//! cri-bench --endpoint SOCK list N                  p50/p99 of N ListImages alone
//! cri-bench --endpoint SOCK remove REPO FROM COUNT  p50/p99 of RemoveImage REPO:nFROM…
//! ```
//!
//! `latency` prints one line per call: `name p50_ms p99_ms calls`; ImageStatus is asked by
//! tag, by full ID and by a 12-hex truncated ID of images under REPO, chosen in turn.

use std::time::{Duration, Instant};

use cri_imaged::proto::image_service_client::ImageServiceClient;
use cri_imaged::proto::{
    ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest, PullImageRequest,
    RemoveImageRequest, StreamImagesRequest,
};
use tonic::transport::Channel;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn spec(name: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: name.to_owned(),
        ..Default::default()
    })
}

async fn connect(endpoint: &str) -> Res<ImageServiceClient<Channel>> {
    // Flow-control windows like grpc-go's (kubelet's) once its BDP estimator has grown
    // them: with h2's default 64 KiB, a 1.6 MB ListImages answer waits for ~25 window
    // updates, whichever server sends it.
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{endpoint}"))?
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(16 << 20))
        .connect()
        .await?;
    // 5,000 images exceed the default 4 MiB message limit for some servers' answers.
    Ok(ImageServiceClient::new(channel).max_decoding_message_size(256 << 20))
}

async fn pull(c: &mut ImageServiceClient<Channel>, name: &str) -> Res<String> {
    let r = c
        .pull_image(PullImageRequest {
            image: spec(name),
            auth: None,
            sandbox_config: None,
        })
        .await?;
    Ok(r.into_inner().image_ref)
}

/// p50 and p99 in milliseconds.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        v[i].as_secs_f64() * 1e3
    };
    (at(0.5), at(0.99))
}

async fn time_calls<F, Fut>(name: &str, n: usize, mut call: F) -> Res<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        if let Err(e) = call(i).await {
            println!("{name} n/a n/a 0 # {e}");
            return Ok(());
        }
        times.push(t.elapsed());
    }
    let (p50, p99) = percentiles(times);
    println!("{name} {p50:.3} {p99:.3} {n}");
    Ok(())
}

async fn latency(c: &mut ImageServiceClient<Channel>, repo: &str, n: usize) -> Res<()> {
    let images = c
        .list_images(ListImagesRequest { filter: None })
        .await?
        .into_inner()
        .images;
    let prefix = format!("{repo}:");
    let mut ours: Vec<(String, String)> = images
        .iter()
        .filter_map(|i| {
            let tag = i.repo_tags.iter().find(|t| t.contains(&prefix))?;
            Some((tag.clone(), i.id.clone()))
        })
        .collect();
    if ours.is_empty() {
        return Err(format!("no image tagged {prefix}* among {}", images.len()).into());
    }
    // A fixed spread over the images (deterministic across engines).
    ours.sort();
    let pick = |i: usize| &ours[(i * 7919) % ours.len()];
    println!("# images {} (under {repo}: {})", images.len(), ours.len());
    let status = |name: String| {
        let mut c = c.clone();
        async move {
            let r = c
                .image_status(ImageStatusRequest {
                    image: spec(&name),
                    verbose: false,
                })
                .await?
                .into_inner();
            if r.image.is_none() {
                return Err(format!("ImageStatus {name}: no image").into());
            }
            Ok(())
        }
    };
    let list = || {
        let mut c = c.clone();
        async move {
            c.list_images(ListImagesRequest { filter: None }).await?;
            Ok(())
        }
    };
    time_calls("ListImages", n, |_| list()).await?;
    time_calls("ImageStatus(tag)", n, |i| status(pick(i).0.clone())).await?;
    time_calls("ImageStatus(id)", n, |i| status(pick(i).1.clone())).await?;
    time_calls("ImageStatus(id12)", n, |i| {
        let id = &pick(i).1;
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        status(hex[..12.min(hex.len())].to_owned())
    })
    .await?;
    let fsinfo = || {
        let mut c = c.clone();
        async move {
            c.image_fs_info(ImageFsInfoRequest {}).await?;
            Ok(())
        }
    };
    time_calls("ImageFsInfo", n, |_| fsinfo()).await?;
    let stream = || {
        let mut c = c.clone();
        async move {
            let mut s = c
                .stream_images(StreamImagesRequest { filter: None })
                .await?
                .into_inner();
            while s.message().await?.is_some() {}
            Ok(())
        }
    };
    time_calls("StreamImages", n.min(50), |_| stream()).await
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Res<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoint = "/run/cri-imaged/cri-imaged.sock".to_owned();
    if let Some(i) = args.iter().position(|a| a == "--endpoint") {
        endpoint = args.get(i + 1).cloned().ok_or("--endpoint needs a path")?;
        args.drain(i..=i + 1);
    }
    let usage = "usage: cri-bench [--endpoint SOCK] pull NAME | rmi NAME | fill REPO FROM COUNT [CONC] | same NAME COUNT | latency REPO N | list N | ready SECONDS";
    let arg = |i: usize| args.get(i).cloned().ok_or(usage);
    match arg(0)?.as_str() {
        "ready" => {
            let deadline = Instant::now() + Duration::from_secs_f64(arg(1)?.parse()?);
            loop {
                if let Ok(mut c) = connect(&endpoint).await
                    && c.list_images(ListImagesRequest { filter: None })
                        .await
                        .is_ok()
                {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("{endpoint} did not answer ListImages in time").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        "pull" => {
            let mut c = connect(&endpoint).await?;
            let t = Instant::now();
            let id = pull(&mut c, &arg(1)?).await?;
            println!("{:.4}", t.elapsed().as_secs_f64());
            eprintln!("{id}");
        }
        "rmi" => {
            let mut c = connect(&endpoint).await?;
            c.remove_image(RemoveImageRequest {
                image: spec(&arg(1)?),
            })
            .await?;
        }
        "remove" => {
            // RemoveImage of REPO:nFROM… one at a time (they were filled before).
            let mut c = connect(&endpoint).await?;
            let (repo, from, count) = (
                arg(1)?,
                arg(2)?.parse::<usize>()?,
                arg(3)?.parse::<usize>()?,
            );
            time_calls("RemoveImage", count, |i| {
                let mut c = c.clone();
                let name = format!("{repo}:n{:05}", from + i);
                async move {
                    c.remove_image(RemoveImageRequest { image: spec(&name) })
                        .await?;
                    Ok(())
                }
            })
            .await?;
            let _ = &mut c;
        }
        "fill" => {
            let (repo, from, count) = (
                arg(1)?,
                arg(2)?.parse::<usize>()?,
                arg(3)?.parse::<usize>()?,
            );
            let conc: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(4);
            let c = connect(&endpoint).await?;
            let t = Instant::now();
            let next = std::rc::Rc::new(std::cell::Cell::new(from));
            let workers = (0..conc).map(|_| {
                let (mut c, repo, next) = (c.clone(), repo.clone(), next.clone());
                async move {
                    loop {
                        let i = next.get();
                        if i >= from + count {
                            return Ok::<_, Box<dyn std::error::Error>>(());
                        }
                        next.set(i + 1);
                        pull(&mut c, &format!("{repo}:n{i:05}")).await?;
                    }
                }
            });
            futures_util::future::try_join_all(workers).await?;
            println!("{:.3}", t.elapsed().as_secs_f64());
        }
        "same" => {
            // COUNT clients asking for one image at once (kubelets of many pods).
            let (name, count) = (arg(1)?, arg(2)?.parse::<usize>()?);
            let c = connect(&endpoint).await?;
            let t = Instant::now();
            let pulls = (0..count).map(|_| {
                let (mut c, name) = (c.clone(), name.clone());
                async move { pull(&mut c, &name).await }
            });
            let ids = futures_util::future::try_join_all(pulls).await?;
            if ids.iter().any(|id| *id != ids[0]) {
                return Err(format!("{name}: the pulls answered different IDs: {ids:?}").into());
            }
            println!("{:.3}", t.elapsed().as_secs_f64());
        }
        "list" => {
            // ListImages only, for profiling one call's cost on each side.
            let mut c = connect(&endpoint).await?;
            let n: usize = arg(1)?.parse()?;
            time_calls("ListImages", n, |_| {
                let mut c = c.clone();
                async move {
                    c.list_images(ListImagesRequest { filter: None }).await?;
                    Ok(())
                }
            })
            .await?;
            let _ = &mut c;
        }
        "latency" => {
            let mut c = connect(&endpoint).await?;
            latency(&mut c, &arg(1)?, arg(2)?.parse()?).await?;
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
