//! The whole model: Perception-LM (vision tower → projector → Llama) plus GAR's mask embedding and feature
//! replay (spec §8.3–§8.4). Also runs plain Perception-LM checkpoints (no mask conv, no replay).
//!
//! Flow for one request:
//! 1. [`GarModel::encode_image`]: tiles `(T, 3, 448, 448)` and optional label maps `(T, 448, 448)` →
//!    image features `(T, 256, H)`;
//! 2. [`GarModel::embed_prompt`]: token ids + image features + tile grid + region boxes → `inputs_embeds`
//!    `(1, L, H)` (image tokens scattered, crop tokens replaced by RoI-aligned features);
//! 3. [`GarModel::forward`] with a [`KvCache`] (prefill, then one token at a time), or
//!    [`crate::generate::generate`].

use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::GarConfig;
use crate::error::LoadError;
use crate::llama::Llama;
use crate::nn::kv_cache::KvCache;
use crate::nn::quant::{Quant, QuantReport};
use crate::projector::Projector;
use crate::roi_align::{gar_replay_roi, roi_align, RoiAlignParams};
use crate::vision::{PatchConv, VisionTower};
use crate::weights::{load_error, Checkpoint};

/// Reference behaviours kept bug-compatible by default (spec §12), each switchable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GarQuirks {
    /// Spec §8.4 / §12.1: the reference converts the box to feature-grid units and then lets `roi_align` scale
    /// it by `spatial_scale` (1/28) a second time, so replayed crops come from the top-left corner of the map.
    /// The released weights were trained that way. `false` samples the box itself (spatial_scale 1).
    pub roi_double_scale: bool,
}

impl Default for GarQuirks {
    fn default() -> Self {
        Self {
            roi_double_scale: true,
        }
    }
}

/// One region prompt: its crop placeholder token and normalized box `(x1, y1, x2, y2)` in [0, 1] of the
/// original image (spec §8.1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionBox {
    pub crop_token_id: u32,
    pub bbox: [f64; 4],
}

/// Intermediate vision activations, for parity tests and debugging.
#[derive(Debug, Clone)]
pub struct VisionStages {
    /// GAR mask embedding `(T, N, D)` (None without labels).
    pub mask_embeds: Option<Tensor>,
    /// Tower `last_hidden_state` `(T, prefix + N, D)` (CLS included when the tower has one).
    pub vision_out: Tensor,
    /// Projector output before pooling `(T, N, H)`.
    pub projector_unpooled: Tensor,
    /// Pooled image features `(T, tokens_per_tile, H)`.
    pub image_features: Tensor,
}

/// GAR / Perception-LM. Immutable after construction: share it (`Arc`) between requests.
#[derive(Debug, Clone)]
pub struct GarModel {
    vision_tower: VisionTower,
    projector: Projector,
    language_model: Llama,
    mask_patch_embedding: Option<PatchConv>,
    cfg: GarConfig,
    quirks: GarQuirks,
}

/// Feature-map cells per pooled token in original pixels (patch 14 × pooling 2 = 28 for PLM).
fn replay_cell(cfg: &GarConfig) -> usize {
    cfg.vision.patch_size * cfg.projector_pooling_ratio
}

impl GarModel {
    /// Loads `dir/config.json` and the safetensors checkpoint in `dir` (single file or sharded).
    pub fn load(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
        quirks: GarQuirks,
    ) -> std::result::Result<Self, LoadError> {
        Ok(Self::load_quantized(dir, dtype, device, quirks, Quant::None)?.0)
    }

    /// [`GarModel::load`] with the language model's linears quantized while loading (see
    /// [`Llama::new_quantized`]): the peak memory of the load is near the quantized model's size, not the
    /// dense one's.
    pub fn load_quantized(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
        quirks: GarQuirks,
        quant: Quant,
    ) -> std::result::Result<(Self, QuantReport), LoadError> {
        let dir = dir.as_ref();
        let cfg = GarConfig::from_file(dir.join("config.json"))?;
        let ckpt = Arc::new(Checkpoint::open_dir(dir)?);
        let vb = ckpt.var_builder(dtype, device);
        Self::new_quantized(&cfg, vb, quirks, quant).map_err(|e| load_error(&ckpt, e))
    }

    /// Builds the model from an opened checkpoint, mapping tensor problems to [`LoadError::Weight`].
    pub fn from_checkpoint(
        cfg: &GarConfig,
        ckpt: &Arc<Checkpoint>,
        dtype: DType,
        device: &Device,
        quirks: GarQuirks,
    ) -> std::result::Result<Self, LoadError> {
        let vb = ckpt.var_builder(dtype, device);
        Self::new(cfg, vb, quirks).map_err(|e| load_error(ckpt, e))
    }

