//! Compiles `tessera/v1/*.proto` with a pure-Rust protobuf compiler, so no
//! system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "tessera/v1/federation.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Chunk data is reference-counted (`bytes::Bytes`): one broadcast
        // buffer serves every participant's outbox, a clone copies nothing.
        .bytes(".tessera.v1.VectorChunk.data")
        .compile_fds(descriptors)?;
    Ok(())
}
