//! An 8-bit × 8-bit product for any number of rows, AVX2, with weights and activations both quantized per
//! block of 32 inputs: the vision tower's linears under `--vision-int8` (a tile's 1,025 tokens) and the
//! decoder's under `--quant q8` (prefill and decode from the one copy of the weights).
//!
//! Why: the f32 GEMM was 67 % of a GAR-1B vision tile after round 6 (docs/performance.md), and on this
//! project's AVX2-only CPU (Zen 3, no VNNI) `vpmaddwd` issues two per cycle, 16 multiply-adds each: twice the
//! multiply-adds per cycle of the f32 FMA stream. The [`super::q8`] kernel cannot serve many rows: its quad
//! layout folds each block's sums horizontally, cheap for one row and dominant for a thousand.
//!
//! Layout: output columns in panels of 16; for each panel and 32-input block, sixteen groups of 2 inputs ×
//! 16 columns (32 bytes: columns 0–7 then 8–15, each column's 2 inputs side by side), then the 16 columns'
//! f32 scales. The kernel widens 16 bytes to 16-bit lanes (`vpmovsxbw`) and multiplies them with a row's
//! broadcast input pair, so each i32 lane of `vpmaddwd` sums one (row, column) product; a tile of up to
//! 6 rows shares every weight load, and a block ends with one convert and one FMA per (row, 8 columns)
//! with the scale `d_row · d_column`. (The round-6 form multiplied bytes with `vpmaddubsw`, which needs
//! the weights' signs moved onto the activations first: two more instructions per product vector, and
//! 10–15 % slower in an interleaved kernel benchmark.)
//!
//! Numerics: llama.cpp's Q8_0 rounding for both operands (`d = max|x| / 127`, `q = round(x / d)`) with the
//! weight scales kept in f32; the integer sums are exact (a pair of products is at most 2 · 127², far inside
//! i32).

use rayon::prelude::*;

use crate::nn::q8::quantize_block_scalar;

/// Inputs per quantization block.
pub const BLOCK: usize = 32;
/// Output columns per panel (two AVX2 vectors of i32 lanes).
pub const PANEL: usize = 16;
/// Inputs whose products one i32 lane sums per `vpmaddwd`.
const GROUP: usize = 2;
/// Bytes of one panel's weights for one block.
const PANEL_BLOCK_BYTES: usize = BLOCK * PANEL;
/// Input rows per register tile (12 i32 accumulators + 2 weight vectors + broadcast + product).
const TILE_ROWS: usize = 6;
/// Activation blocks from which their quantization is spread over the thread pool.
const PARALLEL_BLOCKS: usize = 4096;
/// Bytes of quantized input rows per pass over a task's panels: with a panel's weights (≤ 128 KiB for the
/// decoder's 8192-wide input) they stay in a 512 KiB L2.
const ROW_CHUNK_BYTES: usize = 192 << 10;

/// A `(out, in)` weight matrix in the panel layout above.
pub struct W8Matrix {
    out: usize,
    inp: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
}

impl std::fmt::Debug for W8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "W8Matrix({}×{})", self.out, self.inp)
    }
}

/// Whether this CPU runs the kernel (AVX2 + FMA).
pub fn available() -> bool {
    crate::nn::single_query::avx2_available()
}

/// Where input `i` of a block sits, for panel column `col`, in the panel's block bytes: per group of 2 inputs,
/// 16 bytes for columns 0–7 then 16 for columns 8–15, each column's 2 inputs side by side.
fn slot(i: usize, col: usize) -> usize {
    (i / GROUP) * PANEL * GROUP + (col / 8) * 8 * GROUP + (col % 8) * GROUP + i % GROUP
}

/// Q8_0's rounding of one block ([`quantize_block_scalar`]) with the values widened to i16, through the vectorised
/// form where the CPU has it.
pub(crate) fn quantize_block_wide(x: &[f32], q: &mut [i16; BLOCK]) -> f32 {
    assert_eq!(x.len(), BLOCK, "one block");
    if available() {
        // SAFETY: AVX2/FMA checked; `x` and `q` hold one block each.
        return unsafe { kernel::quantize_block_i16(x.as_ptr(), q.as_mut_ptr()) };
    }
    let mut block = [0i8; BLOCK];
    let d = quantize_block_scalar(x, &mut block);
    for (q, &b) in q.iter_mut().zip(&block) {
        *q = b.into();
    }
    d
}

