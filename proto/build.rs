//! Compiles the .proto schemas with protox (pure Rust, no system `protoc`) and prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/client.proto",
        "proto/peer.proto",
        "proto/storage.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    prost_build::Config::new()
        // Payloads are `bytes::Bytes`: socket to disk to socket without copies.
        .bytes(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
