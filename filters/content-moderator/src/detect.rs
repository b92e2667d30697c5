//! Built-in detectors for personal data and secrets. Each is a regex that finds candidates and,
//! where the format has one, a checksum or structure check that keeps false positives down (Luhn
//! for cards, ISO 7064 mod 97 for IBANs, SSA rules for SSNs, a full parse for IPv6).

use regex::Regex;
use std::net::Ipv6Addr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Email,
    Phone,
    PaymentCard,
    UsSsn,
    Iban,
    Ipv4,
    Ipv6,
    AwsAccessKey,
    GithubToken,
    OpenaiKey,
    SlackToken,
    Jwt,
    PrivateKey,
}

impl Kind {
    pub const ALL: [Self; 13] = [
        Self::Email,
        Self::Phone,
        Self::PaymentCard,
        Self::UsSsn,
        Self::Iban,
        Self::Ipv4,
        Self::Ipv6,
        Self::AwsAccessKey,
        Self::GithubToken,
        Self::OpenaiKey,
        Self::SlackToken,
        Self::Jwt,
        Self::PrivateKey,
    ];

    /// The category name in errors, metrics and filter state.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::PaymentCard => "payment_card",
            Self::UsSsn => "us_ssn",
            Self::Iban => "iban",
            Self::Ipv4 => "ipv4",
            Self::Ipv6 => "ipv6",
            Self::AwsAccessKey => "aws_access_key",
            Self::GithubToken => "github_token",
            Self::OpenaiKey => "openai_key",
            Self::SlackToken => "slack_token",
            Self::Jwt => "jwt",
            Self::PrivateKey => "private_key",
        }
    }

    /// Upper-case label for `[LABEL]` masks.
    pub fn label(self) -> String {
        self.name().to_ascii_uppercase()
    }

    pub(crate) fn pattern(self) -> &'static str {
        match self {
            Self::Email => r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}",
            // International (`+` and 8–15 digits, E.164) or North American (10 digits).
            Self::Phone => {
                r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){1,5}[ .-]?\d{2,4}|\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b"
            }
            Self::PaymentCard => r"\b\d(?:[ -]?\d){12,18}\b",
            Self::UsSsn => r"\b\d{3}-\d{2}-\d{4}\b",
            Self::Iban => r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
            Self::Ipv4 => {
                r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b"
            }
            Self::Ipv6 => r"(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}",
            Self::AwsAccessKey => r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
            Self::GithubToken => r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b",
            Self::OpenaiKey => r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}",
            Self::SlackToken => r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
            Self::Jwt => r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}",
            Self::PrivateKey => {
                r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?s:.*?)(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\z)"
            }
        }
    }

    /// The check after the regex: the part of the candidate `m` that is a real finding, if any.
    /// When the whole candidate fails, the formats whose pattern can swallow a neighbour (an
    /// expiry date after a card number, a word after an IBAN, a `:` before an IPv6 address) try
    /// the candidate's parts.
    fn accept(self, m: &str) -> Option<(usize, usize)> {
        let whole = (0, m.len());
        match self {
            Self::PaymentCard => longest_group_run(m, |s| {
                let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
                (13..=19).contains(&digits.len()) && luhn(&digits)
            }),
            Self::Iban => longest_group_run(m, iban_ok),
            Self::UsSsn => ssn_ok(m).then_some(whole),
            Self::Ipv6 => {
                let ok = |s: &str| {
                    s.matches(':').count() >= 2
                        && s.chars().any(|c| c.is_ascii_hexdigit())
                        && s.parse::<Ipv6Addr>().is_ok()
                };
                if ok(m) {
                    Some(whole)
                } else {
                    (1..m.len().min(3))
                        .find(|&k| m.get(k..).is_some_and(ok))
                        .map(|k| (k, m.len()))
                }
            }
            Self::Phone => {
                let n = m.chars().filter(char::is_ascii_digit).count();
                let ok = if m.starts_with('+') {
                    (8..=15).contains(&n)
                } else {
                    n == 10
                };
                ok.then_some(whole)
            }
            _ => Some(whole),
        }
    }
}