/// Q8_0 rounding of row-major activations per block of 32 (`x.len()` a multiple of 32): the values widened
/// to i16 (the kernel multiplies 16-bit lanes) and one scale per block.
fn quantize_rows(x: &[f32]) -> (Vec<i16>, Vec<f32>) {
    assert!(x.len().is_multiple_of(BLOCK), "whole blocks");
    let mut q = vec![0i16; x.len()];
    let mut d = vec![0f32; x.len() / BLOCK];
    let quantize = |(d, (x, q)): (&mut f32, (&[f32], &mut [i16]))| {
        *d = quantize_block_wide(x, q.try_into().expect("chunks of one block"));
    };
    // A few rows are not worth a hand-off to the pool.
    if d.len() >= PARALLEL_BLOCKS {
        d.par_iter_mut()
            .zip(x.par_chunks_exact(BLOCK).zip(q.par_chunks_exact_mut(BLOCK)))
            .with_min_len(PARALLEL_BLOCKS / 4)
            .for_each(quantize);
    } else {
        d.iter_mut()
            .zip(x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)))
            .for_each(quantize);
    }
    (q, d)
}

impl W8Matrix {
    /// Quantizes a row-major `(out, in)` f32 matrix; needs `out % 16 == 0` and `in % 32 == 0`.
    pub fn quantize(w: &[f32], out: usize, inp: usize) -> Result<Self, String> {
        if !out.is_multiple_of(PANEL) || !inp.is_multiple_of(BLOCK) || w.len() != out * inp {
            return Err(format!(
                "W8A8 needs a ({out}, {inp}) matrix with {PANEL} | out and {BLOCK} | in, got {} values",
                w.len()
            ));
        }
        let nb = inp / BLOCK;
        let mut qs = vec![0i8; out * inp];
        let mut d = vec![0f32; out * nb];
        qs.par_chunks_mut(nb * PANEL_BLOCK_BYTES)
            .zip(d.par_chunks_mut(nb * PANEL))
            .enumerate()
            .for_each(|(p, (qs, d))| {
                for col in 0..PANEL {
                    let row = &w[(p * PANEL + col) * inp..][..inp];
                    let mut block = [0i16; BLOCK];
                    for (b, x) in row.chunks_exact(BLOCK).enumerate() {
                        d[b * PANEL + col] = quantize_block_wide(x, &mut block);
                        let qs = &mut qs[b * PANEL_BLOCK_BYTES..][..PANEL_BLOCK_BYTES];
                        for (i, &q) in block.iter().enumerate() {
                            // |q| ≤ 127 by construction.
                            qs[slot(i, col)] = q as i8;
                        }
                    }
                }
            });
        Ok(Self { out, inp, qs, d })
    }

    pub fn rows(&self) -> usize {
        self.out
    }

    pub fn cols(&self) -> usize {
        self.inp
    }

    /// The dense `(out, in)` matrix the blocks stand for.
    pub fn dequantize(&self) -> Vec<f32> {
        let nb = self.inp / BLOCK;
        let mut w = vec![0f32; self.out * self.inp];
        for (o, row) in w.chunks_exact_mut(self.inp).enumerate() {
            let (p, col) = (o / PANEL, o % PANEL);
            for (b, x) in row.chunks_exact_mut(BLOCK).enumerate() {
                let at = (p * nb + b) * PANEL_BLOCK_BYTES;
                let d = self.d[(p * nb + b) * PANEL + col];
                for (i, x) in x.iter_mut().enumerate() {
                    *x = self.qs[at + slot(i, col)] as f32 * d;
                }
            }
        }
        w
    }

