//! Vectorised `exp` and exact-form GELU for the hot element-wise passes: 8 lanes of AVX2 + FMA when the CPU
//! has them, scalar code otherwise.
//!
//! Why: the attention softmax of a GAR-1B vision tile evaluates 24 × 16 × 1025² exponentials and its MLPs
//! 24 × 1025 × 4096 GELUs; libm's scalar `expf` made the softmax pass cost as much as the score GEMM itself.
//!
//! `exp` uses the classic Cephes reduction `exp(x) = 2ⁿ · exp(r)`, `n = round(x · log₂e)`, `r = x − n·ln2` (ln2
//! split in two parts so the subtraction is exact) and Cephes' degree-6 polynomial for `exp(r)` on
//! `|r| ≤ ln2/2`; measured against libm in the tests below: ≤ 2 ulp. Inputs below −87.3 (where `expf` turns
//! subnormal) give 0, so −∞ (masked keys) gives exactly 0 as the softmax needs.
//!
//! GELU `x · (1 + erf(x/√2)) / 2` takes `erf` from Abramowitz & Stegun 7.1.26 (|error| ≤ 1.5e-7), the form
//! PyTorch's own vectorised CPU `erf` uses; the tests bound the GELU error against candle's exact op by
//! 3e-7 · max(|x|, 1).

/// Below this, `exp` is subnormal or 0 in f32; the vector path returns 0.
const MIN_ARG: f32 = -87.336_55;
/// Above this, `exp` overflows f32.
const MAX_ARG: f32 = 88.376_26;
const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 = LN2_HI + LN2_LO, LN2_HI with few enough mantissa bits that `n · LN2_HI` is exact for |n| ≤ 128.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial: exp(r) ≈ 1 + r + r² · P(r).
const P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5, // Cephes writes 5.0000001e-1, which is 0.5 in f32
];

/// `exp(x − shift)` for every element of `row`, in place, returning the sum of the results (the softmax
/// denominator). Elements at −∞ become 0.
pub fn exp_shifted_in_place(row: &mut [f32], shift: f32) -> f32 {
    // `x · 1 − shift` is `x − shift` exactly, fused or not.
    exp_affine_in_place(row, 1.0, shift)
}

/// `exp(x · scale − shift)` for every element of `row`, in place (the product and the subtraction fused, one
/// rounding), returning the sum of the results: a softmax whose score scaling is folded into the exponent.
pub fn exp_affine_in_place(row: &mut [f32], scale: f32, shift: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            return unsafe { avx512::exp_affine_in_place(row, scale, shift) };
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            return unsafe { avx2::exp_affine_in_place(row, scale, shift) };
        }
    }
    let mut sum = 0f32;
    for v in row.iter_mut() {
        *v = v.mul_add(scale, -shift).exp();
        sum += *v;
    }
    sum
}

/// The largest element of `row` (−∞ for an empty row); NaNs are skipped.
pub fn max_of(row: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 checked just above.
            return unsafe { avx2::max_of(row) };
        }
    }
    row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// The scalar form of the vector kernel (same constants, same order of operations), for the tail of a row.
fn exp_cephes(x: f32) -> f32 {
    if x < MIN_ARG {
        return 0.0;
    }
    let x = x.min(MAX_ARG);
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let mut p = P[0];
    for c in &P[1..] {
        p = p.mul_add(r, *c);
    }
    let e = (p * r).mul_add(r, r) + 1.0;
    e * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Abramowitz & Stegun 7.1.26: erf(z) ≈ sign(z) · (1 − t·(a₁ + t·(a₂ + t·(a₃ + t·(a₄ + t·a₅)))) · e^(−z²)),
/// t = 1 / (1 + p·|z|).
pub(crate) const ERF_P: f32 = 0.327_591_1;
pub(crate) const ERF_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_74,
    1.421_413_7,
    -1.453_152_1,
    1.061_405_4,
];
const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// GELU (erf form) of every element of `x` into `out` (same length).
pub fn gelu_erf(x: &[f32], out: &mut [f32]) {
    assert_eq!(
        x.len(),
        out.len(),
        "gelu_erf: input and output lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            unsafe { avx2::gelu_erf(x, out) };
            return;
        }
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = gelu_erf_scalar(v);
    }
}

/// `silu(g) · u = g / (1 + exp(−g)) · u` element-wise into `out` (all three the same length): the Llama
/// MLP's gate, with the vectorised `exp`.
pub fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    assert!(
        g.len() == u.len() && g.len() == out.len(),
        "silu_mul: lengths differ"
    );
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU supports the features the function is compiled for (checked just above).
            unsafe { avx2::silu_mul(g, u, out) };
            return;
        }
    }
    for ((o, &g), &u) in out.iter_mut().zip(g).zip(u) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// The scalar form of the vector kernel (same constants and order of operations).
