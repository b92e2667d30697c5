//! The moderator's Envoy stats.

use crate::config::{Action as Verdict, Config};
use crate::refusal::Side;
use filter_host::metrics::{Family, Metric};

/// `tollgate_content_moderator_<side>_<action>{category}`.
pub struct Metrics {
    pub families: Vec<((Side, Verdict), Family)>,
    pub invalid: Family,
    /// Sidecar calls that failed (the request then went by `failure_mode`).
    pub classify_errors: Option<Metric>,
}

impl Metrics {
    pub fn new(cfg: &Config) -> Self {
        let mut families = Vec::new();
        for (side, rules) in [(Side::Request, &cfg.request), (Side::Response, &cfg.response)] {
            for action in [Verdict::Block, Verdict::Mask, Verdict::Log] {
                families.push((
                    (side, action),
                    Family::counter(
                        format!("tollgate_content_moderator_{}_{}", side.name(), action.name()),
                        "category",
                        rules.categories.len() + cfg.classify.as_ref().map_or(0, |c| c.categories.len()) + 1,
                    ),
                ));
            }
        }
        Self {
            families,
            invalid: Family::counter("tollgate_content_moderator_invalid_body", "side", 2),
            classify_errors: Metric::counter("tollgate_content_moderator_classify_errors"),
        }
    }

    pub fn count(&mut self, side: Side, name: &str, action: Verdict) {
        if let Some(m) = self
            .families
            .iter_mut()
            .find(|(k, _)| *k == (side, action))
            .and_then(|(_, f)| f.get(name))
        {
            m.inc();
        }
    }
}
