//! What the mock "generates", derived from the request so the same request gets the same bytes.

use super::{Controls, Recorded};
use crate::tokens;
use serde_json::Value;

pub(super) use filter_core::hash::fnv1a as fnv;

/// What the mock "generates": derived from the prompt, cut to the completion budget.
pub(super) struct Reply {
    pub(super) text: String,
    /// Deltas for streaming; concatenated they equal `text`.
    pub(super) pieces: Vec<String>,
    pub(super) finish_length: bool,
    pub(super) completion_tokens: u64,
}

pub(super) fn reply(
    model: &str,
    prompt: &str,
    rec: &Recorded,
    ctl: &Controls,
    max_tokens: Option<u64>,
) -> Reply {
    let (text, pieces) = match (ctl.chunks, ctl.chunk_bytes) {
        (Some(n), Some(b)) => {
            let piece: String = "lorem ipsum dolor sit amet ".chars().cycle().take(b).collect();
            (piece.repeat(n), vec![piece; n])
        }
        _ => {
            let base = if ctl.echo {
                String::from_utf8_lossy(&rec.body).into_owned()
            } else {
                let first_line: String = prompt.lines().next().unwrap_or("").chars().take(200).collect();
                format!("Mock reply from {model}: {first_line}")
            };
            let pieces = split_pieces(&base, ctl.chunks);
            (base, pieces)
        }
    };
    let (text, finish_length, pieces) = match max_tokens {
        Some(max) => match tokens::truncate(model, &text, max) {
            (cut, true) => {
                let p = split_pieces(&cut, ctl.chunks);
                (cut, true, p)
            }
            (t, false) => (t, false, pieces),
        },
        None => (text, false, pieces),
    };
    let completion_tokens = tokens::count(model, &text);
    Reply {
        text,
        pieces,
        finish_length,
        completion_tokens,
    }
}

/// Splits into `n` pieces at char boundaries, or word by word (a leading space stays with its word,
/// as tokens do) when `n` is not given.
pub(super) fn split_pieces(text: &str, n: Option<usize>) -> Vec<String> {
    if text.is_empty() {
        return vec![String::new()];
    }
    match n {
        Some(n) => {
            let chars: Vec<char> = text.chars().collect();
            let per = chars.len().div_ceil(n.max(1)).max(1);
            chars.chunks(per).map(|c| c.iter().collect()).collect()
        }
        None => {
            let mut out = Vec::new();
            let mut start = 0;
            for (i, c) in text.char_indices().skip(1) {
                if c == ' ' {
                    out.push(text.get(start..i).unwrap_or_default().to_owned());
                    start = i;
                }
            }
            out.push(text.get(start..).unwrap_or_default().to_owned());
            out
        }
    }
}

pub(super) fn last_user_text(messages: &[Value]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| match m.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join(" "),
            _ => String::new(),
        })
        .unwrap_or_default()
}

/// Unit vector derived from the text (splitmix64 over its hash): same text, same vector.
pub(super) fn pseudo_embedding(text: &str, dim: usize) -> Vec<f32> {
    let mut state = fnv(text.as_bytes());
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(f32::MIN_POSITIVE);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

pub(super) fn base64_encode(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for c in bytes.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= c.len() {
                out.push(char::from(T[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64_encode(input.as_bytes()), want);
        }
    }

    #[test]
    fn pieces_concatenate_to_the_text() {
        for n in [None, Some(1), Some(3), Some(50)] {
            let t = "héllo wörld, this is a test";
            assert_eq!(split_pieces(t, n).concat(), t);
        }
        assert_eq!(split_pieces("a b c", None), ["a", " b", " c"]);
    }

    #[test]
    fn embeddings_are_unit_length_and_deterministic() {
        let a = pseudo_embedding("x", 64);
        assert_eq!(a, pseudo_embedding("x", 64));
        assert_ne!(a, pseudo_embedding("y", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
    }
}