/// The longest run of whole space- or dash-separated groups of `m` (leftmost first) that `ok`
/// accepts.
fn longest_group_run(m: &str, ok: impl Fn(&str) -> bool) -> Option<(usize, usize)> {
    if ok(m) {
        return Some((0, m.len()));
    }
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (i, c) in m.char_indices() {
        match (c == ' ' || c == '-', start) {
            (true, Some(s)) => {
                groups.push((s, i));
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        groups.push((s, m.len()));
    }
    let n = groups.len();
    for len in (1..n).rev() {
        for first in 0..=(n - len) {
            let (a, b) = (groups.get(first)?.0, groups.get(first + len - 1)?.1);
            if m.get(a..b).is_some_and(&ok) {
                return Some((a, b));
            }
        }
    }
    None
}

/// Luhn checksum over the digits, most significant first.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// SSA rules: area not 000, 666 or 9xx; group not 00; serial not 0000.
fn ssn_ok(m: &str) -> bool {
    let mut parts = m.split('-');
    let (Some(area), Some(group), Some(serial)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    area != "000" && area != "666" && !area.starts_with('9') && group != "00" && serial != "0000"
}

/// ISO 13616: move the first four characters to the end, letters to numbers, mod 97 == 1.
pub fn iban_ok(m: &str) -> bool {
    let s: Vec<char> = m.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&s.len()) {
        return false;
    }
    let mut rem: u32 = 0;
    for c in s.iter().skip(4).chain(s.iter().take(4)) {
        let v = match c.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        rem = if v < 10 {
            (rem * 10 + v) % 97
        } else {
            (rem * 100 + v) % 97
        };
    }
    rem == 1
}

/// A compiled detector.
#[derive(Debug)]
pub struct Detector {
    pub kind: Kind,
    regex: Regex,
}

impl Detector {
    pub fn new(kind: Kind) -> Result<Self, regex::Error> {
        Ok(Self {
            kind,
            regex: Regex::new(kind.pattern())?,
        })
    }

    /// Byte ranges of valid matches in `text`.
    pub fn find(&self, text: &str, out: &mut Vec<(usize, usize)>) {
        for m in self.regex.find_iter(text) {
            if let Some((a, b)) = self.kind.accept(m.as_str()) {
                out.push((m.start() + a, m.start() + b));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn found(kind: Kind, text: &str) -> Vec<String> {
        let d = Detector::new(kind).unwrap();
        let mut out = Vec::new();
        d.find(text, &mut out);
        out.into_iter().map(|(a, b)| text[a..b].to_owned()).collect()
    }

    /// Every detector: text it must find (exactly that match) and text it must leave alone.
    #[test]
    fn each_detector_has_positives_and_negatives() {
        // Test data only: card numbers are the networks' published test numbers, keys are
        // shaped like real ones but random.
        type Case<'a> = (Kind, &'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case<'_>] = &[
            (
                Kind::Email,
                &[(
                    "mail jane.doe+tag@example.co.uk now",
                    "jane.doe+tag@example.co.uk",
                )],
                &["user@localhost", "a@b", "@example.com"],
            ),
            (
                Kind::Phone,
                &[
                    ("call +44 20 7946 0958 today", "+44 20 7946 0958"),
                    ("US (415) 555-2671.", "(415) 555-2671"),
                    ("+4915112345678", "+4915112345678"),
                ],
                &["order 12345", "version 1.2.3", "+12 34", "2024-11-26"],
            ),
            (
                Kind::PaymentCard,
                &[
                    ("pay 4111 1111 1111 1111 ok", "4111 1111 1111 1111"),
                    ("5555-5555-5555-4444", "5555-5555-5555-4444"),
                    ("378282246310005", "378282246310005"),
                ],
                &["4111 1111 1111 1112", "1234567890123", "12 34"],
            ),
            (
                Kind::UsSsn,
                &[("ssn 123-45-6789.", "123-45-6789")],
                &[
                    "000-12-3456",
                    "666-12-3456",
                    "912-34-5678",
                    "123-00-4567",
                    "123-45-0000",
                    "123456789",
                ],
            ),
            (
                Kind::Iban,
                &[
                    (
                        "IBAN GB82 WEST 1234 5698 7654 32 thanks",
                        "GB82 WEST 1234 5698 7654 32",
                    ),
                    ("DE89370400440532013000", "DE89370400440532013000"),
                ],
                &["GB82 WEST 1234 5698 7654 33", "AB12 CDEF GHIJ"],
            ),
            (
                Kind::Ipv4,
                &[("host 192.168.1.20:80", "192.168.1.20")],
                &["999.1.1.1", "1.2.3", "version 10.0.19045.2965"],
            ),
            (
                Kind::Ipv6,
                &[
                    ("addr 2001:db8::8a2e:370:7334 up", "2001:db8::8a2e:370:7334"),
                    ("::1", "::1"),
                ],
                &["12:30:45", "a:b", "::"],
            ),
            (
                Kind::AwsAccessKey,
                &[("key AKIAIOSFODNN7EXAMPLE,", "AKIAIOSFODNN7EXAMPLE")],
                &["AKIA123", "akiaiosfodnn7example"],
            ),
            (
                Kind::GithubToken,
                &[(
                    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                    "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
                )],
                &["ghp_short", "ghx_abcdefghijklmnopqrstuvwxyz0123456789"],
            ),
            (
                Kind::OpenaiKey,
                &[(
                    "use sk-proj-abcdEFGH1234ijklMNOP5678 please",
                    "sk-proj-abcdEFGH1234ijklMNOP5678",
                )],
                &["sk-short", "task-abcdefghijklmnopqrstuvwxyz"],
            ),
            (
                Kind::SlackToken,
                &[("xoxb-123456789012-abcdefABCDEF", "xoxb-123456789012-abcdefABCDEF")],
                &["xoxz-123456789012", "xoxb-1"],
            ),
            (
                Kind::Jwt,
                &[(
                    "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl",
                    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl",
                )],
                &["eyJhbGciOiJIUzI1NiJ9", "a.b.c"],
            ),
        ];
        for (kind, positives, negatives) in cases {
            for (text, want) in *positives {
                assert_eq!(found(*kind, text), [*want], "{kind:?} in {text:?}");
            }
            for text in *negatives {
                assert!(
                    found(*kind, text).is_empty(),
                    "{kind:?} wrongly in {text:?}: {:?}",
                    found(*kind, text)
                );
            }
        }
        // Key blocks are built here, never written out in the repository.
        let block = |label: &str, body: &str, end: bool| {
            let mut b = format!("-----BEGIN {label}-----\n{body}");
            if end {
                b.push_str(&format!("\n-----END {label}-----"));
            }
            b
        };
        let private = format!("{} {}", "PRIVATE", "KEY");
        let whole = block(&private, "MIIEv", true);
        assert_eq!(found(Kind::PrivateKey, &format!("x {whole} y")), [whole]);
        let openssh = block(&format!("OPENSSH {private}"), "b3Bl", false);
        assert_eq!(found(Kind::PrivateKey, &openssh), vec![openssh.clone()]);
        assert!(found(Kind::PrivateKey, &block("PUBLIC KEY", "MIIB", true)).is_empty());
        assert_eq!(cases.len() + 1, Kind::ALL.len(), "every detector is tested");
    }

    #[test]
    fn checksums() {
        assert!(luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 3]));
        assert!(!luhn(&[7, 9, 9, 2, 7, 3, 9, 8, 7, 1, 4]));
        assert!(iban_ok("FR14 2004 1010 0505 0001 3M02 606"));
        assert!(!iban_ok("FR14 2004 1010 0505 0001 3M02 607"));
        assert!(!iban_ok("GB82"));
    }
}
