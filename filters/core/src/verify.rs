//! Whether two prompts ask the same thing: the response cache's check on a semantic candidate.
//!
//! Sentence embeddings score a question and its near-miss alike: "17 times 24" and "17 times 23",
//! "fastest" and "slowest", "Celsius to Fahrenheit" and back all score above 0.9. The embedding
//! proposes the nearest cached prompt; [`compare`] then compares the two texts word by word and
//! names the first difference that changes the question. A candidate with a contrast is refused
//! (a miss), so the threshold can be lower than similarity alone would allow. It lives here, not
//! in the response cache, so the benchmarks and tests score the labelled sets with the same code.
//!
//! The checks are lexical and cheap (no allocation beyond the two word lists, linear in the
//! prompts' length apart from the order check on what the prompts share):
//! - numbers: the numbers, in order, must be the same (digits and the number words);
//! - negation: both negate, or neither (not, no, never, without, n't, ...);
//! - antonyms: one uses a word and the other its opposite (rise/fall, import/export, ...);
//! - order: the words both share must come in the same order, up to one moved block (a clause
//!   put first or last), so "pandas depends on NumPy" is not "NumPy depends on pandas";
//! - exchange: a content word exchanged for another, with little else changed ("by area" and
//!   "by population", "When was it built" and "Why"), after typos are matched up.
//!
//! What it cannot see: a synonym exchanged for another word counts as an exchange (a miss, never a
//! wrong answer), and two wordings that share few words are left to the similarity threshold.

/// Why a candidate was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contrast {
    Numbers,
    Negation,
    Antonym,
    Order,
    Exchange,
    Addition,
}

impl Contrast {
    pub const ALL: [Self; 6] = [
        Self::Numbers,
        Self::Negation,
        Self::Antonym,
        Self::Order,
        Self::Exchange,
        Self::Addition,
    ];

    /// The metric label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Numbers => "numbers",
            Self::Negation => "negation",
            Self::Antonym => "antonym",
            Self::Order => "order",
            Self::Exchange => "exchange",
            Self::Addition => "addition",
        }
    }

    /// What the log line says.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Numbers => "the numbers differ",
            Self::Negation => "one of them negates",
            Self::Antonym => "a word and its opposite",
            Self::Order => "the same words in another order",
            Self::Exchange => "a word exchanged for another",
            Self::Addition => "one asks about more",
        }
    }
}

/// How much may differ around a contrast, in content words one side has and the other lacks.
/// The shipped [`Limits::SHIPPED`] were chosen on the tuning half of
/// integration/tests/data/cache-pairs.heldout.json (`scripts/bench.sh response-cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Both sides have unmatched words, at most this many each: an exchange (0: never).
    pub exchange: usize,
    /// Only one side has unmatched words, at most this many: it asks about more (0: never).
    pub addition: usize,
    /// A negation on one side only, or the shared words in another order, count when each side
    /// has at most this many unmatched words (a long rewording may say "never" in its preamble,
    /// and its function words fall in any order).
    pub context: usize,
}

impl Limits {
    pub const SHIPPED: Self = Self {
        exchange: 3,
        addition: 1,
        context: 3,
    };
}

/// Function words and courtesies: words whose presence does not change what is asked.
const STOP: &[&str] = &[
    "a",
    "about",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "been",
    "being",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "for",
    "from",
    "get",
    "give",
    "go",
    "going",
    "had",
    "has",
    "have",
    "hello",
    "help",
    "hey",
    "hi",
    "i",
    "if",
    "im",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "kindly",
    "know",
    "let",
    "like",
    "me",
    "might",
    "must",
    "my",
    "of",
    "on",
    "or",
    "our",
    "out",
    "please",
    "quick",
    "quickly",
    "really",
    "should",
    "so",
    "some",
    "tell",
    "than",
    "thank",
    "thanks",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "to",
    "u",
    "us",
    "very",
    "want",
    "was",
    "we",
    "were",
    "what",
    "whats",
    "which",
    "will",
    "with",
    "would",
    "ya",
    "you",
    "your",
    "explain",
    "mean",
    "means",
    "meaning",
    "wondering",
    "curious",
    "question",
    // chat spelling
    "r",
    "n",
    "y",
    "ur",
    "pls",
    "plz",
    "thx",
    "wat",
    "wut",
    // particles (opposite particles are antonyms: "zoom in" and "zoom out")
    "up",
    "down",
    "off",
    "away",
    "back",
];

