//! From a layer blob's bytes to its tar stream: the decompressor its first bytes call for
//! (gzip with every member read — real images have multi-member streams; zstd; none: the
//! media type is not trusted for it, as containerd does not, since docker-archive sources
//! declare `tar.gzip` for plain tars), and a reader that hashes the uncompressed bytes,
//! for the `diff_id` check.

use std::io::Read;

use sha2::{Digest as _, Sha256};

use crate::names::Digest;

/// How a layer is compressed, from its media type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer media type (`None` for a type that is no layer).
    pub fn of(media_type: &str) -> Option<Compression> {
        if !crate::oci::media::is_layer(media_type) {
            return None;
        }
        Some(if media_type.ends_with("gzip") {
            Compression::Gzip
        } else if media_type.ends_with("zstd") {
            Compression::Zstd
        } else {
            Compression::None
        })
    }

    /// The compression `head` (a blob's first bytes) starts with: gzip's or zstd's magic
    /// number, else none.
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// `input` decompressed.
    pub fn reader<'a>(self, input: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(input),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(input)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
        })
    }
}

/// Hashes what is read through it.
pub struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Hashing<R> {
    pub fn new(inner: R) -> Self {
        Hashing {
            inner,
            hasher: Sha256::new(),
        }
    }

    /// Reads what is left (a tar's padding after its end blocks belongs to the layer
    /// too), then returns the digest of everything read.
    pub fn finish(mut self) -> std::io::Result<Digest> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        Ok(Digest::from_sha256(self.hasher.finalize().into()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
