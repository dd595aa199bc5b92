//! Attention for many queries (a vision tile, a prompt's prefill) in f32 on the CPU, in cache-sized query
//! blocks with register-tiled AVX2 kernels of our own.
//!
//! Why: the general path runs candle's batched matmul for `q·kᵀ`, whose inner dimension is only the head
//! width (64): that product ran at ≈ 30 GFLOP/s on 2 cores against ≈ 110 for the model's linears, and it
//! writes every score block out and reads it back three times. Here each task is one (batch, head, block of
//! query rows): its scores (`rows × t_k`) stay in the core's cache between the score product, the softmax
//! and the value product, K is read from a copy transposed once per kv head into 16-key panels, and a causal
//! block stops at the last key its last query sees. The softmax follows the general path's steps with two
//! fusions: the scaling happens inside the exponent (`exp(s · scale − max)`, one rounding instead of two),
//! and the division by the row's sum is applied to the `d` outputs instead of the `t_k` probabilities (as
//! flash attention does). Results differ from the general path by rounding only (the tests bound it).

use std::cell::RefCell;

use candle_core::{DType, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

use crate::nn::attention::Products;
use crate::nn::single_query::cpu_f32;
use crate::nn::vmath;

mod bf16;

/// Keys per packed panel of Kᵀ, and output columns per register tile (two AVX2 vectors).
const PANEL: usize = 16;
/// Query rows per register tile (12 accumulators + 2 panel vectors + 1 broadcast of the 16 AVX2 registers).
const TILE_ROWS: usize = 6;
/// Keys per chunk of the value product, so a chunk of V (`KEY_CHUNK × d` floats) stays in L2 while every
/// row group of the block passes over it.
const KEY_CHUNK: usize = 256;
/// Target bytes of one task's score block; its query rows are a multiple of [`TILE_ROWS`], at least
/// [`MIN_ROWS`] and at most [`MAX_ROWS`].
const SCORE_BYTES: usize = 192 << 10;
const MIN_ROWS: usize = 24;
const MAX_ROWS: usize = 96;

/// `attention(q, k, v, scale, causal)` of `nn::attention` for `q`: `(b, n_heads, t_q, d)` and `k`, `v`:
/// `(b, n_kv_heads, t_k, d)`. `None` when this path does not apply (another device or dtype, autograd,
/// `d % 8 != 0`, a CPU without AVX2/FMA, a layout whose last axis is strided); the caller then takes the
/// general path. `Products::Bf16` runs both products on bf16 operands ([`bf16`]) where the CPU has AVX-512
/// BF16 and `32 | d`, else in f32.
pub fn blocked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    causal: bool,
    products: Products,
) -> Result<Option<Tensor>> {
    let (b, nh, tq, d) = q.dims4()?;
    let (_, nkv, tk, _) = k.dims4()?;
    let applies = tq > 0
        && tk >= tq
        && q.device().is_cpu()
        && ![q, k, v].iter().any(|t| t.track_op())
        && [q, k, v].iter().all(|t| t.dtype() == DType::F32)
        && d.is_multiple_of(8)
        && scale > 0.0
        && crate::nn::single_query::avx2_available();
    if !applies {
        return Ok(None);
    }
    let (qs, ql) = q.storage_and_layout();
    let (ks, kl) = k.storage_and_layout();
    let (vs, vl) = v.storage_and_layout();
    let (Some(q), Some(k), Some(v)) = (rows(&qs, ql), rows(&ks, kl), rows(&vs, vl)) else {
        return Ok(None);
    };
    let rep = nh / nkv;
    let use_bf16 = products == Products::Bf16 && bf16::applies(d);
    let padded = tk.next_multiple_of(if use_bf16 {
        crate::nn::bf16_tiles::TILE_COLS
    } else {
        PANEL
    });
    // Kᵀ of every (batch, kv head), in panels of 16 keys: panel p holds `d` rows of 16 consecutive keys'
    // values, zero past `t_k`. (The bf16 products pack K and V their own way instead.)
    let kt = parallel_zeroed(
        if use_bf16 { 0 } else { b * nkv * padded * d },
        padded * d,
        |bg, dst| pack_kt(&k, bg / nkv, bg % nkv, tk, d, dst),
    );
    // Per (batch, kv head) for the bf16 products: Kᵀ panels of key pairs, V rows of key pairs.
    let (key_len, value_len) = (padded * d / 2, tk.div_ceil(2) * d);
    let (kt16, vp16) = if use_bf16 {
        let kt16 = parallel_zeroed(b * nkv * key_len, key_len, |bg, kd| {
            bf16::pack_keys(&k, bg / nkv, bg % nkv, tk, d, kd)
        });
        let vp16 = parallel_zeroed(b * nkv * value_len, value_len, |bg, vd| {
            bf16::pack_values(&v, bg / nkv, bg % nkv, tk, d, vd)
        });
        (kt16, vp16)
    } else {
        (Vec::new(), Vec::new())
    };
    let block = (SCORE_BYTES / (padded * 4 * TILE_ROWS) * TILE_ROWS).clamp(MIN_ROWS, MAX_ROWS);
    let scale = scale as f32;
    // Token-major `(b, t_q, heads, d)`, returned as its `(b, heads, t_q, d)` view: the callers' next step,
    // `transpose(1, 2)` and a reshape to `(b, t_q, heads · d)`, then copies nothing (that copy ran on the
    // calling thread alone: ≈ 1 % of a vision tile, round 12).
    let n_out = b * nh * tq * d;
    let mut out: Vec<f32> = Vec::with_capacity(n_out);
    let out_addr = out.spare_capacity_mut().as_mut_ptr() as usize;
    let blocks = tq.div_ceil(block);
    (0..b * nh * blocks).into_par_iter().for_each(|task_index| {
        let (bh, row0) = (task_index / blocks, task_index % blocks * block);
        let rows = block.min(tq - row0);
        let (bi, h) = (bh / nh, bh % nh);
        let g = h / rep;
        let task = Task {
            queries: q.row_ptr(bi, h, row0),
            q_stride: q.row_stride,
            rows,
            values: v.row_ptr(bi, g, 0),
            v_stride: v.row_stride,
            d,
            // Keys visible to the block's last row (all of them without a mask).
            keys: if causal { tk - tq + row0 + rows } else { tk },
            first_visible: causal.then_some(tk - tq + row0 + 1),
            scale,
            // Row `row0 + i` of head h: `rows` rows of d values, `heads · d` apart, that no other
            // task writes.
            out: (out_addr as *mut f32).wrapping_add(((bi * tq + row0) * nh + h) * d),
            out_stride: nh * d,
        };
        let kv = bi * nkv + g;
        SCRATCH.with(|s| {
            if use_bf16 {
                PAIRS.with(|p| {
                    task.run_bf16(
                        &kt16[kv * key_len..][..key_len],
                        &vp16[kv * value_len..][..value_len],
                        &mut s.borrow_mut(),
                        &mut p.borrow_mut(),
                    )
                })
            } else {
                task.run(&kt[kv * padded * d..][..padded * d], &mut s.borrow_mut())
            }
        });
    });
    // SAFETY: the tasks cover every (batch, head) and row block, and each stored all of its values.
    unsafe { out.set_len(n_out) };
    Ok(Some(
        Tensor::from_vec(out, (b, tq, nh, d), &candle_core::Device::Cpu)?.transpose(1, 2)?,
    ))
}

