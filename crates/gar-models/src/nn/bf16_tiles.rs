//! Register-tiled products with bf16 operands and f32 sums on AVX-512 BF16 (`vdpbf16ps`), for the blocked
//! attention's two products when it is asked for bf16 products ([`crate::nn::attention::Products::Bf16`]).
//!
//! Why: `vdpbf16ps` multiplies two pairs of bf16 and adds both products to an f32 lane: 32 multiply-adds
//! per 512-bit instruction, one per cycle on Zen 4, against 16 for an f32 FMA (measured: both issue once
//! per cycle there). Attention was a third of a vision layer once the linears ran in int8, and 40 % of a
//! 4.6k-token prefill.
//!
//! Operands travel as pairs: a `u32` holds two consecutive bf16 along the summed axis, the first in the low
//! half, which is exactly a row-major bf16 row read two at a time. `A` is `m` rows of such pairs; `B` holds,
//! per pair index, one pair for each of its columns.

/// Whether this CPU runs the kernels (AVX-512F + BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Columns per register tile: two 16-lane vectors.
pub const TILE_COLS: usize = 32;
/// Rows per register tile (16 accumulators + 2 column vectors + broadcast of 32 registers).
pub const TILE_ROWS: usize = 8;

/// `f32 → bf16` rounded to nearest, ties to even (what `vcvtneps2bf16` does for finite values); NaN stays
/// NaN.
pub fn bf16_bits(x: f32) -> u16 {
    half::bf16::from_f32(x).to_bits()
}

/// `dst[i] = bf16(src[i])` (`dst.len() == src.len()`), vectorised when [`available`].
pub fn convert(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "convert: lengths differ");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 BF16 checked; both slices hold src.len() values.
        done = unsafe { kernels::convert(src.as_ptr(), dst.as_mut_ptr(), src.len()) };
    }
    for (d, &s) in dst[done..].iter_mut().zip(&src[done..]) {
        *d = bf16_bits(s);
    }
}

/// `dst[i] = bf16(exp(src[i] · scale − shift))` (`dst.len() == src.len()`); returns the f32 sum of the
/// unrounded exponentials. The softmax step of the attention with bf16 products: one pass instead of an
/// f32 `exp` pass and a conversion pass, with an `exp` good to ≈ 1e-6 relative
/// ([`crate::nn::vmath512`]), far below the bf16 rounding (2⁻⁹) that follows. Arguments below ≈ −126 /
/// log₂e flush to 0. Vectorised when [`available`].
pub fn exp_to_bf16(src: &[f32], scale: f32, shift: f32, dst: &mut [u16]) -> f32 {
    assert_eq!(src.len(), dst.len(), "exp_to_bf16: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512 BF16 checked; both slices hold src.len() values.
        return unsafe {
            kernels::exp_to_bf16(src.as_ptr(), src.len(), scale, shift, dst.as_mut_ptr())
        };
    }
    let mut sum = 0f32;
    for (d, &x) in dst.iter_mut().zip(src) {
        let e = x.mul_add(scale, -shift).exp();
        sum += e;
        *d = bf16_bits(e);
    }
    sum
}

/// `C (m × 32) (+)= A (m × 2·pairs) · B (2·pairs × 32)` for `1 ≤ m ≤ 8`: `a` rows of `pairs` u32 `lda`
/// apart, `b` rows (one per pair index) of 32 u32 `ldb` apart, `c` rows of 32 f32 `ldc` apart.
///
/// # Safety
/// [`available`]; every pointer readable (and `c` writable) over the extents above.
#[allow(clippy::too_many_arguments)]
pub unsafe fn tile(
    m: usize,
    pairs: usize,
    a: *const u32,
    lda: usize,
    b: *const u32,
    ldb: usize,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    #[cfg(target_arch = "x86_64")]
    unsafe {
        kernels::tile(m, pairs, a, lda, b, ldb, c, ldc, accumulate)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (m, pairs, a, lda, b, ldb, c, ldc, accumulate);
        unreachable!("callers check `available` first")
    }
}

