//! The AVX2 kernels: Q8_0 rounding of activation blocks (for this packing) and weight rows (for both) and the
//! [`Packing::Pairs`] product, where `vpmaddwd` multiplies a row's broadcast pair of 16-bit inputs with 8
//! columns' pairs of weights widened from bytes (`vpmovsxbw`); a tile of up to 6 rows shares every weight
//! load.
//!
//! [`Packing::Pairs`]: super::Packing::Pairs

use super::{BLOCK, PANEL};
use std::arch::x86_64::*;

/// Input rows per register tile (12 i32 accumulators + 2 weight vectors + broadcast + product).
pub const TILE_ROWS: usize = 6;
/// Inputs per `vpmaddwd` lane.
const GROUP: usize = 2;

/// `max |x|` over `n` floats (`n` a multiple of 8). The maximum does not depend on the order of the
/// comparisons, so it is exactly the scalar fold's.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn abs_max(x: *const f32, n: usize) -> f32 {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for i in (0..n).step_by(8) {
        m = _mm256_max_ps(
            m,
            _mm256_and_ps(unsafe { _mm256_loadu_ps(x.add(i)) }, abs_mask),
        );
    }
    m = _mm256_max_ps(m, _mm256_permute2f128_ps(m, m, 1));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b01_00_11_10));
    m = _mm256_max_ps(m, _mm256_shuffle_ps(m, m, 0b10_11_00_01));
    _mm256_cvtss_f32(m)
}

/// Q8_0's scale of a block whose largest magnitude is `amax`, and the factor that maps values to
/// integers (`1 / d`, or 0 for an all-zero block).
#[inline]
fn scale_and_inverse(amax: f32) -> (f32, f32) {
    let d = amax / 127.0;
    (d, if d != 0.0 { 1.0 / d } else { 0.0 })
}

/// 32 values at `x` times `inv`, rounded half away from zero, as four vectors of eight i32: bit for bit
/// [`quantize_block_scalar`](crate::nn::q8::quantize_block_scalar)'s products and `round`. (The scalar
/// form's `roundf` calls were ≈ 10 % of a vision tile under `--vision-int8`.)
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn round_scaled(x: *const f32, inv: f32) -> [__m256i; 4] {
    let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let inv = _mm256_set1_ps(inv);
    let (half, one) = (_mm256_set1_ps(0.5), _mm256_set1_ps(1.0));
    let sign_mask = _mm256_set1_ps(-0.0);
    std::array::from_fn(|k| {
        let y = _mm256_mul_ps(unsafe { _mm256_loadu_ps(x.add(8 * k)) }, inv);
        // Round half away from zero: truncate, then step away from zero where |y - t| ≥ ½ (exact: |y| ≤ 127
        // here, so the difference has no rounding).
        let t = _mm256_round_ps(y, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
        let frac = _mm256_and_ps(_mm256_sub_ps(y, t), abs_mask);
        let step = _mm256_or_ps(_mm256_and_ps(y, sign_mask), one);
        let up = _mm256_and_ps(_mm256_cmp_ps(frac, half, _CMP_GE_OQ), step);
        _mm256_cvttps_epi32(_mm256_add_ps(t, up))
    })
}

/// Q8_0's rounding of `n` values (`n` a multiple of 32) under one scale, written widened to i16 (the
/// `Pairs` kernel's operand and the weights before packing); returns the scale.
///
/// # Safety
/// AVX2 and FMA available; `x` holds `n` readable floats, `q` `n` writable values.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn quantize_i16(x: *const f32, n: usize, q: *mut i16) -> f32 {
    let (d, inv) = scale_and_inverse(unsafe { abs_max(x, n) });
    for at in (0..n).step_by(BLOCK) {
        let i = unsafe { round_scaled(x.add(at), inv) };
        // packs interleaves the 128-bit halves; the permute puts the 8 + 8 values back in order.
        for (k, pair) in i.chunks_exact(2).enumerate() {
            let p = _mm256_permute4x64_epi64(_mm256_packs_epi32(pair[0], pair[1]), 0b11_01_10_00);
            unsafe { _mm256_storeu_si256(q.add(at + 16 * k) as *mut __m256i, p) };
        }
    }
    d
}

/// `c (rows × 16) = d_w[col] · Σ_b d_x[r, b] · Σ_{i∈b} x[r, i] · w[col, i]` over activation blocks `b`
/// of `act_block` inputs, for `1 ≤ rows ≤ 6`, weights in the `Pairs` packing.
///
/// # Safety
/// AVX2 and FMA available; `act_block` a multiple of 32; `a` holds `rows` rows of `nab · act_block`
/// values `lda` apart, `ad` `rows` rows of `nab` scales `ldad` apart, `w` the panel's `nab · act_block`
/// inputs and `wd` its 16 scales, `c` `rows` rows of 16 writable floats `ldc` apart.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    rows: usize,
    nab: usize,
    act_block: usize,
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
            unsafe { tile_r::<$r>(nab, act_block, a, lda, ad, ldad, w, wd, c, ldc) }
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
    nab: usize,
    act_block: usize,
    a: *const i16,
    lda: usize,
    ad: *const f32,
    ldad: usize,
    w: *const i8,
    wd: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    // Float sums per (row, 8 columns), updated once per activation block; the i32 sums of a block in
    // registers.
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for b in 0..nab {
        let mut s = [[_mm256_setzero_si256(); 2]; R];
        let wb = unsafe { w.add(b * act_block * PANEL) };
        for g in 0..act_block / GROUP {
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
                        a.add(r * lda + b * act_block + g * GROUP) as *const i32
                    )
                };
                let x = _mm256_set1_epi32(x2);
                s[0] = _mm256_add_epi32(s[0], _mm256_madd_epi16(w0, x));
                s[1] = _mm256_add_epi32(s[1], _mm256_madd_epi16(w1, x));
            }
        }
        for ((acc, s), r) in acc.iter_mut().zip(&s).zip(0..) {
            let dx = _mm256_set1_ps(unsafe { *ad.add(r * ldad + b) });
            acc[0] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[0]), dx, acc[0]);
            acc[1] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[1]), dx, acc[1]);
        }
    }
    let dw = unsafe { [_mm256_loadu_ps(wd), _mm256_loadu_ps(wd.add(8))] };
    for (r, acc) in acc.iter().enumerate() {
        unsafe {
            _mm256_storeu_ps(c.add(r * ldc), _mm256_mul_ps(acc[0], dw[0]));
            _mm256_storeu_ps(c.add(r * ldc + 8), _mm256_mul_ps(acc[1], dw[1]));
        }
    }
}