/// Words that negate what follows (`n't` is split off as `not` by [`words`]).
const NEGATION: &[&str] = &[
    "not", "no", "never", "without", "none", "nor", "neither", "nothing", "nobody", "nowhere",
];

/// Opposites whose exchange reverses the question. General vocabulary, not the test sets'.
const ANTONYMS: &[(&str, &str)] = &[
    ("add", "remove"),
    ("adds", "removes"),
    ("after", "before"),
    ("alive", "dead"),
    ("allow", "deny"),
    ("always", "never"),
    ("ascending", "descending"),
    ("asleep", "awake"),
    ("best", "worst"),
    ("better", "worse"),
    ("big", "small"),
    ("biggest", "smallest"),
    ("buy", "sell"),
    ("cheap", "expensive"),
    ("cheapest", "dearest"),
    ("cold", "hot"),
    ("coldest", "hottest"),
    ("download", "upload"),
    ("early", "late"),
    ("earliest", "latest"),
    ("east", "west"),
    ("easy", "hard"),
    ("enable", "disable"),
    ("encode", "decode"),
    ("encrypt", "decrypt"),
    ("enter", "exit"),
    ("export", "import"),
    ("fail", "succeed"),
    ("fall", "rise"),
    ("false", "true"),
    ("fast", "slow"),
    ("fastest", "slowest"),
    ("faster", "slower"),
    ("first", "last"),
    ("gain", "lose"),
    ("heaviest", "lightest"),
    ("high", "low"),
    ("highest", "lowest"),
    ("increase", "decrease"),
    ("inside", "outside"),
    ("largest", "smallest"),
    ("larger", "smaller"),
    ("left", "right"),
    ("less", "more"),
    ("least", "most"),
    ("long", "short"),
    ("longest", "shortest"),
    ("longer", "shorter"),
    ("lost", "won"),
    ("lose", "win"),
    ("loses", "wins"),
    ("max", "min"),
    ("maximum", "minimum"),
    ("minimize", "maximize"),
    ("newest", "oldest"),
    ("north", "south"),
    ("open", "close"),
    ("oldest", "youngest"),
    ("over", "under"),
    ("positive", "negative"),
    ("push", "pull"),
    ("raise", "lower"),
    ("safe", "dangerous"),
    ("start", "stop"),
    ("strong", "weak"),
    ("strongest", "weakest"),
    ("top", "bottom"),
    ("up", "down"),
    ("in", "out"),
    ("warmest", "coldest"),
    ("wet", "dry"),
    ("wide", "narrow"),
    ("advantages", "disadvantages"),
    ("pros", "cons"),
    ("benefits", "risks"),
    ("compress", "decompress"),
    ("legal", "illegal"),
    ("possible", "impossible"),
    ("to", "from"),
    ("above", "below"),
    ("on", "off"),
    ("inbound", "outbound"),
];

