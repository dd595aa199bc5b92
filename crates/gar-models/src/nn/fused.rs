//! Multi-threaded, vectorised CPU versions of element-wise steps of the attention and the vision MLP
//! (`nn::vmath`): the softmax computes candle's steps with a vectorised `exp` (≤ 2 ulp from libm) and a
//! lane-wise sum, agreeing with candle's op to ~1e-6 relative; GELU uses the A&S erf (GELU error ≤ 3e-7·max(|x|, 1)).
//!
//! Why: at GAR-1B shapes a vision tile computes 23 × 16 × 1025² attention scores and 23 × 1025 × 4096 GELUs;
//! candle's unary/affine ops walk those on a single thread while the GEMMs around them use every core.
//! Other devices, dtypes, layouts and gradient-tracking tensors take the plain candle ops.

use candle_core::cpu::kernels::VecOps;
use candle_core::{CpuStorage, CustomOp1, DType, InplaceOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::nn::vmath;

/// Rows of at least this many elements are processed in parallel chunks; smaller tensors are not worth the
/// thread hand-off and use the candle op.
const MIN_PARALLEL_ELEMS: usize = 1 << 16;

fn fast_path(x: &Tensor) -> bool {
    x.device().is_cpu()
        && x.dtype() == DType::F32
        && !x.track_op()
        && x.is_contiguous()
        && x.elem_count() >= MIN_PARALLEL_ELEMS
}

/// `x.gelu_erf()` (erf form; on the CPU fast path with the vectorised erf approximation, |Δ| ≤ 3e-7·max(|x|, 1)).
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if !fast_path(x) {
        return x.gelu_erf();
    }
    x.apply_op1_no_bwd(&GeluErfPar)
}

/// `softmax_last_dim(scores * scale)`: the scaling, max, exp, sum and division of each row in one pass
/// over memory, rows spread over the thread pool.
pub fn scaled_softmax_last_dim(scores: &Tensor, scale: f64) -> Result<Tensor> {
    scaled_masked_softmax_last_dim(scores, scale, None)
}

/// Causal mask of [`scaled_masked_softmax_last_dim`]: row `r` of the scores is query `r % queries`, which
/// sits at key position `offset + r % queries` and sees keys `0..=offset + r % queries`.
#[derive(Debug, Clone, Copy)]
pub struct CausalMask {
    pub queries: usize,
    pub offset: usize,
}

/// `softmax_last_dim(scores * scale + mask)`, the mask being 0 on visible keys and −∞ on the others, as the
/// attention builds it; fused as [`scaled_softmax_last_dim`] on CPU (masked keys come out exactly 0, visible
/// ones within ~1e-6 relative of the three separate ops).
pub fn scaled_masked_softmax_last_dim(
    scores: &Tensor,
    scale: f64,
    causal: Option<CausalMask>,
) -> Result<Tensor> {
    if fast_path(scores) {
        return scores.apply_op1_no_bwd(&ScaledSoftmax { scale, causal });
    }
    unfused_scaled_masked_softmax(scores, scale, causal)
}

/// [`scaled_masked_softmax_last_dim`] that overwrites `scores` with the probabilities on the CPU fast path
/// (no second score-sized buffer: at GAR-1B vision shapes that is 67 MB of fresh pages per block). `scores` must
/// not share its storage with any other tensor — pass a freshly computed one, as the attention does.
pub fn scaled_masked_softmax_last_dim_in_place(
    scores: Tensor,
    scale: f64,
    causal: Option<CausalMask>,
) -> Result<Tensor> {
    if fast_path(&scores) {
        scores.inplace_op1(&ScaledSoftmax { scale, causal })?;
        return Ok(scores);
    }
    unfused_scaled_masked_softmax(&scores, scale, causal)
}

