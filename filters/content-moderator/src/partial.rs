//! Where a match may still be forming: the minimal holdback of a moderated stream.
//!
//! A stream releases text as it arrives except the suffix a masking or blocking match could still
//! be growing into. That suffix is found from the matchers themselves: every rule's pattern is
//! compiled into one lazy DFA, anchored, with its look-around assertions (`\b`, `\z`) dropped so
//! it accepts a superset of what the rules match (a superset can only hold more, never release a
//! partial match). For each position of the window, the DFA runs from there over the rest of the
//! text; the first position whose run has not died when the text ends is where the held suffix
//! starts. Ordinary prose dies within a byte or two of each position for the shipped response
//! rules (card numbers, SSNs, private keys), so it goes out as it arrives; the digits of a forming
//! card number wait until they complete (masked) or stop matching.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::nfa::thompson;
use regex_automata::util::start::Config as StartConfig;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Hir, HirKind, Repetition};

/// The lazy DFA's cache cap per stream: states it builds as they are needed. When it fills up the
/// search gives up, and the position counts as live (held): safe, only slower to release.
const CACHE_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct Partial {
    dfa: DFA,
}

impl Partial {
    /// One DFA for every pattern (the rules' patterns as the regex crate reads them).
    pub fn new(patterns: &[String]) -> Result<Self, String> {
        let mut hirs = Vec::with_capacity(patterns.len());
        for p in patterns {
            let hir = regex_syntax::ParserBuilder::new()
                .build()
                .parse(p)
                .map_err(|e| e.to_string())?;
            hirs.push(without_looks(&hir));
        }
        let nfa = thompson::Compiler::new()
            .configure(
                thompson::Config::new()
                    .nfa_size_limit(Some(filter_core::config::REGEX_SIZE_LIMIT * 4))
                    .shrink(false),
            )
            .build_many_from_hir(&hirs)
            .map_err(|e| e.to_string())?;
        let dfa = DFA::builder()
            .configure(
                // Every match, not the leftmost-first one: a run stays alive past a match
                // that could grow (`\d{13,19}` after 13 digits).
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(CACHE_BYTES)
                    .skip_cache_capacity_check(true),
            )
            .build_from_nfa(nfa)
            .map_err(|e| e.to_string())?;
        Ok(Self { dfa })
    }

    pub fn cache(&self) -> Cache {
        self.dfa.create_cache()
    }

    /// The first byte offset of `text` (a character boundary) from which the rest of `text` is
    /// the start of a possible match, or could still extend one; `None` when no match can be
    /// forming at its end.
    pub fn live_from(&self, cache: &mut Cache, text: &str) -> Option<usize> {
        let bytes = text.as_bytes();
        let start = StartConfig::new().anchored(Anchored::Yes);
        'position: for p in 0..bytes.len() {
            if !text.is_char_boundary(p) {
                continue;
            }
            let look_behind = p.checked_sub(1).and_then(|i| bytes.get(i).copied());
            let Ok(mut sid) = self
                .dfa
                .start_state(cache, &start.clone().look_behind(look_behind))
            else {
                return Some(p);
            };
            for &b in &bytes[p..] {
                match self.dfa.next_state(cache, sid, b) {
                    Ok(s) => sid = s,
                    Err(_) => return Some(p),
                }
                if sid.is_dead() {
                    continue 'position;
                }
                if sid.is_quit() || sid.is_unknown() {
                    return Some(p);
                }
            }
            return Some(p);
        }
        None
    }
}

/// `hir` with its look-around assertions made empty: the pattern then matches a superset.
fn without_looks(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(_) => Hir::empty(),
        HirKind::Repetition(r) => Hir::repetition(Repetition {
            sub: Box::new(without_looks(&r.sub)),
            ..r.clone()
        }),
        HirKind::Capture(c) => without_looks(&c.sub),
        HirKind::Concat(v) => Hir::concat(v.iter().map(without_looks).collect()),
        HirKind::Alternation(v) => Hir::alternation(v.iter().map(without_looks).collect()),
        _ => hir.clone(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn live(patterns: &[&str], text: &str) -> Option<usize> {
        let p = Partial::new(&patterns.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap();
        let mut cache = p.cache();
        p.live_from(&mut cache, text)
    }

    #[test]
    fn holds_only_what_can_still_match() {
        let card = r"\b\d(?:[ -]?\d){12,18}\b";
        assert_eq!(live(&[card], "plain prose, nothing to hold"), None);
        assert_eq!(live(&[card], "my card is 4111 1111"), Some(11));
        // Complete and closed by a letter: nothing forming any more.
        assert_eq!(live(&[card], "4111 1111 1111 1111 ok"), None);
        let jwt = r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}";
        assert_eq!(live(&[jwt], "token: eyJhbGciOiJIUzI1NiJ9.eyJzdWIi"), Some(7));
        assert_eq!(live(&[jwt], "the key, e"), Some(9));
        assert_eq!(live(&[jwt], "the key, ex"), None);
        // Two patterns: the earliest live start.
        assert_eq!(live(&[card, jwt], "eyJabc 12"), Some(7));
        assert_eq!(live(&[card, jwt], "eyJa1234"), Some(0));
        // Non-ASCII text before and inside a candidate.
        let t = "número ５ é 12";
        assert_eq!(live(&[card], t), t.find("12"));
    }

    #[test]
    fn a_private_key_block_is_held_to_its_end() {
        let pk = crate::detect::Kind::PrivateKey.pattern();
        // The header is built at run time: no key material, nor its header, is committed.
        let header = format!("-----BEGIN RSA {} KEY-----", "PRIVATE");
        assert_eq!(live(&[pk], "here: -----BEGIN RSA PRI"), Some(6));
        assert_eq!(live(&[pk], &format!("here: {header}\nMIIE")), Some(6));
        assert_eq!(live(&[pk], "a --- dash"), None);
    }
}
