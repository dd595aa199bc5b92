//! Rotary position embeddings: the decoder's 1D RoPE (half-split, optional llama3 frequency scaling; spec §5)
//! and the vision tower's 2D axial RoPE (adjacent pairs, x angles first; spec §3.1).
//!
//! Both tables are built once at load time in f32, replaying the reference's f32 operation order so that the
//! angles round the same way (they are large for long prompts: an ulp of `inv_freq` matters).

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use crate::config::{LlamaConfig, VisionConfig};
use crate::nn::with_cpu_f32;

/// `base ** (i / n)` for an f32 exponent: torch evaluates `pow(scalar, f32 tensor)` in f32; computing in f64
/// and rounding once gives the correctly rounded value, which is what libm/Sleef return in practice.
fn powf_f32(base: f32, exp: f32) -> f32 {
    (base as f64).powf(exp as f64) as f32
}

/// transformers `_compute_default_rope_parameters`: `1 / base^(2i/dim)`.
pub fn default_inv_freq(base: f32, dim: usize) -> Vec<f32> {
    (0..dim / 2)
        .map(|i| 1.0f32 / powf_f32(base, (2 * i) as f32 / dim as f32))
        .collect()
}

/// transformers `_compute_llama3_parameters`, operation by operation in f32.
pub fn llama3_inv_freq(
    inv_freq: &[f32],
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    old_context_len: f32,
) -> Vec<f32> {
    let low_freq_wavelen = old_context_len / low_freq_factor;
    let high_freq_wavelen = old_context_len / high_freq_factor;
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    inv_freq
        .iter()
        .map(|&inv| {
            // `2π / t` is evaluated by torch as `t.reciprocal() * 2π`.
            let wavelen = (1.0f32 / inv) * two_pi;
            let inv_llama = if wavelen > low_freq_wavelen {
                inv / factor
            } else {
                inv
            };
            let smooth = ((1.0f32 / wavelen) * old_context_len - low_freq_factor)
                / (high_freq_factor - low_freq_factor);
            let smoothed = (1.0f32 - smooth) * inv_llama / factor + smooth * inv_llama;
            // transformers: `~(wavelen < high) * ~(wavelen > low)`.
            let is_medium = wavelen >= high_freq_wavelen && wavelen <= low_freq_wavelen;
            if is_medium {
                smoothed
            } else {
                inv_llama
            }
        })
        .collect()
}

/// Precomputed cos/sin of the decoder RoPE, `(max_positions, head_dim/2)`, f32.
#[derive(Debug, Clone)]
pub struct LlamaRope {
    cos: Tensor,
    sin: Tensor,
    max_positions: usize,
}

impl LlamaRope {
    pub fn new(cfg: &LlamaConfig, device: &Device) -> Result<Self> {
        let dim = cfg.head_dim();
        let mut inv = default_inv_freq(cfg.rope_theta as f32, dim);
        if let Some(rs) = &cfg.rope_scaling {
            if rs.rope_type == "llama3" {
                // `validate()` guarantees the four fields are present.
                inv = llama3_inv_freq(
                    &inv,
                    rs.factor.unwrap_or(1.0) as f32,
                    rs.low_freq_factor.unwrap_or(1.0) as f32,
                    rs.high_freq_factor.unwrap_or(1.0) as f32,
                    rs.original_max_position_embeddings.unwrap_or(8192) as f32,
                );
            }
        }
        let max_positions = cfg.max_position_embeddings;
        let half = dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for &f in &inv {
                let angle = p as f32 * f;
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
        Ok(Self {
            cos: Tensor::from_vec(cos, (max_positions, half), device)?,
            sin: Tensor::from_vec(sin, (max_positions, half), device)?,
            max_positions,
        })
    }

    /// Rotates `x` of shape `(b, heads, t, head_dim)` for positions `start..start+t`. As in transformers, cos/sin
    /// are first cast to the activation dtype and the rotation runs in that dtype.
    pub fn apply(&self, x: &Tensor, start: usize) -> Result<Tensor> {
        let t = x.dim(2)?;
        if start + t > self.max_positions {
            candle_core::bail!(
                "position {} exceeds max_position_embeddings {}",
                start + t,
                self.max_positions
            );
        }
        let cos = self.cos.narrow(0, start, t)?.to_dtype(x.dtype())?;
        let sin = self.sin.narrow(0, start, t)?.to_dtype(x.dtype())?;
        if x.track_op() {
            return rope_half_differentiable(x, &cos, &sin);
        }
        candle_nn::rotary_emb::rope(&x.contiguous()?, &cos, &sin)
    }
}

/// Precomputed 2D RoPE of the vision tower: cos/sin `(num_patches, head_dim/2)`, f32 (timm keeps the table f32
/// even for a bf16 model, so the rotation happens in f32).
#[derive(Debug, Clone)]
pub struct VisionRope {
    cos: Tensor,
    sin: Tensor,
}

impl VisionRope {
    pub fn new(cfg: &VisionConfig, device: &Device) -> Result<Self> {
        let (cos, sin, n, half) = vision_rope_table(cfg);
        Ok(Self {
            cos: Tensor::from_vec(cos, (n, half), device)?,
            sin: Tensor::from_vec(sin, (n, half), device)?,
        })
    }

