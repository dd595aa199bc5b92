//! Autoregressive generation: one prefill over the prompt embeddings, then cached single-token decode steps
//! until a stop token, `max_new_tokens`, or the callback says stop. Greedy by default, as every GAR demo and
//! benchmark decodes (spec §9).

use std::ops::ControlFlow;

use candle_core::{Result, Tensor};

use crate::llama::Llama;
use crate::nn::kv_cache::KvCache;
use crate::sampling::{Sampler, SamplingConfig};

/// `<|eot_id|>`: the tokenizer's eos and the reference's only stop token (spec §9).
pub const EOT_ID: u32 = 128009;

/// Generation settings. Defaults match the reference: greedy, 1024 new tokens, stop at `<|eot_id|>`.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    /// Generation ends right after emitting any of these (the stop token is included in the output).
    pub stop_tokens: Vec<u32>,
    pub sampling: SamplingConfig,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 1024,
            stop_tokens: vec![EOT_ID],
            sampling: SamplingConfig::greedy(),
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop token was produced (it is the last element of `tokens`).
    StopToken(u32),
    /// `max_new_tokens` reached.
    MaxTokens,
    /// The per-token callback returned `ControlFlow::Break`.
    Cancelled,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOutput {
    /// New tokens only (like transformers' `generate` from `inputs_embeds`), stop token included.
    pub tokens: Vec<u32>,
    pub stop_reason: StopReason,
}

/// Generates from `prompt_embeds` `(1, L, H)` appended to `cache` (usually empty). `penalty_context` are
/// prompt tokens the repetition penalty should also see (transformers penalizes `input_ids`; with
/// `inputs_embeds` only, pass `&[]`). `on_token` is called with each new token as soon as it is chosen.
pub fn generate(
    llama: &Llama,
    prompt_embeds: &Tensor,
    cache: &mut KvCache,
    penalty_context: &[u32],
    cfg: &GenerationConfig,
    on_token: &mut dyn FnMut(u32) -> ControlFlow<()>,
) -> Result<GenerationOutput> {
    let mut sampler = Sampler::new(cfg.sampling.clone());
    let mut history: Vec<u32> = penalty_context.to_vec();
    let mut tokens = Vec::new();
    if cfg.max_new_tokens == 0 {
        return Ok(GenerationOutput {
            tokens,
            stop_reason: StopReason::MaxTokens,
        });
    }
    let hidden = llama.forward(prompt_embeds, cache.seq_len(), cache)?;
    let mut logits = llama.last_logits(&hidden)?;
    loop {
        let token = sampler.sample(&logits, &history)?;
        tokens.push(token);
        history.push(token);
        let flow = on_token(token);
        if cfg.stop_tokens.contains(&token) {
            return Ok(GenerationOutput {
                tokens,
                stop_reason: StopReason::StopToken(token),
            });
        }
        if flow.is_break() {
            return Ok(GenerationOutput {
                tokens,
                stop_reason: StopReason::Cancelled,
            });
        }
        if tokens.len() >= cfg.max_new_tokens {
            return Ok(GenerationOutput {
                tokens,
                stop_reason: StopReason::MaxTokens,
            });
        }
        let embeds = llama.embed(&[token])?;
        let hidden = llama.forward(&embeds, cache.seq_len(), cache)?;
        logits = llama.last_logits(&hidden)?;
    }
}

/// [`generate`] with a fresh cache sized for the prompt plus `max_new_tokens`, and no callback.
pub fn generate_simple(
    llama: &Llama,
    prompt_embeds: &Tensor,
    cfg: &GenerationConfig,
) -> Result<GenerationOutput> {
    let capacity = prompt_embeds.dim(1)? + cfg.max_new_tokens;
    let mut cache = llama.new_cache(capacity);
    generate(llama, prompt_embeds, &mut cache, &[], cfg, &mut |_| ControlFlow::Continue(()))
}
