//! A BERT encoder — the architecture of all-MiniLM-L6-v2 and most sentence-transformers models —
//! on candle's tensor ops, laid out for small CPU batches:
//!
//! - every dense layer's weight is stored transposed, `(in, out)` row-major, so gemm reads it without
//!   repacking it on each call (a 15-token embedding went from ~17 to ~14.5 ms on one thread);
//! - query, key and value are one fused layer;
//! - each layer is split into parts (blocks of heads and of intermediate columns, see `Part`) that
//!   idle threads help with: the caller of `forward` invites helpers (`invitations`) and runs
//!   whatever part nobody claimed, so one request uses both cores when the other is idle, and a busy
//!   machine runs one request per thread with no waiting.
//!
//! The arithmetic is BERT's (Hugging Face `modeling_bert`): absolute position embeddings, token type
//! 0, post-layer-norm blocks, erf GELU. Outputs match candle-transformers' `BertModel`.

use candle_core::{DType, Module, Tensor};
use candle_nn::{Embedding, LayerNorm, VarBuilder};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// The fields of a Hugging Face `config.json` the encoder reads.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub hidden_act: Activation,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// Only `absolute` is implemented.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// The exact GELU, `x · Φ(x)`.
    Gelu,
    /// The tanh approximation.
    #[serde(alias = "gelu_pytorch_tanh")]
    GeluNew,
    Relu,
}

impl Activation {
    fn apply(self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Gelu => xs.gelu_erf(),
            Self::GeluNew => xs.gelu(),
            Self::Relu => xs.relu(),
        }
    }
}

/// One part of a layer: a block of attention heads and a block of intermediate columns, with the
/// rows of the output projections that read them (tensor parallelism as in Megatron-LM: each part
/// yields a partial sum of the layer's outputs, so one layer needs two joins, not four).
struct Part {
    heads: usize,
    /// Query, key and value of this part's heads, fused: `Wᵀ` `(hidden, 3·heads·d)` and bias.
    qkv: (Tensor, Tensor),
    /// The attention output projection's `Wᵀ` rows for these heads, `(heads·d, hidden)`.
    attention_out: Tensor,
    /// The intermediate layer's `Wᵀ` columns `(hidden, c)` and bias.
    intermediate: (Tensor, Tensor),
    /// The output projection's `Wᵀ` rows for those columns, `(c, hidden)`.
    output: Tensor,
}

struct Layer {
    parts: Vec<Part>,
    attention_bias: Tensor,
    attention_norm: LayerNorm,
    output_bias: Tensor,
    output_norm: LayerNorm,
}

pub struct Bert {
    word: Embedding,
    position: Tensor,
    token_type: Tensor,
    embeddings_norm: LayerNorm,
    encoder: Arc<Encoder>,
    hidden: usize,
    parts: usize,
    invite: Sender<Weak<Team>>,
    invitations: Receiver<Weak<Team>>,
}

/// The layers, shared with the helpers of a forward pass.
struct Encoder {
    layers: Vec<Layer>,
    act: Activation,
    head_dim: usize,
}

/// Splits `0..total` into `parts` contiguous, non-empty ranges as `(start, len)`.
fn blocks(total: usize, parts: usize) -> Vec<(usize, usize)> {
    let parts = parts.clamp(1, total.max(1));
    (0..parts)
        .map(|i| (i * total / parts, (i + 1) * total / parts - i * total / parts))
        .collect()
}

