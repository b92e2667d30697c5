//! Compiles the proto without a system `protoc`: protox parses it into a descriptor set, and
//! tonic-prost-build generates the messages (always) and the tonic services (feature `tonic`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "tollgate/inference/v1/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    let services = std::env::var_os("CARGO_FEATURE_TONIC").is_some();
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set also feeds gRPC reflection in the sidecar.
    std::fs::write(
        out.join("inference_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_server(services)
        .build_client(services)
        .build_transport(services)
        .codec_path("crate::codec::ProstCodec")
        .compile_fds(fds)?;
    Ok(())
}
