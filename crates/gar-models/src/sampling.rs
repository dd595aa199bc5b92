//! Next-token selection: greedy argmax (the reference's decoding, spec §9) or seeded sampling with
//! temperature / top-k / top-p, plus an optional repetition penalty. Processors run in transformers' order:
//! repetition penalty → temperature → top-k → top-p → softmax → draw.

use candle_core::{DType, Result, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to pick each token. The default is greedy with no penalty.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingConfig {
    /// `<= 0` (or `None`-like 0.0) selects greedy argmax.
    pub temperature: f64,
    /// Keep only the `k` most likely tokens (`None` or 0: off).
    pub top_k: Option<usize>,
    /// Keep the smallest most-likely set with cumulative probability ≥ `p` (`None` or ≥ 1: off).
    pub top_p: Option<f64>,
    /// transformers `RepetitionPenaltyLogitsProcessor`: seen tokens' logits are divided (if > 0) or
    /// multiplied (if < 0) by this; 1.0 is off. Applies to greedy decoding too.
    pub repetition_penalty: f32,
    /// RNG seed for sampling (unused when greedy).
    pub seed: u64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self::greedy()
    }
}

impl SamplingConfig {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

/// Stateful picker (owns the RNG so a seeded run is reproducible token after token).
#[derive(Debug, Clone)]
pub struct Sampler {
    cfg: SamplingConfig,
    rng: StdRng,
}

impl Sampler {
    pub fn new(cfg: SamplingConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Self { cfg, rng }
    }

    pub fn config(&self) -> &SamplingConfig {
        &self.cfg
    }

    /// Picks the next token from `logits` `(vocab)` (or `(1, vocab)`); `history` are the tokens the repetition
    /// penalty applies to.
    pub fn sample(&mut self, logits: &Tensor, history: &[u32]) -> Result<u32> {
        let mut logits = logits
            .flatten_all()?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        Ok(self.sample_slice(&mut logits, history))
    }

    /// As [`Self::sample`] on a host slice (modified in place by the processors).
    pub fn sample_slice(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        if self.cfg.repetition_penalty != 1.0 {
            apply_repetition_penalty(logits, history, self.cfg.repetition_penalty);
        }
        if self.cfg.is_greedy() {
            return argmax(logits);
        }
        let inv_t = (1.0 / self.cfg.temperature) as f32;
        for l in logits.iter_mut() {
            *l *= inv_t;
        }
        // Candidate tokens by decreasing logit (ties: lower id first, like a stable sort).
        let mut order: Vec<usize> = (0..logits.len()).filter(|&i| !logits[i].is_nan()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if let Some(k) = self.cfg.top_k.filter(|&k| k > 0) {
            order.truncate(k.max(1));
        }
        let Some(&best) = order.first() else {
            return 0;
        };
        let max = logits[best];
        let mut probs: Vec<f32> = order.iter().map(|&i| (logits[i] - max).exp()).collect();
        let total: f32 = probs.iter().sum();
        for p in probs.iter_mut() {
            *p /= total;
        }
        if let Some(top_p) = self.cfg.top_p.filter(|&p| p < 1.0) {
            let mut cum = 0f32;
            let mut keep = probs.len();
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum as f64 >= top_p {
                    keep = i + 1;
                    break;
                }
            }
            probs.truncate(keep.max(1));
            order.truncate(keep.max(1));
        }
        let total: f32 = probs.iter().sum();
        let mut u = self.rng.random::<f32>() * total;
        for (i, p) in probs.iter().enumerate() {
            if u < *p {
                return order[i] as u32;
            }
            u -= p;
        }
        order[probs.len() - 1] as u32
    }
}

/// Index of the largest value, first one on ties (`torch.argmax`), NaN ignored.
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    let mut found = false;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_nan() && (!found || v > best_v) {
            best = i;
            best_v = v;
            found = true;
        }
    }
    best as u32
}

/// transformers `RepetitionPenaltyLogitsProcessor` (each distinct token penalized once).
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32) {
    let mut seen = std::collections::HashSet::new();
    for &t in history {
        let i = t as usize;
        if i < logits.len() && seen.insert(t) {
            let l = logits[i];
            logits[i] = if l < 0.0 { l * penalty } else { l / penalty };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_first_max() {
        let mut s = Sampler::new(SamplingConfig::greedy());
        assert_eq!(s.sample_slice(&mut [0.1, 3.0, 3.0, -1.0], &[]), 1);
        assert_eq!(argmax(&[f32::NAN, -2.0, -1.0]), 2);
    }

    #[test]
    fn repetition_penalty_can_flip_greedy() {
        let cfg = SamplingConfig {
            repetition_penalty: 2.0,
            ..SamplingConfig::greedy()
        };
        let mut s = Sampler::new(cfg);
        assert_eq!(s.sample_slice(&mut [1.0, 3.0, 2.0], &[1, 1]), 2);
        let mut l = [-1.0f32, 4.0];
        apply_repetition_penalty(&mut l, &[0, 1, 0], 2.0);
        assert_eq!(l, [-2.0, 2.0]);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_respects_filters() {
        let cfg = SamplingConfig {
            temperature: 1.0,
            top_k: Some(2),
            top_p: None,
            repetition_penalty: 1.0,
            seed: 42,
        };
        let logits = [0.0f32, 5.0, 4.9, 4.8, -3.0];
        let run = |cfg: &SamplingConfig| {
            let mut s = Sampler::new(cfg.clone());
            (0..200)
                .map(|_| s.sample_slice(&mut logits.clone(), &[]))
                .collect::<Vec<_>>()
        };
        let a = run(&cfg);
        assert_eq!(a, run(&cfg));
        assert!(a.iter().all(|&t| t == 1 || t == 2));
        assert!(a.contains(&1) && a.contains(&2));
        // top_p small enough keeps only the best token.
        let cfg_p = SamplingConfig {
            top_k: None,
            top_p: Some(0.2),
            ..cfg.clone()
        };
        assert!(run(&cfg_p).iter().all(|&t| t == 1));
        // A different seed gives a different stream.
        let cfg_s = SamplingConfig { seed: 7, ..cfg };
        assert_ne!(a, run(&cfg_s));
    }
}
