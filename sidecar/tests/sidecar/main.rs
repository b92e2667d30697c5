//! The sidecar's own tests, one binary: the model against the sentence-transformers reference,
//! the gRPC service in-process, and the Redis backend against a real redis-server.

mod common;
mod grpc;
mod model;
mod redis;
