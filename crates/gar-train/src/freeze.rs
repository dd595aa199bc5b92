//! Freeze switches by parameter-name group. Names are the checkpoint keys of the HF GAR layout
//! (training.md §6.3): `mllm.model.vision_tower.…`, `mllm.model.multi_modal_projector.…`,
//! `mllm.model.language_model.…`, `mllm.lm_head.weight`, `mask_patch_embedding.weight`.

use serde::{Deserialize, Serialize};

/// The groups a parameter can belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamGroup {
    VisionTower,
    Projector,
    /// The token embeddings and the LM head (tied in GAR-1B, so they freeze together).
    Embeddings,
    /// The Llama decoder (layers, final norm), without the embeddings.
    Llm,
    MaskEmbedding,
    /// Anything else (e.g. LoRA factors, test models' extra weights): always trainable.
    Other,
}

/// Classify a checkpoint key.
pub fn group_of(name: &str) -> ParamGroup {
    // LoRA factors live under their base weight's key but are trained whatever the groups say.
    if name.ends_with(".lora_A") || name.ends_with(".lora_B") {
        ParamGroup::Other
    } else if name.contains("embed_tokens") || name.contains("lm_head") {
        ParamGroup::Embeddings
    } else if name.contains("vision_tower.") {
        ParamGroup::VisionTower
    } else if name.contains("multi_modal_projector.") {
        ParamGroup::Projector
    } else if name.contains("language_model.") {
        ParamGroup::Llm
    } else if name.starts_with("mask_patch_embedding.") {
        ParamGroup::MaskEmbedding
    } else {
        ParamGroup::Other
    }
}

/// Which groups are frozen (GAR trains everything: all false).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Freeze {
    pub vision_tower: bool,
    pub projector: bool,
    pub llm: bool,
    pub embeddings: bool,
    pub mask_embedding: bool,
}

impl Freeze {
    pub fn is_frozen(&self, name: &str) -> bool {
        match group_of(name) {
            ParamGroup::VisionTower => self.vision_tower,
            ParamGroup::Projector => self.projector,
            ParamGroup::Embeddings => self.embeddings,
            ParamGroup::Llm => self.llm,
            ParamGroup::MaskEmbedding => self.mask_embedding,
            ParamGroup::Other => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_checkpoint_keys() {
        let cases = [
            (
                "mllm.model.vision_tower.timm_model.blocks.0.attn.qkv.weight",
                ParamGroup::VisionTower,
            ),
            (
                "mllm.model.multi_modal_projector.linear_1.weight",
                ParamGroup::Projector,
            ),
            (
                "mllm.model.language_model.embed_tokens.weight",
                ParamGroup::Embeddings,
            ),
            ("mllm.lm_head.weight", ParamGroup::Embeddings),
            (
                "mllm.model.language_model.layers.3.mlp.up_proj.weight",
                ParamGroup::Llm,
            ),
            ("mllm.model.language_model.norm.weight", ParamGroup::Llm),
            ("mask_patch_embedding.weight", ParamGroup::MaskEmbedding),
        ];
        for (name, g) in cases {
            assert_eq!(group_of(name), g, "{name}");
        }
        let f = Freeze {
            llm: true,
            ..Default::default()
        };
        assert!(f.is_frozen("mllm.model.language_model.layers.0.self_attn.q_proj.weight"));
        assert!(!f.is_frozen("mllm.model.language_model.embed_tokens.weight"));
    }
}