    /// `vb` is the checkpoint root (the level holding `mllm.` for GAR, `model.` for PLM).
    pub fn new(cfg: &GarConfig, vb: VarBuilder, quirks: GarQuirks) -> Result<Self> {
        Ok(Self::new_quantized(cfg, vb, quirks, Quant::None)?.0)
    }

    /// [`GarModel::new`] with the language model quantized layer by layer as it loads.
    pub fn new_quantized(
        cfg: &GarConfig,
        vb: VarBuilder,
        quirks: GarQuirks,
        quant: Quant,
    ) -> Result<(Self, QuantReport)> {
        let plm = if cfg.weight_prefix.is_empty() {
            vb.clone()
        } else {
            vb.pp(&cfg.weight_prefix)
        };
        let model = plm.pp("model");
        let vision_tower =
            VisionTower::new(&cfg.vision, model.pp("vision_tower").pp("timm_model"))?;
        let projector = Projector::new(
            cfg.vision.embed_dim,
            cfg.text.hidden_size,
            cfg.projector_pooling_ratio,
            model.pp("multi_modal_projector"),
        )?;
        let (language_model, report) =
            Llama::new_quantized(&cfg.text, model.pp("language_model"), plm.clone(), quant)?;
        let mask_patch_embedding = match &cfg.gar {
            Some(g) => Some(PatchConv::new(
                3,
                g.mask_path_embedding_out_channels,
                g.kernel_size.0,
                false,
                vb.pp("mask_patch_embedding"),
            )?),
            None => None,
        };
        let model = Self {
            vision_tower,
            projector,
            language_model,
            mask_patch_embedding,
            cfg: cfg.clone(),
            quirks,
        };
        Ok((model, report))
    }

    /// Runs the vision tower's block linears and the projector's two linears with 8-bit weights and
    /// activations ([`crate::nn::w8a8`]; CPU with AVX2 only, the patch convolutions stay dense). Not
    /// reference-exact: see docs/performance.md for the measured feature cosine. Returns how many layers
    /// were converted (0 where the kernel does not apply).
    pub fn quantize_vision_w8a8(&mut self) -> Result<usize> {
        Ok(self.vision_tower.quantize_w8a8()? + self.projector.quantize_w8a8()?)
    }

    /// Runs both attention products of the vision tower and the decoder on bf16 operands
    /// ([`crate::nn::attention::Products::Bf16`]: CPU with AVX-512 BF16, f32 elsewhere) or back in f32. Not
    /// reference-exact: see docs/performance.md for the measured agreement. Returns whether the products
    /// run as asked in the tower or the decoder (bf16 needs AVX-512 BF16 and heads 32 wide or a multiple).
    pub fn set_attention_products(&mut self, products: crate::nn::attention::Products) -> bool {
        self.vision_tower.set_attention_products(products);
        self.language_model.set_attention_products(products);
        products.apply_to(self.cfg.vision.head_dim()) || products.apply_to(self.cfg.text.head_dim())
    }

    pub fn config(&self) -> &GarConfig {
        &self.cfg
    }

    pub fn quirks(&self) -> GarQuirks {
        self.quirks
    }

    /// A copy of the model with other quirk switches (weights are shared, not copied).
    pub fn with_quirks(&self, quirks: GarQuirks) -> Self {
        Self {
            quirks,
            ..self.clone()
        }
    }

    pub fn vision_tower(&self) -> &VisionTower {
        &self.vision_tower
    }

    pub fn projector(&self) -> &Projector {
        &self.projector
    }

    /// Quantization of the language model's linears (see [`Llama::quantize`]; `q8` on an AVX2 CPU rounds the
    /// activations to 8 bits too, see [`crate::nn::quant`]); the vision tower and projector stay dense here
    /// (see [`GarModel::quantize_vision_w8a8`]).
    pub fn quantize_language_model(
        &mut self,
        quant: crate::nn::quant::Quant,
    ) -> Result<crate::nn::quant::QuantReport> {
        self.language_model.quantize(quant)
    }

    pub fn llama(&self) -> &Llama {
        &self.language_model
    }

    pub fn device(&self) -> &Device {
        self.language_model.device()
    }

    pub fn dtype(&self) -> DType {
        self.language_model.dtype()
    }