#[cfg(target_arch = "x86_64")]
mod kernels {
    use std::arch::x86_64::*;

    /// Converts the whole 16-value chunks of `n` floats; returns how many it converted.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn convert(src: *const f32, dst: *mut u16, n: usize) -> usize {
        let whole = n / 16 * 16;
        for i in (0..whole).step_by(16) {
            unsafe {
                let v = _mm512_loadu_ps(src.add(i));
                let h = std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(dst.add(i) as *mut __m256i, h);
            }
        }
        whole
    }

    /// `exp(x · scale − shift)` of 16 lanes as `2^(x · a + b)` (`a = scale · log₂e`, `b = −shift · log₂e`),
    /// added to `sum` and returned as 16 bf16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    fn exp_step(x: __m512, a: __m512, b: __m512, sum: &mut __m512) -> __m256i {
        let e = crate::nn::vmath512::kernels::pow2(_mm512_fmadd_ps(x, a, b));
        *sum = _mm512_add_ps(*sum, e);
        // SAFETY: both types are 256 bits of plain data.
        unsafe { std::mem::transmute::<__m256bh, __m256i>(_mm512_cvtneps_pbh(e)) }
    }

    /// See [`super::exp_to_bf16`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn exp_to_bf16(
        src: *const f32,
        n: usize,
        scale: f32,
        shift: f32,
        dst: *mut u16,
    ) -> f32 {
        let log2e = std::f32::consts::LOG2_E;
        let (a, b) = (
            _mm512_set1_ps(scale * log2e),
            _mm512_set1_ps(-shift * log2e),
        );
        let mut sum = _mm512_setzero_ps();
        let whole = n / 16 * 16;
        for i in (0..whole).step_by(16) {
            unsafe {
                let h = exp_step(_mm512_loadu_ps(src.add(i)), a, b, &mut sum);
                _mm256_storeu_si256(dst.add(i) as *mut __m256i, h);
            }
        }
        if whole < n {
            // The tail through a padded copy: `f32::MIN` lanes come out 0 and add nothing.
            let mut x = [f32::MIN; 16];
            let mut h = [0u16; 16];
            unsafe {
                std::ptr::copy_nonoverlapping(src.add(whole), x.as_mut_ptr(), n - whole);
                let v = exp_step(_mm512_loadu_ps(x.as_ptr()), a, b, &mut sum);
                _mm256_storeu_si256(h.as_mut_ptr() as *mut __m256i, v);
                std::ptr::copy_nonoverlapping(h.as_ptr(), dst.add(whole), n - whole);
            }
        }
        _mm512_reduce_add_ps(sum)
    }

    #[allow(clippy::too_many_arguments)]
    pub unsafe fn tile(
        m: usize,
        pairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        macro_rules! go {
            ($m:literal) => {
                unsafe { tile_m::<$m>(pairs, a, lda, b, ldb, c, ldc, accumulate) }
            };
        }
        match m {
            8 => go!(8),
            7 => go!(7),
            6 => go!(6),
            5 => go!(5),
            4 => go!(4),
            3 => go!(3),
            2 => go!(2),
            1 => go!(1),
            _ => unreachable!("tile of {m} rows"),
        }
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_m<const M: usize>(
        pairs: usize,
        a: *const u32,
        lda: usize,
        b: *const u32,
        ldb: usize,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut acc = [[_mm512_setzero_ps(); 2]; M];
        if accumulate {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (v, acc) in acc.iter_mut().enumerate() {
                    *acc = unsafe { _mm512_loadu_ps(c.add(i * ldc + 16 * v)) };
                }
            }
        }
        for p in 0..pairs {
            let (b0, b1): (__m512bh, __m512bh) = unsafe {
                let row = b.add(p * ldb);
                (
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        row as *const __m512i,
                    )),
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(
                        row.add(16) as *const __m512i
                    )),
                )
            };
            for (i, acc) in acc.iter_mut().enumerate() {
                let x: __m512bh = unsafe {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(
                        *a.add(i * lda + p) as i32
                    ))
                };
                acc[0] = _mm512_dpbf16_ps(acc[0], x, b0);
                acc[1] = _mm512_dpbf16_ps(acc[1], x, b1);
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (v, &acc) in acc.iter().enumerate() {
                unsafe { _mm512_storeu_ps(c.add(i * ldc + 16 * v), acc) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversion_rounds_to_nearest_even() {
        // 1 + 2⁻⁸ is halfway between two bf16 (ties to even: down), 1 + 3·2⁻⁸ rounds up.
        assert_eq!(bf16_bits(1.0 + 1.0 / 256.0), 0x3f80);
        assert_eq!(bf16_bits(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16_bits(-2.5), 0xc020);
        assert!(f32::from_bits(u32::from(bf16_bits(f32::NAN)) << 16).is_nan());
        let src: Vec<f32> = (0..45).map(|i| (i as f32 * 0.37).sin() * 1e3).collect();
        let mut got = vec![0u16; src.len()];
        convert(&src, &mut got);
        let want: Vec<u16> = src.iter().map(|&x| bf16_bits(x)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn exp_to_bf16_is_exp_rounded_to_bf16() {
        // Softmax arguments (≤ 0 after the shift) over the whole useful range, a tail of 7, and far below
        // the range: within one bf16 rounding of libm's exp, sum within 1e-6 relative.
        let src: Vec<f32> = (0..1031).map(|i| -(i as f32) * 0.09 + 3.0).collect();
        let (scale, shift) = (0.5f32, 1.5f32);
        let mut got = vec![0u16; src.len()];
        let sum = exp_to_bf16(&src, scale, shift, &mut got);
        let mut want_sum = 0f64;
        for (&x, &g) in src.iter().zip(&got) {
            let want = (f64::from(x) * f64::from(scale) - f64::from(shift)).exp();
            want_sum += want;
            let g = f64::from(f32::from_bits(u32::from(g) << 16));
            assert!(
                (g - want).abs() <= want * 2f64.powi(-8) + 1e-38,
                "exp({x}): {g} vs {want}"
            );
        }
        assert!(
            (f64::from(sum) - want_sum).abs() <= 1e-6 * want_sum,
            "{sum} vs {want_sum}"
        );
    }

    #[test]
    fn tile_sums_bf16_products_in_f32() {
        if !available() {
            return;
        }
        let (m, pairs) = (5, 9);
        let value = |i: usize| ((i * 37 % 101) as f32 - 50.0) / 16.0;
        // Values exact in bf16, so the only rounding is the f32 sums.
        let a_vals: Vec<f32> = (0..m * 2 * pairs).map(value).collect();
        let b_vals: Vec<f32> = (0..2 * pairs * TILE_COLS).map(|i| value(i + 7)).collect();
        let pack = |x: f32| u32::from(bf16_bits(x));
        let a: Vec<u32> = a_vals
            .chunks(2)
            .map(|p| pack(p[0]) | pack(p[1]) << 16)
            .collect();
        let b: Vec<u32> = (0..pairs * TILE_COLS)
            .map(|i| {
                let (p, col) = (i / TILE_COLS, i % TILE_COLS);
                pack(b_vals[2 * p * TILE_COLS + col])
                    | pack(b_vals[(2 * p + 1) * TILE_COLS + col]) << 16
            })
            .collect();
        let mut c = vec![1f32; m * TILE_COLS];
        // SAFETY: checked above; a is m × pairs, b pairs × 32, c m × 32.
        unsafe {
            tile(
                m,
                pairs,
                a.as_ptr(),
                pairs,
                b.as_ptr(),
                TILE_COLS,
                c.as_mut_ptr(),
                TILE_COLS,
                true,
            )
        };
        for i in 0..m {
            for col in 0..TILE_COLS {
                let want: f32 = 1.0
                    + (0..2 * pairs)
                        .map(|k| a_vals[i * 2 * pairs + k] * b_vals[k * TILE_COLS + col])
                        .sum::<f32>();
                let got = c[i * TILE_COLS + col];
                assert!(
                    (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
        }
    }
}
