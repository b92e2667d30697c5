//! Text as the rules see it: Unicode NFKC (full-width `ａ１` → `a1`, ligatures and compatibility
//! forms folded), with invisible format characters removed (zero-width space/joiners, word joiner,
//! BOM, soft hyphen, Mongolian vowel separator), so `4111\u{200b}1111…` or full-width digits do not
//! slip past a detector. Every normalised character remembers the byte range of the original
//! character it came from, so a match found in the normalised text is masked in the original.
//!
//! NFKC is applied character by character: a canonical composition across two original characters
//! (a base letter and a separate combining accent) is not formed. Detectors and rules match ASCII
//! shapes, which per-character NFKC reaches; the trade is an exact offset map.

use unicode_normalization::UnicodeNormalization;

/// Characters that render as nothing and would split a match.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

#[derive(Debug, Default, Clone)]
pub struct Normalized {
    pub text: String,
    /// `(normalised byte offset, original start, original end)` per normalised character, in order.
    spans: Vec<(u32, u32, u32)>,
    /// Length of the original text.
    original_len: u32,
    /// ASCII input: the text is the original and offsets map to themselves.
    identity: bool,
}

impl Normalized {
    pub fn new(original: &str) -> Self {
        // Most text is ASCII: nothing to fold, offsets are the identity.
        if original.is_ascii() {
            return Self {
                text: original.to_owned(),
                spans: Vec::new(),
                original_len: original.len() as u32,
                identity: true,
            };
        }
        let mut text = String::with_capacity(original.len());
        let mut spans = Vec::with_capacity(original.len());
        for (i, c) in original.char_indices() {
            let end = (i + c.len_utf8()) as u32;
            if c.is_ascii() {
                spans.push((text.len() as u32, i as u32, end));
                text.push(c);
                continue;
            }
            if is_invisible(c) {
                continue;
            }
            for n in std::iter::once(c).nfkc() {
                if is_invisible(n) {
                    continue;
                }
                spans.push((text.len() as u32, i as u32, end));
                text.push(n);
            }
        }
        Self {
            text,
            spans,
            original_len: original.len() as u32,
            identity: false,
        }
    }

    /// The original byte range covering normalised bytes `start..end` (a match's range).
    pub fn original_range(&self, start: usize, end: usize) -> (usize, usize) {
        let len = self.original_len as usize;
        if self.identity && start < end && end <= len {
            return (start, end);
        }
        if self.spans.is_empty() || start >= end {
            return (self.original_len as usize, self.original_len as usize);
        }
        let find = |pos: usize| match self.spans.binary_search_by_key(&(pos as u32), |s| s.0) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let first = self.spans.get(find(start)).map_or(0, |s| s.1);
        let last = self.spans.get(find(end - 1)).map_or(self.original_len, |s| s.2);
        (first as usize, last as usize)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    use super::*;

    #[test]
    fn full_width_and_zero_width_fold_to_ascii_with_exact_origins() {
        let original = "card: ４１１１\u{200b}1111 end";
        let n = Normalized::new(original);
        assert_eq!(n.text, "card: 41111111 end");
        let start = n.text.find("4111").unwrap();
        let (a, b) = n.original_range(start, start + 8);
        assert_eq!(&original[a..b], "４１１１\u{200b}1111");
    }

    #[test]
    fn ligatures_expand_and_map_back_to_one_character() {
        let original = "ﬁle";
        let n = Normalized::new(original);
        assert_eq!(n.text, "file");
        assert_eq!(n.original_range(0, 1), (0, 3));
        assert_eq!(n.original_range(1, 2), (0, 3));
        assert_eq!(n.original_range(2, 4), (3, 5));
    }

    #[test]
    fn plain_ascii_is_unchanged_and_empty_ranges_are_safe() {
        let n = Normalized::new("hello");
        assert_eq!(n.text, "hello");
        assert_eq!(n.original_range(1, 3), (1, 3));
        assert_eq!(n.original_range(3, 3), (5, 5));
        assert_eq!(Normalized::new("").original_range(0, 1), (0, 0));
        assert_eq!(Normalized::new("\u{200b}\u{feff}").text, "");
    }
}