/// `room` zeroed and seen as initialised values: the task that fills a buffer zeroes its own part, in
/// parallel and in cache, instead of one thread zeroing all of it first (that zeroing, the attention
/// output's and the int8 inputs' were ≈ 4 % of a vision tile on the calling thread alone: round 12).
fn zeroed<T: Copy + Default>(room: &mut [std::mem::MaybeUninit<T>]) -> &mut [T] {
    for x in room.iter_mut() {
        x.write(T::default());
    }
    // SAFETY: every element was just written, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(room as *mut [std::mem::MaybeUninit<T>] as *mut [T]) }
}

/// A buffer of `len` values (a multiple of `chunk`) filled by `fill(i, chunk i zeroed)` in parallel.
fn parallel_zeroed<T: Copy + Default + Send>(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(len);
    if len > 0 {
        v.spare_capacity_mut()[..len]
            .par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, room)| fill(i, zeroed(room)));
    }
    // SAFETY: the chunks cover all `len` values and `zeroed` initialised each.
    unsafe { v.set_len(len) };
    v
}

thread_local! {
    /// One task's scores, kept per thread so a long prompt's thousands of tasks do not each map and
    /// fault in a fresh block.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The bf16 path's query and probability rows, per thread like `SCRATCH`.
    static PAIRS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// A `(b, heads, t, d)` f32 view whose rows are contiguous (last stride 1), however the other axes are
/// strided: the vision tower's q/k/v are views into the fused qkv output, the decoder's K/V are prefixes
/// of the KV cache.
struct Rows<'a> {
    data: &'a [f32],
    start: usize,
    batch_stride: usize,
    head_stride: usize,
    row_stride: usize,
    d: usize,
}

