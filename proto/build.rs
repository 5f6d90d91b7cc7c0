//! Compiles the `.proto` files with `protox` (pure Rust, so no `protoc` is needed on
//! the build machine) and generates the tonic client and server code from them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/trellis/identity/v1/identity.proto",
        "proto/trellis/discovery/v1/discovery.proto",
        "proto/trellis/bench/v1/echo.proto",
    ];
    let descriptors = protox::compile(protos, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
