//! Incremental Server-Sent Events parser (WHATWG HTML §9.2 event-stream interpretation).
//!
//! Feed it body chunks as they arrive, split at any byte: lines may end in CRLF, LF or CR (a CR at the
//! end of one chunk and an LF at the start of the next are one line ending), comment lines are
//! ignored, multi-line `data:` fields are joined with `\n`. Every event also carries its raw bytes,
//! so a filter can pass events through untouched, drop one, or re-emit a rewritten one.

/// One event: the block of lines up to and including a blank line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Event {
    /// The `event:` field (OpenAI sends none; Anthropic names every event).
    pub event: Option<String>,
    /// The joined `data:` lines; `None` for a block without data (comments, keep-alives), which
    /// standard clients ignore but a pass-through must still forward.
    pub data: Option<String>,
    pub id: Option<String>,
    /// The exact bytes of the block as received, blank line included.
    pub raw: Vec<u8>,
}

impl Event {
    /// OpenAI's end-of-stream sentinel `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data.as_deref() == Some("[DONE]")
    }

    /// Serialises an event in the canonical form `event: …\ndata: …\n\n` (multi-line data split
    /// into several `data:` lines).
    pub fn encode(event: Option<&str>, data: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len() + event.map_or(0, str::len) + 16);
        if let Some(e) = event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(e.as_bytes());
            out.push(b'\n');
        }
        for line in data.split('\n') {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        out.push(b'\n');
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    #[error("SSE event exceeds {limit} bytes")]
    EventTooLarge { limit: usize },
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Default bound on one event's size; a stream that never sends a blank line cannot grow memory
/// past it.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub struct SseParser {
    line: Vec<u8>,
    current: Event,
    /// The previous chunk ended in CR: an LF at the start of the next chunk belongs to it.
    after_cr: bool,
    started: bool,
    max_event_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            line: Vec::new(),
            current: Event::default(),
            after_cr: false,
            started: false,
            max_event_bytes,
        }
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) -> Result<(), SseError> {
        let mut rest = chunk;
        if !self.started && !rest.is_empty() {
            // The BOM may itself be split across chunks: until it is complete or ruled out, its
            // bytes so far are all the stream has given (held in `raw`).
            let held = self.current.raw.len();
            let want = BOM.get(held..).unwrap_or_default();
            let take = rest.len().min(want.len());
            if rest.get(..take) == want.get(..take) {
                self.current.raw.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
                if held + take < BOM.len() {
                    return Ok(());
                }
            } else {
                // Not a BOM after all: the held bytes begin the first line.
                self.line.extend_from_slice(&self.current.raw);
            }
            self.started = true;
        }
        // An empty chunk (Envoy may deliver one) says nothing about the byte after a trailing CR.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n".as_slice()) {
                self.current.raw.push(b'\n');
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, tail) = rest.split_at(pos);
            let Some((&term, mut tail)) = tail.split_first() else {
                break;
            };
            self.line.extend_from_slice(line);
            self.current.raw.extend_from_slice(line);
            self.current.raw.push(term);
            if term == b'\r' {
                if let Some(after) = tail.strip_prefix(b"\n".as_slice()) {
                    self.current.raw.push(b'\n');
                    tail = after;
                } else if tail.is_empty() {
                    self.after_cr = true;
                }
            }
            rest = tail;
            self.end_line(out);
        }
        self.line.extend_from_slice(rest);
        self.current.raw.extend_from_slice(rest);
        if self.current.raw.len() > self.max_event_bytes {
            return Err(SseError::EventTooLarge {
                limit: self.max_event_bytes,
            });
        }
        Ok(())
    }

    /// Bytes of an event that has not been terminated yet (a stream that ends here drops them, as
    /// the spec says; a pass-through forwards them).
    pub fn pending(&self) -> &[u8] {
        &self.current.raw
    }

    fn end_line(&mut self, out: &mut Vec<Event>) {
        if self.line.is_empty() {
            out.push(std::mem::take(&mut self.current));
            return;
        }
        let line = String::from_utf8_lossy(&self.line);
        if !line.starts_with(':') {
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_ref(), ""),
            };
            match field {
                "data" => match &mut self.current.data {
                    Some(d) => {
                        d.push('\n');
                        d.push_str(value);
                    }
                    None => self.current.data = Some(value.to_owned()),
                },
                "event" => self.current.event = Some(value.to_owned()),
                "id" if !value.contains('\0') => self.current.id = Some(value.to_owned()),
                _ => {}
            }
        }
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn parse_in_pieces(input: &[u8], cuts: &[usize]) -> Vec<Event> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&input.len())) {
            p.feed(&input[start..cut], &mut out).unwrap();
            start = cut;
        }
        out
    }

    fn data(events: &[Event]) -> Vec<Option<&str>> {
        events.iter().map(|e| e.data.as_deref()).collect()
    }

    const OPENAI: &[u8] = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";

    #[test]
    fn splits_at_every_byte_give_the_same_events() {
        let whole = parse_in_pieces(OPENAI, &[]);
        assert_eq!(
            data(&whole),
            [Some("{\"a\":1}"), Some("{\"b\":2}"), Some("[DONE]")]
        );
        assert!(whole[2].is_done());
        for cut in 0..OPENAI.len() {
            assert_eq!(parse_in_pieces(OPENAI, &[cut]), whole, "cut at {cut}");
        }
        let every_byte: Vec<usize> = (1..OPENAI.len()).collect();
        assert_eq!(parse_in_pieces(OPENAI, &every_byte), whole);
    }

    #[test]
    fn raw_bytes_reassemble_the_stream() {
        let input = b": keep-alive\r\n\r\nevent: ping\rdata: x\r\r\nid: 7\ndata: y\n\n";
        for cut in 0..input.len() {
            let events = parse_in_pieces(input, &[cut]);
            let raw: Vec<u8> = events.iter().flat_map(|e| e.raw.clone()).collect();
            assert_eq!(raw, input, "cut at {cut}");
        }
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf_keeps_them_one_line_ending() {
        // Found by fuzzing (fuzz target `sse`): the empty chunk cleared the pending CR, so the LF
        // ended a second, blank line and dispatched the event before its `data:` line.
        let input = b"event: message_start\r\ndata: {}\r\n\r\n";
        let whole = parse_in_pieces(input, &[]);
        assert_eq!(whole.len(), 1);
        assert_eq!(whole[0].event.as_deref(), Some("message_start"));
        assert_eq!(parse_in_pieces(input, &[21, 21]), whole);
        assert_eq!(parse_in_pieces(input, &[21, 21, 21, 22]), whole);
    }

    #[test]
    fn crlf_cr_and_lf_line_endings_including_cr_lf_split_across_chunks() {
        let input = b"event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\rdata: 3\n\n";
        let whole = parse_in_pieces(input, &[]);
        assert_eq!(data(&whole), [Some("1"), Some("2"), Some("3")]);
        assert_eq!(whole[0].event.as_deref(), Some("a"));
        assert_eq!(whole[1].event.as_deref(), Some("b"));
        assert_eq!(whole[2].event, None);
        // CR at the end of one chunk, LF at the start of the next: one line ending, not two.
        let split = parse_in_pieces(input, &[9]);
        assert_eq!(split, whole);
    }

    #[test]
    fn comments_multiline_data_and_field_rules() {
        let input = b": comment\ndata: line one\ndata:line two\ndata\nretry: 10\nunknown: x\nid: 42\n\n";
        let ev = parse_in_pieces(input, &[]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].data.as_deref(), Some("line one\nline two\n"));
        assert_eq!(ev[0].id.as_deref(), Some("42"));
    }

    #[test]
    fn blocks_without_data_are_reported_for_pass_through() {
        let ev = parse_in_pieces(b": ping\n\nevent: x\n\ndata: d\n\n", &[]);
        assert_eq!(data(&ev), [None, None, Some("d")]);
        assert_eq!(ev[0].raw, b": ping\n\n");
    }

    #[test]
    fn anthropic_stream_with_utf8_split_inside_a_character() {
        let input = "event: content_block_delta\ndata: {\"text\":\"caf\u{e9} \u{1F600}\"}\n\n".as_bytes();
        let whole = parse_in_pieces(input, &[]);
        for cut in 0..input.len() {
            assert_eq!(parse_in_pieces(input, &[cut]), whole);
        }
        assert_eq!(
            whole[0].data.as_deref(),
            Some("{\"text\":\"caf\u{e9} \u{1F600}\"}")
        );
    }

    #[test]
    fn incomplete_event_stays_pending() {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        p.feed(b"data: 1\n\ndata: half", &mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(p.pending(), b"data: half");
    }

    #[test]
    fn an_event_over_the_limit_is_an_error() {
        let mut p = SseParser::new(64);
        let mut out = Vec::new();
        p.feed(b"data: ", &mut out).unwrap();
        let err = p.feed(&[b'x'; 100], &mut out).unwrap_err();
        assert_eq!(err, SseError::EventTooLarge { limit: 64 });
    }

    #[test]
    fn leading_bom_is_skipped_for_fields_but_kept_in_raw() {
        let ev = parse_in_pieces(b"\xEF\xBB\xBFdata: x\n\n", &[]);
        assert_eq!(data(&ev), [Some("x")]);
        assert_eq!(ev[0].raw, b"\xEF\xBB\xBFdata: x\n\n");
    }

    #[test]
    fn a_bom_split_across_chunks_is_still_skipped() {
        // Found by fuzzing (fuzz target `sse`): a BOM cut after its first byte was kept in the
        // first field name, so `\u{FEFF}id` was ignored when the chunks were split there.
        let input = b"\xEF\xBB\xBFid: 8\ndata: x\n\n";
        let whole = parse_in_pieces(input, &[]);
        assert_eq!(whole[0].id.as_deref(), Some("8"));
        for cuts in [&[1][..], &[2], &[1, 2, 2], &[1, 1, 3]] {
            assert_eq!(parse_in_pieces(input, cuts), whole, "cuts {cuts:?}");
        }
        // Bytes that only begin like a BOM are the start of the first line.
        let not_bom = b"\xEF\xBBx: y\ndata: z\n\n";
        let whole = parse_in_pieces(not_bom, &[]);
        assert_eq!(whole[0].raw, not_bom);
        assert_eq!(parse_in_pieces(not_bom, &[1, 2]), whole);
        let mut p = SseParser::default();
        p.feed(b"\xEF", &mut Vec::new()).unwrap();
        assert_eq!(p.pending(), b"\xEF");
    }

    #[test]
    fn encode_round_trips_through_the_parser() {
        let bytes = Event::encode(Some("message_delta"), "{\"a\":1}\nsecond");
        let ev = parse_in_pieces(&bytes, &[]);
        assert_eq!(ev[0].event.as_deref(), Some("message_delta"));
        assert_eq!(ev[0].data.as_deref(), Some("{\"a\":1}\nsecond"));
        assert_eq!(ev[0].raw, bytes);
    }
}
