//! LoRA on the LLM's linear weights: `W_eff = W + (alpha / rank) · B · A` with A (rank × in) drawn
//! uniformly in ±1/sqrt(in) and B (out × rank) zero, so training starts from the base model. The
//! targeted base weights are frozen; at export the product is merged into them and the adapter
//! tensors are dropped, giving a plain HF GAR checkpoint.
//!
//! Targets are matched against the checkpoint keys of the Llama decoder (group `Llm`, see
//! `freeze`), e.g. `["q_proj", "k_proj", "v_proj", "o_proj"]`.

use crate::freeze::{group_of, ParamGroup};
use candle_core::{DType, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    /// Substrings of the weight keys to adapt (2-D LLM weights only).
    pub targets: Vec<String>,
}

pub struct Adapter {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

impl Adapter {
    /// `scale · B · A` in f32.
    pub fn delta(&self) -> Result<Tensor> {
        self.b.as_tensor().matmul(self.a.as_tensor())? * self.scale
    }

    /// The effective weight `W + delta`, in W's dtype.
    pub fn apply(&self, w: &Tensor) -> Result<Tensor> {
        (w.to_dtype(DType::F32)? + self.delta()?)?.to_dtype(w.dtype())
    }
}

/// Adapters keyed by the base weight's checkpoint key.
#[derive(Default)]
pub struct Lora {
    pub adapters: BTreeMap<String, Adapter>,
}

impl Lora {
    pub fn new(cfg: &LoraConfig, base: &[(String, Var)], seed: u64) -> Result<Self> {
        if cfg.rank == 0 {
            candle_core::bail!("LoRA rank must be at least 1");
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut adapters = BTreeMap::new();
        for (name, var) in base {
            let targeted = cfg.targets.iter().any(|t| name.contains(t.as_str()));
            if !targeted || group_of(name) != ParamGroup::Llm || var.rank() != 2 {
                continue;
            }
            let (out_dim, in_dim) = var.dims2()?;
            let bound = 1.0 / (in_dim as f32).sqrt();
            let a: Vec<f32> = (0..cfg.rank * in_dim)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Tensor::from_vec(a, (cfg.rank, in_dim), var.device())?;
            let b = Tensor::zeros((out_dim, cfg.rank), DType::F32, var.device())?;
            let scale = cfg.alpha / cfg.rank as f64;
            adapters.insert(
                name.clone(),
                Adapter {
                    a: Var::from_tensor(&a)?,
                    b: Var::from_tensor(&b)?,
                    scale,
                },
            );
        }
        if adapters.is_empty() {
            candle_core::bail!("LoRA targets {:?} match no 2-D LLM weight", cfg.targets);
        }
        Ok(Self { adapters })
    }

    /// The adapter weights under checkpoint keys (`<base>.lora_A` / `<base>.lora_B`).
    pub fn vars(&self) -> Vec<(String, Var)> {
        self.adapters
            .iter()
            .flat_map(|(n, ad)| {
                [
                    (format!("{n}.lora_A"), ad.a.clone()),
                    (format!("{n}.lora_B"), ad.b.clone()),
                ]
            })
            .collect()
    }

    /// Base keys that the adapters replace in training (to be frozen).
    pub fn targeted(&self) -> Vec<String> {
        self.adapters.keys().cloned().collect()
    }

    /// Merge into exported weights: every adapted weight becomes `W + delta` (rounded to its
    /// dtype) and the adapter keys are removed.
    pub fn merge(&self, weights: &mut HashMap<String, Tensor>) -> Result<()> {
        weights.retain(|k, _| !k.ends_with(".lora_A") && !k.ends_with(".lora_B"));
        for (name, ad) in &self.adapters {
            let Some(w) = weights.get(name) else {
                candle_core::bail!("no weight {name} to merge LoRA into")
            };
            let merged = ad.apply(w)?;
            weights.insert(name.clone(), merged);
        }
        Ok(())
    }
}