fn gelu_erf_scalar(x: f32) -> f32 {
    let z = x * FRAC_1_SQRT_2;
    let a = z.abs();
    let t = 1.0 / ERF_P.mul_add(a, 1.0);
    let mut poly = ERF_A[4];
    for c in ERF_A[..4].iter().rev() {
        poly = poly.mul_add(t, *c);
    }
    let erf_abs = 1.0 - t * poly * exp_cephes(-(a * a));
    let erf = erf_abs.copysign(z);
    0.5 * x * (1.0 + erf)
}

/// Sum of the 8 lanes of an AVX vector (the kernels' final reduction).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
pub(crate) fn hsum8(a: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_affine_in_place(row: &mut [f32], scale: f32, shift: f32) -> f32 {
        let n8 = row.len() / 8 * 8;
        let (head, tail) = row.split_at_mut(n8);
        let (scale_v, neg_shift) = (_mm256_set1_ps(scale), _mm256_set1_ps(-shift));
        let mut acc = _mm256_setzero_ps();
        for chunk in head.chunks_exact_mut(8) {
            let x = _mm256_fmadd_ps(_mm256_loadu_ps(chunk.as_ptr()), scale_v, neg_shift);
            let e = exp8(x);
            acc = _mm256_add_ps(acc, e);
            _mm256_storeu_ps(chunk.as_mut_ptr(), e);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum: f32 = lanes.iter().sum();
        for v in tail {
            *v = exp_cephes(v.mul_add(scale, -shift));
            sum += *v;
        }
        sum
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn max_of(row: &[f32]) -> f32 {
        let n8 = row.len() / 8 * 8;
        // `vmaxps` returns its second operand when either is NaN, so a NaN lane never replaces a number.
        let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
        for chunk in row[..n8].chunks_exact(8) {
            m = _mm256_max_ps(_mm256_loadu_ps(chunk.as_ptr()), m);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), m);
        lanes
            .iter()
            .chain(&row[n8..])
            .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_erf(x: &[f32], out: &mut [f32]) {
        let n8 = x.len() / 8 * 8;
        let sign_bit = _mm256_set1_ps(-0.0);
        let one = _mm256_set1_ps(1.0);
        for (xs, os) in x[..n8].chunks_exact(8).zip(out[..n8].chunks_exact_mut(8)) {
            let v = _mm256_loadu_ps(xs.as_ptr());
            let z = _mm256_mul_ps(v, _mm256_set1_ps(FRAC_1_SQRT_2));
            let a = _mm256_andnot_ps(sign_bit, z);
            let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(ERF_P), a, one));
            let mut poly = _mm256_set1_ps(ERF_A[4]);
            for c in ERF_A[..4].iter().rev() {
                poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(*c));
            }
            let neg_a2 = _mm256_xor_ps(_mm256_mul_ps(a, a), sign_bit);
            let erf_abs = _mm256_sub_ps(one, _mm256_mul_ps(_mm256_mul_ps(t, poly), exp8(neg_a2)));
            let erf = _mm256_or_ps(erf_abs, _mm256_and_ps(z, sign_bit));
            let g = _mm256_mul_ps(
                _mm256_mul_ps(_mm256_set1_ps(0.5), v),
                _mm256_add_ps(one, erf),
            );
            _mm256_storeu_ps(os.as_mut_ptr(), g);
        }
        for (o, &v) in out[n8..].iter_mut().zip(&x[n8..]) {
            *o = gelu_erf_scalar(v);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
        let n8 = g.len() / 8 * 8;
        let (sign_bit, one) = (_mm256_set1_ps(-0.0), _mm256_set1_ps(1.0));
        for ((gs, us), os) in g[..n8]
            .chunks_exact(8)
            .zip(u[..n8].chunks_exact(8))
            .zip(out[..n8].chunks_exact_mut(8))
        {
            let gv = _mm256_loadu_ps(gs.as_ptr());
            let e = exp8(_mm256_xor_ps(gv, sign_bit));
            let s = _mm256_div_ps(gv, _mm256_add_ps(one, e));
            _mm256_storeu_ps(
                os.as_mut_ptr(),
                _mm256_mul_ps(s, _mm256_loadu_ps(us.as_ptr())),
            );
        }
        for ((o, &g), &u) in out[n8..].iter_mut().zip(&g[n8..]).zip(&u[n8..]) {
            *o = g / (1.0 + exp_cephes(-g)) * u;
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp8(x: __m256) -> __m256 {
        let too_small = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_ARG));
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(MIN_ARG)),
            _mm256_set1_ps(MAX_ARG),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(LOG2E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let e = _mm256_add_ps(
            _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, r),
            _mm256_set1_ps(1.0),
        );
        let pow2n = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        )));
        _mm256_andnot_ps(too_small, _mm256_mul_ps(e, pow2n))
    }
}

