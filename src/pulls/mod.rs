//! `cri-imaged pulls [--watch] [--output json]`: shows the daemon's pulls in flight, read
//! from its admin socket (`GET /pulls`); never touches the store. Text is a listing (or,
//! with `--watch` on a terminal, a live view with progress bars, see [`live`]); JSON is the
//! admin endpoint's document (with `--watch`, one document per line per update).

mod live;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use indicatif::{HumanBytes, HumanDuration};

use crate::admin::PullsResponse;
use crate::admin::client::{self, ClientError};
use crate::config::{OutputFormat, PullsArgs};
use crate::image::{BlobSnapshot, PullSnapshot};

/// How often `--watch` asks the daemon.
const POLL: Duration = Duration::from_millis(500);

/// Runs the command until done (or, with `--watch`, until interrupted).
pub async fn run(args: &PullsArgs, socket: &Path) -> Result<(), ClientError> {
    let live = args.watch && args.output == OutputFormat::Text && std::io::stdout().is_terminal();
    if live {
        return live::run(socket, POLL).await;
    }
    loop {
        let pulls = client::pulls(socket).await?;
        let mut out = std::io::stdout().lock();
        let text = match (args.output, args.watch) {
            (OutputFormat::Json, false) => serde_json::to_string_pretty(&pulls),
            (OutputFormat::Json, true) => serde_json::to_string(&pulls),
            (OutputFormat::Text, _) => Ok(render(&pulls)),
        }
        .unwrap_or_default();
        // A closed stdout (`| head`) ends the command.
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() || !args.watch {
            return Ok(());
        }
        drop(out);
        tokio::select! {
            () = tokio::time::sleep(POLL * 2) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

/// The plain listing: one block per pull, one line per blob.
pub fn render(resp: &PullsResponse) -> String {
    if resp.pulls.is_empty() {
        return "no pulls in flight".to_owned();
    }
    let mut out = String::new();
    for p in &resp.pulls {
        out.push_str(&header(p));
        out.push('\n');
        for (i, b) in p.blobs.iter().enumerate() {
            out.push_str(&format!("  {}\n", blob_line(i, b)));
        }
    }
    out.trim_end().to_owned()
}

/// A pull's first line: image, source, totals, rate, ETA, waiters.
pub fn header(p: &PullSnapshot) -> String {
    let eta = p
        .eta_seconds
        .map(|s| format!("ETA {}", HumanDuration(Duration::from_secs_f64(s.max(0.0)))))
        .unwrap_or_else(|| "ETA -".to_owned());
    format!(
        "{}  {} / {}  {}/s  {}  {} waiting  {} running  from {}",
        p.image,
        HumanBytes(p.bytes_done),
        HumanBytes(p.bytes_total),
        HumanBytes(p.bytes_per_second as u64),
        eta,
        p.waiters,
        HumanDuration(Duration::from_secs_f64(p.elapsed_seconds.max(0.0))),
        p.source,
    )
}

/// The name shown for the `i`th blob of a pull (the config comes first).
pub fn blob_label(i: usize, b: &BlobSnapshot) -> String {
    let hex = b.digest.strip_prefix("sha256:").unwrap_or(&b.digest);
    let what = if i == 0 {
        "config".to_owned()
    } else {
        format!("layer {i}")
    };
    format!("{what:<8} {}", &hex[..hex.len().min(12)])
}

/// What a blob line says of it: its download state, or once in, its unpack's.
pub(crate) fn blob_state(b: &BlobSnapshot) -> &'static str {
    match b.unpacked {
        Some(true) => "unpacked",
        Some(false) if b.state == "done" || b.state == "present" => "unpacking",
        _ => b.state.as_str(),
    }
}

fn blob_line(i: usize, b: &BlobSnapshot) -> String {
    let pct = (b.done * 100).checked_div(b.size).unwrap_or(100);
    format!(
        "{}  {:<11} {:>10} / {:<10} {:>3}%",
        blob_label(i, b),
        blob_state(b),
        HumanBytes(b.done).to_string(),
        HumanBytes(b.size).to_string(),
        pct
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listing_names_image_source_waiters_and_each_blob() {
        let resp = PullsResponse {
            pulls: vec![PullSnapshot {
                id: 1,
                image: "r.io/app:1".into(),
                source: "r.io".into(),
                started_unix: 0,
                elapsed_seconds: 4.0,
                waiters: 2,
                bytes_done: 1024,
                bytes_total: 4096,
                bytes_per_second: 256.0,
                eta_seconds: Some(12.0),
                blobs: vec![
                    BlobSnapshot {
                        digest: "sha256:0123456789abcdef".into(),
                        size: 512,
                        done: 512,
                        state: crate::image::BlobState::Present,
                        unpacked: None,
                    },
                    BlobSnapshot {
                        digest: "sha256:fedcba9876543210".into(),
                        size: 3584,
                        done: 512,
                        state: crate::image::BlobState::Downloading,
                        unpacked: Some(false),
                    },
                ],
            }],
        };
        let text = render(&resp);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("r.io/app:1  1.00 KiB / 4.00 KiB"),
            "{text}"
        );
        assert!(lines[0].ends_with("from r.io"), "{text}");
        assert!(lines[0].contains("2 waiting"), "{text}");
        assert!(
            lines[1].contains("config   0123456789ab  present"),
            "{text}"
        );
        assert!(
            lines[2].contains("layer 1  fedcba987654  downloading"),
            "{text}"
        );
        assert!(lines[2].ends_with(" 14%"), "{text}");
        assert_eq!(
            render(&PullsResponse { pulls: vec![] }),
            "no pulls in flight"
        );
    }
}