/// Words that ask the same in a question: an exchange between them is no contrast (it still needs
/// the similarity threshold). General vocabulary, not the test sets'.
const SYNONYMS: &[(&str, &str)] = &[
    ("acquire", "obtain"),
    ("advantages", "benefits"),
    ("afraid", "scared"),
    ("aim", "goal"),
    ("amount", "quantity"),
    ("answer", "reply"),
    ("app", "application"),
    ("approach", "method"),
    ("assist", "help"),
    ("attorney", "lawyer"),
    ("automobile", "car"),
    ("begin", "start"),
    ("benefits", "perks"),
    ("big", "large"),
    ("boost", "increase"),
    ("build", "construct"),
    ("buy", "purchase"),
    ("calm", "relax"),
    ("cheap", "inexpensive"),
    ("chief", "main"),
    ("child", "kid"),
    ("children", "kids"),
    ("choose", "pick"),
    ("choose", "select"),
    ("commence", "start"),
    ("correct", "right"),
    ("cost", "price"),
    ("costly", "expensive"),
    ("couch", "sofa"),
    ("create", "make"),
    ("cut", "reduce"),
    ("decrease", "reduce"),
    ("definition", "meaning"),
    ("delete", "erase"),
    ("delete", "remove"),
    ("difficult", "hard"),
    ("disease", "illness"),
    ("doctor", "physician"),
    ("easy", "simple"),
    ("end", "finish"),
    ("end", "terminate"),
    ("enormous", "huge"),
    ("error", "mistake"),
    ("exam", "test"),
    ("expression", "idiom"),
    ("extract", "remove"),
    ("fast", "quick"),
    ("fast", "rapid"),
    ("fastest", "quickest"),
    ("fee", "charge"),
    ("film", "movie"),
    ("fix", "repair"),
    ("football", "soccer"),
    ("frequently", "often"),
    ("garbage", "trash"),
    ("get", "obtain"),
    ("glad", "happy"),
    ("goal", "objective"),
    ("home", "house"),
    ("ill", "sick"),
    ("image", "picture"),
    ("incorrect", "wrong"),
    ("intelligent", "smart"),
    ("job", "occupation"),
    ("kill", "terminate"),
    ("main", "primary"),
    ("main", "principal"),
    ("medication", "medicine"),
    ("mend", "repair"),
    ("method", "technique"),
    ("method", "way"),
    ("mobile", "cell"),
    ("pants", "trousers"),
    ("perhaps", "maybe"),
    ("phone", "telephone"),
    ("photo", "picture"),
    ("procedure", "process"),
    ("procedure", "steps"),
    ("quick", "rapid"),
    ("ripped", "torn"),
    ("rubbish", "garbage"),
    ("rules", "regulations"),
    ("salary", "pay"),
    ("shop", "store"),
    ("signs", "symptoms"),
    ("small", "little"),
    ("small", "tiny"),
    ("speak", "talk"),
    ("study", "learn"),
    ("typically", "usually"),
    ("vacation", "holiday"),
    ("website", "site"),
    ("wage", "pay"),
];

/// Number words, as the digits they stand for.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("thirteen", "13"),
    ("fourteen", "14"),
    ("fifteen", "15"),
    ("sixteen", "16"),
    ("seventeen", "17"),
    ("eighteen", "18"),
    ("nineteen", "19"),
    ("twenty", "20"),
    ("thirty", "30"),
    ("forty", "40"),
    ("fifty", "50"),
    ("sixty", "60"),
    ("seventy", "70"),
    ("eighty", "80"),
    ("ninety", "90"),
    ("hundred", "100"),
    ("thousand", "1000"),
    ("million", "1000000"),
    ("billion", "1000000000"),
    ("dozen", "12"),
];

/// What the word-by-word comparison found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The same content words: they differ only in function words, case, punctuation, spelling
    /// slips or one moved clause. Even a low similarity (typos move embeddings far) is a match.
    SameWords,
    /// Different words but no contrast: the similarity threshold decides.
    Close,
    /// They ask different things.
    Different(Contrast),
}

impl Verdict {
    pub const fn contrast(self) -> Option<Contrast> {
        match self {
            Self::Different(c) => Some(c),
            _ => None,
        }
    }
}

/// Compares a cached prompt with a new one at the shipped limits.
pub fn compare(cached: &str, new: &str) -> Verdict {
    compare_with(cached, new, Limits::SHIPPED)
}

