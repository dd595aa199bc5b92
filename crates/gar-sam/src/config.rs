//! `SamConfig` as transformers writes it in `config.json` (three sub-configs), with the defaults of
//! `transformers.SamConfig` for anything absent, plus the ViT-B/L/H presets of the original checkpoints
//! (used when a Meta-layout checkpoint comes without a config).

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    pub hidden_size: usize,
    pub output_channels: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_channels: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub layer_norm_eps: f64,
    pub qkv_bias: bool,
    pub mlp_ratio: f64,
    /// `None` means `hidden_size * mlp_ratio`, as in transformers.
    pub mlp_dim: Option<usize>,
    pub use_abs_pos: bool,
    pub use_rel_pos: bool,
    pub window_size: usize,
    pub global_attn_indexes: Vec<usize>,
    pub num_pos_feats: usize,
    pub hidden_act: String,
}

impl Default for VisionConfig {
    fn default() -> Self {
        Self {
            hidden_size: 768,
            output_channels: 256,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            num_channels: 3,
            image_size: 1024,
            patch_size: 16,
            layer_norm_eps: 1e-6,
            qkv_bias: true,
            mlp_ratio: 4.0,
            mlp_dim: None,
            use_abs_pos: true,
            use_rel_pos: true,
            window_size: 14,
            global_attn_indexes: vec![2, 5, 8, 11],
            num_pos_feats: 128,
            hidden_act: "gelu".into(),
        }
    }
}

impl VisionConfig {
    pub fn mlp_dim(&self) -> usize {
        self.mlp_dim
            .unwrap_or((self.hidden_size as f64 * self.mlp_ratio) as usize)
    }
    /// Side of the patch grid (64 for the released models).
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct PromptEncoderConfig {
    pub hidden_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    pub mask_input_channels: usize,
    pub num_point_embeddings: usize,
    pub layer_norm_eps: f64,
}

impl Default for PromptEncoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            image_size: 1024,
            patch_size: 16,
            mask_input_channels: 16,
            num_point_embeddings: 4,
            layer_norm_eps: 1e-6,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct MaskDecoderConfig {
    pub hidden_size: usize,
    pub mlp_dim: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub attention_downsample_rate: usize,
    pub num_multimask_outputs: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    pub layer_norm_eps: f64,
    pub hidden_act: String,
}

impl Default for MaskDecoderConfig {
    fn default() -> Self {
        Self {
            hidden_size: 256,
            mlp_dim: 2048,
            num_hidden_layers: 2,
            num_attention_heads: 8,
            attention_downsample_rate: 2,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            layer_norm_eps: 1e-6,
            hidden_act: "relu".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default)]
pub struct SamConfig {
    pub vision_config: VisionConfig,
    pub prompt_encoder_config: PromptEncoderConfig,
    pub mask_decoder_config: MaskDecoderConfig,
}

impl SamConfig {
    /// `facebook/sam-vit-base` (the transformers defaults).
    pub fn vit_b() -> Self {
        Self::default()
    }

    /// `facebook/sam-vit-large`.
    pub fn vit_l() -> Self {
        let mut c = Self::default();
        c.vision_config.hidden_size = 1024;
        c.vision_config.num_hidden_layers = 24;
        c.vision_config.num_attention_heads = 16;
        c.vision_config.global_attn_indexes = vec![5, 11, 17, 23];
        c
    }

    /// `facebook/sam-vit-huge`, the model the GAR reference uses.
    pub fn vit_h() -> Self {
        let mut c = Self::default();
        c.vision_config.hidden_size = 1280;
        c.vision_config.num_hidden_layers = 32;
        c.vision_config.num_attention_heads = 16;
        c.vision_config.global_attn_indexes = vec![7, 15, 23, 31];
        c
    }

    /// The preset whose encoder has this width and depth (how a config-less Meta checkpoint is recognised).
    pub fn preset_for(hidden_size: usize, layers: usize) -> Option<Self> {
        [Self::vit_b(), Self::vit_l(), Self::vit_h()]
            .into_iter()
            .find(|c| {
                c.vision_config.hidden_size == hidden_size
                    && c.vision_config.num_hidden_layers == layers
            })
    }

    /// Rejects configurations the implementation does not cover, before any weight is read.
    pub fn validate(&self) -> Result<(), String> {
        let v = &self.vision_config;
        let p = &self.prompt_encoder_config;
        let d = &self.mask_decoder_config;
        if v.hidden_act != "gelu" || d.hidden_act != "relu" {
            return Err(format!(
                "unsupported activations (vision {}, decoder {}); SAM uses gelu / relu",
                v.hidden_act, d.hidden_act
            ));
        }
        if v.image_size.checked_rem(v.patch_size) != Some(0) {
            return Err("vision image_size must be a multiple of patch_size".into());
        }
        if v.hidden_size.checked_rem(v.num_attention_heads) != Some(0) {
            return Err("vision num_attention_heads must divide hidden_size".into());
        }
        if v.num_channels != 3 {
            return Err("only 3-channel (RGB) vision encoders are supported".into());
        }
        if p.hidden_size != d.hidden_size
            || v.output_channels != d.hidden_size
            || 2 * v.num_pos_feats != d.hidden_size
        {
            return Err(format!(
                "inconsistent widths: vision output_channels {}, 2·num_pos_feats {}, prompt hidden {}, \
                 decoder hidden {} must all be equal",
                v.output_channels,
                2 * v.num_pos_feats,
                p.hidden_size,
                d.hidden_size
            ));
        }
        if p.image_size != v.image_size || p.patch_size != v.patch_size {
            return Err("prompt encoder and vision encoder disagree on image/patch size".into());
        }
        if p.num_point_embeddings != 4 {
            return Err("num_point_embeddings must be 4 (negative, positive, box corners)".into());
        }
        let internal = d.hidden_size / d.attention_downsample_rate.max(1);
        if d.hidden_size.checked_rem(d.num_attention_heads) != Some(0)
            || internal.checked_rem(d.num_attention_heads) != Some(0)
        {
            return Err("decoder num_attention_heads must divide its attention widths".into());
        }
        if d.hidden_size.checked_rem(8) != Some(0) {
            return Err("decoder hidden_size must be a multiple of 8".into());
        }
        if d.num_multimask_outputs == 0 || d.iou_head_depth < 2 {
            return Err("decoder needs ≥1 multimask output and iou_head_depth ≥ 2".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_recognised() {
        for (c, h, l) in [
            (SamConfig::vit_b(), 768, 12),
            (SamConfig::vit_l(), 1024, 24),
            (SamConfig::vit_h(), 1280, 32),
        ] {
            c.validate().unwrap();
            assert_eq!(SamConfig::preset_for(h, l), Some(c));
        }
        assert_eq!(SamConfig::preset_for(100, 3), None);
    }

    #[test]
    fn partial_json_takes_transformers_defaults() {
        let c: SamConfig = serde_json::from_str(
            r#"{"vision_config": {"hidden_size": 1280, "num_hidden_layers": 32}}"#,
        )
        .unwrap();
        assert_eq!(c.vision_config.mlp_dim(), 5120);
        assert_eq!(c.mask_decoder_config.num_multimask_outputs, 3);
        assert_eq!(c.vision_config.grid(), 64);
    }
}
