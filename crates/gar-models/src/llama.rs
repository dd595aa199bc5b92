//! Llama 3 decoder (transformers `modeling_llama.py` 4.56.2; spec §5): GQA attention with half-split RoPE
//! (optionally llama3-scaled), RMSNorm, SwiGLU MLP.
//!
//! The model is immutable: the KV cache and the position of the first new token are passed in, so one instance
//! can serve many sequences. [`Llama::forward`] returns the final-norm hidden states of *all* positions;
//! logits are computed on demand with [`Llama::logits`] (the engine needs the last row, tests need them all).
//!
//! Weight keys (relative to the decoder prefix, e.g. `model.language_model.`): `embed_tokens.weight`,
//! `layers.{i}.self_attn.{q,k,v,o}_proj.weight`, `layers.{i}.mlp.{gate,up,down}_proj.weight`,
//! `layers.{i}.{input,post_attention}_layernorm.weight`, `norm.weight`; `lm_head.weight` sits at the model root
//! and falls back to `embed_tokens.weight` when tied or absent.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::LlamaConfig;
use crate::nn::attention::{attention_with, Products};
use crate::nn::fused::silu_mul;
use crate::nn::kv_cache::KvCache;
use crate::nn::norm::RmsNorm;
use crate::nn::quant::{Quant, QuantReport};
use crate::nn::rope::LlamaRope;
use crate::nn::Linear;

/// `LlamaAttention`.
#[derive(Debug, Clone)]
struct SelfAttn {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    num_heads: usize,
    num_kv_heads: usize,
    head_dim: usize,
    products: Products,
}

impl SelfAttn {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, hd) = (cfg.hidden_size, cfg.head_dim());
        let (nh, nkv) = (cfg.num_attention_heads, cfg.num_kv_heads());
        Ok(Self {
            q_proj: Linear::new(h, nh * hd, false, vb.pp("q_proj"))?,
            k_proj: Linear::new(h, nkv * hd, false, vb.pp("k_proj"))?,
            v_proj: Linear::new(h, nkv * hd, false, vb.pp("v_proj"))?,
            o_proj: Linear::new(nh * hd, h, false, vb.pp("o_proj"))?,
            num_heads: nh,
            num_kv_heads: nkv,
            head_dim: hd,
            products: Products::F32,
        })
    }

    fn forward(
        &self,
        x: &Tensor,
        rope: &LlamaRope,
        start: usize,
        layer: usize,
        cache: &mut KvCache,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let heads = |y: Tensor, n: usize| y.reshape((b, t, n, self.head_dim))?.transpose(1, 2);
        let q = heads(self.q_proj.forward(x)?, self.num_heads)?;
        let k = heads(self.k_proj.forward(x)?, self.num_kv_heads)?;
        let v = heads(self.v_proj.forward(x)?, self.num_kv_heads)?;
        let q = rope.apply(&q, start)?;
        let k = rope.apply(&k, start)?;
        // The cache stores post-RoPE keys (spec §5).
        let (k, v) = cache.append(layer, &k, &v)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = attention_with(&q, &k, &v, scale, true, self.products)?;
        let y = y
            .transpose(1, 2)?
            .reshape((b, t, self.num_heads * self.head_dim))?;
        self.o_proj.forward(&y)
    }
}

/// `LlamaMLP`: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Debug, Clone)]
struct Mlp {
    gate_proj: Linear,
    up_proj: Linear,
    down_proj: Linear,
}

