//! A small crictl-like client for cri-imaged (or any CRI image service), built from the
//! same proto: handy where crictl is not installed, and for scripts and benchmarks.
//!
//! ```text
//! cargo run --example cri-client -- [--endpoint PATH] pull NAME [--user U --password P]
//! cargo run --example cri-client -- images | inspecti NAME | rmi NAME | imagefsinfo | version
//! ```

use cri_imaged::proto::image_service_client::ImageServiceClient;
use cri_imaged::proto::runtime_service_client::RuntimeServiceClient;
use cri_imaged::proto::{
    AuthConfig, ImageFilter, ImageFsInfoRequest, ImageSpec, ImageStatusRequest, ListImagesRequest,
    PullImageRequest, RemoveImageRequest, VersionRequest,
};

fn spec(name: &str) -> Option<ImageSpec> {
    Some(ImageSpec {
        image: name.to_owned(),
        ..Default::default()
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut endpoint = "/run/cri-imaged/cri-imaged.sock".to_owned();
    if let Some(i) = args.iter().position(|a| a == "--endpoint") {
        endpoint = args.get(i + 1).cloned().ok_or("--endpoint needs a path")?;
        args.drain(i..=i + 1);
    }
    let flag = |args: &[String], name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("unix://{endpoint}"))?
        .connect()
        .await?;
    let mut images = ImageServiceClient::new(channel.clone());
    let arg = |i: usize| args.get(i).cloned().ok_or("missing argument");
    match args.first().map(String::as_str) {
        Some("pull") => {
            let auth = flag(&args, "--user").map(|username| AuthConfig {
                username,
                password: flag(&args, "--password").unwrap_or_default(),
                ..Default::default()
            });
            let started = std::time::Instant::now();
            let r = images.pull_image(PullImageRequest { image: spec(&arg(1)?), auth, sandbox_config: None }).await?;
            println!("{} ({:.3}s)", r.into_inner().image_ref, started.elapsed().as_secs_f64());
        }
        Some("images") => {
            let filter = args.get(1).map(|n| ImageFilter { image: spec(n) });
            for i in images.list_images(ListImagesRequest { filter }).await?.into_inner().images {
                println!("{}\t{}\t{}\t{:?}", i.id, i.size, i.repo_tags.join(","), i.repo_digests);
            }
        }
        Some("inspecti") => {
            let r = images.image_status(ImageStatusRequest { image: spec(&arg(1)?), verbose: true }).await?.into_inner();
            println!("{:#?}", r);
        }
        Some("rmi") => {
            images.remove_image(RemoveImageRequest { image: spec(&arg(1)?) }).await?;
            println!("removed {}", arg(1)?);
        }
        Some("imagefsinfo") => println!("{:#?}", images.image_fs_info(ImageFsInfoRequest {}).await?.into_inner()),
        Some("version") => {
            let r = RuntimeServiceClient::new(channel).version(VersionRequest { version: "0.1.0".into() }).await?;
            println!("{:?}", r.into_inner());
        }
        _ => return Err("usage: cri-client [--endpoint PATH] pull|images|inspecti|rmi|imagefsinfo|version [NAME]".into()),
    }
    Ok(())
}
