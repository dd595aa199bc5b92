//! `SamVisionEncoder`: ViT with windowed and global attention, decomposed relative positions, and a
//! convolutional neck. Feature maps are kept channels-last `(h, w, c)` (one image at a time), so
//! SAM's channels-first layer norms are plain last-dimension layer norms here.

use candle_core::{Tensor, D};

use crate::config::VisionConfig;
use crate::error::{Result, SamError};
use crate::nn::{attention, LayerNorm, Linear};
use crate::weights::Weights;

#[derive(Clone)]
struct Block {
    norm1: LayerNorm,
    qkv: Linear,
    proj: Linear,
    /// `(2·size − 1, head_dim)` tables, used as they are (released checkpoints never need resizing).
    rel_pos: Option<(Tensor, Tensor)>,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    /// 0 = global attention over the whole grid.
    window: usize,
    heads: usize,
}

#[derive(Clone)]
pub struct ImageEncoder {
    /// Patch-embedding conv as a matmul: `(3·p·p, hidden)`.
    patch_weight: Tensor,
    patch_bias: Tensor,
    pos_embed: Option<Tensor>,
    blocks: Vec<Block>,
    neck_conv1: Tensor,
    neck_norm1: LayerNorm,
    neck_conv2: Tensor,
    neck_norm2: LayerNorm,
    patch: usize,
    grid: usize,
    hidden: usize,
}

impl ImageEncoder {
    pub fn load(w: &Weights, c: &VisionConfig) -> Result<Self> {
        let p = "vision_encoder";
        let (hd, grid, patch) = (c.hidden_size, c.grid(), c.patch_size);
        let head_dim = hd / c.num_attention_heads;
        let patch_weight = w
            .get(
                &format!("{p}.patch_embed.projection.weight"),
                &[hd, 3, patch, patch],
            )?
            .reshape((hd, 3 * patch * patch))?
            .t()?
            .contiguous()?;
        let patch_bias = w.get(&format!("{p}.patch_embed.projection.bias"), &[hd])?;
        let pos_embed = if c.use_abs_pos {
            Some(
                w.get(&format!("{p}.pos_embed"), &[1, grid, grid, hd])?
                    .squeeze(0)?,
            )
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let b = format!("{p}.layers.{i}");
            let window = if c.global_attn_indexes.contains(&i) {
                0
            } else {
                c.window_size
            };
            let size = if window == 0 { grid } else { window };
            let rel_pos = if c.use_rel_pos {
                Some((
                    w.get(&format!("{b}.attn.rel_pos_h"), &[2 * size - 1, head_dim])?,
                    w.get(&format!("{b}.attn.rel_pos_w"), &[2 * size - 1, head_dim])?,
                ))
            } else {
                None
            };
            blocks.push(Block {
                norm1: LayerNorm::load(w, &format!("{b}.layer_norm1"), hd, c.layer_norm_eps)?,
                qkv: Linear::load(w, &format!("{b}.attn.qkv"), hd, 3 * hd, c.qkv_bias)?,
                proj: Linear::load(w, &format!("{b}.attn.proj"), hd, hd, true)?,
                rel_pos,
                norm2: LayerNorm::load(w, &format!("{b}.layer_norm2"), hd, c.layer_norm_eps)?,
                lin1: Linear::load(w, &format!("{b}.mlp.lin1"), hd, c.mlp_dim(), true)?,
                lin2: Linear::load(w, &format!("{b}.mlp.lin2"), c.mlp_dim(), hd, true)?,
                window,
                heads: c.num_attention_heads,
            });
        }
        let out = c.output_channels;
        let neck_conv1 = w
            .get(&format!("{p}.neck.conv1.weight"), &[out, hd, 1, 1])?
            .reshape((out, hd))?
            .t()?
            .contiguous()?;
        let neck_conv2 = w.get(&format!("{p}.neck.conv2.weight"), &[out, out, 3, 3])?;
        // The neck norms are `SamLayerNorm` with its default eps (1e-6), not the config's.
        Ok(Self {
            patch_weight,
            patch_bias,
            pos_embed,
            blocks,
            neck_conv1,
            neck_norm1: LayerNorm::load(w, &format!("{p}.neck.layer_norm1"), out, 1e-6)?,
            neck_conv2,
            neck_norm2: LayerNorm::load(w, &format!("{p}.neck.layer_norm2"), out, 1e-6)?,
            patch,
            grid,
            hidden: hd,
        })
    }

    /// `(1, 3, S, S)` normalised pixels → `(1, out_channels, S/p, S/p)` image embeddings.
    pub fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let (_, ch, h, w) = pixels.dims4()?;
        let side = self.grid * self.patch;
        if ch != 3 || h != side || w != side {
            return Err(SamError::Prompt(format!(
                "pixel tensor must be (1, 3, {side}, {side}), got {:?}",
                pixels.dims()
            )));
        }
        let (g, p) = (self.grid, self.patch);
        // Non-overlapping 16×16 conv = gather patches (c, py, px order, like the conv weight) + matmul.
        let patches = pixels
            .reshape((3, g, p, g, p))?
            .permute((1, 3, 0, 2, 4))?
            .reshape((g * g, 3 * p * p))?;
        let mut x = patches
            .matmul(&self.patch_weight)?
            .broadcast_add(&self.patch_bias)?
            .reshape((g, g, self.hidden))?;
        if let Some(pos) = &self.pos_embed {
            x = (x + pos)?;
        }
        for b in &self.blocks {
            x = b.forward(&x)?;
        }
        // Neck: 1×1 conv (matmul), LN, 3×3 conv (padding 1, no bias), LN.
        let x = x.reshape((g * g, self.hidden))?.matmul(&self.neck_conv1)?;
        let out = x.dim(1)?;
        let x = self.neck_norm1.forward(&x.reshape((g, g, out))?)?;
        let x = x.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?;
        let x = x.conv2d(&self.neck_conv2, 1, 1, 1, 1)?;
        let x = x.squeeze(0)?.permute((1, 2, 0))?;
        let x = self.neck_norm2.forward(&x)?;
        Ok(x.permute((2, 0, 1))?.unsqueeze(0)?.contiguous()?)
    }
}

