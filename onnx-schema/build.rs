//! Compiles the ONNX model format's schema (`proto/onnx/onnx.proto`, the
//! messages Candela reads from an `.onnx` file) into Rust without a system
//! `protoc`: `protox` parses it, `prost-build` generates the messages.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["onnx/onnx.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