    /// Rotates adjacent pairs of `x` `(b, heads, num_patches, head_dim)` in f32, returns the input dtype.
    pub fn apply(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?.contiguous()?;
        if xf.track_op() {
            return rope_interleaved_differentiable(&xf, &self.cos, &self.sin)?.to_dtype(dtype);
        }
        candle_nn::rotary_emb::rope_i(&xf, &self.cos, &self.sin)?.to_dtype(dtype)
    }

    /// q and k of a fused qkv projection `(b, n, 3 · heads · head_dim)` (`[q; k; v]` along the last axis, each
    /// head-major), as `(b, heads, n, head_dim)` contiguous f32 tensors rotated like [`VisionRope::apply`]
    /// from token `prefix` on (the tokens before it, e.g. the class token, are copied unrotated). One
    /// multi-threaded pass instead of the split, copy, rotate and concatenation of the composed ops (≈ 90 ms
    /// of a GAR-1B tile), bit for bit their values. `None` off the CPU f32 inference path: the caller composes
    /// the ops.
    pub fn split_rotate_qk(
        &self,
        qkv: &Tensor,
        heads: usize,
        prefix: usize,
    ) -> Result<Option<(Tensor, Tensor)>> {
        let (b, n, width) = qkv.dims3()?;
        let (patches, half) = self.cos.dims2()?;
        let hd = 2 * half;
        if !qkv.device().is_cpu()
            || qkv.dtype() != DType::F32
            || qkv.track_op()
            || !qkv.is_contiguous()
            || width != 3 * heads * hd
            || n != prefix + patches
        {
            return Ok(None);
        }
        let c = heads * hd;
        let mut q = vec![0f32; b * n * c];
        let mut k = vec![0f32; b * n * c];
        // The tables are contiguous f32 on the qkv's device too (built so in `new`).
        let shape = QkShape {
            tiles: b,
            tokens: n,
            heads,
            head_dim: hd,
            prefix,
        };
        with_cpu_f32(qkv, |src| {
            with_cpu_f32(&self.cos, |cos| {
                with_cpu_f32(&self.sin, |sin| {
                    split_rotate(src, cos, sin, shape, &mut q, &mut k)
                })
            })
        })???;
        let dev = qkv.device();
        Ok(Some((
            Tensor::from_vec(q, (b, heads, n, hd), dev)?,
            Tensor::from_vec(k, (b, heads, n, hd), dev)?,
        )))
    }
}

/// Sizes of [`VisionRope::split_rotate_qk`]'s operands.
#[derive(Clone, Copy)]
struct QkShape {
    tiles: usize,
    tokens: usize,
    heads: usize,
    head_dim: usize,
    prefix: usize,
}

/// The kernel of [`VisionRope::split_rotate_qk`]: `src` is the fused qkv rows, `cos`/`sin` the
/// `(patches, head_dim / 2)` tables, `q`/`k` the `(tiles, heads, tokens, head_dim)` outputs.
fn split_rotate(src: &[f32], cos: &[f32], sin: &[f32], s: QkShape, q: &mut [f32], k: &mut [f32]) {
    let (hd, half, c) = (s.head_dim, s.head_dim / 2, s.heads * s.head_dim);
    let width = 3 * c;
    // One task per (tensor, tile, head): `tokens · head_dim` outputs, contiguous in the result.
    q.par_chunks_mut(s.tokens * hd)
        .map(|dst| (0, dst))
        .chain(k.par_chunks_mut(s.tokens * hd).map(|dst| (1, dst)))
        .enumerate()
        .for_each(|(task, (which, dst))| {
            let (tile, head) = ((task / s.heads) % s.tiles, task % s.heads);
            for (t, out) in dst.chunks_exact_mut(hd).enumerate() {
                let from = &src[(tile * s.tokens + t) * width + which * c + head * hd..][..hd];
                if t < s.prefix {
                    out.copy_from_slice(from);
                    continue;
                }
                let angles = (t - s.prefix) * half;
                let (cos, sin) = (&cos[angles..][..half], &sin[angles..][..half]);
                for (i, (o, x)) in out
                    .chunks_exact_mut(2)
                    .zip(from.chunks_exact(2))
                    .enumerate()
                {
                    // candle's `rope_i` expressions, so the values are bit-identical.
                    o[0] = x[0] * cos[i] - x[1] * sin[i];
                    o[1] = x[0] * sin[i] + x[1] * cos[i];
                }
            }
        });
}

/// timm `RotaryEmbeddingCat` / `build_rotary_pos_embed(in_pixels=False)`; returns (cos, sin, N, head_dim/2)
/// with angle `m` of patch `n` at `[n·half + m]`.
/// The fused RoPE kernels have no backward pass. These compositions compute the same rotation from
/// differentiable ops and are used only when gradients are tracked (training).
///
/// Half-split layout (Llama): `x = [x1 | x2]` → `[x1·cos − x2·sin | x2·cos + x1·sin]`; `x` is
/// `(b, h, t, d)`, `cos`/`sin` are `(t, d/2)`.
fn rope_half_differentiable(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let half = x.dim(3)? / 2;
    let x1 = x.narrow(3, 0, half)?;
    let x2 = x.narrow(3, half, half)?;
    let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
    let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
    Tensor::cat(&[a, b], 3)
}

/// Interleaved layout (vision tower): pairs `(x[2i], x[2i+1])` rotate by angle i.
fn rope_interleaved_differentiable(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let pairs = x.reshape((b, h, t, d / 2, 2))?;
    let x0 = pairs.narrow(4, 0, 1)?.squeeze(4)?;
    let x1 = pairs.narrow(4, 1, 1)?.squeeze(4)?;
    let a = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let c = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    Tensor::stack(&[a, c], 4)?.reshape((b, h, t, d))
}

pub fn vision_rope_table(cfg: &VisionConfig) -> (Vec<f32>, Vec<f32>, usize, usize) {
    let hd = cfg.head_dim();
    let bands_n = hd / 4;
    let bands: Vec<f32> = (0..bands_n)
        .map(|k| 1.0f32 / powf_f32(cfg.rope_temperature, k as f32 / bands_n as f32))
        .collect();
    let (rows, cols) = cfg.grid();
    // Coordinates along one axis: `(arange(s) + offset) / s * ref` in f32 (the rescale is a no-op when
    // ref == s, but only exactly so when computed in this order).
    let axis = |s: usize, r: Option<usize>| -> Vec<f32> {
        (0..s)
            .map(|i| {
                let t = i as f32 + cfg.rope_grid_offset;
                match r {
                    Some(r) => t / s as f32 * r as f32,
                    None => t,
                }
            })
            .collect()
    };
    let ty = axis(rows, cfg.ref_feat_shape.map(|r| r.0));
    let tx = axis(cols, cfg.ref_feat_shape.map(|r| r.1));
    let half = hd / 2;
    let n = rows * cols;
    let mut cos = Vec::with_capacity(n * half);
    let mut sin = Vec::with_capacity(n * half);
    for &y in &ty {
        for &x in &tx {
            // 'xy' indexing puts the column (x) coordinate first, 'ij' the row.
            let (first, second) = if cfg.rope_grid_xy { (x, y) } else { (y, x) };
            for coord in [first, second] {
                for &b in &bands {
                    let angle = coord * b;
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
    }
    (cos, sin, n, half)
}
