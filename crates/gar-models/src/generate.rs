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
    generate(llama, prompt_embeds, &mut cache, &[], cfg, &mut |_| {
        ControlFlow::Continue(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LlamaConfig;
    use candle_core::{DType, Device, D};
    use candle_nn::{VarBuilder, VarMap};

    fn tiny_llama() -> Result<Llama> {
        let cfg: LlamaConfig = serde_json::from_str(
            r#"{"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 50,
                "max_position_embeddings": 128, "tie_word_embeddings": true}"#,
        )
        .map_err(candle_core::Error::wrap)?;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &Device::Cpu);
        Llama::new(&cfg, vb.pp("model"), vb)
    }

    #[test]
    fn cached_decode_equals_full_recompute() -> Result<()> {
        let llama = tiny_llama()?;
        let prompt = [3u32, 7, 11, 2, 9];
        let out = generate_simple(
            &llama,
            &llama.embed(&prompt)?,
            &GenerationConfig {
                max_new_tokens: 6,
                stop_tokens: vec![],
                ..Default::default()
            },
        )?;
        assert_eq!(out.tokens.len(), 6);
        assert_eq!(out.stop_reason, StopReason::MaxTokens);
        // Re-running the whole sequence without a cache must pick the same tokens at every step.
        let all: Vec<u32> = prompt.iter().chain(&out.tokens).copied().collect();
        let mut cache = llama.new_cache(all.len());
        let h = llama.forward(&llama.embed(&all)?, 0, &mut cache)?;
        let picks = llama
            .logits(&h)?
            .argmax(D::Minus1)?
            .squeeze(0)?
            .to_vec1::<u32>()?;
        assert_eq!(&picks[prompt.len() - 1..all.len() - 1], &out.tokens[..]);
        Ok(())
    }

    #[test]
    fn stops_on_token_and_on_callback() -> Result<()> {
        let llama = tiny_llama()?;
        let embeds = llama.embed(&[1, 2, 3])?;
        let free = generate_simple(
            &llama,
            &embeds,
            &GenerationConfig {
                max_new_tokens: 4,
                stop_tokens: vec![],
                ..Default::default()
            },
        )?;
        // Stop on the second generated token.
        let cfg = GenerationConfig {
            max_new_tokens: 4,
            stop_tokens: vec![free.tokens[1]],
            ..Default::default()
        };
        let stopped = generate_simple(&llama, &embeds, &cfg)?;
        let first = free
            .tokens
            .iter()
            .position(|&t| t == free.tokens[1])
            .unwrap_or(1);
        assert_eq!(stopped.tokens, free.tokens[..=first].to_vec());
        assert_eq!(stopped.stop_reason, StopReason::StopToken(free.tokens[1]));
        // The callback sees every token and can cancel.
        let mut seen = vec![];
        let mut cache = llama.new_cache(8);
        let cancelled = generate(
            &llama,
            &embeds,
            &mut cache,
            &[],
            &GenerationConfig {
                max_new_tokens: 4,
                stop_tokens: vec![],
                ..Default::default()
            },
            &mut |t| {
                seen.push(t);
                if seen.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            },
        )?;
        assert_eq!(cancelled.stop_reason, StopReason::Cancelled);
        assert_eq!(seen, free.tokens[..2].to_vec());
        assert_eq!(cancelled.tokens, seen);
        Ok(())
    }
}
