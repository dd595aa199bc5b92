//! Q8_0 weights (llama.cpp's 8-bit block format: 32 int8 values and one f16 scale per block) with a product
//! kernel of our own for the few-row case, i.e. decode.
//!
//! Why not candle's Q8_0 kernel: on this project's AVX2 machine it spends ≈ 17 cycles per 32-weight block (two
//! out-of-line f16 conversions and a horizontal sum per output row and block), so q8 decode ran at 5 % of the
//! memory bandwidth. Here one pass over a block of the (quantized) activation serves four weight rows, the
//! weight scale converts inline with F16C, and the per-row accumulators stay in registers until the row ends.
//!
//! The numbers are llama.cpp's: weights round to `round(x / d)` with `d = max|x| / 127` stored as f16, so
//! [`Q8Matrix::dequantize`] gives exactly what candle's `QTensor` of `GgmlDType::Q8_0` gives (tested). The
//! activation rows are quantized the same way per block, with the scale kept in f32.

use rayon::prelude::*;

/// Values per block (the block size of Q8_0).
pub const BLOCK: usize = 32;

/// One block of one row: scale `d` (f16 bits) and 32 values; the weight is `d · qs[i]`.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct Q8Block {
    d: u16,
    qs: [i8; BLOCK],
}

/// Block `b` of four consecutive rows side by side (their scales first), so that a quad of rows is read as
/// one sequential stream (the hardware prefetcher follows one stream per core far better than four) and the
/// four scales convert with one instruction.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
struct QuadBlock {
    d: [u16; 4],
    qs: [[i8; BLOCK]; 4],
}

const ZERO_QUAD: QuadBlock = QuadBlock {
    d: [0; 4],
    qs: [[0; BLOCK]; 4],
};

/// A `(rows, cols)` weight matrix in Q8_0: rows `4q .. 4q+4` as `quads[q·nb .. (q+1)·nb]` (`nb = cols / 32`),
/// the last `rows mod 4` rows as plain row-major blocks in `tail`.
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    quads: Vec<QuadBlock>,
    tail: Vec<Q8Block>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Matrix({}×{})", self.rows, self.cols)
    }
}

/// Whether this CPU runs the vector kernel (AVX2 + FMA + F16C). Without it, callers keep candle's kernels.
pub fn kernel_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
            && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Quantizes one block of 32 values into `qs`, returning the scale `max|x| / 127` (0 for an all-zero block);
/// vectorised on AVX2 ([`crate::nn::w8a8`]'s rounding, bit for bit [`quantize_block_scalar`]'s).
pub(crate) fn quantize_block(x: &[f32], qs: &mut [i8]) -> f32 {
    if crate::nn::w8a8::available() {
        let mut wide = [0i16; BLOCK];
        let d = crate::nn::w8a8::quantize_wide(x, &mut wide);
        for (q, w) in qs.iter_mut().zip(wide) {
            // |w| ≤ 127 by construction.
            *q = w as i8;
        }
        return d;
    }
    quantize_block_scalar(x, qs)
}

/// [`quantize_block`] in plain scalar code: llama.cpp's Q8_0 rule, `round(x / d)` with ties away from 0.
pub(crate) fn quantize_block_scalar(x: &[f32], qs: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let inv = if d != 0.0 { 1.0 / d } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        *q = (v * inv).round() as i8;
    }
    d
}

fn f16_bits(d: f32) -> u16 {
    half::f16::from_f32(d).to_bits()
}

fn f32_of(bits: u16) -> f32 {
    half::f16::from_bits(bits).to_f32()
}

impl Q8Matrix {
    /// Quantizes a row-major `(rows, cols)` f32 matrix; `cols` must be a multiple of [`BLOCK`].
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self, String> {
        if !cols.is_multiple_of(BLOCK) || w.len() != rows * cols {
            return Err(format!(
                "Q8_0 needs a ({rows}, {cols}) matrix with {BLOCK} | cols, got {} values",
                w.len()
            ));
        }
        let nb = cols / BLOCK;
        let mut quads = vec![ZERO_QUAD; rows / 4 * nb];
        quads
            .par_chunks_mut(nb.max(1))
            .zip(w.par_chunks(4 * cols))
            .for_each(|(quad, w)| {
                for (b, qb) in quad.iter_mut().enumerate() {
                    for k in 0..4 {
                        let x = &w[k * cols + b * BLOCK..][..BLOCK];
                        qb.d[k] = f16_bits(quantize_block(x, &mut qb.qs[k]));
                    }
                }
            });
        let tail = w[rows / 4 * 4 * cols..]
            .chunks_exact(BLOCK)
            .map(|x| {
                let mut b = Q8Block {
                    d: 0,
                    qs: [0; BLOCK],
                };
                b.d = f16_bits(quantize_block(x, &mut b.qs));
                b
            })
            .collect();
        Ok(Self {
            rows,
            cols,
            quads,
            tail,
        })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    fn nb(&self) -> usize {
        self.cols / BLOCK
    }

    /// The dense `(rows, cols)` f32 matrix the blocks stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let (cols, nb) = (self.cols, self.nb());
        let mut out = vec![0f32; self.rows * cols];
        let (head, tail) = out.split_at_mut(self.rows / 4 * 4 * cols);
        head.par_chunks_mut(4 * cols)
            .zip(self.quads.par_chunks(nb.max(1)))
            .for_each(|(out, quad)| {
                for (b, qb) in quad.iter().enumerate() {
                    for k in 0..4 {
                        let o = &mut out[k * cols + b * BLOCK..][..BLOCK];
                        let d = f32_of(qb.d[k]);
                        for (v, &q) in o.iter_mut().zip(&qb.qs[k]) {
                            *v = q as f32 * d;
                        }
                    }
                }
            });
        for (o, b) in tail.chunks_exact_mut(BLOCK).zip(&self.tail) {
            let d = f32_of(b.d);
            for (v, &q) in o.iter_mut().zip(&b.qs) {
                *v = q as f32 * d;
            }
        }
        out
    }

