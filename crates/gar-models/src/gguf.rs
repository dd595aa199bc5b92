//! Llama checkpoints from llama.cpp GGUF files, imported the way transformers' GGUF loader does
//! (`modeling_gguf_pytorch_utils.py`): every tensor dequantized to f32, GGUF names mapped to HF names, the
//! q/k row permutation llama.cpp applies at conversion undone, the config read from the metadata, and the LM
//! head tied when the file has no `output.weight`.
//!
//! Used to check the decoder against transformers on real weights (SmolLM2-135M), not for serving GAR.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::{DType, Device, Tensor};

use crate::config::{EosTokenId, LlamaConfig};
use crate::error::LoadError;
use crate::llama::Llama;
use crate::weights::{load_error, Checkpoint};

fn files_err(path: &Path, message: impl std::fmt::Display) -> LoadError {
    LoadError::Files {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// GGUF tensor name → HF Llama name (`None` for tensors transformers drops, e.g. `rope_freqs`).
pub fn hf_name(gguf: &str) -> Option<String> {
    let top = match gguf {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(t) = top {
        return Some(t.to_string());
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, tail) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, suffix) = tail.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's q/k permutation (transformers `_reverse_permute_weights`): within each head, rows are
/// stored interleaved (pairs); HF's half-split RoPE wants even rows first, then odd rows.
pub fn reverse_permute(w: &Tensor, n_head: usize) -> candle_core::Result<Tensor> {
    let dims = w.dims().to_vec();
    let rows = dims[0];
    let half = rows / n_head / 2;
    let mut split = vec![n_head, half, 2];
    split.extend_from_slice(&dims[1..]);
    w.reshape(split)?
        .transpose(1, 2)?
        .contiguous()?
        .reshape(dims)
}

fn meta<'a>(c: &'a Content, key: &str) -> Option<&'a Value> {
    c.metadata.get(key)
}

fn meta_usize(c: &Content, path: &Path, key: &str) -> Result<usize, LoadError> {
    let v = meta(c, key).ok_or_else(|| files_err(path, format!("GGUF metadata {key} missing")))?;
    v.to_u64()
        .map(|x| x as usize)
        .or_else(|_| v.to_u32().map(|x| x as usize))
        .map_err(|e| files_err(path, format!("GGUF metadata {key}: {e}")))
}

fn meta_f64(c: &Content, key: &str) -> Option<f64> {
    meta(c, key).and_then(|v| v.to_f32().map(f64::from).or_else(|_| v.to_f64()).ok())
}

fn meta_u32(c: &Content, key: &str) -> Option<u32> {
    meta(c, key).and_then(|v| v.to_u32().ok())
}

/// Reads a `general.architecture = "llama"` GGUF: its [`LlamaConfig`] and a checkpoint with HF names
/// (`model.*`, `lm_head.weight` when untied), all f32.
pub fn load_llama_gguf(
    path: impl AsRef<Path>,
) -> Result<(LlamaConfig, Arc<Checkpoint>), LoadError> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| files_err(path, e))?;
    let content = Content::read(&mut file).map_err(|e| files_err(path, e))?;
    let arch = meta(&content, "general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if arch != "llama" {
        return Err(files_err(
            path,
            format!("GGUF architecture {arch:?}, expected \"llama\""),
        ));
    }
    let key = |k: &str| format!("llama.{k}");
    let num_heads = meta_usize(&content, path, &key("attention.head_count"))?;
    let num_kv = meta_usize(&content, path, &key("attention.head_count_kv")).unwrap_or(num_heads);
    let vocab_size = match meta_usize(&content, path, &key("vocab_size")) {
        Ok(v) => v,
        Err(_) => meta(&content, "tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(Vec::len)
            .ok_or_else(|| files_err(path, "GGUF has neither llama.vocab_size nor a token list"))?,
    };
    let tied = !content.tensor_infos.contains_key("output.weight");
    let cfg = LlamaConfig {
        hidden_size: meta_usize(&content, path, &key("embedding_length"))?,
        intermediate_size: meta_usize(&content, path, &key("feed_forward_length"))?,
        num_hidden_layers: meta_usize(&content, path, &key("block_count"))?,
        num_attention_heads: num_heads,
        num_key_value_heads: Some(num_kv),
        head_dim: None,
        rms_norm_eps: meta_f64(&content, &key("attention.layer_norm_rms_epsilon")).unwrap_or(1e-6),
        rope_theta: meta_f64(&content, &key("rope.freq_base")).unwrap_or(10000.0),
        rope_scaling: None,
        max_position_embeddings: meta_usize(&content, path, &key("context_length")).unwrap_or(2048),
        vocab_size,
        tie_word_embeddings: tied,
        bos_token_id: meta_u32(&content, "tokenizer.ggml.bos_token_id"),
        eos_token_id: meta_u32(&content, "tokenizer.ggml.eos_token_id").map(EosTokenId::One),
        attention_bias: false,
        mlp_bias: false,
        hidden_act: "silu".into(),
    };
    cfg.validate()?;
    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let Some(hf) = hf_name(name) else { continue };
        let q = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| files_err(path, format!("tensor {name}: {e}")))?;
        let mut t = q
            .dequantize(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(|e| files_err(path, format!("tensor {name}: {e}")))?;
        let permute_heads = if name.ends_with("attn_q.weight") {
            Some(num_heads)
        } else if name.ends_with("attn_k.weight") {
            Some(num_kv)
        } else {
            None
        };
        if let Some(n) = permute_heads {
            t = reverse_permute(&t, n).map_err(|e| files_err(path, e))?;
        }
        tensors.insert(hf, t);
    }
    Ok((
        cfg,
        Arc::new(Checkpoint::from_tensors(
            tensors,
            path.display().to_string(),
        )),
    ))
}

/// Builds a [`Llama`] over a plain HF Llama checkpoint layout (`model.*`, `lm_head.weight`).
pub fn llama_from_checkpoint(
    cfg: &LlamaConfig,
    ckpt: &Arc<Checkpoint>,
    dtype: DType,
    device: &Device,
) -> Result<Llama, LoadError> {
    let vb = ckpt.var_builder(dtype, device);
    Llama::new(cfg, vb.pp("model"), vb).map_err(|e| load_error(ckpt, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_like_transformers() {
        assert_eq!(
            hf_name("blk.3.attn_q.weight").as_deref(),
            Some("model.layers.3.self_attn.q_proj.weight")
        );
        assert_eq!(
            hf_name("blk.0.ffn_norm.weight").as_deref(),
            Some("model.layers.0.post_attention_layernorm.weight")
        );
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    #[test]
    fn reverse_permute_deinterleaves_each_head() -> candle_core::Result<()> {
        // 2 heads × 4 rows, 1 column: stored rows per head [a0, b0, a1, b1] → [a0, a1, b0, b1].
        let w = Tensor::new(
            &[[0f32], [1.], [2.], [3.], [10.], [11.], [12.], [13.]],
            &Device::Cpu,
        )?;
        let r = reverse_permute(&w, 2)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(r, vec![0., 2., 1., 3., 10., 12., 11., 13.]);
        Ok(())
    }
}
