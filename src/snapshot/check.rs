//! What `cri-imaged check` says about the snapshots and container snapshots under a
//! root, read-only: half-made or not yet synced ones a crash left (notes: the next start
//! removes them),
//! and what no daemon could have made — a snapshot without its `fs/`, a name that is no
//! chain ID, a container snapshot without a readable record or stacked on a missing
//! snapshot (problems).

use std::path::Path;

use super::containers::{CONTAINERS_DIR, ContainerRecord, RECORD};
use super::store::SNAPSHOTS_DIR;
use crate::names::Digest;

/// Notes and problems, as `store::check::Report` keeps them.
#[derive(Debug, Default)]
pub struct Findings {
    pub notes: Vec<String>,
    pub problems: Vec<String>,
    pub snapshots: usize,
    pub containers: usize,
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Checks `root/snapshots` and `root/containers` (absent: nothing to say).
pub fn check(root: &Path) -> Findings {
    let mut f = Findings::default();
    let snaps = root.join(SNAPSHOTS_DIR);
    let mut chains = std::collections::HashSet::new();
    for name in names(&snaps) {
        let at = format!("{SNAPSHOTS_DIR}/{name}");
        if name.starts_with("tmp-") {
            f.notes.push(format!(
                "{at}: a snapshot being made or removed when the daemon stopped (removed at its next start)"
            ));
        } else if Digest::parse(&format!("sha256:{name}")).is_err() {
            f.problems
                .push(format!("{at}: not a snapshot (its name is no chain ID)"));
        } else if !snaps.join(&name).join("fs").is_dir() {
            f.problems.push(format!(
                "{at}: a snapshot without its fs/ directory (removed at the next start)"
            ));
        } else {
            let marked = super::durable::markers(&snaps.join(&name));
            if let Err(e) = &marked {
                f.problems
                    .push(format!("{at}: cannot be read for its sync marker: {e}"));
            }
            if marked.is_ok_and(|m| !m.is_empty()) {
                f.notes.push(format!(
                    "{at}: made, but its sync had not run when the daemon stopped (removed at its next start, unless a container stacks on it)"
                ));
            }
            chains.insert(name);
            f.snapshots += 1;
        }
    }
    let containers = root.join(CONTAINERS_DIR);
    for name in names(&containers) {
        let at = format!("{CONTAINERS_DIR}/{name}");
        if name.starts_with("tmp-") {
            f.notes.push(format!(
                "{at}: a container snapshot being made or removed when the daemon stopped (removed at its next start)"
            ));
            continue;
        }
        let record = std::fs::read(containers.join(&name).join(RECORD))
            .ok()
            .and_then(|b| serde_json::from_slice::<ContainerRecord>(&b).ok());
        let Some(record) = record else {
            f.problems.push(format!("{at}: no readable container.json"));
            continue;
        };
        f.containers += 1;
        for c in &record.chains {
            if !chains.contains(c.hex()) {
                f.problems
                    .push(format!("{at}: stacked on snapshot {c}, which is missing"));
            }
        }
    }
    f
}