    /// GAR mask embedding of label maps `(T, H, W)` (any numeric dtype): pixels whose label is below
    /// `prompt_numbers` belong to a region (the reference clamps labels to `0..=prompt_numbers` and tests
    /// `!= prompt_numbers`), the rest is background. Returns `(T, N, D)`.
    pub fn mask_embeds(&self, labels: &Tensor) -> Result<Tensor> {
        let (Some(conv), Some(g)) = (&self.mask_patch_embedding, &self.cfg.gar) else {
            candle_core::bail!("this checkpoint has no mask embedding (not a GAR model)");
        };
        let (t, h, w) = labels.dims3()?;
        let binary = labels
            .to_dtype(DType::F32)?
            .lt(g.prompt_numbers as f64)?
            .to_dtype(self.dtype())?
            .reshape((t, 1, h, w))?;
        // The reference feeds the same binary map on all three channels.
        let binary = binary.broadcast_as((t, 3, h, w))?.contiguous()?;
        conv.forward(&binary)
    }

    /// Runs the vision path and keeps every intermediate (see [`VisionStages`]).
    pub fn encode_image_stages(
        &self,
        pixel_values: &Tensor,
        mask_labels: Option<&Tensor>,
    ) -> Result<VisionStages> {
        let mask_embeds = mask_labels.map(|l| self.mask_embeds(l)).transpose()?;
        let pixels = pixel_values.to_dtype(self.dtype())?;
        let vision_out = self.vision_tower.forward(&pixels, mask_embeds.as_ref())?;
        let tokens = if self.cfg.vision_use_cls_token {
            let n = vision_out.dim(1)?;
            vision_out.narrow(1, 1, n - 1)?
        } else {
            vision_out.clone()
        };
        let projector_unpooled = self.projector.project(&tokens)?;
        let image_features = self.projector.pool(&projector_unpooled)?;
        Ok(VisionStages {
            mask_embeds,
            vision_out,
            projector_unpooled,
            image_features,
        })
    }

    /// Image features `(T, tokens_per_tile, H)` of tiles `(T, 3, 448, 448)` (values in [-1, 1]); with GAR, the
    /// per-tile label maps `(T, 448, 448)` (background = `prompt_numbers`) drive the mask embedding.
    pub fn encode_image(
        &self,
        pixel_values: &Tensor,
        mask_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        Ok(self
            .encode_image_stages(pixel_values, mask_labels)?
            .image_features)
    }

    /// The RoI box and spatial scale handed to `roi_align` for a normalized bbox on a `feat_w × feat_h` map,
    /// reproducing the reference's f64 arithmetic and f32 storage (spec §8.4 step 4).
    pub fn replay_roi(&self, bbox: [f64; 4], feat_w: usize, feat_h: usize) -> ([f32; 4], f32) {
        gar_replay_roi(
            bbox,
            feat_w,
            feat_h,
            replay_cell(&self.cfg),
            self.quirks.roi_double_scale,
        )
    }

    /// Feature replay for one box: RoI Align over the grid tiles (thumbnail excluded) merged into one map
    /// `(pooled_rows·nch, pooled_cols·ncw)`. Returns `(tokens_per_tile, H)` in the model dtype.
    pub fn replay_features(
        &self,
        image_features: &Tensor,
        aspect_ratio: (usize, usize),
        bbox: [f64; 4],
    ) -> Result<Tensor> {
        let (ncw, nch) = aspect_ratio;
        let (t, n, h) = image_features.dims3()?;
        if ncw * nch == 0 || t != 1 + ncw * nch {
            candle_core::bail!(
                "feature replay needs 1 + ncw·nch tiles: got {t} tiles for aspect ratio ({ncw}, {nch})"
            );
        }
        let (pr, pc) = self.cfg.pooled_grid();
        if n != pr * pc {
            candle_core::bail!(
                "image features have {n} tokens per tile, expected {}",
                pr * pc
            );
        }
        // Tile r·ncw + c lands at rows pr·r.., cols pc·c.. of the merged map (spec §8.4 step 2).
        let merged = image_features
            .narrow(0, 1, t - 1)?
            .reshape((nch, ncw, pr, pc, h))?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?
            .reshape((nch * pr, ncw * pc, h))?;
        let (feat_h, feat_w) = (nch * pr, ncw * pc);
        let (roi, spatial_scale) = self.replay_roi(bbox, feat_w, feat_h);
        let params = RoiAlignParams {
            pooled_h: pr,
            pooled_w: pc,
            spatial_scale,
            sampling_ratio: 2,
            aligned: true,
        };
        roi_align(&merged, roi, &params)?.to_dtype(self.dtype())
    }

