//! Vision tower configuration: a timm architecture name plus `model_args` overrides (HF `TimmWrapperConfig`),
//! resolved to the registered defaults of timm 1.0.19 `eva.py`.

use serde_json::Value;
use std::collections::BTreeMap;

use crate::error::ConfigError;

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
        (
            self.img_size.0 / self.patch_size,
            self.img_size.1 / self.patch_size,
        )
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
                    Value::Number(n) => {
                        n.as_u64().map(|v| (v as usize, v as usize)).ok_or_else(bad)
                    }
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
                    c.ref_feat_shape = if value.is_null() {
                        None
                    } else {
                        Some(as_pair()?)
                    }
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
                "num_classes"
                | "attn_pool_num_heads"
                | "attn_pool_mlp_ratio"
                | "dynamic_img_size"
                | "dynamic_img_pad"
                | "drop_rate"
                | "drop_path_rate"
                | "pos_drop_rate"
                | "proj_drop_rate"
                | "attn_drop_rate"
                | "patch_drop_rate"
                | "in_chans"
                | "head_init_scale"
                | "pretrained" => {}
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
