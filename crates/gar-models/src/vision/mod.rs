//! Perception Encoder vision tower: timm `Eva` as PLM configures it (spec §3). Per tile: patch embedding
//! (+ GAR's mask embedding), optional class token, learned absolute position embedding, `norm_pre`, the
//! blocks with 2D RoPE, optional final norm. Returns `last_hidden_state` including the class token.
//!
//! Keys (relative to `model.vision_tower.timm_model`): `cls_token`, `pos_embed`, `patch_embed.proj.weight`,
//! `norm_pre.{weight,bias}`, `blocks.{i}.*` (see [`block`]), `norm.{weight,bias}` when configured.

pub mod block;

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::VisionConfig;
use crate::nn::norm::LayerNorm;
use crate::nn::rope::VisionRope;
use block::Block;

/// A `Conv2d(in → out, kernel = stride = patch, padding 0)`, evaluated as unfold + one GEMM (the im2col form
/// of the same sum), returning patch tokens `(b, rows·cols, out)` in row-major patch order.
#[derive(Debug, Clone)]
pub struct PatchConv {
    weight: Tensor,
    bias: Option<Tensor>,
    patch: usize,
}

impl PatchConv {
    pub fn new(
        in_ch: usize,
        out_ch: usize,
        patch: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((out_ch, in_ch, patch, patch), "weight")?;
        let bias = if bias {
            Some(vb.get(out_ch, "bias")?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            patch,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let p = self.patch;
        if h % p != 0 || w % p != 0 {
            candle_core::bail!("input {h}x{w} is not a multiple of the patch size {p}");
        }
        let (gh, gw) = (h / p, w / p);
        let cols = x
            .to_dtype(self.weight.dtype())?
            .reshape((b, c, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, c * p * p))?;
        let out_ch = self.weight.dim(0)?;
        let w2 = self.weight.reshape((out_ch, c * p * p))?;
        let y = cols.matmul(&w2.t()?)?;
        let y = match &self.bias {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, gh * gw, out_ch))
    }
}

/// timm `PatchEmbed` (only its `proj` conv has weights; PE uses no bias).
#[derive(Debug, Clone)]
pub struct PatchEmbed {
    proj: PatchConv,
}

impl PatchEmbed {
    pub fn new(cfg: &VisionConfig, bias: bool, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj: PatchConv::new(3, cfg.embed_dim, cfg.patch_size, bias, vb.pp("proj"))?,
        })
    }
}

/// Tiles run through the blocks together ([`VisionTower::forward`]); more go in several passes. Tiles are
/// independent, so this changes no value. One tile a pass keeps a pass's activations near the cache sizes
/// (a GAR-1B tile's MLP hidden state is 16 MiB, a 17-tile image's 272 MiB): measured on a 17-tile image,
/// ≈ 3 % less time (4 of 5 interleaved pairs) and 280 MiB less peak memory than one pass
/// (docs/performance.md, round 11). Env `GAR_VISION_TILES_PER_PASS` overrides it (for measurements).
pub const TILES_PER_PASS: usize = 1;

