//! Model configuration, read from a HF `config.json` (spec §1).
//!
//! Two layouts are accepted:
//! * a GAR checkpoint (`model_type: "GAR"`): the Perception-LM config sits under `mllm_config`, GAR's own fields
//!   (`prompt_numbers`, `crop_tokens_ids`, ...) at the top, and every PLM weight gains the `mllm.` prefix;
//! * a plain Perception-LM checkpoint (`model_type: "perception_lm"`): no mask conv and no feature replay.
//!
//! The raw serde structs mirror the JSON and copy the transformers defaults; [`GarConfig`] is the normalized
//! form the model code reads. The vision tower is described, as in HF, by a timm architecture name plus
//! `model_args` overrides; [`VisionConfig::from_timm`] resolves the name to timm's registered defaults.

mod text;
mod vision;

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

use crate::error::ConfigError;
pub use text::{EosTokenId, LlamaConfig, RopeScaling};
pub use vision::VisionConfig;

/// GAR's own fields (spec §1.4). Absent for plain Perception-LM checkpoints.
#[derive(Debug, Clone, PartialEq)]
pub struct GarRegionConfig {
    /// Number of region prompts; also the label value of "no region" (background) in the label map.
    pub prompt_numbers: u32,
    /// Crop placeholder token of `<PromptK>` at index K.
    pub crop_tokens_ids: Vec<u32>,
    pub kernel_size: (usize, usize),
    pub mask_path_embedding_out_channels: usize,
}

/// Normalized model configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct GarConfig {
    pub vision: VisionConfig,
    pub text: LlamaConfig,
    pub projector_pooling_ratio: usize,
    /// Drop the CLS output before the projector (must agree with `vision.class_token`).
    pub vision_use_cls_token: bool,
    pub image_token_id: u32,
    /// `Some` for GAR checkpoints (mask conv + feature replay), `None` for plain Perception-LM.
    pub gar: Option<GarRegionConfig>,
    /// `VarBuilder` segment holding the PLM weights: `"mllm"` for GAR, `""` (the root) for Perception-LM.
    pub weight_prefix: String,
}

#[derive(Deserialize)]
struct RawPlm {
    vision_config: RawVision,
    text_config: LlamaConfig,
    #[serde(default = "default_true")]
    vision_use_cls_token: bool,
    #[serde(default = "default_one")]
    projector_pooling_ratio: usize,
    #[serde(default = "default_image_token_id")]
    image_token_id: u32,
    #[serde(default)]
    tie_word_embeddings: Option<bool>,
}

#[derive(Deserialize)]
struct RawVision {
    architecture: String,
    #[serde(default)]
    model_args: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    num_features: Option<usize>,
}

#[derive(Deserialize)]
struct RawGar {
    mllm_config: RawPlm,
    #[serde(default = "default_prompt_numbers")]
    prompt_numbers: u32,
    #[serde(default = "default_crop_tokens")]
    crop_tokens_ids: Vec<u32>,
    #[serde(default)]
    kernel_size: Option<Value>,
    #[serde(default)]
    mask_path_embedding_out_channels: Option<usize>,
}

fn default_true() -> bool {
    true
}
fn default_one() -> usize {
    1
}
// PerceptionLMConfig.image_token_id default.
fn default_image_token_id() -> u32 {
    128002
}
// GARConfig defaults (configuration_gar.py).
fn default_prompt_numbers() -> u32 {
    5
}
fn default_crop_tokens() -> Vec<u32> {
    vec![128004, 128005, 128008, 128010, 128011]
}

