//! The ONNX model file format, as Candela's model layer reads it: the
//! messages of `proto/onnx/onnx.proto` (written from the ONNX specification,
//! compiled by `build.rs` without a system `protoc`) and the functions that
//! decode a file and write one. A crate of its own so the server's model layer reads an
//! ONNX file as plain structs and never names a protobuf library: only its
//! front speaks gRPC.

include!(concat!(env!("OUT_DIR"), "/onnx.rs"));

/// Decodes the bytes of an `.onnx` file.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, String> {
    prost::Message::decode(bytes).map_err(|e: prost::DecodeError| e.to_string())
}

/// The bytes of an `.onnx` file holding `model` (tests build small graphs with it).
pub fn encode(model: &ModelProto) -> Vec<u8> {
    prost::Message::encode_to_vec(model)
}