    /// `x · Wᵀ` for `m` row-major input rows of width `cols`: an `(m, rows)` row-major result. Meant for few
    /// rows (each quad of weight rows is read once per call and reused across the `m` inputs while it is in
    /// cache); for many rows the dense GEMM over [`Q8Matrix::dequantize`] is faster.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.cols, "input is not (m, cols)");
        let (rows, nb) = (self.rows, self.nb());
        let acts = Activations::quantize(x, m, self.cols);
        let mut out = vec![0f32; m * rows];
        let out_addr = out.as_mut_ptr() as usize;
        let n_quads = rows / 4;
        let per_task = quads_per_task(n_quads);
        (0..n_quads.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let out = out_addr as *mut f32;
                // Input rows a chunk at a time, so the chunk's quantized rows stay in this core's cache
                // while every quad of the task passes over them (prefill: m in the thousands).
                for i0 in (0..m).step_by(ROW_CHUNK) {
                    for q in task * per_task..((task + 1) * per_task).min(n_quads) {
                        let quad = &self.quads[q * nb..(q + 1) * nb];
                        for i in i0..(i0 + ROW_CHUNK).min(m) {
                            let v = quad_dot(quad, acts.row(i));
                            // SAFETY: tasks own disjoint quads, so disjoint output columns of every result
                            // row; `out` outlives the parallel loop and `out_addr` is its buffer.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    v.as_ptr(),
                                    out.add(i * rows + 4 * q),
                                    4,
                                )
                            };
                        }
                    }
                }
            });
        for (t, row) in self.tail.chunks_exact(nb.max(1)).enumerate() {
            for i in 0..m {
                out[i * rows + 4 * n_quads + t] = row_dot(row, acts.row(i));
            }
        }
        out
    }
}

/// Input rows per pass over a task's quads: 64 rows of a 2048-wide input are 130 KiB of int8, an L2's share.
const ROW_CHUNK: usize = 64;

/// Quads per parallel task: about 8 tasks per thread so uneven cores even out, at least 4 quads.
fn quads_per_task(quads: usize) -> usize {
    let tasks = 8 * rayon::current_num_threads().max(1);
    quads.div_ceil(tasks).max(4)
}

/// Input rows quantized per block like the weights (`d` kept in f32).
struct Activations {
    nb: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
}

impl Activations {
    fn quantize(x: &[f32], m: usize, cols: usize) -> Self {
        let nb = cols / BLOCK;
        let mut qs = vec![0i8; m * cols];
        let d = x
            .chunks_exact(BLOCK)
            .zip(qs.chunks_exact_mut(BLOCK))
            .map(|(x, q)| quantize_block(x, q))
            .collect();
        Self { nb, qs, d }
    }

    fn row(&self, i: usize) -> (&[i8], &[f32]) {
        (
            &self.qs[i * self.nb * BLOCK..(i + 1) * self.nb * BLOCK],
            &self.d[i * self.nb..(i + 1) * self.nb],
        )
    }
}

/// The four products of one quad of weight rows with one quantized input row.
fn quad_dot(quad: &[QuadBlock], x: (&[i8], &[f32])) -> [f32; 4] {
    assert!(quad.len() == x.1.len() && x.0.len() == x.1.len() * BLOCK);
    #[cfg(target_arch = "x86_64")]
    if kernel_available() {
        // SAFETY: the CPU has the features the kernel is compiled for; the lengths are checked above.
        return unsafe { avx2::quad_dot(quad, x.0, x.1) };
    }
    quad_dot_scalar(quad, x)
}

fn row_dot(row: &[Q8Block], (xq, xd): (&[i8], &[f32])) -> f32 {
    row.iter()
        .zip(xq.chunks_exact(BLOCK).zip(xd))
        .map(|(b, (q, &dx))| block_dot(&b.qs, q) as f32 * (f32_of(b.d) * dx))
        .sum()
}

fn block_dot(a: &[i8; BLOCK], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&a, &b)| a as i32 * b as i32).sum()
}

