//! The live terminal view of `cri-imaged pulls --watch`: one line per pull (image, source,
//! totals, rate, ETA, waiters) and a progress bar per blob, redrawn as the daemon reports;
//! bars of finished pulls disappear.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{blob_label, header};
use crate::admin::client::{self, ClientError};

struct PullBars {
    header: ProgressBar,
    blobs: Vec<ProgressBar>,
}

fn blob_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "  {prefix} [{bar:30.cyan/blue}] {binary_bytes:>10}/{binary_total_bytes:<10} {binary_bytes_per_sec:>12} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

/// Polls the daemon every `poll` and redraws until Ctrl-C.
pub async fn run(socket: &Path, poll: Duration) -> Result<(), ClientError> {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
    let idle = multi.add(ProgressBar::new_spinner());
    idle.set_style(
        ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let mut shown: HashMap<u64, PullBars> = HashMap::new();
    loop {
        let resp = client::pulls(socket).await?;
        idle.set_message(format!(
            "{} pull(s) in flight ({}; Ctrl-C to quit)",
            resp.pulls.len(),
            socket.display()
        ));
        shown.retain(|id, bars| {
            let keep = resp.pulls.iter().any(|p| p.id == *id);
            if !keep {
                multi.remove(&bars.header);
                for b in &bars.blobs {
                    multi.remove(b);
                }
            }
            keep
        });
        for p in &resp.pulls {
            let bars = shown.entry(p.id).or_insert_with(|| {
                let header = multi.add(ProgressBar::new_spinner());
                // Cut to the terminal's width: a wrapped line would throw off the redraw.
                header.set_style(
                    ProgressStyle::with_template("{wide_msg}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                PullBars {
                    header,
                    blobs: Vec::new(),
                }
            });
            bars.header.set_message(header(p));
            while bars.blobs.len() < p.blobs.len() {
                let bar = multi.add(ProgressBar::new(0));
                bar.set_style(blob_style());
                bars.blobs.push(bar);
            }
            for (i, (bar, b)) in bars.blobs.iter().zip(&p.blobs).enumerate() {
                bar.set_prefix(blob_label(i, b));
                bar.set_length(b.size);
                bar.set_position(b.done);
                bar.set_message(super::blob_state(b));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    let _ = multi.clear();
    Ok(())
}
