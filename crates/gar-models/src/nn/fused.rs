//! Multi-threaded CPU versions of element-wise steps that candle runs on one thread, bit-identical to the
//! candle ops they replace (same scalar functions, same reduction order), so the f32 path stays exact.
//!
//! Why: at GAR-1B shapes a vision tile computes 23 × 16 × 1025² attention scores and 23 × 1025 × 4096 GELUs;
//! candle's unary/affine ops walk those on a single thread while the GEMMs around them use every core.
//! Other devices, dtypes, layouts and gradient-tracking tensors take the plain candle ops.

use candle_core::cpu::kernels::VecOps;
use candle_core::op::{GeluErf, UnaryOpT};
use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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

/// `x.gelu_erf()` (exact erf form).
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
/// attention builds it; fused as [`scaled_softmax_last_dim`] on CPU (−∞ + x and x + 0 are exact, so the result
/// equals the three separate ops bit for bit).
pub fn scaled_masked_softmax_last_dim(
    scores: &Tensor,
    scale: f64,
    causal: Option<CausalMask>,
) -> Result<Tensor> {
    if fast_path(scores) {
        return scores.apply_op1_no_bwd(&ScaledSoftmax { scale, causal });
    }
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
                for (o, &v) in o.iter_mut().zip(i) {
                    *o = <GeluErf as UnaryOpT>::f32(v);
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

struct ScaledSoftmax {
    scale: f64,
    causal: Option<CausalMask>,
}

impl CustomOp1 for ScaledSoftmax {
    fn name(&self) -> &'static str {
        "scaled-softmax-last-dim"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous_f32(storage, layout, self.name())?;
        let dims = layout.shape().dims();
        let cols = *dims.last().unwrap_or(&1);
        if cols == 0 {
            return Ok((CpuStorage::F32(vec![]), layout.shape().clone()));
        }
        // candle's affine op computes `x * mul + add` in f32 with the f64 factors rounded to f32 first.
        let scale = self.scale as f32;
        let causal = self.causal;
        if let Some(m) = causal {
            if m.queries == 0 || !(x.len() / cols).is_multiple_of(m.queries) {
                candle_core::bail!("{}: rows are not a multiple of the queries", self.name());
            }
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(cols)
            .zip(x.par_chunks(cols))
            .enumerate()
            .for_each(|(row, (dst, src))| {
                for (d, &s) in dst.iter_mut().zip(src) {
                    *d = s * scale + 0.0;
                }
                if let Some(m) = causal {
                    let visible = (m.offset + row % m.queries + 1).min(cols);
                    for d in &mut dst[visible..] {
                        *d = f32::NEG_INFINITY;
                    }
                }
                // Same steps and reductions as candle_nn's softmax_last_dim on the scaled row.
                let mut max = f32::NEG_INFINITY;
                unsafe { f32::vec_reduce_max(dst.as_ptr(), &mut max, cols) };
                for d in dst.iter_mut() {
                    *d = (*d - max).exp();
                }
                let mut sum = 0f32;
                unsafe { f32::vec_reduce_sum(dst.as_ptr(), &mut sum, cols) };
                for d in dst.iter_mut() {
                    *d /= sum;
                }
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn parallel_ops_are_bit_identical_to_candle() -> Result<()> {
        let dev = Device::Cpu;
        let x = (Tensor::randn(0f32, 3., (2, 3, 150, 300), &dev)? - 0.5)?;
        let want = x.gelu_erf()?;
        let got = gelu_erf(&x)?;
        let diff = (want - got)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "gelu_erf differs");
        for scale in [0.125, 0.3] {
            let want = candle_nn::ops::softmax_last_dim(&(&x * scale)?)?;
            let got = scaled_softmax_last_dim(&x, scale)?;
            let diff = (want - got)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "softmax differs at scale {scale}");
            // Causal: 150 queries whose first sits at key 100 of 300. A non-contiguous view and a small
            // tensor take the unfused ops (scale, mask add, softmax): both must match the fused kernel.
            let m = CausalMask {
                queries: 150,
                offset: 100,
            };
            let fused = scaled_masked_softmax_last_dim(&x, scale, Some(m))?;
            let small = scaled_masked_softmax_last_dim(
                &x.narrow(0, 0, 1)?.narrow(1, 0, 1)?,
                scale,
                Some(m),
            )?;
            let plain = scaled_masked_softmax_last_dim(&x.t()?.contiguous()?.t()?, scale, Some(m))?;
            let diff = (&fused - plain)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "causal softmax differs at scale {scale}");
            let first = fused.narrow(0, 0, 1)?.narrow(1, 0, 1)?;
            assert_eq!(
                (first - small)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?,
                0.0
            );
            // Row 0 sees keys 0..=100 only.
            let row0: Vec<f32> = fused.flatten_all()?.narrow(0, 0, 300)?.to_vec1()?;
            assert!(row0[101..].iter().all(|&p| p == 0.0) && row0[100] > 0.0);
        }
        // Small and non-contiguous inputs take the candle ops.
        let small = Tensor::randn(0f32, 1., (3, 7), &dev)?;
        assert_eq!(gelu_erf(&small)?.dims(), &[3, 7]);
        let t = x.transpose(2, 3)?;
        let diff = (gelu_erf(&t)? - t.gelu_erf()?)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }
}