fn tiles_per_pass() -> usize {
    std::env::var("GAR_VISION_TILES_PER_PASS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(TILES_PER_PASS)
}

/// The tower (`timm_model`).
#[derive(Debug, Clone)]
pub struct VisionTower {
    patch_embed: PatchEmbed,
    cls_token: Option<Tensor>,
    pos_embed: Option<Tensor>,
    norm_pre: Option<LayerNorm>,
    blocks: Vec<Block>,
    norm: Option<LayerNorm>,
    rope: VisionRope,
    cfg: VisionConfig,
}

impl VisionTower {
    /// The operands of every block's attention products ([`crate::nn::attention::Products`]).
    pub fn set_attention_products(&mut self, products: crate::nn::attention::Products) {
        for b in &mut self.blocks {
            b.set_attention_products(products);
        }
    }

    /// Runs every block's linears through [`crate::nn::w8a8`] (8-bit weights and activations); returns how
    /// many layers were converted.
    pub fn quantize_w8a8(&mut self) -> Result<usize> {
        let mut n = 0;
        for b in &mut self.blocks {
            n += b.quantize_w8a8()?;
        }
        Ok(n)
    }

    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let (gh, gw) = cfg.grid();
        let n_tokens = gh * gw + cfg.num_prefix_tokens();
        // timm: the patch conv has a bias only when there is no pre-transformer norm.
        let patch_embed =
            PatchEmbed::new(cfg, !cfg.use_pre_transformer_norm, vb.pp("patch_embed"))?;
        let cls_token = if cfg.class_token {
            Some(vb.get((1, 1, d), "cls_token")?)
        } else {
            None
        };
        let pos_embed = if cfg.use_abs_pos_emb {
            Some(vb.get((1, n_tokens, d), "pos_embed")?)
        } else {
            None
        };
        let norm_pre = if cfg.use_pre_transformer_norm {
            Some(LayerNorm::new(d, cfg.norm_eps, vb.pp("norm_pre"))?)
        } else {
            None
        };
        let blocks = (0..cfg.depth)
            .map(|i| Block::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        let norm = if cfg.use_post_transformer_norm {
            Some(LayerNorm::new(d, cfg.norm_eps, vb.pp("norm"))?)
        } else {
            None
        };
        Ok(Self {
            patch_embed,
            cls_token,
            pos_embed,
            norm_pre,
            blocks,
            norm,
            rope: VisionRope::new(cfg, vb.device())?,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.patch_embed.proj.weight.dtype()
    }

    /// `pixel_values` `(T, 3, H, W)` normalized to [-1, 1]; `mask_embeds` `(T, N, D)` is added to the patch
    /// embeddings before the class token and position embedding (GAR, spec §3 step 2).
    /// Returns `last_hidden_state` `(T, prefix + N, D)`.
    pub fn forward(&self, pixel_values: &Tensor, mask_embeds: Option<&Tensor>) -> Result<Tensor> {
        let t = pixel_values.dim(0)?;
        let per_pass = tiles_per_pass();
        if t <= per_pass {
            return self.forward_tiles(pixel_values, mask_embeds);
        }
        let mut outs = Vec::with_capacity(t.div_ceil(per_pass));
        for start in (0..t).step_by(per_pass) {
            let n = per_pass.min(t - start);
            let m = mask_embeds.map(|m| m.narrow(0, start, n)).transpose()?;
            outs.push(self.forward_tiles(&pixel_values.narrow(0, start, n)?, m.as_ref())?);
        }
        Tensor::cat(&outs, 0)
    }

    /// [`Self::forward`] of all the given tiles in one pass.
    fn forward_tiles(&self, pixel_values: &Tensor, mask_embeds: Option<&Tensor>) -> Result<Tensor> {
        let (_, _, h, w) = pixel_values.dims4()?;
        if (h, w) != self.cfg.img_size {
            candle_core::bail!(
                "vision tower expects {:?} tiles, got {h}x{w}",
                self.cfg.img_size
            );
        }
        let mut x = self.patch_embed.proj.forward(pixel_values)?;
        if let Some(m) = mask_embeds {
            let m = m.to_dtype(x.dtype())?;
            x = (x + m)?;
        }
        let t = x.dim(0)?;
        if let Some(cls) = &self.cls_token {
            let d = cls.dim(2)?;
            x = Tensor::cat(&[&cls.broadcast_as((t, 1, d))?.contiguous()?, &x], 1)?;
        }
        if let Some(pos) = &self.pos_embed {
            x = x.broadcast_add(pos)?;
        }
        if let Some(norm) = &self.norm_pre {
            x = norm.forward(&x)?;
        }
        for block in &self.blocks {
            x = block.forward(&x, &self.rope)?;
        }
        match &self.norm {
            Some(norm) => norm.forward(&x),
            None => Ok(x),
        }
    }
}