fn rows<'a>(s: &'a Storage, l: &Layout) -> Option<Rows<'a>> {
    let st = l.stride();
    let dims = l.dims();
    (st.len() == 4 && (st[3] == 1 || dims[3] == 1)).then_some(())?;
    let data = cpu_f32(s)?;
    // Every row the kernels touch must lie inside the storage (true of any valid candle layout; checked
    // because the kernels read through raw pointers).
    let last = l.start_offset()
        + (0..3)
            .map(|i| dims[i].saturating_sub(1) * st[i])
            .sum::<usize>()
        + dims[3];
    (dims.iter().all(|&n| n > 0) && last <= data.len()).then_some(())?;
    Some(Rows {
        data,
        start: l.start_offset(),
        batch_stride: st[0],
        head_stride: st[1],
        row_stride: st[2],
        d: dims[3],
    })
}

impl Rows<'_> {
    fn row_ptr(&self, b: usize, h: usize, t: usize) -> *const f32 {
        let at = self.start + b * self.batch_stride + h * self.head_stride + t * self.row_stride;
        debug_assert!(at + self.d <= self.data.len());
        self.data[at..].as_ptr()
    }
}

/// Transposes the keys of (batch `b`, kv head `g`) into panels of [`PANEL`] keys (`dst`: `padded × d`).
fn pack_kt(k: &Rows, b: usize, g: usize, tk: usize, d: usize, dst: &mut [f32]) {
    for (p, panel) in dst.chunks_mut(PANEL * d).enumerate() {
        for j in 0..PANEL.min(tk.saturating_sub(p * PANEL)) {
            let at =
                k.start + b * k.batch_stride + g * k.head_stride + (p * PANEL + j) * k.row_stride;
            for (c, &x) in k.data[at..at + d].iter().enumerate() {
                panel[c * PANEL + j] = x;
            }
        }
    }
}

/// One (batch, head, block of query rows).
struct Task {
    queries: *const f32,
    q_stride: usize,
    rows: usize,
    values: *const f32,
    v_stride: usize,
    d: usize,
    /// Keys the block computes: `0..keys`.
    keys: usize,
    /// For a causal block: how many keys its first row sees (row `i` sees `first_visible + i`).
    first_visible: Option<usize>,
    /// The block's output: `rows` rows of `d` floats, `out_stride` apart, written by the value product
    /// (without reading them first) and then normalised.
    out: *mut f32,
    out_stride: usize,
    scale: f32,
}

