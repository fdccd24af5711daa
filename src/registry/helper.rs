//! Credential helpers (the docker-credential-helpers protocol): `docker-credential-NAME get`
//! from PATH, the registry host on stdin, `{"ServerURL","Username","Secret"}` on stdout; a
//! `Username` of `<token>` makes `Secret` an identity token. Bounded: a time limit (the
//! process is killed after it), at most [`MAX_OUTPUT`] bytes read. The answer is a secret:
//! no error, log line or metric ever shows what a helper printed, only its name, the
//! registry and what went wrong.

use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::{AuthFields, Credentials};

/// The most a helper may print.
pub const MAX_OUTPUT: u64 = 64 * 1024;
/// How long a helper may take (as containers/image gives none, a generous bound).
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A helper that could not answer.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    #[error("credential helper docker-credential-{helper} is not on PATH ({reason})")]
    Missing { helper: String, reason: String },
    #[error("credential helper docker-credential-{helper} for {server}: {why}")]
    Failed {
        helper: String,
        server: String,
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    username: String,
    secret: String,
}

/// Asks `helper` for `server`'s credentials; `Ok(None)`: it has none.
pub async fn get(
    helper: &str,
    server: &str,
    limit: Duration,
) -> Result<Option<Credentials>, HelperError> {
    let failed = |why: String| HelperError::Failed {
        helper: helper.to_owned(),
        server: server.to_owned(),
        why,
    };
    let mut child = tokio::process::Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| HelperError::Missing {
            helper: helper.to_owned(),
            reason: e.to_string(),
        })?;
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            // A helper that exits without reading is judged by its exit status.
            let _ = stdin.write_all(server.as_bytes()).await;
        }
        let mut out = Vec::new();
        if let Some(stdout) = child.stdout.take() {
            stdout
                .take(MAX_OUTPUT + 1)
                .read_to_end(&mut out)
                .await
                .map_err(|e| failed(format!("reading its answer: {e}")))?;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| failed(format!("waiting for it: {e}")))?;
        Ok::<_, HelperError>((status, out))
    };
    let (status, out) = tokio::time::timeout(limit, run)
        .await
        .map_err(|_| failed(format!("no answer within {} s; killed", limit.as_secs())))??;
    if out.len() as u64 > MAX_OUTPUT {
        return Err(failed(format!("answered more than {MAX_OUTPUT} bytes")));
    }
    if !status.success() {
        // The protocol's "nothing stored" answer is this message, on stdout.
        if String::from_utf8_lossy(&out).contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(format!("exited with {status}")));
    }
    let answer: Answer = serde_json::from_slice(&out).map_err(|_| {
        failed("answered something that is not {\"ServerURL\",\"Username\",\"Secret\"} JSON".into())
    })?;
    let fields = if answer.username == "<token>" {
        AuthFields {
            identity_token: answer.secret,
            ..AuthFields::default()
        }
    } else {
        AuthFields {
            username: answer.username,
            password: answer.secret,
            ..AuthFields::default()
        }
    };
    match Credentials::from_fields(&fields) {
        Ok(Credentials::Anonymous) => Ok(None),
        Ok(c) => Ok(Some(c)),
        Err(_) => Err(failed("answered credentials that cannot be used".into())),
    }
}
