//! Attention for a single query per head — every decode step — in f32 on the CPU.
//!
//! Why: the general path runs two batched GEMMs of one row each per layer and first copies V out of the KV
//! cache to make it contiguous; at a 1k context that cost about as much per token as 20 % of the weight
//! reads of a q8 decode step. Here each kv head is one task that reads its K and V rows in place from the
//! cache, with the softmax in between done the same way as the general path (`x · scale + 0`, max, the
//! vectorised exp, divide by the sum).

use candle_core::{CpuStorage, DType, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::nn::vmath;

/// `attention(q, k, v, scale)` for `q`: `(b, n_heads, 1, d)` and `k`, `v`: `(b, n_kv_heads, t_k, d)` — no
/// mask is needed, the query is the last position. `None` when this path does not apply (another device or
/// dtype, more than one query, a CPU without AVX2/FMA, rows of K/V not contiguous); the caller then takes
/// the general path.
pub fn single_query_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
) -> Result<Option<Tensor>> {
    let (b, nh, tq, d) = q.dims4()?;
    let (_, nkv, tk, _) = k.dims4()?;
    let applies = tq == 1
        && tk > 0
        && q.device().is_cpu()
        && ![q, k, v].iter().any(|t| t.track_op()) // training needs the differentiable ops
        && [q, k, v].iter().all(|t| t.dtype() == DType::F32)
        && d.is_multiple_of(8)
        && avx2_available();
    if !applies {
        return Ok(None);
    }
    let device = q.device().clone();
    let q = q.contiguous()?;
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Some(q), Some(kc), Some(vc)) = (
        cpu_f32(&qs)
            .zip(ql.contiguous_offsets())
            .map(|(s, (a, e))| &s[a..e]),
        heads(&ks, kl, d),
        heads(&vs, vl, d),
    ) else {
        return Ok(None);
    };
    let rep = nh / nkv;
    let scale = scale as f32;
    let mut out = vec![0f32; b * nh * d];
    out.par_chunks_mut(rep * d)
        .enumerate()
        .for_each(|(head, out)| {
            let (bi, g) = (head / nkv, head % nkv);
            let keys = &kc.data[kc.start + bi * kc.batch_stride + g * kc.head_stride..][..tk * d];
            let values = &vc.data[vc.start + bi * vc.batch_stride + g * vc.head_stride..][..tk * d];
            let mut p = vec![0f32; tk];
            for (r, out) in out.chunks_exact_mut(d).enumerate() {
                let query = &q[(bi * nh + g * rep + r) * d..][..d];
                // SAFETY: AVX2 and FMA are present (checked above); all rows hold `d` values, d % 8 == 0.
                unsafe { avx2::attend(query, keys, values, scale, &mut p, out) };
            }
        });
    Ok(Some(Tensor::from_vec(out, (b, nh, 1, d), &device)?))
}

pub(crate) fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn cpu_f32(s: &Storage) -> Option<&[f32]> {
    match s {
        Storage::Cpu(CpuStorage::F32(v)) => Some(v),
        _ => None,
    }
}

/// Where the K or V rows of each (batch, kv head) start in a `(b, n_kv, t, d)` view whose rows are
/// contiguous (as the KV cache's views are: a prefix of a larger per-head buffer).
struct Heads<'a> {
    data: &'a [f32],
    start: usize,
    batch_stride: usize,
    head_stride: usize,
}

fn heads<'a>(s: &'a Storage, l: &Layout, d: usize) -> Option<Heads<'a>> {
    let st = l.stride();
    (st.len() == 4 && st[3] == 1 && st[2] == d).then_some(())?;
    Some(Heads {
        data: cpu_f32(s)?,
        start: l.start_offset(),
        batch_stride: st[0],
        head_stride: st[1],
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::vmath;
    use std::arch::x86_64::*;

    /// `out = softmax(scale · K·query) · V` for one query; `p` is scratch of one score per key.
    ///
    /// # Safety
    /// AVX2 and FMA available; `query` and `out` hold `d` values, `keys` and `values` `p.len() · d`, d % 8 == 0.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend(
        query: &[f32],
        keys: &[f32],
        values: &[f32],
        scale: f32,
        p: &mut [f32],
        out: &mut [f32],
    ) {
        let d = query.len();
        for (s, key) in p.iter_mut().zip(keys.chunks_exact(d)) {
            *s = unsafe { dot(query, key) } * scale + 0.0;
        }
        let max = p.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
        let sum = vmath::exp_shifted_in_place(p, max);
        for s in p.iter_mut() {
            *s /= sum;
        }
        out.fill(0.0);
        for (&w, value) in p.iter().zip(values.chunks_exact(d)) {
            let w8 = _mm256_set1_ps(w);
            for (o, v) in out.chunks_exact_mut(8).zip(value.chunks_exact(8)) {
                unsafe {
                    let acc = _mm256_loadu_ps(o.as_ptr());
                    let acc = _mm256_fmadd_ps(w8, _mm256_loadu_ps(v.as_ptr()), acc);
                    _mm256_storeu_ps(o.as_mut_ptr(), acc);
                }
            }
        }
    }

    /// # Safety
    /// As [`attend`]; `a` and `b` have the same length, a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
            acc = unsafe {
                _mm256_fmadd_ps(
                    _mm256_loadu_ps(x.as_ptr()),
                    _mm256_loadu_ps(y.as_ptr()),
                    acc,
                )
            };
        }
        let s = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    pub unsafe fn attend(_: &[f32], _: &[f32], _: &[f32], _: f32, _: &mut [f32], _: &mut [f32]) {
        unreachable!("single_query_attention checks for AVX2 first")
    }
}
