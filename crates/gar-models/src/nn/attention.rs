//! Scaled dot-product attention with an explicit `causal` flag (the vision tower is bidirectional, the
//! decoder causal) and grouped-query support without materializing repeated K/V.
//!
//! Scores and softmax run in f32 whatever the activation dtype, as flash-attention / SDPA accumulate in f32;
//! the probabilities are rounded to the value dtype before the second product, as flash-attention does.

use candle_core::{DType, Result, Tensor};

use crate::nn::fused::{scaled_masked_softmax_last_dim_in_place, CausalMask};

/// Bytes of f32 scores computed at once: queries are processed in blocks of `SCORE_BLOCK_BYTES / (heads × t_k × 4)`
/// rows (at least [`MIN_QUERY_BLOCK`]). Bounds memory for long prompts (a 4.6k-token GAR prompt would otherwise
/// need 2.7 GiB of scores per layer) and keeps each block's scores cache-sized between the score GEMM, the
/// softmax and the value GEMM.
pub const SCORE_BLOCK_BYTES: usize = 16 << 20;
/// Fewest queries per block, so short key ranges are not cut into tiny GEMMs.
pub const MIN_QUERY_BLOCK: usize = 32;

fn query_block(heads: usize, tk: usize) -> usize {
    (SCORE_BLOCK_BYTES / (heads * tk * 4).max(1)).max(MIN_QUERY_BLOCK)
}

/// The operands of attention's two products (`q·kᵀ`, `p·v`) for f32 inputs on the CPU. Sums and the
/// softmax are f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Products {
    /// f32: the reference-exact mode.
    #[default]
    F32,
    /// Rounded to bf16 (AVX-512 BF16 `vdpbf16ps`; twice the f32 multiply-adds per cycle): q, k, the
    /// probabilities and v each carry a relative rounding of at most 2⁻⁹. Where the CPU lacks AVX-512 BF16
    /// (or the head width is not a multiple of 32) the products stay f32.
    Bf16,
}

impl Products {
    /// Whether these products really run as named for heads of width `head_dim` on this CPU (bf16 needs
    /// AVX-512 BF16 and `32 | head_dim`; f32 always does).
    pub fn apply_to(self, head_dim: usize) -> bool {
        match self {
            Self::F32 => true,
            Self::Bf16 => {
                head_dim.is_multiple_of(crate::nn::bf16_tiles::TILE_COLS)
                    && crate::nn::bf16_tiles::available()
            }
        }
    }
}

/// `q`: `(b, n_heads, t_q, d)`; `k`, `v`: `(b, n_kv_heads, t_k, d)` with `n_heads % n_kv_heads == 0`, query head
/// `h` reading kv head `h / (n_heads / n_kv_heads)` (transformers `repeat_kv`). When `causal`, query `i` sits at
/// absolute position `t_k - t_q + i` and sees keys `0..=that`. Returns `(b, n_heads, t_q, d)`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64, causal: bool) -> Result<Tensor> {
    attention_with(q, k, v, scale, causal, Products::F32)
}

/// [`attention`] with a choice of [`Products`] for the many-query CPU path (a single query, other devices
/// and training keep their f32 paths).
pub fn attention_with(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
    products: Products,
) -> Result<Tensor> {
    let (_, nh, tq, _) = q.dims4()?;
    let (_, nkv, tk, _) = k.dims4()?;
    if nh % nkv != 0 {
        candle_core::bail!("attention: {nh} query heads cannot share {nkv} kv heads");
    }
    if tq > tk {
        candle_core::bail!("attention: {tq} queries but only {tk} keys");
    }
    if let Some(out) = crate::nn::single_query::single_query_attention(q, k, v, scale)? {
        return Ok(out);
    }
    if let Some(out) =
        crate::nn::blocked_attention::blocked_attention(q, k, v, scale, causal, products)?
    {
        return Ok(out);
    }
    general_attention(q, k, v, scale, causal)
}

/// The device- and dtype-independent path of [`attention`] from tensor ops (other devices, bf16/f16,
/// training), in query blocks of [`SCORE_BLOCK_BYTES`] of scores.
pub fn general_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
) -> Result<Tensor> {
    let (_, nh, tq, _) = q.dims4()?;
    let (_, _, tk, _) = k.dims4()?;
    let kf = k.to_dtype(DType::F32)?;
    let v = v.contiguous()?;
    let block = query_block(nh, tk);
    if tq <= block {
        return attention_block(q, &kf, &v, scale, causal, tk - tq);
    }
    let mut outs = Vec::with_capacity(tq.div_ceil(block));
    for start in (0..tq).step_by(block) {
        let n = block.min(tq - start);
        let qb = q.narrow(2, start, n)?;
        outs.push(attention_block(
            &qb,
            &kf,
            &v,
            scale,
            causal,
            tk - tq + start,
        )?);
    }
    Tensor::cat(&outs, 2)
}