/// The reference form of the vector kernel: exact integer sums per block, scaled by `d_w · d_x`.
fn quad_dot_scalar(quad: &[QuadBlock], (xq, xd): (&[i8], &[f32])) -> [f32; 4] {
    std::array::from_fn(|k| {
        quad.iter()
            .zip(xq.chunks_exact(BLOCK).zip(xd))
            .map(|(qb, (q, &dx))| block_dot(&qb.qs[k], q) as f32 * (f32_of(qb.d[k]) * dx))
            .sum()
    })
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{QuadBlock, BLOCK};
    use std::arch::x86_64::*;

    /// How far ahead (in quad blocks of 136 bytes) the weights are prefetched.
    const PREFETCH_BLOCKS: usize = 16;

    /// The 8 partial i32 sums of `w · x` over one 32-value block. `maddubs` wants one unsigned operand, so the
    /// signs move from `w` onto `x` (|w| · ±x); |w| ≤ 127 keeps its pairwise i16 sums from saturating.
    #[target_feature(enable = "avx2,fma,f16c")]
    fn block_sums(w: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
        _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
    }

    /// # Safety
    /// `xq` holds `32 · quad.len()` values and `xd` `quad.len()` scales.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quad_dot(quad: &[QuadBlock], xq: &[i8], xd: &[f32]) -> [f32; 4] {
        debug_assert!(xd.len() == quad.len() && xq.len() == quad.len() * BLOCK);
        // Lane k and lane k + 4 accumulate row k.
        let mut acc = _mm256_setzero_ps();
        for (b, qb) in quad.iter().enumerate() {
            // Ask for the weights a few blocks ahead now: two cores alone do not keep enough reads in flight
            // to saturate memory (`examples/q8_probe`: 17 → 33 GB/s on the MLP shapes).
            let ahead = quad.as_ptr().wrapping_add(b + PREFETCH_BLOCKS) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64));
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(128));
            let x = unsafe { _mm256_loadu_si256(xq.as_ptr().add(b * BLOCK) as *const __m256i) };
            let w = qb.qs.as_ptr() as *const __m256i;
            let s: [__m256i; 4] =
                std::array::from_fn(|k| block_sums(unsafe { _mm256_loadu_si256(w.add(k)) }, x));
            // [r0 r1 r2 r3 | r0 r1 r2 r3]: each row's 8 partial sums folded to two.
            let rows =
                _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
            let dw = _mm_cvtph_ps(unsafe { _mm_loadl_epi64(qb.d.as_ptr() as *const __m128i) });
            let dx = _mm_set1_ps(unsafe { *xd.get_unchecked(b) });
            let d = _mm_mul_ps(dw, dx);
            let scale = _mm256_insertf128_ps(_mm256_castps128_ps256(d), d, 1);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(rows), scale, acc);
        }
        let sum = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
        let mut out = [0f32; 4];
        unsafe { _mm_storeu_ps(out.as_mut_ptr(), sum) };
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    #[test]
    fn blocks_are_candles_q8_0() -> candle_core::Result<()> {
        let (rows, cols) = (37, 96);
        let mut w = random(rows * cols, 1);
        w[..BLOCK].fill(0.0); // an all-zero block must stay zero, not NaN
        let ours = Q8Matrix::quantize(&w, rows, cols).unwrap().dequantize();
        let t = Tensor::from_vec(w, (rows, cols), &Device::Cpu)?;
        let theirs = QTensor::quantize(&t, GgmlDType::Q8_0)?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        assert_eq!(ours, theirs);
        assert!(ours[..BLOCK].iter().all(|&v| v == 0.0));
        Ok(())
    }

    #[test]
    fn products_match_the_scalar_form_and_the_dense_product() {
        // 4·9 + 3 rows: full quads and a tail; 3 input rows.
        let (rows, cols, m) = (39, 160, 3);
        let w = random(rows * cols, 2);
        let x = random(m * cols, 3);
        let q = Q8Matrix::quantize(&w, rows, cols).unwrap();
        let got = q.matmul(&x, m);
        let acts = Activations::quantize(&x, m, cols);
        let nb = cols / BLOCK;
        for i in 0..m {
            for r in 0..rows {
                let exact: f32 = (0..cols).map(|c| x[i * cols + c] * w[r * cols + c]).sum();
                let scalar = if r < rows / 4 * 4 {
                    quad_dot_scalar(&q.quads[r / 4 * nb..(r / 4 + 1) * nb], acts.row(i))[r % 4]
                } else {
                    row_dot(&q.tail[(r - rows / 4 * 4) * nb..][..nb], acts.row(i))
                };
                let v = got[i * rows + r];
                assert!(
                    (v - scalar).abs() <= 1e-5 * scalar.abs().max(1.0),
                    "{v} vs {scalar}"
                );
                // 8-bit weights and activations: ~1 % of the row's magnitude (sum of |x·w| ≈ 2·cols/3).
                assert!(
                    (v - exact).abs() < 0.005 * cols as f32,
                    "{v} vs exact {exact}"
                );
            }
        }
    }

    #[test]
    fn rejects_widths_off_the_block() {
        assert!(Q8Matrix::quantize(&[0.0; 48], 1, 48).is_err());
        assert!(Q8Matrix::quantize(&[0.0; 64], 1, 32).is_err());
    }
}
