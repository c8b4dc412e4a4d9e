//! Compiles the worker protocol with protox (pure Rust, no protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/bellows/worker/v1/worker.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Small starting buffers: see `WorkerCodec`.
        .codec_path("crate::WorkerCodec")
        .compile_fds(descriptors)?;
    Ok(())
}
