//! Llama 3 decoder configuration (transformers `LlamaConfig`), read from `text_config`.

use serde::Deserialize;

use crate::error::ConfigError;

/// Llama 3 decoder configuration (transformers `LlamaConfig`; defaults are transformers').
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (no GQA), as in transformers.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<EosTokenId>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
}

// transformers LlamaConfig.__init__ defaults.
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_max_position_embeddings() -> usize {
    2048
}
fn default_vocab_size() -> usize {
    32000
}
fn default_hidden_act() -> String {
    "silu".to_string()
}

/// `eos_token_id` is either one id or a list in HF configs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum EosTokenId {
    One(u32),
    Many(Vec<u32>),
}

impl EosTokenId {
    pub fn ids(&self) -> Vec<u32> {
        match self {
            Self::One(id) => vec![*id],
            Self::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` block (transformers `modeling_rope_utils`). Only `default` and `llama3` are supported.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RopeScaling {
    /// `rope_type` (new key) or `type` (legacy key).
    #[serde(alias = "type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl LlamaConfig {
    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(EosTokenId::ids)
            .unwrap_or_default()
    }

    /// Rejects configurations this implementation does not compute (rather than computing them wrongly).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let unsupported = |what: String| Err(ConfigError::Unsupported(what));
        if self.attention_bias || self.mlp_bias {
            return unsupported("text_config: attention_bias / mlp_bias = true".into());
        }
        if self.hidden_act != "silu" {
            return unsupported(format!("text_config.hidden_act = {:?}", self.hidden_act));
        }
        if !self.num_attention_heads.is_multiple_of(self.num_kv_heads()) {
            return unsupported(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_kv_heads()
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return unsupported(format!("odd head_dim {}", self.head_dim()));
        }
        if let Some(rs) = &self.rope_scaling {
            match rs.rope_type.as_str() {
                "default" => {}
                "llama3" => {
                    if rs.factor.is_none()
                        || rs.low_freq_factor.is_none()
                        || rs.high_freq_factor.is_none()
                        || rs.original_max_position_embeddings.is_none()
                    {
                        return Err(ConfigError::Invalid(
                            "rope_scaling llama3 needs factor, low_freq_factor, high_freq_factor and \
                             original_max_position_embeddings"
                                .into(),
                        ));
                    }
                }
                other => return unsupported(format!("rope_scaling.rope_type = {other:?}")),
            }
        }
        Ok(())
    }
}