/// The separate candle ops (other devices, dtypes, layouts, small or gradient-tracking tensors).
fn unfused_scaled_masked_softmax(
    scores: &Tensor,
    scale: f64,
    causal: Option<CausalMask>,
) -> Result<Tensor> {
    let scaled = (scores * scale)?;
    let scaled = match causal {
        None => scaled,
        Some(m) => {
            let dims = scaled.dims().to_vec();
            let tk = *dims.last().unwrap_or(&0);
            let rows = scaled.elem_count() / tk.max(1);
            let mask: Vec<f32> = (0..m.queries)
                .flat_map(|i| {
                    (0..tk).map(move |j| {
                        if j > m.offset + i {
                            f32::NEG_INFINITY
                        } else {
                            0.0
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (1, m.queries, tk), scores.device())?
                .to_dtype(scaled.dtype())?;
            scaled
                .reshape((rows / m.queries, m.queries, tk))?
                .broadcast_add(&mask)?
                .reshape(dims)?
        }
    };
    if scaled.track_op() {
        crate::nn::attention::differentiable_softmax_last_dim(&scaled)
    } else {
        candle_nn::ops::softmax_last_dim(&scaled)
    }
}

/// `silu(gate) ⊙ up` (the Llama MLP), one parallel pass with the vectorised `exp` on the CPU fast path
/// (≤ a few ulp from candle's `silu` then `mul`), the candle ops elsewhere.
pub fn silu_mul(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !(fast_path(gate) && fast_path(up) && gate.dims() == up.dims()) {
        return candle_nn::ops::silu(gate)? * up;
    }
    let out = with_two_slices(gate, up, "silu_mul", |g, u| {
        let mut out = vec![0f32; g.len()];
        let chunk = chunk_len(g.len());
        out.par_chunks_mut(chunk)
            .zip(g.par_chunks(chunk).zip(u.par_chunks(chunk)))
            .for_each(|(o, (g, u))| vmath::silu_mul(g, u, o));
        out
    })?;
    Tensor::from_vec(out, gate.shape(), gate.device())
}

/// Runs `f` on the f32 values of two contiguous CPU tensors (the fast paths' inputs).
fn with_two_slices<R>(
    a: &Tensor,
    b: &Tensor,
    op: &str,
    f: impl FnOnce(&[f32], &[f32]) -> R,
) -> Result<R> {
    let (sa, la) = a.storage_and_layout();
    let (sb, lb) = b.storage_and_layout();
    let (candle_core::Storage::Cpu(sa), candle_core::Storage::Cpu(sb)) = (&*sa, &*sb) else {
        candle_core::bail!("{op}: expected CPU storage");
    };
    Ok(f(contiguous_f32(sa, la, op)?, contiguous_f32(sb, lb, op)?))
}

/// `x + a · g` for `x`, `a`: `(…, d)` and `g`: `(d)` (the vision block's LayerScale residual; `g` absent:
/// `x + a`), one pass on the CPU fast path with candle's two roundings (`a · g`, then the sum).
pub fn add_scaled(x: &Tensor, a: &Tensor, g: Option<&Tensor>) -> Result<Tensor> {
    let d = *x.dims().last().unwrap_or(&0);
    let g_ok = g.is_none_or(|g| g.dims() == [d] && g.dtype() == DType::F32 && !g.track_op());
    if !(fast_path(x) && fast_path(a) && x.dims() == a.dims() && g_ok && d > 0) {
        return match g {
            Some(g) => x + a.broadcast_mul(g)?,
            None => x + a,
        };
    }
    let gv: Option<Vec<f32>> = g.map(|g| g.to_vec1()).transpose()?;
    let out = with_two_slices(x, a, "add_scaled", |xv, av| {
        let mut out = vec![0f32; xv.len()];
        let chunk = chunk_len(xv.len()).next_multiple_of(d);
        out.par_chunks_mut(chunk)
            .zip(xv.par_chunks(chunk).zip(av.par_chunks(chunk)))
            .for_each(|(o, (x, a))| match &gv {
                Some(g) => {
                    for ((o, x), a) in o.chunks_mut(d).zip(x.chunks(d)).zip(a.chunks(d)) {
                        for (((o, &x), &a), &g) in o.iter_mut().zip(x).zip(a).zip(g) {
                            *o = x + a * g;
                        }
                    }
                }
                None => {
                    for ((o, &x), &a) in o.iter_mut().zip(x).zip(a) {
                        *o = x + a;
                    }
                }
            });
        out
    })?;
    Tensor::from_vec(out, x.shape(), x.device())
}

/// `nn.LayerNorm` over the last axis of an f32 CPU tensor in one pass per row, rows spread over the thread
/// pool: `((x − mean) · rstd) · w + b` with `rstd = 1 / √(var + eps)`, the composed ops' formula and rounding
/// points (only the order of the row sums differs). `None` off the fast path (the caller composes ops).
pub fn layer_norm(x: &Tensor, w: &[f32], b: &[f32], eps: f64) -> Result<Option<Tensor>> {
    let d = *x.dims().last().unwrap_or(&0);
    if !fast_path(x) || d == 0 || w.len() != d || b.len() != d {
        return Ok(None);
    }
    let (xs, xl) = x.storage_and_layout();
    let candle_core::Storage::Cpu(xs) = &*xs else {
        return Ok(None);
    };
    let xv = contiguous_f32(xs, xl, "layer_norm")?;
    let n = xv.len();
    // Not zeroed first: every value is written below (a vision tile's 46 LayerNorms zeroed 4 MiB each on
    // the calling thread alone).
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let eps = eps as f32;
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(d)
        .zip(xv.par_chunks(d))
        .with_min_len(16)
        .for_each(|(o, x)| {
            let mean = lane_sum(x, |v| v) / d as f32;
            let var = lane_sum(x, |v| (v - mean) * (v - mean)) / d as f32;
            let rstd = 1.0 / (var + eps).sqrt();
            for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                o.write((x - mean) * rstd * w + b);
            }
        });
    // SAFETY: the rows cover all n values and each was written.
    unsafe { out.set_len(n) };
    Ok(Some(Tensor::from_vec(out, x.shape(), x.device())?))
}

/// `Σ f(x)` in 16 interleaved partial sums, which the compiler vectorises: a sequential fold is one chain
/// of dependent adds (≈ 4 cycles each), which made the vision LayerNorms ≈ 4 % of a tile (round 12).
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 16];
    let chunks = x.chunks_exact(16);
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

fn contiguous_f32<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32 storage");
    };
    match layout.contiguous_offsets() {
        Some((a, b)) => Ok(&data[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Chunk length for element-wise maps: a few chunks per thread for balance.
fn chunk_len(n: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    n.div_ceil(threads * 4).max(4096)
}

struct GeluErfPar;

impl CustomOp1 for GeluErfPar {
    fn name(&self) -> &'static str {
        "gelu-erf-par"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let mut out = vec![0f32; x.len()];
        let chunk = chunk_len(x.len());
        out.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .for_each(|(o, i)| {
                vmath::gelu_erf(i, o);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

struct ScaledSoftmax {
    scale: f64,
    causal: Option<CausalMask>,
}

impl ScaledSoftmax {
    const NAME: &'static str = "scaled-softmax-last-dim";

    /// Scale, mask and softmax every row of `data` (rows of `cols` elements) in place, rows spread over the
    /// thread pool.
    fn rows_in_place(&self, data: &mut [f32], cols: usize) -> Result<()> {
        if cols == 0 {
            return Ok(());
        }
        // candle's affine op computes `x * mul + add` in f32 with the f64 factors rounded to f32 first.
        let scale = self.scale as f32;
        let causal = self.causal;
        if let Some(m) = causal {
            if m.queries == 0 || !(data.len() / cols).is_multiple_of(m.queries) {
                candle_core::bail!("{}: rows are not a multiple of the queries", Self::NAME);
            }
        }
        data.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(row, dst)| {
                for d in dst.iter_mut() {
                    *d = *d * scale + 0.0;
                }
                if let Some(m) = causal {
                    let visible = (m.offset + row % m.queries + 1).min(cols);
                    for d in &mut dst[visible..] {
                        *d = f32::NEG_INFINITY;
                    }
                }
                // candle_nn's softmax_last_dim steps on the scaled row, with the vectorised exp (≤ 2 ulp from
                // libm's) and its lane-wise sum.
                let mut max = f32::NEG_INFINITY;
                unsafe { f32::vec_reduce_max(dst.as_ptr(), &mut max, cols) };
                let sum = vmath::exp_shifted_in_place(dst, max);
                for d in dst.iter_mut() {
                    *d /= sum;
                }
            });
        Ok(())
    }
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let mut out = contiguous_f32(storage, layout, Self::NAME)?.to_vec();
        self.rows_in_place(&mut out, *layout.shape().dims().last().unwrap_or(&1))?;
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

impl InplaceOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: expected f32 storage", Self::NAME);
        };
        let Some((a, b)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: input must be contiguous", Self::NAME);
        };
        self.rows_in_place(&mut data[a..b], *layout.shape().dims().last().unwrap_or(&1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    /// Element-wise `|a − b| ≤ 2e-6 · |b| + 1e-9`: a couple of ulp in the exponentials and the sum.
    fn assert_close(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
        let a: Vec<f32> = a.flatten_all()?.to_vec1()?;
        let b: Vec<f32> = b.flatten_all()?.to_vec1()?;
        assert_eq!(a.len(), b.len(), "{what}: lengths");
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!(
                (x - y).abs() <= 2e-6 * y.abs() + 1e-9,
                "{what}: element {i}: {x} vs {y}"
            );
        }
        Ok(())
    }

    fn t_of(x: &Tensor) -> Result<Tensor> {
        x.transpose(2, 3)
    }

    fn small_probe(dev: &Device) -> Result<Tensor> {
        Tensor::randn(0f32, 1., (3, 7), dev)
    }

    #[test]
    fn gelu_and_softmax_agree_with_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3., (2, 3, 150, 300), &dev)? - 0.5)?;
        // |x| stays under ~20 here: 3e-7 · 20.
        assert!(
            max_abs_diff(&x.gelu_erf()?, &gelu_erf(&x)?)? > 0.0,
            "the fast path did not run"
        );
        assert!(
            max_abs_diff(&x.gelu_erf()?, &gelu_erf(&x)?)? <= 6e-6,
            "gelu_erf differs"
        );
        for scale in [0.125, 0.3, 2.0] {
            let want = candle_nn::ops::softmax_last_dim(&(&x * scale)?)?;
            let got = scaled_softmax_last_dim(&x, scale)?;
            assert_close(&got, &want, &format!("softmax at scale {scale}"))?;
            // Causal: 150 queries whose first sits at key 100 of 300. A non-contiguous view and a small
            // tensor take the unfused ops (scale, mask add, softmax): both must agree with the fused kernel.
            let m = CausalMask {
                queries: 150,
                offset: 100,
            };
            let fused = scaled_masked_softmax_last_dim(&x, scale, Some(m))?;
            let in_place = scaled_masked_softmax_last_dim_in_place(x.copy()?, scale, Some(m))?;
            assert_eq!(max_abs_diff(&fused, &in_place)?, 0.0, "in place differs");
            let small = scaled_masked_softmax_last_dim(
                &x.narrow(0, 0, 1)?.narrow(1, 0, 1)?,
                scale,
                Some(m),
            )?;
            let plain = scaled_masked_softmax_last_dim(&x.t()?.contiguous()?.t()?, scale, Some(m))?;
            assert_close(&fused, &plain, &format!("causal softmax at scale {scale}"))?;
            let first = fused.narrow(0, 0, 1)?.narrow(1, 0, 1)?;
            assert_close(&first, &small, "causal softmax, first rows")?;
            // Row 0 sees keys 0..=100 only; masked keys are exactly 0 and every row sums to 1.
            let row0: Vec<f32> = fused.flatten_all()?.narrow(0, 0, 300)?.to_vec1()?;
            assert!(row0[101..].iter().all(|&p| p == 0.0) && row0[100] > 0.0);
            let sums: Vec<f32> = fused.sum(3)?.flatten_all()?.to_vec1()?;
            assert!(sums.iter().all(|s| (s - 1.0).abs() < 1e-5));
        }
        // LayerNorm and the scaled residual against the composed candle ops.
        let (w, b) = (
            Tensor::randn(0f32, 1., 300, &dev)?,
            Tensor::randn(0f32, 1., 300, &dev)?,
        );
        let composed = {
            let mean = x.mean_keepdim(3)?;
            let c = x.broadcast_sub(&mean)?;
            let rstd = (c.sqr()?.mean_keepdim(3)? + 1e-6)?.sqrt()?.recip()?;
            c.broadcast_mul(&rstd)?
                .broadcast_mul(&w)?
                .broadcast_add(&b)?
        };
        let fused = layer_norm(&x, &w.to_vec1()?, &b.to_vec1()?, 1e-6)?.expect("fast path");
        assert!(
            max_abs_diff(&fused, &composed)? <= 2e-5,
            "layer_norm differs"
        );
        assert!(layer_norm(&small_probe(&dev)?, &[0.0; 7], &[0.0; 7], 1e-6)?.is_none());
        let a = Tensor::randn(0f32, 1., x.dims(), &dev)?;
        let want = (&x + a.broadcast_mul(&w)?)?;
        assert_eq!(max_abs_diff(&add_scaled(&x, &a, Some(&w))?, &want)?, 0.0);
        assert_eq!(max_abs_diff(&add_scaled(&x, &a, None)?, &(&x + &a)?)?, 0.0);
        let t = x.transpose(2, 3)?;
        let at = a.transpose(2, 3)?;
        assert_eq!(
            max_abs_diff(&add_scaled(&t, &at, None)?, &(&t + &at)?)?,
            0.0
        );
        // The Llama MLP's gate against candle's silu then mul: a few ulp of the vectorised exp.
        let up = Tensor::randn(0f32, 1., x.dims(), &dev)?;
        let want = (candle_nn::ops::silu(&x)? * &up)?;
        assert_close(&silu_mul(&x, &up)?, &want, "silu_mul")?;
        assert_eq!(
            max_abs_diff(&silu_mul(&t_of(&x)?, &t_of(&up)?)?, &t_of(&want)?)?,
            0.0
        );
        // Small and non-contiguous inputs take the candle ops.
        let small = Tensor::randn(0f32, 1., (3, 7), &dev)?;
        assert_eq!(gelu_erf(&small)?.dims(), &[3, 7]);
        let t = x.transpose(2, 3)?;
        assert_eq!(max_abs_diff(&gelu_erf(&t)?, &t.gelu_erf()?)?, 0.0);
        Ok(())
    }
}
