//! The integration tests, one binary (each test still runs in its own process under nextest): the
//! real Envoy, the real sidecar and model, Redis and the mock provider on loopback, driven as
//! clients drive them. One module per filter, plus the whole chain, the sidecar through Envoy, the
//! OCI packages and the token-count reference.

mod api_surface;
mod common;
mod content_moderator;
mod envoy_limits;
mod host_errors;
mod jwt_auth;
mod oci_package;
mod passthrough;
mod prompt_templater;
mod response_cache;
mod responses_api;
mod semantic_router;
mod sidecar_probe;
mod token_counter;
mod token_reference;
mod tool_calls;
mod whole_chain;
