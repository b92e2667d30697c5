//! Classification by similarity to exemplars: a label set maps each label to a few example texts;
//! a text's score for a label is its highest cosine similarity to that label's exemplars. New
//! categories need new examples, not training.

use crate::engine::{Engine, EngineError};
use crate::model::cosine;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `{"set": {"label": ["exemplar", …], …}, …}`
pub type LabelSetsFile = BTreeMap<String, BTreeMap<String, Vec<String>>>;

#[derive(Debug, thiserror::Error)]
pub enum LabelSetError {
    #[error("reading label sets {path}: {message}")]
    Read { path: String, message: String },
    #[error("label set `{set}`, label `{label}`: {message}")]
    Invalid {
        set: String,
        label: String,
        message: String,
    },
    #[error("embedding exemplars: {0}")]
    Embed(#[from] EngineError),
}

struct Label {
    name: String,
    exemplars: Vec<Vec<f32>>,
}

#[derive(Default)]
pub struct LabelSets {
    sets: HashMap<String, Vec<Label>>,
}

impl LabelSets {
    pub fn read(path: &Path) -> Result<LabelSetsFile, LabelSetError> {
        let err = |message: String| LabelSetError::Read {
            path: path.display().to_string(),
            message,
        };
        let bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))
    }

    /// Embeds every exemplar once, at start-up.
    pub async fn build(file: LabelSetsFile, engine: &Engine) -> Result<Self, LabelSetError> {
        let mut sets = HashMap::new();
        for (set, labels) in file {
            let mut out = Vec::with_capacity(labels.len());
            for (label, exemplars) in labels {
                if exemplars.is_empty() || exemplars.iter().any(|e| e.trim().is_empty()) {
                    return Err(LabelSetError::Invalid {
                        set,
                        label,
                        message: "needs at least one exemplar and no empty ones".into(),
                    });
                }
                let vectors = engine.embed(&exemplars).await?;
                out.push(Label {
                    name: label,
                    exemplars: vectors.iter().map(|v| v.vector.clone()).collect(),
                });
            }
            sets.insert(set, out);
        }
        Ok(Self { sets })
    }

    pub fn contains(&self, set: &str) -> bool {
        self.sets.contains_key(set)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.sets.keys().map(String::as_str)
    }

    /// Every label's score, best first; `None` for an unknown set.
    pub fn classify(&self, set: &str, vector: &[f32]) -> Option<Vec<(String, f32)>> {
        let labels = self.sets.get(set)?;
        let mut scores: Vec<(String, f32)> = labels
            .iter()
            .map(|l| {
                let best = l
                    .exemplars
                    .iter()
                    .map(|e| cosine(e, vector))
                    .fold(f32::MIN, f32::max);
                (l.name.clone(), best)
            })
            .collect();
        scores.sort_by(|a, b| b.1.total_cmp(&a.1));
        Some(scores)
    }
}