impl Task {
    /// The block in f32; `kt` is its kv head's Kᵀ panels from [`pack_kt`].
    fn run(&self, kt: &[f32], scratch: &mut Vec<f32>) {
        let (rows, d) = (self.rows, self.d);
        let width = self.keys.next_multiple_of(PANEL);
        // Every score the block reads is written by the score product first, so the buffer is only grown,
        // never cleared (zeroing 400 KB per task showed in profiles).
        if scratch.len() < rows * width {
            scratch.resize(rows * width, 0.0);
        }
        let scores = &mut scratch[..rows * width];
        // Scores: rows × panels, a panel chunk at a time so it is reused from L2 by every row group.
        for chunk0 in (0..width).step_by(KEY_CHUNK) {
            let chunk = KEY_CHUNK.min(width - chunk0);
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let m = TILE_ROWS.min(rows - r0);
                for p0 in (chunk0..chunk0 + chunk).step_by(PANEL) {
                    // SAFETY: AVX2/FMA checked by the caller; the query rows r0..r0+m hold d values at
                    // q_stride apart, the panel d × 16 values, the score rows `width` apart.
                    unsafe {
                        kernels::tile(
                            m,
                            2,
                            d,
                            self.queries.add(r0 * self.q_stride),
                            self.q_stride,
                            kt.as_ptr().add(p0 * d),
                            PANEL,
                            scores.as_mut_ptr().add(r0 * width + p0),
                            width,
                            false,
                        )
                    };
                }
            }
        }
        // Unnormalised probabilities; each output row is divided by its sum after the value product (d
        // divisions a row instead of t_k).
        let sums: Vec<f32> = scores
            .chunks_mut(width)
            .enumerate()
            .map(|(i, row)| {
                let visible = self
                    .first_visible
                    .map_or(self.keys, |f| (f + i).min(self.keys));
                exp_row(&mut row[..self.keys], visible, self.scale)
            })
            .collect();
        // Values: out (rows × d) = probabilities (rows × keys) · V (keys × d), a chunk of keys at a time.
        let tiles: Vec<(usize, usize)> = (0..d)
            .step_by(PANEL)
            .map(|c| (c, (d - c).min(PANEL) / 8))
            .collect();
        for chunk0 in (0..self.keys).step_by(KEY_CHUNK) {
            let chunk = KEY_CHUNK.min(self.keys - chunk0);
            for r0 in (0..rows).step_by(TILE_ROWS) {
                let m = TILE_ROWS.min(rows - r0);
                for &(c, vectors) in &tiles {
                    // SAFETY: as above; V rows chunk0..chunk0+chunk hold d values at v_stride apart,
                    // out rows d apart.
                    unsafe {
                        kernels::tile(
                            m,
                            vectors,
                            chunk,
                            scores.as_ptr().add(r0 * width + chunk0),
                            width,
                            self.values.add(chunk0 * self.v_stride + c),
                            self.v_stride,
                            self.out.add(r0 * self.out_stride + c),
                            self.out_stride,
                            chunk0 > 0,
                        )
                    };
                }
            }
        }
        self.normalise(&sums);
    }

    /// Divides each output row by its probabilities' sum.
    fn normalise(&self, sums: &[f32]) {
        for (r, sum) in sums.iter().enumerate() {
            // SAFETY: row r of the block's output, stored by the value product and written by no other
            // task (see `out`).
            let row = unsafe {
                std::slice::from_raw_parts_mut(self.out.add(r * self.out_stride), self.d)
            };
            for o in row {
                *o /= sum;
            }
        }
    }
}

