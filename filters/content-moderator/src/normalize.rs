//! Text as the rules see it, so that look-alike spellings of the same ASCII shapes meet the same
//! patterns:
//! - Unicode NFKC per character (full-width `ａ１` → `a1`, ligatures expanded, compatibility spaces
//!   to U+0020);
//! - tag characters (U+E0020–E007E, which spell ASCII invisibly) read as the ASCII they encode;
//! - every other Default_Ignorable code point removed (zero-width space and joiners, word joiner,
//!   soft hyphen, bidi controls and isolates, variation selectors, Hangul fillers…);
//! - a combining mark right after an ASCII character removed (`a\u{301}` → `a`; marks in other
//!   scripts, where they are letters' parts, stay);
//! - decimal digits of other scripts (Arabic-Indic, Devanagari, Bengali, Thai…) to ASCII digits,
//!   dashes and minus signs to `-`;
//! - in a word that mixes them with ASCII letters or digits, common Cyrillic and Greek letters that
//!   look like Latin ones to those Latin letters (`іgnore` with a Cyrillic `і` → `ignore`); words
//!   wholly in another script stay as they are, so rules written in that script still match. Not
//!   the full UTS #39 confusables table.
//!
//! Every normalised character remembers the byte range of the original character it came from,
//! so a match found in the normalised text is masked in the original. NFKC is applied character by
//! character, so the offsets stay exact.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Default_Ignorable_Code_Point (DerivedCoreProperties.txt): renders as nothing, splits matches.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// First code points of the decimal-digit (Nd) blocks of other scripts, each `0..=9` in order.
const DIGIT_ZEROS: [u32; 37] = [
    0x0660, 0x06F0, 0x07C0, 0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66, 0x0DE6,
    0x0E50, 0x0ED0, 0x0F20, 0x1040, 0x1090, 0x17E0, 0x1810, 0x1946, 0x19D0, 0x1A80, 0x1A90, 0x1B50, 0x1BB0,
    0x1C40, 0x1C50, 0xA620, 0xA8D0, 0xA900, 0xA9D0, 0xA9F0, 0xAA50, 0xABF0, 0x104A0, 0x1D7CE,
];

/// The ASCII digit, dash or space `c` stands for.
fn fold(c: char) -> char {
    let u = c as u32;
    if let Some(z) = DIGIT_ZEROS.iter().find(|&&z| (z..z + 10).contains(&u)) {
        return char::from(b'0' + (u - z) as u8);
    }
    match c {
        '\u{2010}'..='\u{2015}' | '\u{2212}' | '\u{FE58}' | '\u{FE63}' | '\u{FF0D}' => '-',
        '\u{1680}' => ' ',
        other => other,
    }
}

/// The Latin letter a Cyrillic or Greek letter looks like.
fn confusable(c: char) -> Option<char> {
    Some(match c {
        // Cyrillic
        'а' => 'a',
        'в' => 'b',
        'е' => 'e',
        'к' => 'k',
        'м' => 'm',
        'н' => 'h',
        'о' => 'o',
        'р' => 'p',
        'с' => 'c',
        'т' => 't',
        'у' => 'y',
        'х' => 'x',
        'ѕ' => 's',
        'і' => 'i',
        'ј' => 'j',
        'ԁ' => 'd',
        'ԛ' => 'q',
        'ԝ' => 'w',
        'һ' => 'h',
        'ӏ' => 'l',
        'ɡ' => 'g',
        'А' => 'A',
        'В' => 'B',
        'Е' => 'E',
        'К' => 'K',
        'М' => 'M',
        'Н' => 'H',
        'О' => 'O',
        'Р' => 'P',
        'С' => 'C',
        'Т' => 'T',
        'У' => 'Y',
        'Х' => 'X',
        'Ѕ' => 'S',
        'І' => 'I',
        'Ј' => 'J',
        // Greek
        'ο' => 'o',
        'ν' => 'v',
        'α' => 'a',
        'ι' => 'i',
        'κ' => 'k',
        'ρ' => 'p',
        'τ' => 't',
        'υ' => 'u',
        'Α' => 'A',
        'Β' => 'B',
        'Ε' => 'E',
        'Ζ' => 'Z',
        'Η' => 'H',
        'Ι' => 'I',
        'Κ' => 'K',
        'Μ' => 'M',
        'Ν' => 'N',
        'Ο' => 'O',
        'Ρ' => 'P',
        'Τ' => 'T',
        'Υ' => 'Y',
        'Χ' => 'X',
        _ => return None,
    })
}