/// [`compare`] with other limits; for tuning.
pub fn compare_with(cached: &str, new: &str, limits: Limits) -> Verdict {
    let (a, b) = (words(cached), words(new));
    if a == b {
        return Verdict::SameWords;
    }
    if numbers(&a) != numbers(&b) {
        return Verdict::Different(Contrast::Numbers);
    }
    let m = Matching::of(&a, &b);
    let (ua, ub) = (m.only_a.len(), m.only_b.len());
    let small = ua.max(ub) <= limits.context;
    let negations = |w: &[String]| w.iter().filter(|w| listed(NEGATION, w)).count();
    if small && negations(&a) != negations(&b) {
        return Verdict::Different(Contrast::Negation);
    }
    let has = |w: &[String], x: &str| w.iter().any(|w| w == x);
    if ANTONYMS.iter().any(|&(x, y)| {
        (has(&a, x) && !has(&a, y) && has(&b, y) && !has(&b, x))
            || (has(&a, y) && !has(&a, x) && has(&b, x) && !has(&b, y))
    }) {
        return Verdict::Different(Contrast::Antonym);
    }
    if small && reordered(&a, &b, &m.typos) {
        return Verdict::Different(Contrast::Order);
    }
    if ua > 0 && ub > 0 && ua.max(ub) <= limits.exchange {
        return Verdict::Different(Contrast::Exchange);
    }
    if (ua == 0) != (ub == 0) && ua.max(ub) <= limits.addition {
        return Verdict::Different(Contrast::Addition);
    }
    if ua == 0 && ub == 0 && !m.synonym {
        Verdict::SameWords
    } else {
        Verdict::Close
    }
}

/// Lower-case words: split at anything but letters, digits and apostrophes; `'s` dropped, `n't`
/// split off as `not`.
fn words(s: &str) -> Vec<String> {
    let mut out = Vec::with_capacity(s.len() / 5 + 1);
    for raw in s.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '\u{2019}')) {
        let w = raw.trim_matches(|c| c == '\'' || c == '\u{2019}').to_lowercase();
        let w = w.replace('\u{2019}', "'");
        let w = w.strip_suffix("'s").unwrap_or(&w);
        if let Some(base) = w.strip_suffix("n't") {
            out.push(
                match base {
                    "ca" => "can",
                    "wo" => "will",
                    "sha" => "shall",
                    b => b,
                }
                .to_owned(),
            );
            out.push("not".to_owned());
            continue;
        }
        if w == "cannot" {
            out.push("can".to_owned());
            out.push("not".to_owned());
            continue;
        }
        let mut w: String = w.chars().filter(|&c| c != '\'').collect();
        // Ordinals as their number: "3rd" is "3".
        if w.starts_with(|c: char| c.is_ascii_digit()) {
            for suffix in ["st", "nd", "rd", "th"] {
                if w.len() > 2 && w.ends_with(suffix) && w[..w.len() - 2].bytes().all(|b| b.is_ascii_digit())
                {
                    w.truncate(w.len() - 2);
                    break;
                }
            }
        }
        if let Some(&(_, digits)) = NUMBER_WORDS.iter().find(|(word, _)| *word == w) {
            w = digits.to_owned();
        }
        if !w.is_empty() {
            out.push(w);
        }
    }
    out
}

/// The distinct numbers of a word list in the order they first appear ([`words`] wrote number
/// words and ordinals as digits; "one" is left a word: it is as often a pronoun).
fn numbers(w: &[String]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for w in w {
        // Digits, or digits with a unit or suffix attached ("5km", "80s").
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !out.contains(&digits) {
            out.push(digits);
        }
    }
    out
}

/// Whether `w` is one of `list`'s words.
fn listed(list: &[&str], w: &str) -> bool {
    list.contains(&w)
}

fn is_content(w: &str) -> bool {
    !listed(STOP, w) && !listed(NEGATION, w)
}

/// The content words of each side the other side lacks, after pairing exact matches and then
/// typos (one edit: a letter added, dropped, changed or two swapped), a typo also against the
/// other side's function words ("dose" for "does").
struct Matching<'a> {
    only_a: Vec<&'a str>,
    only_b: Vec<&'a str>,
    /// Words paired as typos or synonyms of each other: (a's word, b's).
    typos: Vec<(&'a str, &'a str)>,
    /// Some pair is synonyms, not a typo.
    synonym: bool,
}