/// The softmax numerators of one row of raw scores, `exp(s · scale − max)` with `max` over the `visible`
/// keys (the general path's `s · scale` then max, with the product fused into the exponent), 0 for the keys
/// from `visible` on; returns their sum. `scale > 0`, so the max of the scaled scores is the scaled max.
fn exp_row(row: &mut [f32], visible: usize, scale: f32) -> f32 {
    let (seen, masked) = row.split_at_mut(visible);
    masked.fill(0.0);
    let max = vmath::max_of(seen);
    vmath::exp_affine_in_place(seen, scale, max * scale)
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    /// `C (m × 8·vectors) (+)= A (m × k) · B (k × 8·vectors)`, rows of each `ld*` floats apart, for
    /// `1 ≤ m ≤ 6` and `vectors` 1 or 2; the products accumulate in registers over the whole `k`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `a` readable for `m` rows of `k`, `b` for `k` rows of `8·vectors`, `c`
    /// readable (when `accumulate`) and writable for `m` rows of `8·vectors`.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        m: usize,
        vectors: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        macro_rules! go {
            ($m:literal, $v:literal) => {
                unsafe { tile_mv::<$m, $v>(k, a, lda, b, ldb, c, ldc, accumulate) }
            };
        }
        match (m, vectors) {
            (6, 2) => go!(6, 2),
            (5, 2) => go!(5, 2),
            (4, 2) => go!(4, 2),
            (3, 2) => go!(3, 2),
            (2, 2) => go!(2, 2),
            (1, 2) => go!(1, 2),
            (6, 1) => go!(6, 1),
            (5, 1) => go!(5, 1),
            (4, 1) => go!(4, 1),
            (3, 1) => go!(3, 1),
            (2, 1) => go!(2, 1),
            (1, 1) => go!(1, 1),
            _ => unreachable!("tile shape {m}×{vectors}"),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_mv<const M: usize, const V: usize>(
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm256_setzero_ps(); V]; M];
        if accumulate {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = unsafe { _mm256_loadu_ps(c.add(i * ldc + 8 * v)) };
                }
            }
        }
        for p in 0..k {
            let mut bv = [_mm256_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = unsafe { _mm256_loadu_ps(b.add(p * ldb + 8 * v)) };
            }
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = unsafe { _mm256_broadcast_ss(&*a.add(i * lda + p)) };
                for (acc, &bv) in acc.iter_mut().zip(&bv) {
                    *acc = _mm256_fmadd_ps(x, bv, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                unsafe { _mm256_storeu_ps(c.add(i * ldc + 8 * v), acc) };
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernels {
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        _: usize,
        _: usize,
        _: usize,
        _: *const f32,
        _: usize,
        _: *const f32,
        _: usize,
        _: *mut f32,
        _: usize,
        _: bool,
    ) {
        unreachable!("blocked_attention checks for AVX2 first")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::attention::tests::naive;
    use candle_core::Device;

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn matches_naive_on_strided_views_gqa_and_causal_offsets() -> Result<()> {
        if !crate::nn::single_query::avx2_available() {
            return Ok(());
        }
        let dev = Device::Cpu;
        // (heads, kv heads, t_q, t_k, d): tile and panel tails, one-vector column tiles (d % 16 == 8),
        // blocks shorter and longer than a key chunk, queries at the end of a longer key range.
        for (nh, nkv, tq, tk, d) in [
            (2, 1, 2, 2, 8),
            (3, 3, 7, 7, 24),
            (4, 2, 5, 40, 16),
            (6, 2, 97, 97, 64),
            (2, 2, 130, 300, 64),
            (4, 1, 333, 333, 40),
            (2, 1, 300, 301, 32),
            (3, 1, 9, 600, 96),
        ] {
            // q/k/v as the vision tower hands them over: views into one fused (b, t, 3, heads, d) tensor
            // (rows contiguous, rows and heads strided); k/v taken from the first nkv heads.
            let fused =
                Tensor::randn(0f32, 1., (2, tk, 3, nh, d), &dev)?.permute((2, 0, 3, 1, 4))?;
            let q = fused.get(0)?.narrow(2, tk - tq, tq)?;
            let k = fused.get(1)?.narrow(1, 0, nkv)?;
            let v = fused.get(2)?.narrow(1, 0, nkv)?;
            for causal in [false, true] {
                let got = blocked_attention(&q, &k, &v, 0.3, causal, Products::F32)?
                    .expect("the fast path applies");
                let want = naive(&q, &k, &v, 0.3, causal)?;
                let diff = max_abs_diff(&got, &want)?;
                assert!(
                    diff < 2e-5,
                    "{nh}/{nkv} heads, tq {tq} tk {tk} d {d} causal {causal}: {diff}"
                );
                // bf16 operands (where the CPU and the head width allow): q, k, p and v each rounded
                // by ≤ 2⁻⁹. The scores here (0.3 · q·k, sd 2.4 at d = 64) shift by ≈ 0.01, and the
                // outputs, averages of v (|v| ≲ 4), by up to ≈ 0.02 (0.021 seen).
                let got = blocked_attention(&q, &k, &v, 0.3, causal, Products::Bf16)?
                    .expect("the fast path applies");
                let diff16 = max_abs_diff(&got, &want)?;
                if bf16::applies(d) {
                    assert!(
                        diff16 < 4e-2 && diff16 > diff,
                        "bf16: {nh}/{nkv} heads, tq {tq} tk {tk} d {d} causal {causal}: {diff16}"
                    );
                } else {
                    assert_eq!(diff16, diff, "f32 products where bf16 does not apply");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn declines_what_it_does_not_cover() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (1, 2, 4, 12), &dev)?;
        // d % 8 != 0, bf16, and a strided last axis all go to the general path.
        assert!(blocked_attention(&q, &q, &q, 0.5, true, Products::F32)?.is_none());
        let h = q.to_dtype(DType::BF16)?;
        assert!(blocked_attention(&h, &h, &h, 0.5, true, Products::Bf16)?.is_none());
        let t = Tensor::randn(0f32, 1., (1, 2, 8, 4), &dev)?.transpose(2, 3)?;
        assert!(blocked_attention(&t, &t, &t, 0.5, false, Products::F32)?.is_none());
        Ok(())
    }
}