fn load_layer(vb: &VarBuilder, config: &Config, parts: usize) -> candle_core::Result<Layer> {
    let h = config.hidden_size;
    let heads = config.num_attention_heads;
    let d = h / heads;
    let i = config.intermediate_size;
    let eps = config.layer_norm_eps;
    let weight = |name: &str, shape: (usize, usize)| vb.get(shape, &format!("{name}.weight"));
    let bias = |name: &str, len: usize| vb.get(len, &format!("{name}.bias"));
    let qkv = ["query", "key", "value"].map(|n| format!("attention.self.{n}"));
    // The attention scores' 1/√d is folded into the query projection.
    let scale = 1.0 / (d as f64).sqrt();
    let scaled = |i: usize, t: Tensor| if i == 0 { t * scale } else { Ok(t) };
    let qkv_w = qkv
        .iter()
        .enumerate()
        .map(|(i, n)| scaled(i, weight(n, (h, h))?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let qkv_b = qkv
        .iter()
        .enumerate()
        .map(|(i, n)| scaled(i, bias(n, h)?))
        .collect::<candle_core::Result<Vec<_>>>()?;
    let attention_out_t = weight("attention.output.dense", (h, h))?.t()?;
    let intermediate_w = weight("intermediate.dense", (i, h))?;
    let intermediate_b = bias("intermediate.dense", i)?;
    let output_t = weight("output.dense", (h, i))?.t()?;
    let head_blocks = blocks(heads, parts);
    let column_blocks = blocks(i, head_blocks.len());
    if column_blocks.len() != head_blocks.len() {
        candle_core::bail!(
            "intermediate_size {i} is smaller than the {} parts",
            head_blocks.len()
        );
    }
    let mut out = Vec::with_capacity(head_blocks.len());
    for (&(head, n), &(col, c)) in head_blocks.iter().zip(&column_blocks) {
        let rows = |t: &Tensor| t.narrow(0, head * d, n * d);
        let w = Tensor::cat(
            &qkv_w.iter().map(rows).collect::<candle_core::Result<Vec<_>>>()?,
            0,
        )?;
        let b = Tensor::cat(
            &qkv_b.iter().map(rows).collect::<candle_core::Result<Vec<_>>>()?,
            0,
        )?;
        out.push(Part {
            heads: n,
            qkv: (w.t()?.contiguous()?, b),
            attention_out: attention_out_t.narrow(0, head * d, n * d)?.contiguous()?,
            intermediate: (
                intermediate_w.narrow(0, col, c)?.t()?.contiguous()?,
                intermediate_b.narrow(0, col, c)?.contiguous()?,
            ),
            output: output_t.narrow(0, col, c)?.contiguous()?,
        });
    }
    Ok(Layer {
        parts: out,
        attention_bias: bias("attention.output.dense", h)?,
        attention_norm: candle_nn::layer_norm(h, eps, vb.pp("attention.output.LayerNorm"))?,
        output_bias: bias("output.dense", h)?,
        output_norm: candle_nn::layer_norm(h, eps, vb.pp("output.LayerNorm"))?,
    })
}

impl Bert {
    /// Loads the weights under `vb` (with or without a `bert.` prefix), split into `parts` parts
    /// per layer (one per compute thread; at most one per attention head).
    pub fn load(vb: VarBuilder, config: &Config, parts: usize) -> candle_core::Result<Self> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let heads = config.num_attention_heads;
        if let Some(t) = config
            .position_embedding_type
            .as_deref()
            .filter(|t| *t != "absolute")
        {
            candle_core::bail!("position_embedding_type {t:?} is not supported (only \"absolute\")");
        }
        if heads == 0 || !h.is_multiple_of(heads) {
            candle_core::bail!("hidden_size {h} is not a multiple of num_attention_heads {heads}");
        }
        let e = vb.pp("embeddings");
        let word = candle_nn::embedding(config.vocab_size, h, e.pp("word_embeddings"))?;
        let position = e.get((config.max_position_embeddings, h), "position_embeddings.weight")?;
        // Requests carry one segment, so every token has type 0.
        let token_type = e
            .get((config.type_vocab_size, h), "token_type_embeddings.weight")?
            .narrow(0, 0, 1)?;
        let embeddings_norm = candle_nn::layer_norm(h, config.layer_norm_eps, e.pp("LayerNorm"))?;
        let layers = (0..config.num_hidden_layers)
            .map(|i| load_layer(&vb.pp(format!("encoder.layer.{i}")), config, parts))
            .collect::<candle_core::Result<Vec<_>>>()?;
        // A helper that finds only finished passes drops them; a full channel means nobody is idle.
        let (invite, invitations) = crossbeam_channel::bounded(64);
        Ok(Self {
            word,
            position,
            token_type,
            embeddings_norm,
            parts: layers.first().map_or(1, |l| l.parts.len()),
            encoder: Arc::new(Encoder {
                layers,
                act: config.hidden_act,
                head_dim: h / heads,
            }),
            hidden: h,
            invite,
            invitations,
        })
    }

    /// `ids` and `mask` are `(batch, seq)` u32 (mask 1 for real tokens); returns the last hidden
    /// state `(batch, seq, hidden)`. Threads waiting on `invitations` may help.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
        let (b, s) = ids.dims2()?;
        let h = self.hidden;
        let x = self
            .word
            .forward(ids)?
            .broadcast_add(&self.position.narrow(0, 0, s)?)?
            .broadcast_add(&self.token_type)?;
        let x = self.embeddings_norm.forward(&x)?.reshape((b * s, h))?;
        // Padding gets the most negative score before the softmax, as `modeling_bert` does.
        let mask = ((mask.to_dtype(DType::F32)? - 1.0)? * f64::from(f32::MAX))?.reshape((b, 1, 1, s))?;
        let team = Arc::new(Team::new(self.encoder.clone(), Shape { b, s, mask }));
        for _ in 1..self.parts {
            let mut invitation = Arc::downgrade(&team);
            // A full channel holds passes that ended while every thread was busy: drop one.
            for _ in 0..2 {
                match self.invite.try_send(invitation) {
                    Err(TrySendError::Full(back)) => {
                        invitation = back;
                        let _ = self.invitations.try_recv();
                    }
                    _ => break,
                }
            }
        }
        let _done = Finished(&team);
        team.encode(x)?.reshape((b, s, h))
    }

    /// Where idle threads wait to help a forward pass: receive, `upgrade`, then `Team::help`.
    pub fn invitations(&self) -> &Receiver<Weak<Team>> {
        &self.invitations
    }
}

