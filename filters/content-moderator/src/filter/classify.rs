//! The model-based categories, from the stream context: the last user message sent to the
//! sidecar's classifier, and its answer applied (`crate::classify` decides what the scores mean).

use super::Http;
use crate::classify;
use crate::config::{self};
use crate::refusal::{Refusal, Side};
use filter_core::Provider;
use filter_host::metrics::Record as _;
use filter_host::proxy_wasm::types::Action;
use filter_host::sidecar::{self, v1};
use filter_host::{http, log};

impl Http {
    /// Asks the sidecar to classify the last user message; `Some(action)` to return from the body
    /// callback.
    pub(super) fn classify(&mut self, provider: Provider, body: &[u8]) -> Option<Action> {
        let shared = self.shared.clone();
        let (Some(c), Some(sidecar)) = (&shared.config.classify, &shared.sidecar) else {
            return None;
        };
        let Ok(req) = filter_core::api::Request::parse(provider, body) else {
            // body::request read it already; unreachable in practice, refused all the same.
            return Some(self.refuse(&Refusal::UnreadableRequest {
                why: "it is not a request of its API".to_owned(),
            }));
        };
        let text = filter_core::prompt::turn_input(&req);
        let text = classify::input_tail(&text, c.max_text_bytes);
        if text.trim().is_empty() {
            return None;
        }
        match sidecar.classify(&c.label_set, text.to_owned()) {
            Ok(_) => {
                self.classifying = true;
                Some(Action::Pause)
            }
            Err(e) => self.classify_failed(&e.to_string(), false),
        }
    }

    /// The sidecar did not answer: `failure_mode` decides. `resume`: the request is paused.
    fn classify_failed(&mut self, why: &str, resume: bool) -> Option<Action> {
        let shared = self.shared.clone();
        shared.metrics.borrow().classify_errors.inc();
        log!(Warn, Some(self.id), "classification unavailable: {why}");
        let open = shared
            .config
            .classify
            .as_ref()
            .is_some_and(|c| c.failure_mode == config::FailureMode::Open);
        if open {
            self.verdict.push("request:classify:unavailable".to_owned());
            self.publish();
            if resume {
                let _ = http::resume_request(self.id);
            }
            return None;
        }
        Some(self.refuse(&Refusal::ClassifierUnavailable))
    }

    /// The classifier's answer: its findings are noted, and the request blocked or resumed.
    pub(super) fn on_classified(&mut self, status_code: u32, size: usize) {
        if !self.classifying {
            return;
        }
        self.classifying = false;
        let r = match sidecar::reply::<v1::ClassifyResponse>(status_code, size) {
            Ok(r) => r,
            Err(e) => {
                let _ = self.classify_failed(&e.to_string(), true);
                return;
            }
        };
        let shared = self.shared.clone();
        let Some(c) = &shared.config.classify else { return };
        let score = |label: &str| r.scores.iter().find(|s| s.label == label).map(|s| s.score);
        let (found, block) = classify::findings(c, score);
        for (label, action) in found {
            self.note(Side::Request, label, action);
        }
        self.publish();
        match block {
            Some(label) => {
                let _ = self.block(Side::Request, label);
            }
            None => {
                let _ = http::resume_request(self.id);
            }
        }
    }
}
