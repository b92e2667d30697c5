//! A streamed response, chunk by chunk: each rewritten in place by `crate::stream::Stream`, its
//! findings noted, and a block ending the stream with a well-formed error event.

use super::Http;
use crate::config::Action as Verdict;
use crate::refusal::Side;
use filter_host::body as host_body;
use filter_host::proxy_wasm::types::BufferType;
use filter_host::{http, log};

impl Http {
    /// Rewrites one chunk of a streamed response in place.
    pub(super) fn on_stream_chunk(&mut self, body_size: usize, end_of_stream: bool) {
        let shared = self.shared.clone();
        let chunk = http::response_body(self.id, 0, body_size).unwrap_or_default();
        let Some(stream) = self.stream.as_mut() else {
            return;
        };
        let out = stream.feed(&shared.config.response, &chunk, end_of_stream);
        let new: Vec<(usize, Verdict)> = stream.findings.get(self.recorded..).unwrap_or_default().to_vec();
        let blocked = stream.blocked;
        self.recorded += new.len();
        if let Err(s) = host_body::replace(BufferType::HttpResponseBody, body_size, &out) {
            // The unmoderated chunk must not go out: drop it.
            log!(Error, Some(self.id), "cannot rewrite a streamed chunk: {s:?}");
            let _ = host_body::replace(BufferType::HttpResponseBody, body_size, &[]);
        }
        if !new.is_empty() {
            self.record(Side::Response, &new);
        }
        if let Some(c) = blocked
            && !new.is_empty()
        {
            let name = shared
                .config
                .response
                .categories
                .get(c)
                .map_or("unknown", |c| c.name.as_str());
            log!(Info, Some(self.id), "response stream blocked: category {name}");
        }
    }
}
