//! Reading usage from a response as it passes, never holding it back.
//!
//! JSON responses are copied (up to a bound) while every chunk goes on, and parsed at the end. SSE
//! streams are parsed event by event. When the filter added `stream_options.include_usage` itself,
//! the usage-only chunk it caused is removed so the client gets the stream it asked for; only then
//! are bytes rewritten, and an event is forwarded as soon as its blank line arrives.

use filter_core::Provider;
use filter_core::sse::{Event, SseParser};
use filter_core::usage::{self, Observed, StreamUsage, TokenUsage};

/// Largest JSON response copied for its usage; past it the usage is reported missing.
pub const MAX_JSON_COPY: usize = 4 << 20;

#[derive(Debug)]
enum Mode {
    Json {
        copy: Vec<u8>,
        overflow: bool,
    },
    Sse {
        parser: SseParser,
        usage: StreamUsage,
    },
    /// Not a body we understand, or the stream broke: pass through, report no usage.
    Ignore,
}

#[derive(Debug)]
pub struct Tap {
    provider: Provider,
    mode: Mode,
    /// Drop the usage-only chunk the filter asked for.
    drop_usage_chunk: bool,
    events: Vec<Event>,
    /// The stream ended in the middle of an event or broke the SSE bound.
    pub cut: bool,
}

/// What to do with one body chunk.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Forward it unchanged.
    Pass,
    /// Forward these bytes instead.
    Replace(Vec<u8>),
}

impl Tap {
    /// `content_type` of the response decides the mode; `drop_usage_chunk` when the filter injected
    /// `include_usage`.
    pub fn new(provider: Provider, content_type: &str, drop_usage_chunk: bool) -> Self {
        let ct = content_type.trim_start().to_ascii_lowercase();
        let mode = if ct.starts_with("text/event-stream") {
            Mode::Sse {
                parser: SseParser::default(),
                usage: StreamUsage::default(),
            }
        } else if ct.starts_with("application/json") {
            Mode::Json {
                copy: Vec::new(),
                overflow: false,
            }
        } else {
            Mode::Ignore
        };
        Self {
            provider,
            mode,
            drop_usage_chunk,
            events: Vec::new(),
            cut: false,
        }
    }

    /// True when chunks may be rewritten (so `content-length` must go).
    pub fn rewrites(&self) -> bool {
        self.drop_usage_chunk && matches!(self.mode, Mode::Sse { .. })
    }

    pub fn chunk(&mut self, bytes: &[u8], end_of_stream: bool) -> Chunk {
        let provider = self.provider;
        match &mut self.mode {
            Mode::Ignore => Chunk::Pass,
            Mode::Json { copy, overflow } => {
                if copy.len() + bytes.len() > MAX_JSON_COPY {
                    *overflow = true;
                    copy.clear();
                } else if !*overflow {
                    copy.extend_from_slice(bytes);
                }
                Chunk::Pass
            }
            Mode::Sse { parser, usage } => {
                self.events.clear();
                if parser.feed(bytes, &mut self.events).is_err() {
                    // An event past the bound: stop parsing. Forward what the parser held so no byte
                    // is lost, then everything as it comes.
                    self.cut = true;
                    let mut held: Vec<u8> = self.events.iter().flat_map(|e| e.raw.iter().copied()).collect();
                    held.extend_from_slice(parser.pending());
                    self.mode = Mode::Ignore;
                    return if self.drop_usage_chunk {
                        Chunk::Replace(held)
                    } else {
                        Chunk::Pass
                    };
                }
                let mut out = self.drop_usage_chunk.then(|| Vec::with_capacity(bytes.len()));
                for e in &self.events {
                    let seen = usage.observe(provider, e);
                    if let Some(out) = out.as_mut()
                        && seen != Observed::UsageOnlyChunk
                    {
                        out.extend_from_slice(&e.raw);
                    }
                }
                if end_of_stream && !parser.pending().is_empty() {
                    self.cut = true;
                    if let Some(out) = out.as_mut() {
                        out.extend_from_slice(parser.pending());
                    }
                }
                match out {
                    Some(out) => Chunk::Replace(out),
                    None => Chunk::Pass,
                }
            }
        }
    }

    /// The usage the response reported, once it has ended.
    pub fn usage(&self) -> Option<TokenUsage> {
        match &self.mode {
            Mode::Json { copy, overflow } if !*overflow => usage::from_response(self.provider, copy),
            Mode::Sse { usage, .. } => usage.usage(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    const STREAM: &str = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
        "data: [DONE]\n\n",
    );

    /// Feeds `stream` in chunks of `n` bytes and returns what the client receives.
    fn run(tap: &mut Tap, stream: &[u8], n: usize) -> Vec<u8> {
        let chunks: Vec<&[u8]> = stream.chunks(n).collect();
        let mut out = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            match tap.chunk(c, i + 1 == chunks.len()) {
                Chunk::Pass => out.extend_from_slice(c),
                Chunk::Replace(b) => out.extend_from_slice(&b),
            }
        }
        out
    }

    #[test]
    fn injected_usage_chunk_is_removed_at_any_chunking() {
        let want = STREAM.replace(
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n",
            "",
        );
        for n in [1, 3, 7, 50, STREAM.len()] {
            let mut tap = Tap::new(Provider::OpenAiChat, "text/event-stream; charset=utf-8", true);
            assert!(tap.rewrites());
            assert_eq!(
                String::from_utf8(run(&mut tap, STREAM.as_bytes(), n)).unwrap(),
                want,
                "{n}"
            );
            assert_eq!(tap.usage().unwrap().total(), 11);
            assert!(!tap.cut);
        }
    }

    #[test]
    fn a_client_that_asked_for_usage_gets_the_stream_untouched() {
        let mut tap = Tap::new(Provider::OpenAiChat, "text/event-stream", false);
        assert!(!tap.rewrites());
        assert_eq!(run(&mut tap, STREAM.as_bytes(), 5), STREAM.as_bytes());
        assert_eq!(tap.usage().unwrap().output_tokens, 2);
    }

    #[test]
    fn a_stream_cut_mid_event_forwards_every_byte_and_reports_it() {
        let cut = &STREAM.as_bytes()[..STREAM.len() - 5];
        let mut tap = Tap::new(Provider::OpenAiChat, "text/event-stream", true);
        let out = run(&mut tap, cut, 16);
        assert!(tap.cut);
        // The usage chunk was complete before the cut, so it is gone; the cut tail is forwarded.
        assert!(out.ends_with(b"data: [DO"));
        assert_eq!(tap.usage().unwrap().total(), 11);
    }

    #[test]
    fn json_usage_is_read_at_the_end() {
        let body = br#"{"id":"m","type":"message","content":[],"usage":{"input_tokens":5,"output_tokens":3,"cache_read_input_tokens":100}}"#;
        let mut tap = Tap::new(Provider::Anthropic, "application/json", false);
        assert_eq!(run(&mut tap, body, 10), body);
        let u = tap.usage().unwrap();
        assert_eq!(
            (u.input_tokens, u.cache_read_tokens, u.output_tokens),
            (5, 100, 3)
        );
    }

    #[test]
    fn other_bodies_pass_and_report_no_usage() {
        let mut tap = Tap::new(Provider::OpenAiChat, "text/plain", true);
        assert_eq!(tap.chunk(b"oops", true), Chunk::Pass);
        assert_eq!(tap.usage(), None);
        let mut tap = Tap::new(Provider::OpenAiChat, "application/json", false);
        tap.chunk(b"{\"choices\":[]", true);
        assert_eq!(tap.usage(), None);
    }
}
