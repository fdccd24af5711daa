//! The generated CRI `runtime.v1` types, servers and clients (from `proto/runtime/v1/api.proto`).
//!
//! No hand-written code lives here except the redacting `Debug` of [`AuthConfig`]: prost
//! ignores upstream's `[debug_redact = true]`, so `build.rs` skips the derived `Debug` and
//! this one never prints a secret.
#![allow(clippy::all, clippy::pedantic, missing_docs)]

tonic::include_proto!("runtime.v1");

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn redact(s: &str) -> &'static str {
            if s.is_empty() { "" } else { "<redacted>" }
        }
        f.debug_struct("AuthConfig")
            .field("username", &self.username)
            .field("password", &redact(&self.password))
            .field("auth", &redact(&self.auth))
            .field("server_address", &self.server_address)
            .field("identity_token", &redact(&self.identity_token))
            .field("registry_token", &redact(&self.registry_token))
            .finish()
    }
}
