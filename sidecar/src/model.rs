//! Sentence embeddings with candle: a BERT encoder loaded from a local directory
//! (`config.json`, `tokenizer.json`, `model.safetensors`, optional `sentence_bert_config.json`),
//! mean pooling over the attention mask and L2 normalisation, as sentence-transformers does.

use crate::bert::{Bert, Config, Team};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::path::{Path, PathBuf};
use tokenizers::{Tokenizer, TruncationParams};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("parsing {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("model: {0}")]
    Candle(#[from] candle_core::Error),
}

/// One embedded text.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vector: Vec<f32>,
    /// Tokens the model read, special tokens included.
    pub tokens: u32,
    pub truncated: bool,
}

/// A text tokenized for the model: ids within the window, special tokens included.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub truncated: bool,
}

/// What the inference engine needs from a model: tokenizing within its window and embedding a
/// padded batch. [`Embedder`] is the real one; the engine's queue, cache and batching are tested
/// with a fake.
pub trait Encoder: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn dimension(&self) -> usize;
    /// Tokenizes `text` within the window.
    fn encode(&self, text: &str) -> Result<Encoded, ModelError>;
    /// Embeds tokenized texts as one batch padded to the longest.
    fn embed_encoded(&self, batch: &[&Encoded]) -> Result<Vec<Embedded>, ModelError>;
    /// Where an idle inference thread waits to help another thread's pass; `None` when the model
    /// does not split its passes.
    fn invitations(&self) -> Option<&crossbeam_channel::Receiver<std::sync::Weak<Team>>> {
        None
    }
}

impl Encoder for Embedder {
    fn name(&self) -> &str {
        &self.name
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn encode(&self, text: &str) -> Result<Encoded, ModelError> {
        Self::encode(self, text)
    }

    fn embed_encoded(&self, batch: &[&Encoded]) -> Result<Vec<Embedded>, ModelError> {
        Self::embed_encoded(self, batch)
    }

    fn invitations(&self) -> Option<&crossbeam_channel::Receiver<std::sync::Weak<Team>>> {
        Some(Self::invitations(self))
    }
}

pub struct Embedder {
    model: Bert,
    tokenizer: Tokenizer,
    device: Device,
    pub name: String,
    pub dimension: usize,
    pub max_tokens: usize,
}

#[derive(serde::Deserialize)]
struct SentenceBertConfig {
    max_seq_length: usize,
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.to_owned(),
        source,
    })
}

impl Embedder {
    /// Loads the model in `dir`. `max_tokens` overrides the window from `sentence_bert_config.json`
    /// (all-MiniLM-L6-v2: 256); it is capped by the model's position embeddings. Each layer is split
    /// into `threads` parts that idle threads may help with (`invitations`).
    pub fn load(dir: &Path, max_tokens: Option<usize>, threads: usize) -> Result<Self, ModelError> {
        let config_path = dir.join("config.json");
        let config: Config = serde_json::from_slice(&read(&config_path)?).map_err(|e| ModelError::Parse {
            path: config_path.clone(),
            message: e.to_string(),
        })?;
        let st_path = dir.join("sentence_bert_config.json");
        let st_max = std::fs::read(&st_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<SentenceBertConfig>(&b).ok())
            .map(|c| c.max_seq_length);
        let max_tokens = max_tokens
            .or(st_max)
            .unwrap_or(512)
            .min(config.max_position_embeddings);

        let tok_path = dir.join("tokenizer.json");
        let mut tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| ModelError::Parse {
            path: tok_path.clone(),
            message: e.to_string(),
        })?;
        // The shipped tokenizer.json truncates and pads every input to 128; use the model's real
        // window, and pad here, to the longest text of each batch.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_tokens,
                ..Default::default()
            }))
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);

        let device = Device::Cpu;
        let threads = threads.max(1);
        let weights = read(&dir.join("model.safetensors"))?;
        let tensors = candle_core::safetensors::BufferedSafetensors::new(weights)?;
        let vb = VarBuilder::from_backend(Box::new(tensors), DType::F32, device.clone());
        let model = Bert::load(vb, &config, threads)?;
        let name = dir
            .file_name()
            .map_or_else(|| "model".to_owned(), |n| n.to_string_lossy().into_owned());
        Ok(Self {
            model,
            tokenizer,
            device,
            name,
            dimension: config.hidden_size,
            max_tokens,
        })
    }

    /// Where an idle thread waits to help another's `embed` (see `bert::Team`).
    pub fn invitations(&self) -> &crossbeam_channel::Receiver<std::sync::Weak<Team>> {
        self.model.invitations()
    }

    /// Tokenizes `text` within the window.
    pub fn encode(&self, text: &str) -> Result<Encoded, ModelError> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(Encoded {
            truncated: !enc.get_overflowing().is_empty(),
            ids: enc.get_ids().to_vec(),
        })
    }

    /// Embeds `texts` as one padded batch. Callers keep batches small and similar in length.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Embedded>, ModelError> {
        let encoded = texts
            .iter()
            .map(|t| self.encode(t))
            .collect::<Result<Vec<_>, _>>()?;
        self.embed_encoded(&encoded.iter().collect::<Vec<_>>())
    }

    /// Embeds tokenized texts as one batch padded to the longest.
    pub fn embed_encoded(&self, batch: &[&Encoded]) -> Result<Vec<Embedded>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let seq = batch.iter().map(|e| e.ids.len()).max().unwrap_or(0).max(1);
        let n = batch.len();
        let mut ids = vec![0u32; n * seq];
        let mut mask = vec![0u32; n * seq];
        for (row, e) in batch.iter().enumerate() {
            let at = row * seq;
            if let (Some(i), Some(m)) = (
                ids.get_mut(at..at + e.ids.len()),
                mask.get_mut(at..at + e.ids.len()),
            ) {
                i.copy_from_slice(&e.ids);
                m.fill(1);
            }
        }
        let ids = Tensor::from_vec(ids, (n, seq), &self.device)?;
        let mask = Tensor::from_vec(mask, (n, seq), &self.device)?;
        let hidden = self.model.forward(&ids, &mask)?;
        // Mean over the real tokens, then L2 normalisation.
        let mask_f = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask_f)?.sum(1)?;
        let counts = mask_f.sum(1)?.clamp(1e-9, f64::MAX)?;
        let mean = summed.broadcast_div(&counts)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        let normalised = mean.broadcast_div(&norm)?;
        let rows: Vec<Vec<f32>> = normalised.to_vec2()?;
        Ok(rows
            .into_iter()
            .zip(batch)
            .map(|(vector, e)| Embedded {
                vector,
                tokens: e.ids.len() as u32,
                truncated: e.truncated,
            })
            .collect())
    }
}

/// Cosine similarity of two L2-normalised vectors (their dot product).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
