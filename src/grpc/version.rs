//! `RuntimeService.Version`, the probe some clients make before using an endpoint.

use tonic::{Request, Response, Status};

use crate::proto;

/// Answers `Version`; every other RuntimeService RPC is unimplemented.
#[derive(Clone, Default)]
pub struct VersionService;

#[tonic::async_trait]
impl proto::runtime_service_server::RuntimeService for VersionService {
    async fn version(
        &self,
        _req: Request<proto::VersionRequest>,
    ) -> Result<Response<proto::VersionResponse>, Status> {
        Ok(Response::new(proto::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "cri-imaged".into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: "v1".into(),
        }))
    }
}
