//! Builds benchmark images and pushes them to a registry over its HTTP API (used by
//! `bench/pull.sh`; no special access to any store: every engine pulls them like any image).
//!
//! ```text
//! bench-images REGISTRY image REPO:TAG LAYERS LAYER_BYTES [BLOB_LIST]
//! bench-images REGISTRY fill REPO FROM COUNT
//! bench-images REGISTRY files REPO:TAG LAYERS FILES FILE_BYTES [BLOB_LIST]
//! bench-images REGISTRY tars REPO:TAG BLOB_LIST TAR...
//! ```
//!
//! - `image`: LAYERS layers, each an uncompressed tar (`…layer.v1.tar`) holding one file of
//!   LAYER_BYTES random, incompressible bytes; prints the image ID. With BLOB_LIST, the
//!   config and layer digests are written there, one a line (for the curl baseline).
//! - `fill`: COUNT small images `REPO:nFROM`…, sharing one 4 KiB layer; each config carries
//!   its index as a label, so every image ID differs. Pushed 16 at a time.
//!
//! - `files`: LAYERS gzip layers (`…layer.v1.tar+gzip`), each of FILES files of FILE_BYTES
//!   in a few directories, their text compressible about 3:1 like real binaries and
//!   libraries; the layers after the first also delete (whiteout) a file of the one below
//!   and hold a hard link, as real images do. Prints the image ID.
//! - `tars`: one gzip layer (level 6, what `docker build` uses) from each TAR file, in
//!   order (e.g. a Debian rootfs from mmdebstrap and tars of system trees); the config and
//!   layer digests go to BLOB_LIST. Prints the image ID.
//!
//! The images are OCI manifests for linux on the node's architecture.

use std::sync::Arc;

use rand::RngCore;
use serde_json::json;
use sha2::{Digest, Sha256};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Layer `n` of a `files` image: a gzip tar of `files` files of `bytes` each; its digest
/// pair is (compressed, uncompressed).
fn files_layer(n: usize, files: usize, bytes: usize) -> Res<(Vec<u8>, String)> {
    use std::io::Write;
    const WORDS: &[&str] = &[
        "lib", "usr", "share", "static", "const", "return", "memcpy", "0x7f45", "ELF", "\0\0",
        "_start", "printf", "malloc", "free", "locale", "UTF-8", "debian", "x86_64", "glibc",
    ];
    let mut rng = rand::rng();
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, data)
    };
    for d in 0..16 {
        add(
            &mut b,
            tar::EntryType::Directory,
            &format!("l{n}/d{d}"),
            &[],
        )?;
    }
    for f in 0..files {
        let mut data = Vec::with_capacity(bytes + 16);
        while data.len() < bytes {
            let w = WORDS[(rng.next_u32() as usize) % WORDS.len()];
            data.extend_from_slice(w.as_bytes());
            let r = rng.next_u32();
            data.extend_from_slice(&r.to_le_bytes()[..(r % 3) as usize]);
        }
        data.truncate(bytes);
        add(
            &mut b,
            tar::EntryType::Regular,
            &format!("l{n}/d{}/f{f}", f % 16),
            &data,
        )?;
    }
    if n > 0 {
        let below = n - 1;
        add(
            &mut b,
            tar::EntryType::Regular,
            &format!("l{below}/d0/.wh.f0"),
            &[],
        )?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        // A hard link inside the layer: one into the layer below would be truer to life,
        // but containerd 1.6 fails on those ("link …: no such file or directory").
        b.append_link(&mut h, format!("l{n}/link"), format!("l{n}/d1/f1"))?;
    }
    let tar = b.into_inner()?;
    let diff_id = digest(&tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar)?;
    Ok((gz.finish()?, diff_id))
}

