//! Integration tests of cri-imaged: the real binary on a temporary Unix socket, talking to a
//! real Debian `docker-registry` on 127.0.0.1, checked through the CRI gRPC API, the OCI
//! layout on disk and `skopeo`. Nothing is mocked.
//!
//! Needs `/usr/bin/docker-registry`, `/usr/bin/skopeo`, `/usr/bin/openssl` and `/usr/bin/gpg`
//! (`apt-get install docker-registry skopeo openssl gnupg`; `scripts/test.sh` installs them); without them the tests fail, they never skip.
//!
//! # Layout
//! - `support/`: fixtures that own their processes (registry, daemon), the image builder,
//!   `layout` (OCI layouts and archives written by the test), `fake`, an in-process registry
//!   that stalls, lies about digests or ignores `Range`, and `proxy`, a fault-injecting
//!   loopback proxy in front of a real docker-registry.
//! - one module per area: `pull`, `list`, `status`, `remove`, `fs_info`, `config`,
//!   `daemon_life`, `store`, `faults` (shutdown and kill mid-pull, bad content), `observe`
//!   (metrics, `cri-imaged pulls`, summary logs, no credentials in any output), `import`
//!   (`oci:`, `oci-archive:`, `docker-archive:`, `dir:` through skopeo: names, IDs,
//!   refusals, corrupted blobs, no skopeo left after a cancelled pull), `registries`
//!   (registries.conf: mirrors, blocked, aliases, short-name-mode, SIGHUP), `auth` (CRI
//!   credentials, the auth file, credential helpers: cached, bounded, never showing their output, never to a mirror), `identity` (identity tokens traded
//!   at a token server for a docker-registry with token auth), `tls` (certs.d CAs with a
//!   registry serving HTTPS from a test-made CA; a registry requiring a client certificate
//!   opens to the certs.d pair; pinned images), `proxies` (`HTTPS_PROXY` through the test's
//!   CONNECT proxy, `support/forward.rs`; loopback and `NO_PROXY` direct), `pull_through`
//!   (three daemons behind docker-registry in proxy mode; a cache that is gone), `retries` (cut bodies resume with `Range`, 5xx/429/401), `stalls` (`pull_progress_timeout`, client cancel), `check`
//!   (`cri-imaged check --repair`), `authority` (any `:authority` or none on the socket: real
//!   crictl captures replayed, raw HTTP/2 with CONTINUATION and the HPACK dynamic table), `crash` (SIGKILL at many points of a pull: what is on disk at each, then resume),
//!   `interrupted` (SIGKILL mid-pull behind a slow proxy: the verified blobs are kept for the
//!   next pull), `unpack` (layers as overlay snapshots, diff_id checks), `bundle`
//!   (`cri-imaged bundle` + `runc run` of a pulled image; rmi while a bundle exists),
//!   `trust` (containers-policy.json: GPG signatures made by gpg + `skopeo --sign-by`,
//!   cosign-format sigstore attachments, scopes, per-namespace policies, SIGHUP, bad
//!   files), `differential` (an image with every layer feature: our snapshots under overlayfs vs
//!   `umoci unpack`, entry by entry),
//!   `load` (50 clients, 2,000 calls), `bad_input` (oversized documents, invalid and
//!   path-like digests, unknown media types, size mismatches), `disk_full` (ENOSPC on a tmpfs
//!   root, EFBIG under `prlimit --fsize`; needs root for `mount`), `proxy_faults` (resets,
//!   short bodies, 5xx, 429 `Retry-After`, stalls, trickles, wrong bytes and SIGKILL
//!   mid-layer, injected by the proxy in front of a real docker-registry). RELIABILITY.md
//!   maps each fault to its test.

mod support;

mod auth;
mod authority;
mod bad_input;
mod bundle;
mod check;
mod config;
mod crash;
mod daemon_life;
mod differential;
mod disk_full;
mod faults;
mod fs_info;
mod identity;
mod import;
mod interrupted;
mod list;
mod load;
mod observe;
mod proxies;
mod proxy_faults;
mod pull;
mod pull_through;
mod registries;
mod remove;
mod retries;
mod stalls;
mod status;
mod store;
mod tls;
mod trust;
mod unpack;
