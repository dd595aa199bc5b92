//! AVX-512 `2^t` and GELU for the fast modes' element-wise steps, where the value is rounded coarsely right
//! after: the bf16 attention's probabilities ([`crate::nn::bf16_tiles::exp_to_bf16`]) and the GELU in the
//! int8 products' store ([`crate::nn::w8a8::Epilogue`]).
//!
//! Why: [`crate::nn::vmath`]'s forms are bit-compatible with their scalar tails and with each other, which
//! costs instructions: a range clamp, a two-part `ln 2` reduction, a division. Here `2^t` is `2^f · 2^n`
//! with a degree-5 polynomial for `2^f` and `vscalefps` for `2^n` (which also flushes very negative
//! arguments to 0), and GELU's `1 / (1 + p·|z|)` is a reciprocal estimate refined by one Newton step. A
//! vision tile's GELUs took ≈ 60 ms with the exact-form kernel (docs/performance.md, round 11); the errors
//! stay far below the roundings that follow (tested: `2^t` within 1e-6 relative, GELU within
//! 5e-7 · max(|x|, 1)).

/// `2^f` for `f ∈ [−½, ½]`: least-squares fit of the relative error on Chebyshev nodes (numpy, degree 5),
/// max relative error 2.9e-7.
#[cfg(target_arch = "x86_64")]
const EXP2_POLY: [f32; 6] = [
    1.0,
    0.693_146_47,
    0.240_222_65,
    0.055_516_888,
    0.009_668_531,
    0.001_291_567,
];

/// Whether this CPU runs the kernels (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// GELU (erf form) of every element of `x`, in place: the kernel below where [`available`], else
/// [`crate::nn::vmath::gelu_erf`].
pub fn gelu_erf_in_place(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: AVX-512F checked just above.
        unsafe { kernels::gelu_erf_in_place(x) };
        return;
    }
    let pre = x.to_vec();
    crate::nn::vmath::gelu_erf(&pre, x);
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod kernels {
    use super::EXP2_POLY;
    use std::arch::x86_64::*;

    /// `2^t` of 16 lanes; `t` far below −126 gives 0.
    #[target_feature(enable = "avx512f")]
    pub(crate) fn pow2(t: __m512) -> __m512 {
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
        let f = _mm512_sub_ps(t, n);
        let mut p = _mm512_set1_ps(EXP2_POLY[5]);
        for &c in EXP2_POLY[..5].iter().rev() {
            p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }

    /// GELU of 16 lanes: `x/2 · (1 + erf(x/√2))`, erf from Abramowitz & Stegun 7.1.26 as in
    /// [`crate::nn::vmath::gelu_erf`].
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) fn gelu16(x: __m512) -> __m512 {
        let one = _mm512_set1_ps(1.0);
        let z = _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let a = _mm512_abs_ps(z);
        let den = _mm512_fmadd_ps(_mm512_set1_ps(crate::nn::vmath::ERF_P), a, one);
        let r = _mm512_rcp14_ps(den);
        // One Newton step: r · (2 − den · r), ≈ 28 correct bits.
        let t = _mm512_mul_ps(r, _mm512_fnmadd_ps(den, r, _mm512_set1_ps(2.0)));
        let coef = crate::nn::vmath::ERF_A;
        let mut poly = _mm512_set1_ps(coef[4]);
        for &c in coef[..4].iter().rev() {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        // e^(−a²) = 2^(−a² · log₂e).
        let e = pow2(_mm512_mul_ps(
            _mm512_mul_ps(a, a),
            _mm512_set1_ps(-std::f32::consts::LOG2_E),
        ));
        let erf_abs = _mm512_fnmadd_ps(_mm512_mul_ps(t, poly), e, one);
        // erf takes z's sign; GELU = h + h · erf with h = x / 2.
        let sign = _mm512_and_si512(_mm512_castps_si512(z), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(erf_abs), sign));
        let h = _mm512_mul_ps(x, _mm512_set1_ps(0.5));
        _mm512_fmadd_ps(h, erf, h)
    }

    /// See [`super::gelu_erf_in_place`].
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn gelu_erf_in_place(x: &mut [f32]) {
        let whole = x.len() / 16 * 16;
        for chunk in x[..whole].chunks_exact_mut(16) {
            unsafe {
                let v = _mm512_loadu_ps(chunk.as_ptr());
                _mm512_storeu_ps(chunk.as_mut_ptr(), gelu16(v));
            }
        }
        let tail = x.len() - whole;
        if tail > 0 {
            let mut buf = [0f32; 16];
            buf[..tail].copy_from_slice(&x[whole..]);
            unsafe {
                let v = _mm512_loadu_ps(buf.as_ptr());
                _mm512_storeu_ps(buf.as_mut_ptr(), gelu16(v));
            }
            x[whole..].copy_from_slice(&buf[..tail]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_stays_close_to_the_exact_form() {
        // An odd count leaves a tail for the padded last vector.
        let (xs, want) = crate::nn::vmath::tests::gelu_cases(200_002);
        let mut got = xs.clone();
        gelu_erf_in_place(&mut got);
        for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
            assert!(
                (g - w).abs() <= 5e-7 * x.abs().max(1.0),
                "gelu({x}) = {g}, exact {w}"
            );
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn pow2_is_close_to_the_exact_power() {
        if !available() {
            return;
        }
        use std::arch::x86_64::*;
        let ts: Vec<f32> = (0..18_000).map(|i| -140.0 + i as f32 * 0.0137).collect();
        for chunk in ts.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F checked above; 16 values in and out.
            unsafe {
                _mm512_storeu_ps(
                    got.as_mut_ptr(),
                    kernels::pow2(_mm512_loadu_ps(chunk.as_ptr())),
                )
            };
            for (&t, &g) in chunk.iter().zip(&got) {
                let want = 2f64.powf(f64::from(t));
                let bound = if t < -126.0 {
                    2f64.powi(-126)
                } else {
                    1e-6 * want
                };
                assert!(
                    (f64::from(g) - want).abs() <= bound,
                    "2^{t} = {g}, want {want}"
                );
            }
        }
    }
}
