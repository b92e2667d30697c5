//! Request and response bodies of the supported APIs (`filter_core::api`, `prompt`, `usage`): the
//! same bytes are read as every API's request (prompt text, model, stream flag, token budget), as
//! OpenAI and Anthropic responses (generated texts, usage), and as one streamed event's data.
//! Checked beyond "no panic": the mutable text walk visits exactly the texts of the read-only one,
//! and a parsed request re-serialised parses again to the same texts.

#![no_main]

use filter_core::Provider;
use filter_core::api::{Request, anthropic, openai};
use filter_core::prompt;
use filter_core::sse::Event;
use filter_core::usage::{self, StreamUsage};
use libfuzzer_sys::fuzz_target;

const PROVIDERS: [Provider; 4] = [
    Provider::OpenAiChat,
    Provider::OpenAiCompletions,
    Provider::OpenAiEmbeddings,
    Provider::Anthropic,
];

fn texts(req: &Request) -> Vec<String> {
    prompt::segments(req).iter().map(|s| s.text.to_owned()).collect()
}

fuzz_target!(|data: &[u8]| {
    for provider in PROVIDERS {
        if let Ok(mut req) = Request::parse(provider, data) {
            let read = texts(&req);
            let _ = (req.model(), req.is_stream(), req.max_output_tokens());
            let _ = prompt::turn_input(&req);
            let _ = prompt::last_user_text(&req);

            let bytes = req.to_vec().expect("a parsed request serialises");
            let again = Request::parse(provider, &bytes).expect("our own output parses");
            assert_eq!(texts(&again), read, "re-serialising changed the prompt");

            let mut seen = Vec::new();
            prompt::for_each_text_mut(&mut req, |t| {
                seen.push(t.clone());
                t.push('!');
            });
            assert_eq!(seen, read, "mutable walk differs from the segments");
            req.set_model("m");
            let _ = req.to_vec();
        }

        if let Some(u) = usage::from_response(provider, data) {
            let _ = (u.total_input(), u.total());
        }
    }

    if let Ok(mut resp) = serde_json::from_slice::<openai::ChatCompletionResponse>(data) {
        for t in resp.texts_mut() {
            t.push('*');
        }
        let _ = resp.usage.as_ref().map(openai::Usage::cached_tokens);
        let _ = serde_json::to_vec(&resp);
    }
    if let Ok(resp) = serde_json::from_slice::<anthropic::MessagesResponse>(data) {
        let _ = serde_json::to_vec(&resp);
    }

    if let Ok(text) = std::str::from_utf8(data) {
        let event = Event {
            data: Some(text.to_owned()),
            ..Event::default()
        };
        for provider in [Provider::OpenAiChat, Provider::Anthropic] {
            let mut acc = StreamUsage::default();
            // Twice: the second sees the first's accumulated usage.
            let _ = acc.observe(provider, &event);
            let _ = acc.observe(provider, &event);
            if let Some(u) = acc.usage() {
                let _ = u.total();
            }
        }
        let _ = filter_core::error::redact_quoted(text);
    }
});
