//! The model-based categories, free of the host: which text the classifier reads, and what its
//! scores mean under the configured thresholds.

use crate::config::{Action, Classify};

/// The end of `text`, at most `max_bytes` long and cut on a character boundary: an injection is
/// most often appended, so the end is what is kept.
pub fn input_tail(text: &str, max_bytes: usize) -> &str {
    let mut start = text.len().saturating_sub(max_bytes);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text.get(start..).unwrap_or_default()
}

/// The categories scored at or over their threshold, with their action (in configuration order),
/// and the first of them that blocks. `score` gives a label's score (`None`: not scored).
pub fn findings(c: &Classify, score: impl Fn(&str) -> Option<f32>) -> (Vec<(&str, Action)>, Option<&str>) {
    let mut found = Vec::new();
    let mut block = None;
    for (label, threshold, action) in &c.categories {
        if score(label).is_some_and(|s| s >= *threshold) {
            found.push((label.as_str(), *action));
            if *action == Action::Block && block.is_none() {
                block = Some(label.as_str());
            }
        }
    }
    (found, block)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FailureMode;
    use filter_core::config::SidecarConfig;

    #[test]
    fn the_tail_is_kept_on_a_character_boundary() {
        assert_eq!(input_tail("hello", 10), "hello");
        assert_eq!(input_tail("hello", 3), "llo");
        assert_eq!(input_tail("hello", 0), "");
        // "é" is two bytes: a cut inside it moves past it.
        assert_eq!(input_tail("aébc", 3), "bc");
        assert_eq!(input_tail("aébc", 4), "ébc");
    }

    #[test]
    fn scores_at_the_threshold_count_and_the_first_block_wins() {
        let c = Classify {
            label_set: "guard".into(),
            sidecar: SidecarConfig::default(),
            failure_mode: FailureMode::Closed,
            categories: vec![
                ("injection".into(), 0.8, Action::Block),
                ("jailbreak".into(), 0.5, Action::Block),
                ("toxicity".into(), 0.5, Action::Log),
            ],
            max_text_bytes: 1024,
        };
        let scores = |l: &str| match l {
            "injection" => Some(0.79),
            "jailbreak" => Some(0.5),
            "toxicity" => Some(0.9),
            _ => None,
        };
        let (found, block) = findings(&c, scores);
        assert_eq!(
            found,
            vec![("jailbreak", Action::Block), ("toxicity", Action::Log)]
        );
        assert_eq!(block, Some("jailbreak"));
        let (found, block) = findings(&c, |_| None);
        assert!(found.is_empty() && block.is_none());
    }
}
