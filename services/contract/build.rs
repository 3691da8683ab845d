//! Compiles `proto/` with protox (a pure-Rust protobuf compiler) so that no `protoc` binary is
//! needed on any machine that builds telerelay.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = [
        "telerelay/v1/common.proto",
        "telerelay/v1/request.proto",
        "telerelay/v1/result.proto",
        "telerelay/v1/event.proto",
        "telerelay/v1/critical.proto",
    ];
    let descriptors = protox::compile(files, [proto_root])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed={proto_root}");
    Ok(())
}
