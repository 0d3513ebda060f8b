//! Candela's wire contract, shared by the server, the client and any Rust caller:
//! the generated `candela.v1` and Open Inference Protocol (`inference`) messages
//! and service stubs, plus the encoded file
//! descriptor set the server publishes through gRPC reflection. Nothing else
//! lives here, so depending on the contract never pulls in the model runtime.

mod rows;

/// `candela.v1`: the `Inference` and `Rollouts` services, their client and server stubs, and messages.
pub mod v1 {
    tonic::include_proto!("candela.v1");
    pub use crate::rows::Rows;
}

/// `inference`: the Open Inference Protocol (KServe V2) `GRPCInferenceService`
/// with Triton's extensions, and the part of Triton's `ModelConfig` it returns.
pub mod inference {
    tonic::include_proto!("inference");
}

/// Every message and service in `proto/`, encoded as a `FileDescriptorSet`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/candela_descriptor.bin"));