impl Encoder {
    fn attention_part(&self, p: &Part, x: &Tensor, shape: &Shape) -> candle_core::Result<Tensor> {
        let (b, s, d) = (shape.b, shape.s, self.head_dim);
        let qkv = x
            .matmul(&p.qkv.0)?
            .broadcast_add(&p.qkv.1)?
            .reshape((b, s, 3, p.heads, d))?;
        let head = |i: usize| qkv.narrow(2, i, 1)?.squeeze(2)?.transpose(1, 2)?.contiguous();
        let (q, k, v) = (head(0)?, head(1)?, head(2)?);
        let scores = q.matmul(&k.t()?)?.broadcast_add(&shape.mask)?;
        let probs = candle_nn::ops::softmax_last_dim(&scores)?;
        let ctx = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * s, p.heads * d))?;
        ctx.matmul(&p.attention_out)
    }

    fn mlp_part(&self, p: &Part, x: &Tensor) -> candle_core::Result<Tensor> {
        let inner = self
            .act
            .apply(&x.matmul(&p.intermediate.0)?.broadcast_add(&p.intermediate.1)?)?;
        inner.matmul(&p.output)
    }
}

#[derive(Clone, Copy)]
enum Section {
    Attention,
    Mlp,
}

struct Shape {
    b: usize,
    s: usize,
    /// `(b, 1, 1, s)`: 0 for tokens, the most negative f32 for padding.
    mask: Tensor,
}

/// The threads working on one forward pass. The caller runs every section and claims parts from
/// it; helpers spin between sections (a sleeping thread takes longer to wake than a part takes to
/// run) and claim what the caller has not. A helper that starts late, or never, costs nothing: the
/// caller runs the parts nobody claimed, so busy threads degrade to one request per thread.
pub struct Team {
    model: Arc<Encoder>,
    shape: Shape,
    /// `generation << 32 | next unclaimed part` of the current section.
    state: AtomicU64,
    done: AtomicUsize,
    job: Mutex<Option<(u64, usize, Section, Tensor)>>,
    results: Mutex<Vec<Option<candle_core::Result<Tensor>>>>,
    /// Sections started (only the caller writes it).
    generation: AtomicU64,
    finished: AtomicBool,
}

/// Tells the helpers to stop, however the forward pass ends, and frees the section's input.
struct Finished<'a>(&'a Team);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.finished.store(true, Ordering::Release);
        if let Ok(mut j) = self.0.job.lock() {
            *j = None;
        }
    }
}