    /// `x · Wᵀ` for `m` row-major input rows of width `in`: an `(m, out)` row-major result. The rows are
    /// quantized per block first.
    ///
    /// # Panics
    /// When `x` is not `m × in`, or on a CPU without AVX2/FMA (check [`available`]).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        assert_eq!(x.len(), m * self.inp, "input is not (m, in)");
        assert!(available(), "W8Matrix::matmul needs AVX2 and FMA");
        let (inp, out, nb) = (self.inp, self.out, self.inp / BLOCK);
        let (xq, xd) = quantize_rows(x);
        // Not zeroed first: every value is stored exactly once by the tiles below (zeroing every linear's
        // output showed as `memset` in vision profiles).
        let mut y: Vec<f32> = Vec::with_capacity(m * out);
        let row_chunk = (ROW_CHUNK_BYTES / (2 * inp)).div_ceil(TILE_ROWS).max(1) * TILE_ROWS;
        let y_addr = y.spare_capacity_mut().as_mut_ptr() as usize;
        let panels = out / PANEL;
        let per_task = panels
            .div_ceil(4 * rayon::current_num_threads().max(1))
            .max(1);
        (0..panels.div_ceil(per_task))
            .into_par_iter()
            .for_each(|task| {
                let y = y_addr as *mut f32;
                for i0 in (0..m).step_by(row_chunk) {
                    let i1 = (i0 + row_chunk).min(m);
                    for p in task * per_task..((task + 1) * per_task).min(panels) {
                        let w = &self.qs[p * nb * PANEL_BLOCK_BYTES..][..nb * PANEL_BLOCK_BYTES];
                        let wd = &self.d[p * nb * PANEL..][..nb * PANEL];
                        for r0 in (i0..i1).step_by(TILE_ROWS) {
                            let rows = TILE_ROWS.min(i1 - r0);
                            // SAFETY: AVX2/FMA checked above. Rows r0..r0+rows of xq/xd hold `in` values
                            // and `nb` scales; the panel holds nb blocks; tasks own disjoint panels, so
                            // they write disjoint 16-column strips of rows r0.. of `y`, which outlives
                            // the loop (`y_addr` is its buffer).
                            unsafe {
                                kernel::tile(
                                    rows,
                                    nb,
                                    xq[r0 * inp..].as_ptr(),
                                    inp,
                                    xd[r0 * nb..].as_ptr(),
                                    nb,
                                    w.as_ptr(),
                                    wd.as_ptr(),
                                    y.add(r0 * out + p * PANEL),
                                    out,
                                )
                            };
                        }
                    }
                }
            });
        // SAFETY: the tasks cover every panel and every row tile, and each (row, column) is stored by
        // exactly one tile, so all `m × out` values are initialised.
        unsafe { y.set_len(m * out) };
        y
    }
}

#[cfg(target_arch = "x86_64")]
mod kernel {
    use super::{BLOCK, GROUP, PANEL, PANEL_BLOCK_BYTES};
    use std::arch::x86_64::*;