impl<'a> Matching<'a> {
    fn of(a: &'a [String], b: &'a [String]) -> Self {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let b: Vec<&str> = b.iter().map(String::as_str).collect();
        let (_, rest_a) = shared_or_not(&a, &b);
        let (_, rest_b) = shared_or_not(&b, &a);
        let mut typos = Vec::new();
        let mut synonym = false;
        let mut rest_b = rest_b;
        let mut only_a = Vec::new();
        for x in rest_a {
            match rest_b.iter().position(|y| typo(x, y) || synonyms(x, y)) {
                Some(i) => {
                    let y = rest_b.remove(i);
                    synonym |= !typo(x, y);
                    typos.push((x, y));
                }
                None if is_content(x) => only_a.push(x),
                None => {}
            }
        }
        // What is left of b: content words, unless a typo of one of a's function words.
        let only_b = rest_b
            .into_iter()
            .filter(|y| is_content(y))
            .filter(|y| match a.iter().find(|x| !is_content(x) && typo(x, y)) {
                Some(&x) => {
                    typos.push((x, y));
                    false
                }
                None => true,
            })
            .collect();
        only_a.retain(|x| match b.iter().find(|y| !is_content(y) && typo(x, y)) {
            Some(&y) => {
                typos.push((x, y));
                false
            }
            None => true,
        });
        Self {
            only_a,
            only_b,
            typos,
            synonym,
        }
    }
}

fn synonyms(x: &str, y: &str) -> bool {
    SYNONYMS
        .iter()
        .any(|&(p, q)| (p == x && q == y) || (p == y && q == x))
}

/// `x`'s words split into those `y` has too (as a multiset: a word twice in `x` and once in `y`
/// is shared once) and the rest, each in `x`'s order.
fn shared_or_not<'a>(x: &[&'a str], y: &[&str]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut pool = y.to_vec();
    x.iter().partition(|w| match pool.iter().position(|p| p == *w) {
        Some(i) => {
            pool.swap_remove(i);
            true
        }
        None => false,
    })
}

/// One edit apart (optimal string alignment distance 1) after the same first letter, in words
/// long enough for it to mean a typo rather than another word ("height" and "weight" are two
/// words); digits never (they are the numbers check's).
fn typo(x: &str, y: &str) -> bool {
    let (x, y): (Vec<char>, Vec<char>) = (x.chars().collect(), y.chars().collect());
    if x.iter().chain(&y).any(char::is_ascii_digit)
        || x.len().min(y.len()) < 3
        || x.len().max(y.len()) < 4
        || x.first() != y.first()
    {
        return false;
    }
    let (short, long) = if x.len() <= y.len() { (&x, &y) } else { (&y, &x) };
    match long.len() - short.len() {
        0 => {
            let diff: Vec<usize> = (0..short.len()).filter(|&i| short[i] != long[i]).collect();
            match diff.as_slice() {
                [_] => true,
                [i, j] => *j == i + 1 && short[*i] == long[*j] && short[*j] == long[*i],
                _ => false,
            }
        }
        1 => {
            let i = (0..short.len())
                .find(|&i| short[i] != long[i])
                .unwrap_or(short.len());
            short[i..] == long[i + 1..]
        }
        _ => false,
    }
}

/// Whether the words both prompts share come in another order than one block moved ("In
/// Python, how do I merge two dicts?" and "How do I merge two dicts in Python?" are one block
/// moved; "Do lions eat zebras?" and "Do zebras eat lions?" are not). Typos count as shared.
fn reordered(a: &[String], b: &[String], typos: &[(&str, &str)]) -> bool {
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b: Vec<&str> = b
        .iter()
        .map(|w| typos.iter().find(|(_, y)| y == w).map_or(w.as_str(), |&(x, _)| x))
        .collect();
    let (sa, sb) = (shared_or_not(&a, &b).0, shared_or_not(&b, &a).0);
    if sa == sb {
        return false;
    }
    // Without the common prefix and suffix, what is left must be a rotation (one block moved).
    let p = sa.iter().zip(&sb).take_while(|(x, y)| x == y).count();
    let s = sa[p..]
        .iter()
        .rev()
        .zip(sb[p..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&sa[p..sa.len() - s], &sb[p..sb.len() - s]);
    let n = ma.len();
    !(1..n).any(|k| ma[k..] == mb[..n - k] && ma[..k] == mb[n - k..])
}

#[cfg(test)]
mod tests;