impl Mlp {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(Self {
            gate_proj: Linear::new(h, i, false, vb.pp("gate_proj"))?,
            up_proj: Linear::new(h, i, false, vb.pp("up_proj"))?,
            down_proj: Linear::new(i, h, false, vb.pp("down_proj"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let gated = silu_mul(&self.gate_proj.forward(x)?, &self.up_proj.forward(x)?)?;
        self.down_proj.forward(&gated)
    }
}

/// `LlamaDecoderLayer` (pre-norm residual blocks).
#[derive(Debug, Clone)]
struct DecoderLayer {
    self_attn: SelfAttn,
    mlp: Mlp,
    input_layernorm: RmsNorm,
    post_attention_layernorm: RmsNorm,
}

impl DecoderLayer {
    fn new(cfg: &LlamaConfig, vb: VarBuilder) -> Result<Self> {
        let (h, eps) = (cfg.hidden_size, cfg.rms_norm_eps);
        Ok(Self {
            self_attn: SelfAttn::new(cfg, vb.pp("self_attn"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            input_layernorm: RmsNorm::new(h, eps, vb.pp("input_layernorm"))?,
            post_attention_layernorm: RmsNorm::new(h, eps, vb.pp("post_attention_layernorm"))?,
        })
    }

    /// Quantizes the seven projections in place (nothing for `Quant::None`).
    fn quantize(&mut self, quant: Quant, report: &mut QuantReport) -> Result<()> {
        if quant.is_none() {
            return Ok(());
        }
        let a = &mut self.self_attn;
        let m = &mut self.mlp;
        for lin in [
            &mut a.q_proj,
            &mut a.k_proj,
            &mut a.v_proj,
            &mut a.o_proj,
            &mut m.gate_proj,
            &mut m.up_proj,
            &mut m.down_proj,
        ] {
            report.record(lin.quantize(quant.candidates())?);
        }
        Ok(())
    }
}

/// The decoder plus its embedding table and LM head.
#[derive(Debug, Clone)]
pub struct Llama {
    embed_tokens: Tensor,
    layers: Vec<DecoderLayer>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: LlamaRope,
    cfg: LlamaConfig,
}

impl Llama {
    /// `vb` points at the decoder (`model.language_model` in PLM, `model` in a plain Llama checkpoint) and
    /// `vb_root` at the level holding `lm_head`.
    pub fn new(cfg: &LlamaConfig, vb: VarBuilder, vb_root: VarBuilder) -> Result<Self> {
        Ok(Self::new_quantized(cfg, vb, vb_root, Quant::None)?.0)
    }

    /// [`Llama::new`] quantizing as it loads (see [`Llama::quantize`]): each layer's linears are quantized
    /// before the next layer is read, so the dense compute-dtype copy of the decoder never exists as a whole
    /// and the load peak stays near the quantized size. Same result as `new` followed by `quantize`.
    pub fn new_quantized(
        cfg: &LlamaConfig,
        vb: VarBuilder,
        vb_root: VarBuilder,
        quant: Quant,
    ) -> Result<(Self, QuantReport)> {
        cfg.validate().map_err(candle_core::Error::wrap)?;
        let mut report = QuantReport::default();
        let embed_tokens = vb.get((cfg.vocab_size, cfg.hidden_size), "embed_tokens.weight")?;
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| {
                let mut layer = DecoderLayer::new(cfg, vb.pp("layers").pp(i))?;
                layer.quantize(quant, &mut report)?;
                Ok(layer)
            })
            .collect::<Result<Vec<_>>>()?;
        let norm = RmsNorm::new(cfg.hidden_size, cfg.rms_norm_eps, vb.pp("norm"))?;
        // Tied checkpoints (PLM/GAR-1B) carry no lm_head.weight: reuse the embedding matrix.
        let mut lm_head = if !cfg.tie_word_embeddings && vb_root.contains_tensor("lm_head.weight") {
            Linear::new(
                cfg.hidden_size,
                cfg.vocab_size,
                false,
                vb_root.pp("lm_head"),
            )?
        } else {
            Linear::from_weight(embed_tokens.clone(), None)
        };
        if !quant.is_none() {
            report.record(lm_head.quantize(quant.head_candidates())?);
        }
        let rope = LlamaRope::new(cfg, vb.device())?;
        let model = Self {
            embed_tokens,
            layers,
            norm,
            lm_head,
            rope,
            cfg: cfg.clone(),
        };
        Ok((model, report))
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        self.embed_tokens.device()
    }

    /// Compute dtype of the activations.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.dtype()
    }

    /// A fresh cache sized for `capacity` positions (it grows beyond that if needed).
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        KvCache::new(self.layers.len(), capacity)
    }

    /// Token embeddings `(1, len, hidden)`.
    pub fn embed(&self, ids: &[u32]) -> Result<Tensor> {
        let ids = Tensor::new(ids, self.device())?;
        self.embed_ids(&ids)?.unsqueeze(0)
    }

    /// Embedding rows for a 1-D u32 id tensor: `(len, hidden)`.
    pub fn embed_ids(&self, ids: &Tensor) -> Result<Tensor> {
        let vocab = self.cfg.vocab_size;
        if let Ok(max) = ids.max(0).and_then(|m| m.to_scalar::<u32>()) {
            if max as usize >= vocab {
                candle_core::bail!("token id {max} out of range for vocab size {vocab}");
            }
        }
        self.embed_tokens.index_select(ids, 0)
    }

    /// Runs `embeds` `(b, t, hidden)` at positions `start..start+t`, appending to `cache`, which must hold
    /// exactly `start` positions. Returns final-norm hidden states `(b, t, hidden)` for every position.
    pub fn forward(&self, embeds: &Tensor, start: usize, cache: &mut KvCache) -> Result<Tensor> {
        if cache.seq_len() != start {
            candle_core::bail!(
                "kv cache holds {} positions but the input starts at position {start}",
                cache.seq_len()
            );
        }
        if cache.num_layers() != self.layers.len() {
            candle_core::bail!(
                "kv cache has {} layers, the model {}",
                cache.num_layers(),
                self.layers.len()
            );
        }
        let t = embeds.dim(1)?;
        let mut x = embeds.to_dtype(self.dtype())?;
        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.input_layernorm.forward(&x)?;
            x = (x + layer.self_attn.forward(&h, &self.rope, start, i, cache)?)?;
            let h = layer.post_attention_layernorm.forward(&x)?;
            x = (x + layer.mlp.forward(&h)?)?;
        }
        cache.advance(t);
        self.norm.forward(&x)
    }

    /// LM-head logits in f32 for hidden states `(…, hidden)` → `(…, vocab)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.lm_head.forward(hidden)?.to_dtype(DType::F32)
    }

    /// Logits of the last position of `hidden` `(b, t, hidden)` → `(b, vocab)`.
    pub fn last_logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let t = hidden.dim(1)?;
        self.logits(&hidden.narrow(1, t - 1, 1)?.squeeze(1)?)
    }

    /// Quantizes the decoder's linear layers (attention and MLP projections, then the LM head) in place,
    /// one at a time so only one dense weight is transient. The embedding table stays dense (it is gathered,
    /// not multiplied); a tied LM head gets its own quantized copy. `Quant::None` changes nothing.
    pub fn quantize(&mut self, quant: Quant) -> Result<QuantReport> {
        let mut report = QuantReport::default();
        if quant.is_none() {
            return Ok(report);
        }
        for layer in &mut self.layers {
            layer.quantize(quant, &mut report)?;
        }
        report.record(self.lm_head.quantize(quant.head_candidates())?);
        Ok(report)
    }

    /// The operands of every layer's attention products ([`Products`]; prefill is where it matters, a
    /// single decoded query keeps its f32 path).
    pub fn set_attention_products(&mut self, products: Products) {
        for layer in &mut self.layers {
            layer.self_attn.products = products;
        }
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.cfg.hidden_size
    }
}