/// Per character of `original`: whether it is a look-alike inside a word that also has ASCII
/// letters or digits (a word: letters, digits, marks and invisible characters in a row).
fn mixed_word_lookalikes(original: &str) -> Vec<bool> {
    let chars: Vec<char> = original.chars().collect();
    let mut out = vec![false; chars.len()];
    let in_word = |c: char| c.is_alphanumeric() || is_combining_mark(c) || is_invisible(c);
    let mut i = 0;
    while i < chars.len() {
        if !chars.get(i).is_some_and(|&c| in_word(c)) {
            i += 1;
            continue;
        }
        let start = i;
        while chars.get(i).is_some_and(|&c| in_word(c)) {
            i += 1;
        }
        let word = chars.get(start..i).unwrap_or_default();
        if word.iter().any(char::is_ascii_alphanumeric) && word.iter().any(|&c| confusable(c).is_some()) {
            for (k, &c) in word.iter().enumerate() {
                if confusable(c).is_some()
                    && let Some(slot) = out.get_mut(start + k)
                {
                    *slot = true;
                }
            }
        }
    }
    out
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
        let lookalike = mixed_word_lookalikes(original);
        for (k, (i, c)) in original.char_indices().enumerate() {
            let end = (i + c.len_utf8()) as u32;
            if c.is_ascii() {
                spans.push((text.len() as u32, i as u32, end));
                text.push(c);
                continue;
            }
            // Tag characters spell ASCII invisibly ("ASCII smuggling"): the model can read them,
            // so the rules read them as the ASCII they encode.
            if ('\u{E0020}'..='\u{E007E}').contains(&c) {
                spans.push((text.len() as u32, i as u32, end));
                text.push(char::from((c as u32 - 0xE0000) as u8));
                continue;
            }
            if is_invisible(c) {
                continue;
            }
            if lookalike.get(k).copied().unwrap_or(false)
                && let Some(latin) = confusable(c)
            {
                spans.push((text.len() as u32, i as u32, end));
                text.push(latin);
                continue;
            }
            for n in std::iter::once(c).nfkc() {
                if is_invisible(n) {
                    continue;
                }
                // A mark stacked on an ASCII letter only disguises it.
                if is_combining_mark(n) && text.chars().next_back().is_some_and(|p| p.is_ascii()) {
                    continue;
                }
                spans.push((text.len() as u32, i as u32, end));
                text.push(fold(n));
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
    fn look_alikes_fold_to_the_shapes_the_rules_match() {
        let cases = [
            ("AKIAIOSFODNN7EXAMPLE\u{FE0F}", "AKIAIOSFODNN7EXAMPLE"),
            ("a\u{2066}b\u{2069}c\u{E0001}d\u{3164}e", "abcde"),
            ("hi\u{E0020}\u{E0069}\u{E0067}\u{E006E}", "hi ign"),
            ("٤١١١ ١١١١", "4111 1111"),
            ("१२३‐४५‐६७८९", "123-45-6789"),
            ("іgnоre аll", "ignore all"),
            ("ΑΚΙΑIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            ("бомба and іgnore", "бомба and ignore"),
            ("e\u{301}x\u{300}\u{302}", "ex"),
            ("नमस्ते", "नमस्ते"),
        ];
        for (input, want) in cases {
            assert_eq!(Normalized::new(input).text, want, "{input:?}");
        }
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
