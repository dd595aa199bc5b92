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

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

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
        self.eos_token_id.as_ref().map(EosTokenId::ids).unwrap_or_default()
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
        if self.num_attention_heads % self.num_kv_heads() != 0 {
            return unsupported(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {}",
                self.num_attention_heads,
                self.num_kv_heads()
            ));
        }
        if self.head_dim() % 2 != 0 {
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

/// Perception Encoder ViT (timm `Eva` with `attn_type='rope'`), resolved from architecture + `model_args`.
#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    pub architecture: String,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    /// `int(embed_dim * mlp_ratio)` as timm computes it.
    pub mlp_hidden: usize,
    pub patch_size: usize,
    /// (height, width) of one tile.
    pub img_size: (usize, usize),
    /// A learned class token is prepended (PE-L) or not (PE-G).
    pub class_token: bool,
    /// Grid offset of the 2D RoPE: 1.0 for PE-L, 0.0 for PE-G (spec §3.1).
    pub rope_grid_offset: f32,
    /// `'xy'` (x/column angles first) or `'ij'`.
    pub rope_grid_xy: bool,
    /// timm `ref_feat_shape` (rows, cols): positions are rescaled by `ref / feat`.
    pub ref_feat_shape: Option<(usize, usize)>,
    pub rope_temperature: f32,
    /// LayerScale (`gamma_1`, `gamma_2`) is present when timm `init_values` is set.
    pub layer_scale: bool,
    pub use_pre_transformer_norm: bool,
    pub use_post_transformer_norm: bool,
    pub use_abs_pos_emb: bool,
    pub qkv_bias: bool,
    pub norm_eps: f64,
    /// `num_features` from the HF vision config (GAR's mask conv width).
    pub num_features: usize,
}

impl VisionConfig {
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// Patch grid (rows, cols) of one tile.
    pub fn grid(&self) -> (usize, usize) {
        (self.img_size.0 / self.patch_size, self.img_size.1 / self.patch_size)
    }

    pub fn num_prefix_tokens(&self) -> usize {
        usize::from(self.class_token)
    }

    /// Resolve a timm architecture name and its `model_args` overrides (TF `TimmWrapperConfig` →
    /// `timm.create_model(architecture, **model_args)`).
    pub fn from_timm(
        architecture: &str,
        model_args: &BTreeMap<String, Value>,
        num_features: Option<usize>,
    ) -> Result<Self, ConfigError> {
        let Preset {
            config: mut c,
            mut mlp_ratio,
            mut post_norm,
            mut global_pool,
            mut fc_norm,
        } = timm_preset(architecture)?;
        for (key, value) in model_args {
            let bad = || ConfigError::Invalid(format!("vision model_args.{key} = {value}"));
            let as_usize = || value.as_u64().map(|v| v as usize).ok_or_else(bad);
            let as_bool = || value.as_bool().ok_or_else(bad);
            let as_pair = || -> Result<(usize, usize), ConfigError> {
                match value {
                    Value::Number(n) => n.as_u64().map(|v| (v as usize, v as usize)).ok_or_else(bad),
                    Value::Array(a) if a.len() == 2 => {
                        let r = a[0].as_u64().ok_or_else(bad)? as usize;
                        let c = a[1].as_u64().ok_or_else(bad)? as usize;
                        Ok((r, c))
                    }
                    _ => Err(bad()),
                }
            };
            match key.as_str() {
                "embed_dim" => c.embed_dim = as_usize()?,
                "depth" => c.depth = as_usize()?,
                "num_heads" => c.num_heads = as_usize()?,
                "mlp_ratio" => mlp_ratio = value.as_f64().ok_or_else(bad)?,
                "patch_size" => c.patch_size = as_usize()?,
                "img_size" => c.img_size = as_pair()?,
                "class_token" => c.class_token = as_bool()?,
                "rope_grid_offset" => c.rope_grid_offset = value.as_f64().ok_or_else(bad)? as f32,
                "rope_grid_indexing" => {
                    c.rope_grid_xy = match value.as_str() {
                        Some("xy") => true,
                        Some("ij") => false,
                        _ => return Err(bad()),
                    }
                }
                "ref_feat_shape" => {
                    c.ref_feat_shape = if value.is_null() { None } else { Some(as_pair()?) }
                }
                "rope_temperature" => c.rope_temperature = value.as_f64().ok_or_else(bad)? as f32,
                "init_values" => c.layer_scale = !value.is_null(),
                "use_pre_transformer_norm" => c.use_pre_transformer_norm = as_bool()?,
                "use_post_transformer_norm" => post_norm = value.as_bool(),
                "use_fc_norm" => fc_norm = value.as_bool(),
                "global_pool" => global_pool = value.as_str().ok_or_else(bad)?.to_string(),
                "use_abs_pos_emb" => c.use_abs_pos_emb = as_bool()?,
                "qkv_bias" => c.qkv_bias = as_bool()?,
                // Only affect the pooling head / classifier, which GAR never runs (global_pool="").
                "num_classes" | "attn_pool_num_heads" | "attn_pool_mlp_ratio" | "dynamic_img_size" | "dynamic_img_pad" | "drop_rate"
                | "drop_path_rate" | "pos_drop_rate" | "proj_drop_rate" | "attn_drop_rate"
                | "patch_drop_rate" | "in_chans" | "head_init_scale" | "pretrained" => {}
                // Structure changes we do not implement: refuse instead of computing something else.
                "attn_type" if value.as_str() == Some("rope") => {}
                "use_rot_pos_emb" if value.as_bool() == Some(true) => {}
                "no_embed_class" | "num_reg_tokens" | "swiglu_mlp" | "scale_mlp"
                | "scale_attn_inner" | "qkv_fused" | "use_post_norm" | "attn_type"
                | "use_rot_pos_emb" | "rope_type" | "rope_mixed_mode" => {
                    let harmless = matches!(
                        (key.as_str(), value),
                        ("no_embed_class", Value::Bool(false))
                            | ("swiglu_mlp", Value::Bool(false))
                            | ("scale_mlp", Value::Bool(false))
                            | ("scale_attn_inner", Value::Bool(false))
                            | ("qkv_fused", Value::Bool(true))
                            | ("use_post_norm", Value::Bool(false))
                            | ("rope_mixed_mode", Value::Bool(false))
                    ) || (key == "num_reg_tokens" && value.as_u64() == Some(0))
                        || (key == "rope_type" && value.as_str() == Some("cat"));
                    if !harmless {
                        return Err(ConfigError::Unsupported(format!(
                            "vision model_args.{key} = {value}"
                        )));
                    }
                }
                _ => {
                    return Err(ConfigError::Unsupported(format!(
                        "unknown vision model_args key {key:?} (value {value})"
                    )))
                }
            }
        }
        // timm Eva.__init__: fc_norm defaults to (global_pool == 'avg'), the final norm to !fc_norm.
        let fc_norm = fc_norm.unwrap_or(global_pool == "avg");
        c.use_post_transformer_norm = post_norm.unwrap_or(!fc_norm);
        c.mlp_hidden = (c.embed_dim as f64 * mlp_ratio) as usize;
        c.num_features = num_features.unwrap_or(c.embed_dim);
        if c.embed_dim % c.num_heads != 0 || c.head_dim() % 4 != 0 {
            return Err(ConfigError::Unsupported(format!(
                "vision head_dim {} must be a multiple of 4 (2D RoPE)",
                c.embed_dim as f64 / c.num_heads as f64
            )));
        }
        if c.img_size.0 % c.patch_size != 0 || c.img_size.1 % c.patch_size != 0 {
            return Err(ConfigError::Invalid(format!(
                "img_size {:?} not a multiple of patch_size {}",
                c.img_size, c.patch_size
            )));
        }
        Ok(c)
    }
}