/// One block of queries whose first row sits at absolute position `offset` (keys start at 0).
fn attention_block(
    q: &Tensor,
    kf: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
    offset: usize,
) -> Result<Tensor> {
    let (b, nh, tq, d) = q.dims4()?;
    let (_, nkv, tk, _) = kf.dims4()?;
    let rep = nh / nkv;
    // Heads sharing a kv head are adjacent, so folding them into the query-length axis turns GQA into plain
    // batched attention against the un-repeated K/V.
    let qf = q
        .to_dtype(DType::F32)?
        .contiguous()?
        .reshape((b, nkv, rep * tq, d))?;
    let scores = qf.matmul(&kf.t()?)?;
    // Only needed when some key lies in the first query's future.
    let mask = (causal && offset + 1 < tk).then_some(CausalMask {
        queries: tq,
        offset,
    });
    // Scale, mask and softmax in one multi-threaded pass on CPU (bit-identical to the separate ops, which
    // other devices and training run).
    // The scores are fresh and used once: overwrite them with the probabilities.
    let probs =
        scaled_masked_softmax_last_dim_in_place(scores, scale, mask)?.to_dtype(v.dtype())?;
    probs.matmul(v)?.reshape((b, nh, tq, d))
}

/// `exp(x − max) / Σ exp(x − max)` over the last axis from differentiable ops (the max is a constant).
pub fn differentiable_softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(candle_core::D::Minus1)?.detach();
    let e = x.broadcast_sub(&max)?.exp()?;
    let z = e.sum_keepdim(candle_core::D::Minus1)?;
    e.broadcast_div(&z)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{Device, D};

    /// Naive reference: per head, the repeated kv head (views made contiguous), full scores, an additive
    /// causal mask, candle's softmax, then `·v`.
    pub(crate) fn naive(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        scale: f64,
        causal: bool,
    ) -> Result<Tensor> {
        let (_, nh, tq, _) = q.dims4()?;
        let (_, nkv, tk, _) = k.dims4()?;
        let rep = nh / nkv;
        let mut outs = vec![];
        for h in 0..nh {
            let qh = q.narrow(1, h, 1)?.contiguous()?;
            let kh = k.narrow(1, h / rep, 1)?.contiguous()?;
            let vh = v.narrow(1, h / rep, 1)?.contiguous()?;
            let mut s = (qh.matmul(&kh.t()?)? * scale)?;
            if causal {
                let off = tk - tq;
                let m: Vec<f32> = (0..tq)
                    .flat_map(|i| (0..tk).map(move |j| if j > off + i { -1e30 } else { 0.0 }))
                    .collect();
                s = s.broadcast_add(&Tensor::from_vec(m, (tq, tk), q.device())?)?;
            }
            let p = candle_nn::ops::softmax(&s, D::Minus1)?;
            outs.push(p.matmul(&vh)?);
        }
        Tensor::cat(&outs, 1)
    }

    #[test]
    fn gqa_causal_matches_naive() -> Result<()> {
        let dev = Device::Cpu;
        for (tq, tk) in [(5, 5), (1, 7), (3, 8), (1100, 1100), (600, 1300)] {
            let q = Tensor::randn(0f32, 1., (2, 6, tq, 8), &dev)?;
            let k = Tensor::randn(0f32, 1., (2, 2, tk, 8), &dev)?;
            let v = Tensor::randn(0f32, 1., (2, 2, tk, 8), &dev)?;
            for causal in [false, true] {
                let want = naive(&q, &k, &v, 0.3, causal)?;
                // The dispatching entry point (the blocked CPU kernels here) and the tensor-op path.
                for (path, got) in [
                    ("attention", attention(&q, &k, &v, 0.3, causal)?),
                    ("general", general_attention(&q, &k, &v, 0.3, causal)?),
                ] {
                    let diff = (got - &want)?
                        .abs()?
                        .flatten_all()?
                        .max(0)?
                        .to_scalar::<f32>()?;
                    assert!(
                        diff < 1e-5,
                        "{path}: tq {tq} tk {tk} causal {causal}: {diff}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn single_query_reads_kv_cache_views() -> Result<()> {
        let dev = Device::Cpu;
        // A KV cache hands out a prefix of a larger per-head buffer: rows contiguous, heads strided.
        let k_full = Tensor::randn(0f32, 1., (2, 2, 20, 16), &dev)?;
        let v_full = Tensor::randn(0f32, 1., (2, 2, 20, 16), &dev)?;
        let (k, v) = (k_full.narrow(2, 0, 13)?, v_full.narrow(2, 0, 13)?);
        let q = Tensor::randn(0f32, 1., (2, 6, 1, 16), &dev)?;
        let fast = crate::nn::single_query::single_query_attention(&q, &k, &v, 0.25)?;
        let Some(fast) = fast else {
            assert!(
                !crate::nn::single_query::avx2_available(),
                "the fast path must apply here"
            );
            return Ok(());
        };
        let want = naive(&q, &k.contiguous()?, &v.contiguous()?, 0.25, true)?;
        let diff = (fast - want)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
