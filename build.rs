//! Compiles `proto/` into Rust without a system `protoc`: `protox` parses the
//! files into a descriptor set, which is both handed to tonic's code generator
//! and written out whole for gRPC server reflection.

use prost::Message;
use std::{env, path::PathBuf};

const PROTOS: &[&str] = &["candela/v1/inference.proto", "candela/v1/rollout.proto", "inference/grpc_service.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(out.join("candela_descriptor.bin"), fds.encode_to_vec())?;
    // Raw tensor contents decode as `bytes::Bytes`: slices of the received
    // buffer, not copies.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        // Batches of feature values are coded by hand (src/rows.rs) to copy
        // the values in bulk; the wire format is the .proto's.
        .extern_path(".candela.v1.Rows", "crate::rows::Rows")
        .compile_fds(fds)?;
    Ok(())
}
