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
            let queries = &q[(bi * nh + g * rep) * d..][..rep * d];
            let mut p = vec![0f32; 4 * tk];
            // Up to four query heads at a time share each K and V row read.
            for (queries, out) in queries.chunks(4 * d).zip(out.chunks_mut(4 * d)) {
                // SAFETY: AVX2 and FMA are present (checked above); rows hold `d` values, d % 8 == 0.
                unsafe { avx2::attend(queries, d, keys, values, scale, &mut p, out) };
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

pub(crate) fn cpu_f32(s: &Storage) -> Option<&[f32]> {
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

    /// `out_h = softmax(scale · K·query_h) · V` for the `n = queries.len() / d ≤ 4` query heads in `queries`
    /// and `out`; `p` is scratch of at least `n · t_k` scores. The heads run as independent FMA chains over
    /// each key row (one K read for all), and the value pass keeps 32 output lanes of a head in registers.
    ///
    /// # Safety
    /// AVX2 and FMA available; `queries` and `out` hold `n · d` values with `1 ≤ n ≤ 4`, `keys` and
    /// `values` `t_k · d`, `d % 8 == 0`, `p.len() ≥ n · t_k`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn attend(
        queries: &[f32],
        d: usize,
        keys: &[f32],
        values: &[f32],
        scale: f32,
        p: &mut [f32],
        out: &mut [f32],
    ) {
        let n = queries.len() / d;
        let tk = keys.len() / d;
        debug_assert!((1..=4).contains(&n) && out.len() == n * d && p.len() >= n * tk);
        let q = queries.as_ptr();
        for (j, key) in keys.chunks_exact(d).enumerate() {
            let mut acc = [_mm256_setzero_ps(); 4];
            for c in (0..d).step_by(8) {
                let kv = unsafe { _mm256_loadu_ps(key.as_ptr().add(c)) };
                for (h, acc) in acc.iter_mut().enumerate().take(n) {
                    let qv = unsafe { _mm256_loadu_ps(q.add(h * d + c)) };
                    *acc = _mm256_fmadd_ps(qv, kv, *acc);
                }
            }
            for (h, &acc) in acc.iter().enumerate().take(n) {
                p[h * tk + j] = vmath::hsum8(acc) * scale + 0.0;
            }
        }
        for h in 0..n {
            let row = &mut p[h * tk..(h + 1) * tk];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let sum = vmath::exp_shifted_in_place(row, max);
            for s in row.iter_mut() {
                *s /= sum;
            }
        }
        for h in 0..n {
            let weights = &p[h * tk..(h + 1) * tk];
            for c0 in (0..d).step_by(32) {
                let lanes = (d - c0).min(32) / 8;
                let mut acc = [_mm256_setzero_ps(); 4];
                for (j, &w) in weights.iter().enumerate() {
                    let w8 = _mm256_set1_ps(w);
                    let v = values.as_ptr().wrapping_add(j * d + c0);
                    for (i, acc) in acc.iter_mut().enumerate().take(lanes) {
                        *acc = _mm256_fmadd_ps(w8, unsafe { _mm256_loadu_ps(v.add(8 * i)) }, *acc);
                    }
                }
                for (i, acc) in acc.iter().enumerate().take(lanes) {
                    unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(h * d + c0 + 8 * i), *acc) };
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx2 {
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn attend(
        _: &[f32],
        _: usize,
        _: &[f32],
        _: &[f32],
        _: f32,
        _: &mut [f32],
        _: &mut [f32],
    ) {
        unreachable!("single_query_attention checks for AVX2 first")
    }
}
