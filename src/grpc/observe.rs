//! CRI request latency by RPC and gRPC code: every ImageService RPC runs through [`timed`].
//! A request whose caller goes away before the answer counts as `Canceled`.

use std::future::Future;
use std::time::Instant;

use tonic::{Code, Status};

use crate::metrics::Metrics;

/// The gRPC code's canonical name, as Go's `codes.Code.String()` (and so most dashboards)
/// spell it.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

struct Timer<'a> {
    metrics: &'a Metrics,
    rpc: &'static str,
    started: Instant,
    code: Code,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        self.metrics.cri_request(
            self.rpc,
            code_name(self.code),
            self.started.elapsed().as_secs_f64(),
        );
    }
}

/// Runs one RPC's handler and records its duration under its answer's code.
pub async fn timed<T>(
    metrics: &Metrics,
    rpc: &'static str,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<T, Status> {
    let mut timer = Timer {
        metrics,
        rpc,
        started: Instant::now(),
        code: Code::Cancelled,
    };
    let result = handler.await;
    timer.code = match &result {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    result
}
