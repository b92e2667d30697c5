//! `tollgate.inference.v1`: the protocol between the filters and the inference sidecar.
//! Messages are plain prost types (they compile to wasm for the filters); the tonic client and
//! server are generated only with the `tonic` feature.

#![allow(clippy::all, clippy::pedantic)] // generated code

#[cfg(feature = "tonic")]
pub mod codec;

pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/tollgate.inference.v1.rs"));
}

/// Encoded `FileDescriptorSet` of the proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));

/// Fully-qualified gRPC service names, as `dispatch_grpc_call` wants them.
pub mod service {
    pub const INFERENCE: &str = "tollgate.inference.v1.Inference";
    pub const SEMANTIC_CACHE: &str = "tollgate.inference.v1.SemanticCache";
    pub const BUDGET: &str = "tollgate.inference.v1.Budget";
}
