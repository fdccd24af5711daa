//! Compiles `proto/runtime/v1/api.proto` with `protox` (no `protoc` needed) into tonic
//! server and client stubs.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let fds = protox::compile(["runtime/v1/api.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .skip_debug(["runtime.v1.AuthConfig"])
        .compile_fds(fds)?;
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    Ok(())
}