impl Block {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w, c) = x.dims3()?;
        let shortcut = x;
        let y = self.norm1.forward(x)?;
        let y = if self.window > 0 {
            let ws = self.window;
            let (hp, wp) = (h.div_ceil(ws) * ws, w.div_ceil(ws) * ws);
            // Zero padding after the norm, as `window_partition` does.
            let y = y
                .pad_with_zeros(0, 0, hp - h)?
                .pad_with_zeros(1, 0, wp - w)?;
            let (nh, nw) = (hp / ws, wp / ws);
            let windows = y
                .reshape((nh, ws, nw, ws, c))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((nh * nw, ws, ws, c))?;
            let out = self.attend(&windows)?;
            out.reshape((nh, nw, ws, ws, c))?
                .permute((0, 2, 1, 3, 4))?
                .reshape((hp, wp, c))?
                .narrow(0, 0, h)?
                .narrow(1, 0, w)?
        } else {
            self.attend(&y.unsqueeze(0)?)?.squeeze(0)?
        };
        let x = (shortcut + y)?;
        let m = self
            .lin2
            .forward(&self.lin1.forward(&self.norm2.forward(&x)?)?.gelu_erf()?)?;
        Ok((x + m)?)
    }

    /// Multi-head attention with decomposed relative positions over `(n, h, w, c)` windows.
    fn attend(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, c) = x.dims4()?;
        let heads = self.heads;
        let hd = c / heads;
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((n, h * w, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .reshape((3, n * heads, h * w, hd))?;
        let q = qkv.get(0)?.contiguous()?;
        let k = qkv.get(1)?.contiguous()?;
        let v = qkv.get(2)?.contiguous()?;
        let scale = (hd as f64).powf(-0.5);
        let out = match &self.rel_pos {
            None => attention(&q, &k, &v, scale, None)?,
            Some((rh, rw)) => {
                let rel_h = rel_positions(rh, h)?; // (h, h, hd)
                let rel_w = rel_positions(rw, w)?; // (w, w, hd)
                let bias = |start: usize, len: usize, logits: &Tensor| {
                    let qc = q.narrow(0, start, len)?.reshape((len, h, w, hd))?;
                    decomposed_bias(&qc, &rel_h, &rel_w, logits)
                };
                attention(&q, &k, &v, scale, Some(&bias))?
            }
        };
        let out = out
            .reshape((n, heads, h, w, hd))?
            .permute((0, 2, 3, 1, 4))?
            .reshape((n, h, w, c))?;
        Ok(self.proj.forward(&out)?)
    }
}

/// `get_rel_pos` for equal query/key sizes: `R[i][j] = table[i − j + size − 1]`, `(size, size, d)`.
fn rel_positions(table: &Tensor, size: usize) -> candle_core::Result<Tensor> {
    let idx: Vec<u32> = (0..size)
        .flat_map(|i| (0..size).map(move |j| (i + size - 1 - j) as u32))
        .collect();
    let idx = Tensor::from_vec(idx, size * size, table.device())?;
    let d = table.dim(1)?;
    table.index_select(&idx, 0)?.reshape((size, size, d))
}

/// Adds `rel_h[b, y, x, ky] + rel_w[b, y, x, kx]` to the `(b, h·w, h·w)` logits, where
/// `rel_h = Σ_c q[b,y,x,c]·Rh[y,ky,c]` and `rel_w = Σ_c q[b,y,x,c]·Rw[x,kx,c]` (the two einsums of
/// `get_decomposed_rel_pos`, written as batched matmuls over y and over x).
fn decomposed_bias(
    q: &Tensor,
    rel_h: &Tensor,
    rel_w: &Tensor,
    logits: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, h, w, d) = q.dims4()?;
    // over y: (h, b·w, d) · (h, d, kh) → (h, b·w, kh) → (b, h, w, kh)
    let qh = q.permute((1, 0, 2, 3))?.reshape((h, b * w, d))?;
    let bh = qh
        .matmul(&rel_h.transpose(1, 2)?)?
        .reshape((h, b, w, h))?
        .permute((1, 0, 2, 3))?;
    // over x: (w, b·h, d) · (w, d, kw) → (w, b·h, kw) → (b, h, w, kw)
    let qw = q.permute((2, 0, 1, 3))?.reshape((w, b * h, d))?;
    let bw = qw
        .matmul(&rel_w.transpose(1, 2)?)?
        .reshape((w, b, h, w))?
        .permute((1, 2, 0, 3))?;
    let logits = logits.reshape((b, h, w, h, w))?;
    let logits = logits
        .broadcast_add(&bh.unsqueeze(D::Minus1)?)?
        .broadcast_add(&bw.unsqueeze(3)?)?;
    logits.reshape((b, h * w, h * w))
}
