//! SSE stream parser (`filter_core::sse`). The parser promises that a stream may be split into
//! body chunks at any byte, so parsing the stream whole and parsing it in chunks must give the
//! same events (fields), and either way every byte must come back, in order, in the events' `raw`
//! plus the pending bytes (a pass-through forwards them). Which event's `raw` holds a byte may
//! differ in one case: a chunk that ends in the CR of the blank line ending an event dispatches
//! it at once, so an LF opening the next chunk starts the next event's `raw` (waiting for the next
//! chunk to place it would hold the event back). An event re-encoded with `Event::encode` parses
//! back to itself.
//!
//! Input: byte 0 is the number of cuts (0-8), then two bytes per cut (a position, taken modulo the
//! stream length + 1, so cuts may repeat and give empty chunks), then the stream.

#![no_main]

use filter_core::sse::{Event, SseParser};
use libfuzzer_sys::fuzz_target;

fn parse(chunks: &[&[u8]], limit: usize) -> Option<(Vec<Event>, Vec<u8>)> {
    let mut parser = SseParser::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut out).ok()?;
    }
    Some((out, parser.pending().to_vec()))
}

type Fields<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>);

fn fields(events: &[Event]) -> Vec<Fields<'_>> {
    events
        .iter()
        .map(|e| (e.event.as_deref(), e.data.as_deref(), e.id.as_deref()))
        .collect()
}

fn reassemble(events: &[Event], pending: &[u8]) -> Vec<u8> {
    let mut raw: Vec<u8> = events.iter().flat_map(|e| e.raw.iter().copied()).collect();
    raw.extend_from_slice(pending);
    raw
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let n = usize::from(n % 9);
    let Some(head) = rest.get(..2 * n) else {
        return;
    };
    let stream = &rest[2 * n..];
    let mut cuts: Vec<usize> = head
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();
    let mut chunks = Vec::with_capacity(n + 1);
    let mut start = 0;
    for &cut in cuts.iter().chain(std::iter::once(&stream.len())) {
        chunks.push(&stream[start..cut]);
        start = cut;
    }

    // Large enough that no input libFuzzer makes hits the limit.
    let limit = filter_core::sse::DEFAULT_MAX_EVENT_BYTES;
    let (events, pending) = parse(&[stream], limit).expect("under the limit");
    let (split, split_pending) = parse(&chunks, limit).expect("under the limit");
    assert_eq!(
        fields(&events),
        fields(&split),
        "chunks {cuts:?} change the events"
    );
    assert_eq!(
        reassemble(&events, &pending),
        stream,
        "raw bytes do not reassemble the stream"
    );
    assert_eq!(
        reassemble(&split, &split_pending),
        stream,
        "chunks {cuts:?}: raw bytes lost"
    );

    for e in &events {
        if let Some(d) = &e.data {
            let bytes = Event::encode(e.event.as_deref(), d);
            let (again, left) = parse(&[&bytes], limit).expect("under the limit");
            assert!(left.is_empty());
            assert_eq!(again.len(), 1);
            assert_eq!((&again[0].event, &again[0].data), (&e.event, &e.data));
        }
    }

    // A small bound: an error, never a panic, and nothing after it is fed (as the filters do).
    let small = usize::from(data[0]) + 1;
    let _ = parse(&chunks, small);
});
