//! Integration tests of cri-imaged: the real binary on a temporary Unix socket, talking to a
//! real Debian `docker-registry` on 127.0.0.1, checked through the CRI gRPC API, the OCI
//! layout on disk and `skopeo`. Nothing is mocked.
//!
//! Needs `/usr/bin/docker-registry` and `/usr/bin/skopeo`
//! (`apt-get install docker-registry skopeo`); without them the tests fail, they never skip.
//!
//! # Layout
//! - `support/`: fixtures that own their processes (registry, daemon), the image builder,
//!   and `fake`, an in-process registry that stalls, lies about digests or ignores `Range`.
//! - one module per area: `pull`, `list`, `status`, `remove`, `fs_info`, `config`,
//!   `daemon_life`, `store`, `faults` (shutdown and kill mid-pull, bad content), `observe`
//!   (metrics, `cri-imaged pulls`, summary logs, no credentials in any output), `retries`
//!   (cut bodies resume with `Range`, 5xx/429/401), `stalls` (`pull_progress_timeout`,
//!   client cancel), `check` (`cri-imaged check --repair`), `crash` (SIGKILL at many points
//!   of a pull, then resume), `load` (50 clients, 2,000 calls). RELIABILITY.md maps each
//!   fault to its test.

mod support;

mod check;
mod config;
mod crash;
mod daemon_life;
mod faults;
mod fs_info;
mod list;
mod load;
mod observe;
mod pull;
mod remove;
mod retries;
mod stalls;
mod status;
mod store;
