//! What the loop needs from a model: its trainable variables under checkpoint key names and the
//! loss of a micro-batch. The GAR training forward implements this; `TinyModel` is a small
//! differentiable stand-in that exercises every parameter group, used by tests and by the CLI
//! until the real model is plugged in.

use crate::conversation::SampleSpec;
use candle_core::{DType, Device, Result, Tensor, Var, D};
use rand::{Rng, SeedableRng};

pub trait LossModel {
    /// Every weight under its checkpoint key (frozen ones included; the trainer filters).
    fn vars(&self) -> Vec<(String, Var)>;
    /// Mean over the batch of per-sample losses (GAR: per-sample token means, §4.5).
    fn loss(&self, batch: &[SampleSpec]) -> Result<Tensor>;
    /// Number of tokens the batch amounts to (for tokens/s); 0 if unknown.
    fn tokens(&self, _batch: &[SampleSpec]) -> usize {
        0
    }
    /// LoRA adapters the model applies, if any (merged at export).
    fn lora(&self) -> Option<&crate::lora::Lora> {
        None
    }
}

const FEATURES: usize = 7;
const HIDDEN: usize = 8;
const VOCAB: usize = 32;
const CLASSES: usize = 5;

/// A tiny classifier over a sample: image colour statistics inside/outside the regions ("vision
/// tower"), region area ("mask embedding"), hashed user words ("embeddings"), a hidden layer
/// ("LLM") and a head; the target of each turn is a hash of its answer. Deterministic.
pub struct TinyModel {
    vars: Vec<(String, Var)>,
    lora: Option<crate::lora::Lora>,
}

pub const TINY_NAMES: [&str; 6] = [
    "mllm.model.vision_tower.proj.weight",
    "mask_patch_embedding.weight",
    "mllm.model.multi_modal_projector.linear.weight",
    "mllm.model.language_model.embed_tokens.weight",
    "mllm.model.language_model.layers.0.weight",
    "mllm.lm_head.weight",
];

impl TinyModel {
    pub fn new(seed: u64, dtype: DType, device: &Device) -> Result<Self> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let shapes = [
            (HIDDEN, FEATURES),
            (HIDDEN, 1),
            (HIDDEN, HIDDEN),
            (VOCAB, HIDDEN),
            (HIDDEN, HIDDEN),
            (CLASSES, HIDDEN),
        ];
        let vars = TINY_NAMES
            .iter()
            .zip(shapes)
            .map(|(n, (r, c))| {
                let data: Vec<f32> = (0..r * c).map(|_| rng.random_range(-0.5f32..0.5)).collect();
                let t = Tensor::from_vec(data, (r, c), device)?.to_dtype(dtype)?;
                Ok((n.to_string(), Var::from_tensor(&t)?))
            })
            .collect::<Result<_>>()?;
        Ok(Self { vars, lora: None })
    }

    /// Add LoRA adapters (the trainer must freeze `lora.targeted()`).
    pub fn with_lora(mut self, lora: crate::lora::Lora) -> Self {
        self.lora = Some(lora);
        self
    }

    /// Build from existing tensors (checkpoint load); names must be `TINY_NAMES`.
    pub fn from_vars(vars: Vec<(String, Var)>) -> Self {
        Self { vars, lora: None }
    }

    /// Weight `i` in f32, with its LoRA delta when adapted.
    fn w(&self, i: usize) -> Result<Tensor> {
        let (name, var) = &self.vars[i];
        let w = var.as_tensor().to_dtype(DType::F32)?;
        match self.lora.as_ref().and_then(|l| l.adapters.get(name)) {
            Some(ad) => ad.apply(&w),
            None => Ok(w),
        }
    }

    fn sample_loss(&self, s: &SampleSpec) -> Result<Tensor> {
        let dev = self.vars[0].1.device();
        let (features, area) = image_features(s);
        let x = Tensor::from_vec(features.to_vec(), (FEATURES, 1), dev)?;
        let a = Tensor::from_vec(vec![area], (1, 1), dev)?;
        let vision = (self.w(0)?.matmul(&x)? + self.w(1)?.matmul(&a)?)?.tanh()?;
        let projected = self.w(2)?.matmul(&vision)?;
        let mut losses = Vec::new();
        for turn in &s.turns {
            let ids: Vec<u32> = turn
                .user
                .split_whitespace()
                .map(|w| (hash(w) % VOCAB as u64) as u32)
                .collect();
            let text = if ids.is_empty() {
                Tensor::zeros((HIDDEN, 1), DType::F32, dev)?
            } else {
                let idx = Tensor::new(ids.as_slice(), dev)?;
                self.w(3)?
                    .index_select(&idx, 0)?
                    .mean(0)?
                    .reshape((HIDDEN, 1))?
            };
            let h = self.w(4)?.matmul(&(&projected + text)?)?.tanh()?;
            let logits = self.w(5)?.matmul(&h)?.reshape(CLASSES)?;
            let target = (hash(&turn.assistant) % CLASSES as u64) as usize;
            let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
            losses.push(logp.get(target)?.neg()?);
        }
        if losses.is_empty() {
            candle_core::bail!("sample without turns has no loss");
        }
        Tensor::stack(&losses, 0)?.mean_all()
    }
}

impl LossModel for TinyModel {
    fn vars(&self) -> Vec<(String, Var)> {
        let mut v = self.vars.clone();
        if let Some(l) = &self.lora {
            v.extend(l.vars());
        }
        v
    }
    fn loss(&self, batch: &[SampleSpec]) -> Result<Tensor> {
        let l = batch
            .iter()
            .map(|s| self.sample_loss(s))
            .collect::<Result<Vec<_>>>()?;
        Tensor::stack(&l, 0)?.mean_all()
    }
    fn lora(&self) -> Option<&crate::lora::Lora> {
        self.lora.as_ref()
    }
    fn tokens(&self, batch: &[SampleSpec]) -> usize {
        batch
            .iter()
            .flat_map(|s| &s.turns)
            .map(|t| t.user.split_whitespace().count() + t.assistant.split_whitespace().count())
            .sum()
    }
}

/// FNV-1a: a fixed hash (std's is randomly seeded per process).
fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Mean RGB inside the regions' union, mean RGB outside, and the union's area fraction.
fn image_features(s: &SampleSpec) -> ([f32; FEATURES], f32) {
    let (w, h) = s.image.dimensions();
    let (mut inside, mut outside, mut n_in) = ([0f64; 3], [0f64; 3], 0usize);
    for (x, y, p) in s.image.enumerate_pixels() {
        let hit = s
            .regions
            .iter()
            .any(|r| r.mask.dimensions() == (w, h) && r.mask.get_pixel(x, y)[0] != 0);
        let acc = if hit { &mut inside } else { &mut outside };
        for c in 0..3 {
            acc[c] += p[c] as f64 / 255.0;
        }
        n_in += usize::from(hit);
    }
    let n = (w * h) as usize;
    let mut f = [0f32; FEATURES];
    for c in 0..3 {
        f[c] = (inside[c] / n_in.max(1) as f64) as f32;
        f[3 + c] = (outside[c] / (n - n_in).max(1) as f64) as f32;
    }
    f[6] = s.regions.len() as f32 / 4.0;
    (f, n_in as f32 / n.max(1) as f32)
}