    /// [`quantize_block`](crate::nn::q8::quantize_block) for one block of 32 activations, vectorised, with
    /// the values written widened to i16; bit for bit the same result (the same max, the same `/ 127` and
    /// `1 / d`, the same products, and `round`'s ties away from zero). The scalar form's `roundf` calls
    /// were ≈ 10 % of a vision tile under `--vision-int8`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `x` holds 32 readable floats, `q` 32 writable values.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn quantize_block_i16(x: *const f32, q: *mut i16) -> f32 {
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let v: [__m256; 4] = std::array::from_fn(|k| unsafe { _mm256_loadu_ps(x.add(8 * k)) });
        let a: [__m256; 4] = std::array::from_fn(|k| _mm256_and_ps(v[k], abs_mask));
        let mut m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b01_00_11_10));
        m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b10_11_00_01));
        let d = _mm256_cvtss_f32(m) / 127.0;
        let inv = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
        let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
        let sign_mask = _mm256_set1_ps(-0.0);
        let i: [__m256i; 4] = std::array::from_fn(|k| {
            let y = _mm256_mul_ps(v[k], inv);
            // Round half away from zero: truncate, then step away from zero where |y - t| ≥ ½ (exact:
            // |y| ≤ 127 here, so the difference has no rounding).
            let t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            let frac = _mm256_and_ps(_mm256_sub_ps(y, t), abs_mask);
            let step = _mm256_or_ps(_mm256_and_ps(y, sign_mask), one);
            let up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), step);
            _mm256_cvttps_epi32(_mm256_add_ps(t, up))
        });
        // packs interleaves the 128-bit halves; the permute puts the 8 + 8 values back in order.
        for (k, pair) in i.chunks_exact(2).enumerate() {
            let p = _mm256_permute4x64_epi64(_mm256_packs_epi32(pair[0], pair[1]), 0b11_01_10_00);
            unsafe { _mm256_storeu_si256(q.add(16 * k) as *mut __m256i, p) };
        }
        d
    }

    /// `c (rows × 16) = Σ_b d_x[r, b] · d_w[b, col] · Σ_{i∈b} x[r, i] · w[col, i]` for `1 ≤ rows ≤ 6`.
    ///
    /// # Safety
    /// AVX2 and FMA available; `a` holds `rows` rows of `nb · 32` values `lda` apart, `ad` `rows` rows of
    /// `nb` scales `ldad` apart, `w` `nb` panel blocks and `wd` `nb · 16` scales, `c` `rows` rows of 16
    /// writable floats `ldc` apart.
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        rows: usize,
        nb: usize,
        a: *const i16,
        lda: usize,
        ad: *const f32,
        ldad: usize,
        w: *const i8,
        wd: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        macro_rules! go {
            ($r:literal) => {
                unsafe { tile_r::<$r>(nb, a, lda, ad, ldad, w, wd, c, ldc) }
            };
        }
        match rows {
            6 => go!(6),
            5 => go!(5),
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            1 => go!(1),
            _ => unreachable!("tile of {rows} rows"),
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_r<const R: usize>(
        nb: usize,
        a: *const i16,
        lda: usize,
        ad: *const f32,
        ldad: usize,
        w: *const i8,
        wd: *const f32,
        c: *mut f32,
        ldc: usize,
    ) {
        // Float sums per (row, 8 columns), updated once per block; the i32 sums of a block in registers.
        let mut acc = [[_mm256_setzero_ps(); 2]; R];
        for b in 0..nb {
            let mut s = [[_mm256_setzero_si256(); 2]; R];
            let wb = unsafe { w.add(b * PANEL_BLOCK_BYTES) };
            for g in 0..BLOCK / GROUP {
                // 2 inputs × 8 columns per vector, widened to 16 bits.
                let (w0, w1) = unsafe {
                    let at = wb.add(g * PANEL * GROUP);
                    (
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(at as *const __m128i)),
                        _mm256_cvtepi8_epi16(_mm_loadu_si128(at.add(16) as *const __m128i)),
                    )
                };
                for (r, s) in s.iter_mut().enumerate() {
                    let x2 = unsafe {
                        std::ptr::read_unaligned(
                            a.add(r * lda + b * BLOCK + g * GROUP) as *const i32
                        )
                    };
                    let x = _mm256_set1_epi32(x2);
                    s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(w0, x));
                    s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(w1, x));
                }
            }
            let (d0, d1) = unsafe {
                (
                    _mm256_loadu_ps(wd.add(b * PANEL)),
                    _mm256_loadu_ps(wd.add(b * PANEL + 8)),
                )
            };
            for ((acc, s), r) in acc.iter_mut().zip(&s).zip(0..) {
                let dx = _mm256_set1_ps(unsafe { *ad.add(r * ldad + b) });
                acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0]), _mm256_mul_ps(dx, d0), acc[0]);
                acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[1]), _mm256_mul_ps(dx, d1), acc[1]);
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            unsafe {
                _mm256_storeu_ps(c.add(r * ldc), acc[0]);
                _mm256_storeu_ps(c.add(r * ldc + 8), acc[1]);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod kernel {
    pub unsafe fn quantize_block_i16(_: *const f32, _: *mut i16) -> f32 {
        unreachable!("W8Matrix::matmul checks for AVX2 first")
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        _: usize,
        _: usize,
        _: *const i8,
        _: usize,
        _: *const f32,
        _: usize,
        _: *const i8,
        _: *const f32,
        _: *mut f32,
        _: usize,
    ) {
        unreachable!("W8Matrix::matmul checks for AVX2 first")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::q8::quantize_block;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-2.0f32..2.0)).collect()
    }

    /// The kernel's arithmetic in scalar form: exact integer sums per block, scaled by `d_x · d_w`.
    fn reference(wq: &W8Matrix, x: &[f32], m: usize) -> Vec<f32> {
        let (inp, nb) = (wq.inp, wq.inp / BLOCK);
        let w = wq.dequantize();
        let mut y = vec![0f32; m * wq.out];
        for i in 0..m {
            for o in 0..wq.out {
                let mut acc = 0f32;
                for b in 0..nb {
                    let xb = &x[i * inp + b * BLOCK..][..BLOCK];
                    let mut xq = [0i8; BLOCK];
                    let dx = quantize_block(xb, &mut xq);
                    let dw = wq.d[(o / PANEL * nb + b) * PANEL + o % PANEL];
                    let isum: i32 = (0..BLOCK)
                        .map(|k| {
                            let wqk = if dw == 0.0 {
                                0
                            } else {
                                (w[o * inp + b * BLOCK + k] / dw).round() as i32
                            };
                            wqk * xq[k] as i32
                        })
                        .sum();
                    acc += isum as f32 * (dx * dw);
                }
                y[i * wq.out + o] = acc;
            }
        }
        y
    }

    #[test]
    fn dequantize_is_q8_0_rounding_per_row_block() {
        let (out, inp) = (32, 64);
        let w = random(out * inp, 1);
        let q = W8Matrix::quantize(&w, out, inp).unwrap();
        for (o, row) in q.dequantize().chunks(inp).enumerate() {
            for (b, got) in row.chunks(BLOCK).enumerate() {
                let x = &w[o * inp + b * BLOCK..][..BLOCK];
                let mut want = [0i8; BLOCK];
                let d = quantize_block(x, &mut want);
                for (g, &q) in got.iter().zip(&want) {
                    assert_eq!(*g, q as f32 * d);
                }
            }
        }
        assert!(W8Matrix::quantize(&w, 24, 64 + 40).is_err());
    }

    #[test]
    fn vectorised_block_quantization_is_the_scalar_one() {
        if !available() {
            return;
        }
        // Random blocks, an all-zero block, and exact halves (max 127 gives d = 1: 2.5 → 3, -3.5 → -4).
        let mut blocks: Vec<Vec<f32>> = (0..64).map(|s| random(BLOCK, 100 + s)).collect();
        blocks.push(vec![0.0; BLOCK]);
        blocks.push(
            (0..BLOCK)
                .map(|i| [127.0, 2.5, -3.5, 0.5, -0.5, 126.5][i % 6])
                .collect(),
        );
        for x in &blocks {
            let mut want = [0i8; BLOCK];
            let dw = quantize_block_scalar(x, &mut want);
            let mut got = [0i16; BLOCK];
            // SAFETY: AVX2 checked above; both buffers hold one block.
            let dg = unsafe { kernel::quantize_block_i16(x.as_ptr(), got.as_mut_ptr()) };
            assert_eq!(dg.to_bits(), dw.to_bits());
            assert!(
                got.iter().zip(&want).all(|(&g, &w)| g == i16::from(w)),
                "{x:?}"
            );
        }
    }

    #[test]
    fn matmul_matches_its_scalar_form_and_the_dense_product() {
        if !available() {
            return;
        }
        // Row counts with every tile tail (1–5 rows after whole 6-row tiles) and, at a 4096-wide input
        // (24-row chunks), more than one row chunk.
        for (m, out, inp) in [
            (1, 16, 32),
            (5, 48, 96),
            (7, 16, 64),
            (8, 16, 64),
            (9, 16, 32),
            (130, 32, 256),
            (100, 32, 4096),
        ] {
            let w = random(out * inp, 2);
            let x = random(m * inp, 3);
            let q = W8Matrix::quantize(&w, out, inp).unwrap();
            let got = q.matmul(&x, m);
            let want = reference(&q, &x, m);
            for (g, r) in got.iter().zip(&want) {
                assert!((g - r).abs() <= 1e-4 * r.abs().max(1.0), "{g} vs {r}");
            }
            // Against the unquantized product: both operands carry ≤ 0.4 % rounding per element.
            let mut err = 0f64;
            let mut norm = 0f64;
            for i in 0..m {
                for o in 0..out {
                    let dense: f32 = (0..inp).map(|k| x[i * inp + k] * w[o * inp + k]).sum();
                    err += ((got[i * out + o] - dense) as f64).powi(2);
                    norm += (dense as f64).powi(2);
                }
            }
            assert!(
                (err / norm).sqrt() < 0.01,
                "relative error {}",
                (err / norm).sqrt()
            );
        }
    }
}