struct Preset {
    config: VisionConfig,
    mlp_ratio: f64,
    post_norm: Option<bool>,
    global_pool: String,
    fc_norm: Option<bool>,
}

/// timm `eva.py` registrations (1.0.19) used by PLM/GAR. Eva defaults: img 224, qkv_bias, class token,
/// abs pos-embed, no layer scale, rope temperature 1e4, global_pool 'avg'.
fn timm_preset(architecture: &str) -> Result<Preset, ConfigError> {
    // Fields shared by every PE registration: rope attention, pre-norm, LayerNorm eps 1e-5, 'xy' grid.
    let pe = VisionConfig {
        architecture: architecture.to_string(),
        embed_dim: 768,
        depth: 12,
        num_heads: 12,
        mlp_hidden: 0,
        patch_size: 16,
        img_size: (224, 224),
        class_token: true,
        rope_grid_offset: 0.0,
        rope_grid_xy: true,
        ref_feat_shape: None,
        rope_temperature: 10000.0,
        layer_scale: false,
        use_pre_transformer_norm: true,
        use_post_transformer_norm: false,
        use_abs_pos_emb: true,
        qkv_bias: true,
        norm_eps: 1e-5,
        num_features: 0,
    };
    let gigantic = |depth, layer_scale| VisionConfig {
        embed_dim: 1536,
        depth,
        num_heads: 16,
        patch_size: 14,
        class_token: false,
        ref_feat_shape: Some((32, 32)),
        layer_scale,
        ..pe.clone()
    };
    let large = |depth, layer_scale, ref_shape| VisionConfig {
        embed_dim: 1024,
        depth,
        num_heads: 16,
        patch_size: 14,
        rope_grid_offset: 1.0,
        ref_feat_shape: Some(ref_shape),
        layer_scale,
        ..pe.clone()
    };
    const G_RATIO: f64 = 8960.0 / 1536.0;
    // core_* use an attention-pool head ('map') and leave the final norm to Eva's default;
    // lang_*/spatial_* disable both norms explicitly.
    let core = |config, mlp_ratio| Preset {
        config,
        mlp_ratio,
        post_norm: None,
        global_pool: "map".into(),
        fc_norm: None,
    };
    let plain = |config, mlp_ratio| Preset {
        config,
        mlp_ratio,
        post_norm: Some(false),
        global_pool: "avg".into(),
        fc_norm: Some(false),
    };
    Ok(match architecture {
        "vit_pe_core_large_patch14_336" => core(large(24, false, (24, 24)), 4.0),
        "vit_pe_lang_large_patch14_448" => plain(large(23, true, (32, 32)), 4.0),
        "vit_pe_spatial_large_patch14_448" => plain(large(24, false, (32, 32)), 4.0),
        "vit_pe_core_gigantic_patch14_448" => core(gigantic(50, false), G_RATIO),
        "vit_pe_lang_gigantic_patch14_448" => plain(gigantic(47, true), G_RATIO),
        "vit_pe_spatial_gigantic_patch14_448" => plain(gigantic(50, true), G_RATIO),
        other => {
            return Err(ConfigError::Unsupported(format!(
                "vision architecture {other:?} (supported: vit_pe_{{core,lang,spatial}}_{{large,gigantic}}_*)"
            )))
        }
    })
}

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
        let model_type = value.get("model_type").and_then(Value::as_str).unwrap_or("");
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
        (gh / self.projector_pooling_ratio, gw / self.projector_pooling_ratio)
    }
}
