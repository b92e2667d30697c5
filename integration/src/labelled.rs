//! The labelled evaluation sets and their scores: cache pairs (integration/tests/data/
//! cache-pairs.heldout.json) and routing prompts (routes.heldout.json). Both were written for
//! issue 21 before any threshold was tuned; each item carries its split, `tune` (thresholds may be
//! chosen on it) or `heldout` (reported only). Used by `bench-response-cache` (the precision and
//! recall curve) and by the Envoy tests that hold the shipped settings to their held-out floors.

use crate::bench::Error;
use serde::Deserialize;

/// A labelled pair: `same` when the cached answer to `a` answers `b`.
#[derive(Debug, Clone, Deserialize)]
pub struct Pair {
    pub a: String,
    pub b: String,
    pub label: String,
    pub category: String,
    pub split: String,
}

impl Pair {
    pub fn same(&self) -> bool {
        self.label == "same"
    }

    pub fn tune(&self) -> bool {
        self.split == "tune"
    }
}

/// A labelled routing prompt.
#[derive(Debug, Clone, Deserialize)]
pub struct Prompt {
    pub text: String,
    pub route: String,
    pub split: String,
}

impl Prompt {
    pub fn tune(&self) -> bool {
        self.split == "tune"
    }
}

fn load<T: for<'de> Deserialize<'de>>(file: &str, field: &str) -> Result<Vec<T>, Error> {
    let path = crate::repo_root().join("integration/tests/data").join(file);
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    Ok(serde_json::from_value(v[field].take())?)
}

pub fn cache_pairs() -> Result<Vec<Pair>, Error> {
    load("cache-pairs.heldout.json", "pairs")
}

pub fn routing_prompts() -> Result<Vec<Prompt>, Error> {
    load("routes.heldout.json", "prompts")
}

/// Hits and misses against the labels.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Confusion {
    /// A paraphrase served its pair's answer.
    pub hits_right: usize,
    /// A near-miss served its pair's answer: a wrong answer.
    pub hits_wrong: usize,
    /// A paraphrase not served.
    pub missed: usize,
    /// A near-miss not served.
    pub refused: usize,
}

impl Confusion {
    pub fn add(&mut self, same: bool, hit: bool) {
        match (same, hit) {
            (true, true) => self.hits_right += 1,
            (false, true) => self.hits_wrong += 1,
            (true, false) => self.missed += 1,
            (false, false) => self.refused += 1,
        }
    }

    /// Right hits over all hits (1 when nothing was served: no wrong answer).
    pub fn precision(&self) -> f64 {
        let hits = self.hits_right + self.hits_wrong;
        if hits == 0 {
            1.0
        } else {
            self.hits_right as f64 / hits as f64
        }
    }

    /// Paraphrases served over all paraphrases.
    pub fn recall(&self) -> f64 {
        let same = self.hits_right + self.missed;
        if same == 0 {
            0.0
        } else {
            self.hits_right as f64 / same as f64
        }
    }
}

impl std::fmt::Display for Confusion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "precision {:.3} ({} wrong of {} hits), recall {:.3} ({} of {} paraphrases)",
            self.precision(),
            self.hits_wrong,
            self.hits_right + self.hits_wrong,
            self.recall(),
            self.hits_right,
            self.hits_right + self.missed
        )
    }
}

/// Embeds `texts` with the sidecar at `addr` (its `Embed` RPC, 64 texts a call): the vectors the
/// cache and the router compare.
pub fn embed(addr: std::net::SocketAddr, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
    use inference_proto::v1::EmbedRequest;
    use inference_proto::v1::inference_client::InferenceClient;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut client = InferenceClient::connect(format!("http://{addr}")).await?;
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(64) {
            let reply = client
                .embed(EmbedRequest {
                    texts: chunk.to_vec(),
                })
                .await?
                .into_inner();
            out.extend(reply.embeddings.into_iter().map(|e| e.values));
        }
        Ok(out)
    })
}

/// Cosine similarity (the sidecar's vectors are unit length; this does not assume it).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b)).max(f32::EPSILON)
}