/// Counts a claimed part as done when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::Release);
    }
}

/// Waits a little, on the CPU first: sections are tens to hundreds of microseconds apart, less
/// than a sleeping thread takes to wake, but a thread that waits long lets others run.
fn pause(spins: &mut u32) {
    if *spins < 256 {
        *spins += 1;
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

impl Team {
    fn new(model: Arc<Encoder>, shape: Shape) -> Self {
        Self {
            model,
            shape,
            state: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            job: Mutex::new(None),
            results: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            finished: AtomicBool::new(false),
        }
    }

    fn encode(&self, mut x: Tensor) -> candle_core::Result<Tensor> {
        for (i, l) in self.model.layers.iter().enumerate() {
            let attention = self.section(i, Section::Attention, &x)?;
            let attended = l
                .attention_norm
                .forward(&sum(attention, &l.attention_bias, &x)?)?;
            let mlp = self.section(i, Section::Mlp, &attended)?;
            x = l.output_norm.forward(&sum(mlp, &l.output_bias, &attended)?)?;
        }
        Ok(x)
    }

    /// Runs every part of one section and returns their outputs in part order.
    fn section(&self, layer: usize, section: Section, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        let parts = self.model.layers.get(layer).map_or(0, |l| l.parts.len());
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        if let Ok(mut r) = self.results.lock() {
            r.clear();
            r.resize_with(parts, || None);
        }
        if let Ok(mut j) = self.job.lock() {
            *j = Some((generation, layer, section, x.clone()));
        }
        self.done.store(0, Ordering::Relaxed);
        self.state.store(generation << 32, Ordering::Release);
        self.work(generation, layer, section, x);
        let mut spins = 0;
        while self.done.load(Ordering::Acquire) < parts {
            pause(&mut spins);
        }
        let mut results = self
            .results
            .lock()
            .map_err(|_| candle_core::Error::Msg("a part panicked".into()))?;
        results
            .drain(..)
            .map(|r| r.unwrap_or_else(|| Err(candle_core::Error::Msg("a part did not run".into()))))
            .collect()
    }

    /// Claims and runs parts of `generation` until none is left.
    fn work(&self, generation: u64, layer: usize, section: Section, x: &Tensor) {
        let Some(l) = self.model.layers.get(layer) else {
            return;
        };
        loop {
            let cur = self.state.load(Ordering::Acquire);
            let next = (cur & 0xffff_ffff) as usize;
            if cur >> 32 != generation || next >= l.parts.len() {
                return;
            }
            if self
                .state
                .compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            // Counted however the part ends, a panic included, so the caller never waits forever.
            let _count = Counted(&self.done);
            let out = l.parts.get(next).map_or_else(
                || Err(candle_core::Error::Msg("no such part".into())),
                |p| match section {
                    Section::Attention => self.model.attention_part(p, x, &self.shape),
                    Section::Mlp => self.model.mlp_part(p, x),
                },
            );
            if let Some(slot) = self.results.lock().ok().as_mut().and_then(|r| r.get_mut(next)) {
                *slot = Some(out);
            }
        }
    }

    /// A helper's loop: joins each new section until the forward pass is finished, or until
    /// `leave()` says the helper has work of its own (checked between sections; the caller runs
    /// whatever part nobody claimed).
    pub fn help(&self, leave: impl Fn() -> bool) {
        let mut seen = 0;
        let mut spins = 0;
        while !self.finished.load(Ordering::Acquire) && !leave() {
            let generation = self.state.load(Ordering::Acquire) >> 32;
            if generation == seen {
                pause(&mut spins);
                continue;
            }
            seen = generation;
            spins = 0;
            let job = self.job.lock().ok().and_then(|j| j.clone());
            if let Some((g, layer, section, x)) = job
                && g == generation
            {
                self.work(g, layer, section, &x);
            }
        }
    }
}

/// The partial sums of a section, plus bias and residual.
fn sum(parts: Vec<Tensor>, bias: &Tensor, residual: &Tensor) -> candle_core::Result<Tensor> {
    let mut acc = residual.broadcast_add(bias)?;
    for p in parts {
        acc = (acc + p)?;
    }
    Ok(acc)
}