    /// `inputs_embeds` `(1, L, H)`: token embeddings of `input_ids`, with the `<|image|>` positions replaced in
    /// order by `image_features` (flattened `(T·tokens_per_tile, H)`) and, for every region, its crop-token run
    /// replaced by [`Self::replay_features`]. `aspect_ratio` = (ncw, nch) of the tile grid.
    pub fn embed_prompt(
        &self,
        input_ids: &[u32],
        image_features: Option<&Tensor>,
        aspect_ratio: (usize, usize),
        regions: &[RegionBox],
    ) -> Result<Tensor> {
        let dev = self.device();
        let dtype = self.dtype();
        let len = input_ids.len();
        let ids = Tensor::new(input_ids, dev)?;
        let mut sources = vec![self.language_model.embed_ids(&ids)?];
        // Row of the concatenated sources that each position takes; starts as the token's own embedding.
        let mut index: Vec<u32> = (0..len as u32).collect();
        let mut next_row = len;

        let image_pos: Vec<usize> = positions(input_ids, self.cfg.image_token_id);
        match image_features {
            Some(feats) => {
                let (t, n, h) = feats.dims3()?;
                if image_pos.len() != t * n {
                    candle_core::bail!(
                        "prompt has {} image tokens but the image gives {t}×{n} features",
                        image_pos.len()
                    );
                }
                for (k, &p) in image_pos.iter().enumerate() {
                    index[p] = (next_row + k) as u32;
                }
                sources.push(feats.to_dtype(dtype)?.reshape((t * n, h))?);
                next_row += t * n;
            }
            None if !image_pos.is_empty() => {
                candle_core::bail!("prompt has {} image tokens but no image", image_pos.len())
            }
            None => {}
        }

        if !regions.is_empty() && self.cfg.gar.is_none() {
            candle_core::bail!(
                "region prompts need a GAR checkpoint (this one has no feature replay)"
            );
        }
        if let Some(g) = &self.cfg.gar {
            for &crop in &g.crop_tokens_ids {
                if input_ids.contains(&crop) && !regions.iter().any(|r| r.crop_token_id == crop) {
                    candle_core::bail!(
                        "crop token {crop} appears in the prompt but no region box is given"
                    );
                }
            }
        }
        for region in regions {
            let pos = positions(input_ids, region.crop_token_id);
            let tokens = self.cfg.tokens_per_tile();
            let contiguous = pos.windows(2).all(|w| w[1] == w[0] + 1);
            if pos.len() != tokens || !contiguous {
                candle_core::bail!(
                    "region crop token {} must occur as one run of {tokens} tokens, found {} occurrences",
                    region.crop_token_id,
                    pos.len()
                );
            }
            let Some(feats) = image_features else {
                candle_core::bail!("region prompts need image features");
            };
            let replay = self.replay_features(feats, aspect_ratio, region.bbox)?;
            for (k, &p) in pos.iter().enumerate() {
                index[p] = (next_row + k) as u32;
            }
            sources.push(replay);
            next_row += tokens;
        }

        let src = if sources.len() == 1 {
            sources.pop().expect("one source")
        } else {
            Tensor::cat(&sources, 0)?
        };
        let index = Tensor::from_vec(index, len, dev)?;
        src.index_select(&index, 0)?.unsqueeze(0)
    }

    /// A fresh KV cache with room for `capacity` positions.
    pub fn new_cache(&self, capacity: usize) -> KvCache {
        self.language_model.new_cache(capacity)
    }

    /// Decoder pass over `embeds` `(1, t, H)` at positions `start..start+t` → final hidden states `(1, t, H)`.
    pub fn forward(&self, embeds: &Tensor, start: usize, cache: &mut KvCache) -> Result<Tensor> {
        self.language_model.forward(embeds, start, cache)
    }

    /// Prefill: runs `embeds` `(1, L, H)` from position `cache.seq_len()` and returns the f32 logits of the
    /// last position `(vocab,)`.
    pub fn prefill(&self, embeds: &Tensor, cache: &mut KvCache) -> Result<Tensor> {
        let hidden = self.forward(embeds, cache.seq_len(), cache)?;
        self.language_model.last_logits(&hidden)?.squeeze(0)
    }

    /// One decode step: feeds `token` at position `cache.seq_len()`, returns the next f32 logits `(vocab,)`.
    pub fn decode_step(&self, token: u32, cache: &mut KvCache) -> Result<Tensor> {
        let embeds = self.language_model.embed(&[token])?;
        self.prefill(&embeds, cache)
    }

    /// Logits (f32) for hidden states `(…, H)`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        self.language_model.logits(hidden)
    }
}

fn positions(ids: &[u32], id: u32) -> Vec<usize> {
    ids.iter()
        .enumerate()
        .filter_map(|(i, &t)| (t == id).then_some(i))
        .collect()
}
