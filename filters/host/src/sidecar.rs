//! Calls to the inference sidecar (`tollgate.inference.v1`) with `dispatch_grpc_call`, and decoding
//! of its replies in `on_grpc_call_response`. Every failure is a [`SidecarError`] the filter maps
//! to its policy (fail open or closed); nothing here panics on a bad reply.

use crate::abi;
use crate::call::{self, CallError};
use filter_core::config::SidecarConfig;
use inference_proto::service;
use inference_proto::v1 as pb;
use prost::Message;
use proxy_wasm::types::BufferType;

pub use inference_proto::v1;

/// gRPC status codes the filters act on.
pub mod code {
    pub const OK: u32 = 0;
    pub const INVALID_ARGUMENT: u32 = 3;
    pub const CANCELLED: u32 = 1;
    pub const DEADLINE_EXCEEDED: u32 = 4;
    pub const RESOURCE_EXHAUSTED: u32 = 8;
    pub const UNAVAILABLE: u32 = 14;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SidecarError {
    /// Envoy would not start the call (unknown cluster, …).
    #[error("sidecar call not started: {0}")]
    Dispatch(CallError),
    /// The call completed with a non-OK gRPC status (Envoy reports an unreachable sidecar as
    /// UNAVAILABLE and an expired deadline as DEADLINE_EXCEEDED).
    #[error("sidecar returned gRPC status {code}: {message}")]
    Status { code: u32, message: String },
    /// The reply body was missing or not the expected message.
    #[error("sidecar reply not understood: {0}")]
    Decode(String),
}

impl SidecarError {
    /// Whether the sidecar judged the input itself bad (retrying or failing over will not help).
    pub fn is_invalid_argument(&self) -> bool {
        matches!(self, Self::Status { code, .. } if *code == code::INVALID_ARGUMENT)
    }
}

/// A configured sidecar endpoint. Each method starts one call and returns its token; the reply
/// arrives in `on_grpc_call_response(token, status, size)`, where [`reply`] decodes it.
#[derive(Debug, Clone)]
pub struct Sidecar {
    cfg: SidecarConfig,
}

impl Sidecar {
    pub fn new(cfg: SidecarConfig) -> Self {
        Self { cfg }
    }

    fn call(&self, service: &str, method: &str, msg: &impl Message) -> Result<u32, SidecarError> {
        let bytes = msg.encode_to_vec();
        call::grpc(&self.cfg.cluster, service, method, &bytes, self.cfg.timeout())
            .map_err(SidecarError::Dispatch)
    }

    pub fn embed(&self, texts: Vec<String>) -> Result<u32, SidecarError> {
        self.call(service::INFERENCE, "Embed", &pb::EmbedRequest { texts })
    }

    pub fn classify(&self, label_set: &str, text: String) -> Result<u32, SidecarError> {
        let req = pb::ClassifyRequest {
            label_set: label_set.to_owned(),
            text,
        };
        self.call(service::INFERENCE, "Classify", &req)
    }

    pub fn cache_lookup(&self, req: &pb::CacheLookupRequest) -> Result<u32, SidecarError> {
        self.call(service::SEMANTIC_CACHE, "Lookup", req)
    }

    pub fn cache_store(&self, req: &pb::CacheStoreRequest) -> Result<u32, SidecarError> {
        self.call(service::SEMANTIC_CACHE, "Store", req)
    }

    pub fn reserve(&self, req: &pb::ReserveRequest) -> Result<u32, SidecarError> {
        self.call(service::BUDGET, "Reserve", req)
    }

    pub fn settle(&self, req: &pb::SettleRequest) -> Result<u32, SidecarError> {
        self.call(service::BUDGET, "Settle", req)
    }
}

/// Decodes the reply of a call in `on_grpc_call_response(_, status_code, response_size)`.
pub fn reply<M: Message + Default>(status_code: u32, response_size: usize) -> Result<M, SidecarError> {
    if status_code != code::OK {
        let raw = abi::call_status().ok().and_then(|(_, m)| m).unwrap_or_default();
        let (code, message) = normalise_status(status_code, &raw);
        return Err(SidecarError::Status { code, message });
    }
    let body = abi::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
        .map_err(|s| SidecarError::Decode(format!("reading the reply: {s:?}")))?
        .unwrap_or_default();
    M::decode(body.as_slice()).map_err(|e| SidecarError::Decode(e.to_string()))
}

/// Envoy reports a call's status message as the percent-encoded `grpc-message` followed by its
/// response-code details in braces (`texts[0]%20is%20empty{via_upstream}`), and an expired deadline
/// as UNAVAILABLE with details `response_timeout`. Returns the code a gRPC client would see
/// (DEADLINE_EXCEEDED, with one message whichever way Envoy reported it) and the decoded message.
fn normalise_status(code: u32, raw: &str) -> (u32, String) {
    let (message, details) = match raw.strip_suffix('}').and_then(|r| r.rsplit_once('{')) {
        Some((m, d)) => (m, Some(d)),
        None => (raw, None),
    };
    // Envoy reports an expired call deadline two ways: UNAVAILABLE `{response_timeout}` when the
    // upstream request timed out, CANCELLED "Timeout expired" when the async client's own timer
    // fired first (seen with a 1 ms deadline).
    let timed_out = (code == code::UNAVAILABLE && details == Some("response_timeout"))
        || (code == code::CANCELLED && percent_decode(message) == "Timeout expired");
    if timed_out {
        return (code::DEADLINE_EXCEEDED, "deadline exceeded".to_owned());
    }
    (code, percent_decode(message))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let hex = |j: usize| b.get(j).and_then(|h| (*h as char).to_digit(16));
        match (c, hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_decoded_as_grpc_clients_see_them() {
        assert_eq!(
            normalise_status(3, "texts[0]%20is%20empty{via_upstream}"),
            (3, "texts[0] is empty".to_owned())
        );
        assert_eq!(
            normalise_status(14, "upstream request timeout{response_timeout}"),
            (4, "deadline exceeded".to_owned())
        );
        assert_eq!(
            normalise_status(1, "Timeout expired"),
            (4, "deadline exceeded".to_owned())
        );
        assert_eq!(normalise_status(1, "cancelled"), (1, "cancelled".to_owned()));
        assert_eq!(
            normalise_status(
                14,
                "upstream connect error{upstream_reset_before_response_started}"
            ),
            (14, "upstream connect error".to_owned())
        );
        assert_eq!(normalise_status(8, "queue full"), (8, "queue full".to_owned()));
        assert_eq!(normalise_status(3, "100%25 {x"), (3, "100% {x".to_owned()));
        assert_eq!(normalise_status(3, "bad %zz %4"), (3, "bad %zz %4".to_owned()));
        assert_eq!(normalise_status(3, "caf%C3%A9"), (3, "café".to_owned()));
    }
}