/// A tar archive with one regular file `data` of `len` random bytes.
fn random_tar(len: usize) -> Res<Vec<u8>> {
    let mut data = vec![0u8; len];
    rand::rng().fill_bytes(&mut data);
    let mut b = tar::Builder::new(Vec::with_capacity(len + 2048));
    let mut h = tar::Header::new_gnu();
    h.set_size(len as u64);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    b.append_data(&mut h, "data", data.as_slice())?;
    Ok(b.into_inner()?)
}

struct Registry {
    base: String,
    http: reqwest::Client,
}

impl Registry {
    /// POST an upload session, then PUT the whole blob with its digest.
    async fn put_blob(&self, repo: &str, data: Vec<u8>) -> Res<String> {
        let d = digest(&data);
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{d}", self.base))
            .send()
            .await?;
        if head.status().is_success() {
            return Ok(d);
        }
        let start = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await?;
        if start.status().as_u16() != 202 {
            return Err(format!("POST upload to {repo}: {}", start.status()).into());
        }
        let loc = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("no Location header")?;
        let mut url = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc.to_owned()
        };
        url.push(if url.contains('?') { '&' } else { '?' });
        url.push_str(&format!("digest={d}"));
        let put = self
            .http
            .put(url)
            .header("content-type", "application/octet-stream")
            .body(data)
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            return Err(format!("PUT blob {d} to {repo}: {}", put.status()).into());
        }
        Ok(d)
    }

    async fn put_manifest(&self, repo: &str, tag: &str, data: Vec<u8>) -> Res<()> {
        let put = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("content-type", MANIFEST)
            .body(data)
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            return Err(format!("PUT manifest {repo}:{tag}: {}", put.status()).into());
        }
        Ok(())
    }

    /// Pushes config + manifest for layers already in `repo`; returns the image ID.
    async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        layers: &[(String, String, u64)],
        label: &str,
    ) -> Res<String> {
        self.push_image_typed(repo, tag, layers, label, LAYER).await
    }

    async fn push_image_typed(
        &self,
        repo: &str,
        tag: &str,
        layers: &[(String, String, u64)],
        label: &str,
        layer_type: &str,
    ) -> Res<String> {
        let config = json!({
            "created": "2024-01-01T00:00:00Z",
            "architecture": arch(),
            "os": "linux",
            "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"], "Labels": {"bench": label}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| &l.1).collect::<Vec<_>>()},
        });
        let config = serde_json::to_vec(&config)?;
        let config_size = config.len();
        let id = self.put_blob(repo, config).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": id, "size": config_size},
            "layers": layers.iter().map(|(d, _, size)| json!({"mediaType": layer_type, "digest": d, "size": size})).collect::<Vec<_>>(),
        });
        self.put_manifest(repo, tag, serde_json::to_vec(&manifest)?)
            .await?;
        Ok(id)
    }
}

/// BLOB_LIST: the config digest, then each layer's, one a line (for the curl baseline).
fn write_list(list: &str, id: &str, layers: &[(String, String, u64)]) -> Res<()> {
    let mut lines = vec![id.to_owned()];
    lines.extend(layers.iter().map(|l| l.0.clone()));
    std::fs::write(list, lines.join("\n") + "\n")?;
    Ok(())
}