/// [`exp_affine_in_place`] 16 lanes at a time: the AVX2 form's operations lane for lane, and its 8-lane sum
/// in the same order, so the results are bit for bit the same (tested). Why: the AVX2 loop took 1.8 cycles
/// a value on Zen 4 (`examples/exp_probe`), ≈ 10 % of a long prefill with bf16 attention products; this one
/// takes 1.3. (Two vectors per step measured the same.)
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::*;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx512f,avx2,fma")]
    pub unsafe fn exp_affine_in_place(row: &mut [f32], scale: f32, shift: f32) -> f32 {
        let (n8, n16) = (row.len() / 8 * 8, row.len() / 16 * 16);
        let (scale_v, neg_shift) = (_mm512_set1_ps(scale), _mm512_set1_ps(-shift));
        let mut acc = _mm256_setzero_ps();
        for chunk in row[..n16].chunks_exact_mut(16) {
            let x = _mm512_fmadd_ps(_mm512_loadu_ps(chunk.as_ptr()), scale_v, neg_shift);
            let e = exp16(x);
            // The AVX2 loop's order: the first 8 values, then the next 8.
            acc = _mm256_add_ps(acc, _mm512_castps512_ps256(e));
            acc = _mm256_add_ps(
                acc,
                _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e))),
            );
            _mm512_storeu_ps(chunk.as_mut_ptr(), e);
        }
        if n8 > n16 {
            let chunk = &mut row[n16..n8];
            let x = _mm256_fmadd_ps(
                _mm256_loadu_ps(chunk.as_ptr()),
                _mm256_set1_ps(scale),
                _mm256_set1_ps(-shift),
            );
            // SAFETY: AVX2 and FMA are enabled here.
            let e = unsafe { super::avx2::exp8(x) };
            acc = _mm256_add_ps(acc, e);
            _mm256_storeu_ps(chunk.as_mut_ptr(), e);
        }
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        let mut sum: f32 = lanes.iter().sum();
        for v in &mut row[n8..] {
            *v = exp_cephes(v.mul_add(scale, -shift));
            sum += *v;
        }
        sum
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn exp16(x: __m512) -> __m512 {
        let too_small = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(MIN_ARG));
        let x = _mm512_min_ps(
            _mm512_max_ps(x, _mm512_set1_ps(MIN_ARG)),
            _mm512_set1_ps(MAX_ARG),
        );
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(P[0]);
        for c in &P[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
        }
        let e = _mm512_add_ps(
            _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r),
            _mm512_set1_ps(1.0),
        );
        let pow2n = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            _mm512_cvtps_epi32(n),
            _mm512_set1_epi32(127),
        )));
        _mm512_maskz_mul_ps(!too_small, e, pow2n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn vector_path() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    fn ulp_distance(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn matches_libm_within_two_ulp() {
        // The softmax range (x − max ≤ 0) densely, plus positive arguments up to the overflow edge.
        let mut xs: Vec<f32> = (0..200_001)
            .map(|i| -87.0 + 87.0 * i as f32 / 200_000.0)
            .collect();
        xs.extend((0..10_001).map(|i| 88.0 * i as f32 / 10_000.0));
        xs.extend([0.0, -0.0, 1e-30, -1e-30, 0.5, -0.5]);
        let mut got = xs.clone();
        let sum = exp_shifted_in_place(&mut got, 0.0);
        let mut worst = 0;
        for (&x, &g) in xs.iter().zip(&got) {
            let want = x.exp();
            worst = worst.max(ulp_distance(g, want));
            assert!(ulp_distance(g, want) <= 2, "exp({x}) = {g}, libm {want}");
            if vector_path() {
                assert_eq!(
                    exp_cephes(x).to_bits(),
                    g.to_bits(),
                    "tail form differs at {x}"
                );
            }
        }
        assert!(worst <= 2);
        assert!(sum.is_infinite(), "e^88 terms overflow an f32 sum");
        // The returned sum on the softmax range (all terms ≤ 1).
        let mut neg: Vec<f32> = xs.iter().copied().filter(|&x| x <= 0.0).collect();
        let want: f64 = neg.iter().map(|&x| (x as f64).exp()).sum();
        let got = exp_shifted_in_place(&mut neg, 0.0) as f64;
        assert!(((got - want) / want).abs() < 1e-5, "sum {got} vs {want}");
    }

    /// `steps + 1` arguments over [−20, 20] plus edge cases, and candle's exact-form GELU of each.
    pub(crate) fn gelu_cases(steps: usize) -> (Vec<f32>, Vec<f32>) {
        use candle_core::{Device, Tensor};
        let xs: Vec<f32> = (0..=steps)
            .map(|i| -20.0 + 40.0 * i as f32 / steps as f32)
            .chain([0.0, -0.0, 1e-20, -1e-20, 50.0, -50.0, 1e4, -1e4])
            .collect();
        let want: Vec<f32> = Tensor::new(xs.as_slice(), &Device::Cpu)
            .and_then(|t| t.gelu_erf())
            .and_then(|t| t.to_vec1())
            .expect("candle gelu_erf");
        (xs, want)
    }

    #[test]
    fn gelu_stays_within_the_erf_approximation_error() {
        let (xs, want) = gelu_cases(400_000);
        let mut got = vec![0f32; xs.len()];
        gelu_erf(&xs, &mut got);
        let mut worst = 0f32;
        for ((&x, &g), &w) in xs.iter().zip(&got).zip(&want) {
            // erf error ≤ 1.5e-7 → GELU error ≤ 0.75e-7 · |x|, plus a few f32 roundings of `1 ± erf`.
            let err = (g - w).abs();
            assert!(err <= 3e-7 * x.abs().max(1.0), "gelu({x}) = {g}, exact {w}");
            worst = worst.max(err / x.abs().max(1.0));
            if vector_path() {
                assert_eq!(
                    gelu_erf_scalar(x).to_bits(),
                    g.to_bits(),
                    "tail form differs at {x}"
                );
            }
        }
        assert!(
            worst > 0.0,
            "an approximation that is never off is suspicious"
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_exp_is_the_avx2_one_bit_for_bit() {
        let has = |f: &str| match f {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            _ => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        };
        if !(has("avx512f") && has("avx2")) {
            return;
        }
        // Every tail shape (0–15 after whole vectors, with and without an 8-chunk), masked keys, large
        // arguments.
        for n in (0..40).chain([1025, 4785]) {
            let row: Vec<f32> = (0..n)
                .map(|i| match i % 11 {
                    3 => f32::NEG_INFINITY,
                    7 => 700.0,
                    _ => (i as f32 * 0.37).sin() * 40.0,
                })
                .collect();
            let (mut a, mut b) = (row.clone(), row);
            // SAFETY: both feature sets checked above.
            let (sa, sb) = unsafe {
                (
                    avx2::exp_affine_in_place(&mut a, 0.125, 2.0),
                    avx512::exp_affine_in_place(&mut b, 0.125, 2.0),
                )
            };
            assert_eq!(sa.to_bits(), sb.to_bits(), "sum, n = {n}");
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "n = {n}"
            );
        }
    }

    #[test]
    fn masked_and_tiny_arguments_give_zero() {
        let mut row = vec![f32::NEG_INFINITY; 11];
        row[3] = 0.0;
        row[9] = -100.0;
        let sum = exp_shifted_in_place(&mut row, 0.0);
        assert_eq!(sum, 1.0);
        assert!(row
            .iter()
            .enumerate()
            .all(|(i, &v)| v == if i == 3 { 1.0 } else { 0.0 }));
    }

    #[test]
    fn affine_form_folds_the_scale_in_and_max_skips_nan() {
        let mut row: Vec<f32> = (0..21).map(|i| i as f32 * 0.7 - 3.0).collect();
        let want: Vec<f32> = row.iter().map(|&x| x.mul_add(0.125, -1.5).exp()).collect();
        let sum = exp_affine_in_place(&mut row, 0.125, 1.5);
        for (g, w) in row.iter().zip(&want) {
            assert!(ulp_distance(*g, *w) <= 2, "{g} vs {w}");
        }
        assert!((sum - want.iter().sum::<f32>()).abs() <= 1e-5 * sum);
        let mut xs: Vec<f32> = (0..19).map(|i| (i as f32 * 1.3).sin()).collect();
        let want = xs.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        assert_eq!(max_of(&xs), want);
        xs[4] = f32::NAN;
        xs[17] = 7.0;
        assert_eq!(max_of(&xs), 7.0);
        assert_eq!(max_of(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn shift_is_subtracted_first() {
        let mut row: Vec<f32> = (0..19).map(|i| i as f32 * 0.25).collect();
        let want: Vec<f32> = row.iter().map(|&x| (x - 4.5).exp()).collect();
        exp_shifted_in_place(&mut row, 4.5);
        for (g, w) in row.iter().zip(&want) {
            assert!(ulp_distance(*g, *w) <= 2);
        }
    }
}
