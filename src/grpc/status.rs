//! The one place core errors become gRPC statuses. The code comes from the error's kind
//! (`kind.rs`, the one table of codes and metrics classes); nothing here classifies.
//! Internal errors are logged once, here.

use tonic::{Code, Status};

use crate::image::Error;

/// Maps a core error to a status whose message names the image and registry involved.
pub fn from_error(e: Error) -> Status {
    let kind = e.kind();
    let code = Code::from_i32(kind.code() as i32);
    // kubelet matches on the message prefix `RegistryUnavailable`.
    let mut message = e.to_string();
    if code == Code::Unavailable
        && !message.starts_with("RegistryUnavailable")
        && !matches!(e.root(), Error::ShuttingDown { .. })
    {
        message = format!("RegistryUnavailable: {message}");
    }
    if kind.is_server_side() {
        tracing::error!(error = %message, "request failed");
    } else {
        tracing::debug!(error = %message, "request refused");
    }
    Status::new(code, message)
}