impl GarConfig {
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json_str(&text)
    }

    pub fn from_json_str(text: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(text).map_err(ConfigError::Json)?;
        let model_type = value
            .get("model_type")
            .and_then(Value::as_str)
            .unwrap_or("");
        match model_type {
            "GAR" | "gar" => {
                let raw: RawGar = serde_json::from_value(value).map_err(ConfigError::Json)?;
                let mut cfg = Self::from_plm(raw.mllm_config, "mllm")?;
                let kernel_size = match raw.kernel_size {
                    None => (cfg.vision.patch_size, cfg.vision.patch_size),
                    Some(Value::Number(n)) => {
                        let k = n.as_u64().unwrap_or(0) as usize;
                        (k, k)
                    }
                    Some(Value::Array(a)) if a.len() == 2 => (
                        a[0].as_u64().unwrap_or(0) as usize,
                        a[1].as_u64().unwrap_or(0) as usize,
                    ),
                    Some(other) => {
                        return Err(ConfigError::Invalid(format!("kernel_size = {other}")))
                    }
                };
                // The mask conv must tile exactly like the patch embedding so the two can be summed.
                if kernel_size != (cfg.vision.patch_size, cfg.vision.patch_size) {
                    return Err(ConfigError::Unsupported(format!(
                        "GAR kernel_size {kernel_size:?} differs from the vision patch size {}",
                        cfg.vision.patch_size
                    )));
                }
                let channels = raw
                    .mask_path_embedding_out_channels
                    .unwrap_or(cfg.vision.num_features);
                if channels != cfg.vision.embed_dim {
                    return Err(ConfigError::Invalid(format!(
                        "mask_path_embedding_out_channels {channels} != vision embed_dim {}",
                        cfg.vision.embed_dim
                    )));
                }
                cfg.gar = Some(GarRegionConfig {
                    prompt_numbers: raw.prompt_numbers,
                    crop_tokens_ids: raw.crop_tokens_ids,
                    kernel_size,
                    mask_path_embedding_out_channels: channels,
                });
                Ok(cfg)
            }
            "perception_lm" => {
                let raw: RawPlm = serde_json::from_value(value).map_err(ConfigError::Json)?;
                Self::from_plm(raw, "")
            }
            other => Err(ConfigError::Unsupported(format!(
                "model_type {other:?} (expected \"GAR\" or \"perception_lm\")"
            ))),
        }
    }

    fn from_plm(raw: RawPlm, prefix: &str) -> Result<Self, ConfigError> {
        let vision = VisionConfig::from_timm(
            &raw.vision_config.architecture,
            &raw.vision_config.model_args.unwrap_or_default(),
            raw.vision_config.num_features,
        )?;
        let mut text = raw.text_config;
        // PerceptionLMConfig: a top-level tie flag, when given, overrides the text config's.
        if let Some(tie) = raw.tie_word_embeddings {
            text.tie_word_embeddings = tie;
        }
        text.validate()?;
        if raw.vision_use_cls_token && !vision.class_token {
            return Err(ConfigError::Invalid(
                "vision_use_cls_token is true but the vision tower has no class token".into(),
            ));
        }
        let (gh, gw) = vision.grid();
        let r = raw.projector_pooling_ratio;
        if r == 0 || gh % r != 0 || gw % r != 0 {
            return Err(ConfigError::Unsupported(format!(
                "projector_pooling_ratio {r} does not divide the {gh}x{gw} patch grid"
            )));
        }
        Ok(Self {
            vision,
            text,
            projector_pooling_ratio: r,
            vision_use_cls_token: raw.vision_use_cls_token,
            image_token_id: raw.image_token_id,
            gar: None,
            weight_prefix: prefix.to_string(),
        })
    }

    /// Tokens one tile contributes after pooling (256 for 448² tiles, patch 14, ratio 2).
    pub fn tokens_per_tile(&self) -> usize {
        let (gh, gw) = self.vision.grid();
        (gh / self.projector_pooling_ratio) * (gw / self.projector_pooling_ratio)
    }

    /// Side of the pooled per-tile feature grid (rows, cols).
    pub fn pooled_grid(&self) -> (usize, usize) {
        let (gh, gw) = self.vision.grid();
        (
            gh / self.projector_pooling_ratio,
            gw / self.projector_pooling_ratio,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PLM-1B as stored in the HF mirror (spec §1), trimmed to the fields that matter.
    const PLM_1B: &str = r#"{
      "model_type": "perception_lm", "projector_pooling_ratio": 2, "vision_use_cls_token": true,
      "image_token_id": 128002,
      "vision_config": {"architecture": "vit_pe_core_large_patch14_336", "num_features": 1024,
        "model_args": {"embed_dim": 1024, "depth": 23, "img_size": [448, 448], "global_pool": "",
          "use_post_transformer_norm": false, "init_values": 0.1, "ref_feat_shape": [32, 32]}},
      "text_config": {"model_type": "llama", "hidden_size": 2048, "intermediate_size": 8192,
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "max_position_embeddings": 11520,
        "vocab_size": 128256, "tie_word_embeddings": true, "bos_token_id": 128000,
        "eos_token_id": [128001, 128009],
        "rope_scaling": {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
          "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    }"#;

    #[test]
    fn plm_1b_resolves_to_pe_lang_large() {
        let c = GarConfig::from_json_str(PLM_1B).unwrap();
        let v = &c.vision;
        assert_eq!(
            (v.embed_dim, v.depth, v.num_heads, v.mlp_hidden),
            (1024, 23, 16, 4096)
        );
        assert_eq!(
            (v.patch_size, v.img_size, v.grid()),
            (14, (448, 448), (32, 32))
        );
        assert!(v.class_token && v.layer_scale && v.use_pre_transformer_norm);
        assert!(!v.use_post_transformer_norm && v.rope_grid_xy);
        assert_eq!(
            (v.rope_grid_offset, v.ref_feat_shape),
            (1.0, Some((32, 32)))
        );
        assert_eq!(c.tokens_per_tile(), 256);
        assert!(c.gar.is_none() && c.weight_prefix.is_empty());
        assert_eq!(c.text.num_kv_heads(), 8);
        assert_eq!(c.text.eos_token_ids(), vec![128001, 128009]);
    }

    #[test]
    fn plm_8b_vision_is_gigantic_without_cls() {
        let json = PLM_1B
            .replace(
                "vit_pe_core_large_patch14_336",
                "vit_pe_core_gigantic_patch14_448",
            )
            .replace(
                "\"embed_dim\": 1024, \"depth\": 23",
                "\"embed_dim\": 1536, \"depth\": 47",
            )
            .replace(
                "\"vision_use_cls_token\": true",
                "\"vision_use_cls_token\": false",
            );
        let c = GarConfig::from_json_str(&json).unwrap();
        let v = &c.vision;
        assert_eq!(
            (v.embed_dim, v.depth, v.mlp_hidden, v.head_dim()),
            (1536, 47, 8960, 96)
        );
        assert!(!v.class_token);
        assert_eq!(v.rope_grid_offset, 0.0);
    }

    #[test]
    fn gar_wraps_plm_and_rejects_inconsistencies() {
        let plm: Value = serde_json::from_str(PLM_1B).unwrap();
        let gar = serde_json::json!({
            "model_type": "GAR", "mllm_config": plm, "prompt_numbers": 5,
            "crop_tokens_ids": [128004, 128005, 128008, 128010, 128011], "kernel_size": [14, 14],
            "mask_path_embedding_out_channels": 1024
        });
        let c = GarConfig::from_json_str(&gar.to_string()).unwrap();
        let g = c.gar.as_ref().unwrap();
        assert_eq!((g.prompt_numbers, g.kernel_size), (5, (14, 14)));
        assert_eq!(c.weight_prefix, "mllm");

        let mut bad = gar.clone();
        bad["mask_path_embedding_out_channels"] = 1280.into();
        assert!(matches!(
            GarConfig::from_json_str(&bad.to_string()),
            Err(ConfigError::Invalid(_))
        ));
        let mut bad = gar.clone();
        bad["mllm_config"]["vision_config"]["model_args"]["swiglu_mlp"] = true.into();
        assert!(matches!(
            GarConfig::from_json_str(&bad.to_string()),
            Err(ConfigError::Unsupported(_))
        ));
        let mut bad = gar;
        bad["mllm_config"]["text_config"]["rope_scaling"]["rope_type"] = "yarn".into();
        let err = GarConfig::from_json_str(&bad.to_string()).unwrap_err();
        assert!(err.to_string().contains("yarn"), "{err}");
        assert!(GarConfig::from_json_str(r#"{"model_type": "llava"}"#).is_err());
    }
}