#[tokio::main]
async fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: bench-images REGISTRY image REPO:TAG LAYERS LAYER_BYTES [BLOB_LIST] | REGISTRY fill REPO FROM COUNT | REGISTRY files REPO:TAG LAYERS FILES FILE_BYTES [BLOB_LIST] | REGISTRY tars REPO:TAG BLOB_LIST TAR...";
    let arg = |i: usize| args.get(i).cloned().ok_or(usage);
    let reg = Arc::new(Registry {
        base: format!("http://{}", arg(0)?),
        http: reqwest::Client::builder().no_proxy().build()?,
    });
    match arg(1)?.as_str() {
        "image" => {
            let name = arg(2)?;
            let (repo, tag) = name.rsplit_once(':').ok_or("REPO:TAG")?;
            let (count, bytes): (usize, usize) = (arg(3)?.parse()?, arg(4)?.parse()?);
            let mut layers = Vec::new();
            for _ in 0..count {
                let tar = random_tar(bytes)?;
                let diff_id = digest(&tar);
                let size = tar.len() as u64;
                let d = reg.put_blob(repo, tar).await?;
                layers.push((d, diff_id, size));
            }
            let id = reg.push_image(repo, tag, &layers, &name).await?;
            if let Some(list) = args.get(5) {
                write_list(list, &id, &layers)?;
            }
            println!("{id}");
        }
        "files" => {
            let name = arg(2)?;
            let (repo, tag) = name.rsplit_once(':').ok_or("REPO:TAG")?;
            let (count, files, bytes): (usize, usize, usize) =
                (arg(3)?.parse()?, arg(4)?.parse()?, arg(5)?.parse()?);
            let mut layers = Vec::new();
            for n in 0..count {
                let (gz, diff_id) = files_layer(n, files, bytes)?;
                let size = gz.len() as u64;
                let d = reg.put_blob(repo, gz).await?;
                layers.push((d, diff_id, size));
            }
            let id = reg
                .push_image_typed(repo, tag, &layers, &name, LAYER_GZIP)
                .await?;
            if let Some(list) = args.get(6) {
                write_list(list, &id, &layers)?;
            }
            println!("{id}");
        }
        "tars" => {
            let name = arg(2)?;
            let (repo, tag) = name.rsplit_once(':').ok_or("REPO:TAG")?;
            let list = arg(3)?;
            let mut layers = Vec::new();
            for path in args.iter().skip(4) {
                let tar = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
                let diff_id = digest(&tar);
                let mut gz = flate2::write::GzEncoder::new(
                    Vec::with_capacity(tar.len() / 3),
                    flate2::Compression::new(6),
                );
                std::io::Write::write_all(&mut gz, &tar)?;
                let gz = gz.finish()?;
                let size = gz.len() as u64;
                let d = reg.put_blob(repo, gz).await?;
                layers.push((d, diff_id, size));
            }
            if layers.is_empty() {
                return Err(usage.into());
            }
            let id = reg
                .push_image_typed(repo, tag, &layers, &name, LAYER_GZIP)
                .await?;
            write_list(&list, &id, &layers)?;
            println!("{id}");
        }
        "fill" => {
            let repo = arg(2)?;
            let (from, count): (usize, usize) = (arg(3)?.parse()?, arg(4)?.parse()?);
            let mut shared = vec![0u8; 4096];
            // The same layer for every fill run: derived from the repository name.
            let seed = Sha256::digest(repo.as_bytes());
            for (i, b) in shared.iter_mut().enumerate() {
                *b = seed[i % 32] ^ (i / 32) as u8;
            }
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(shared.len() as u64);
            h.set_mode(0o644);
            h.set_mtime(1_700_000_000);
            h.set_cksum();
            b.append_data(&mut h, "data", shared.as_slice())?;
            let tar = b.into_inner()?;
            let diff_id = digest(&tar);
            let size = tar.len() as u64;
            let layer = reg.put_blob(&repo, tar).await?;
            let layers = Arc::new(vec![(layer, diff_id, size)]);
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(from));
            let mut workers = Vec::new();
            for _ in 0..16 {
                let (reg, repo, layers, next) =
                    (reg.clone(), repo.clone(), layers.clone(), next.clone());
                workers.push(tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= from + count {
                            return Ok::<_, Box<dyn std::error::Error + Send + Sync>>(());
                        }
                        let tag = format!("n{i:05}");
                        reg.push_image(&repo, &tag, &layers, &format!("{repo}:{tag}"))
                            .await?;
                    }
                }));
            }
            for w in workers {
                w.await??;
            }
            println!("pushed {repo}:n{from:05}..n{:05}", from + count - 1);
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}
