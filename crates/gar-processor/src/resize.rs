//! The two resampling kernels of the reference, on planar (`CHW`) uint8 images:
//!
//! * [`resize_bicubic_aa`]: torchvision's `resize(uint8, BICUBIC, antialias=True)`, i.e. cast to float32,
//!   PyTorch CPU `_upsample_bicubic2d_aa` (separable, PIL-style support, Keys cubic a = −0.5), clamp to
//!   [0, 255], round half to even (gar-spec §6.3). The weight formulas with their mixed float/double
//!   intermediates, the pass order (width first, then height; an axis whose size does not change is not
//!   filtered) and the float32 accumulation follow ATen's `UpSampleKernel.cpp` *as compiled* in the
//!   reference wheel (see [`Arith`]): the float32 output is bit-identical, not just the uint8.
//! * [`resize_nearest`]: torch's legacy `"nearest"` (`src = min(floor(dst * (in / out)), in - 1)` in float32).

/// Floating-point contraction of the bicubic kernel.
///
/// The reference is PyTorch 2.8's x86-64 wheel, whose AVX2 kernels GCC compiled with FMA contraction.
/// Measured against it (impulse responses for the weights, per-tap-count search for the sums):
/// * the cubic polynomial is evaluated with fused multiply-adds (Horner steps fused);
/// * the sum `out = x0*w0; out += xj*wj` is unrolled by four: the additions in whole groups of four
///   are separate multiply-then-add, the remaining `(taps − 1) mod 4` ones are fused.
///
/// [`Arith::TorchCpu`] reproduces that (default, bit-exact float32 on every tested size);
/// [`Arith::Unfused`] rounds every product, as a build without contraction would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arith {
    #[default]
    TorchCpu,
    Unfused,
}

impl Arith {
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        match self {
            Arith::TorchCpu => a.mul_add(b, c),
            Arith::Unfused => a * b + c,
        }
    }

    /// Additions `1..=unfused_adds(taps)` of a `taps`-term sum are not fused.
    #[inline(always)]
    fn unfused_adds(self, taps: usize) -> usize {
        match self {
            Arith::TorchCpu => taps.saturating_sub(1) / 4 * 4,
            Arith::Unfused => taps.saturating_sub(1),
        }
    }
}

/// Per-output-index source window and normalised weights of one axis.
#[derive(Debug, Clone)]
pub(crate) struct AxisFilter {
    /// First source index of each output index.
    start: Vec<usize>,
    /// Number of source indices (≤ `stride`).
    len: Vec<usize>,
    /// `stride` weights per output index, zero-padded.
    weights: Vec<f32>,
    stride: usize,
}

impl AxisFilter {
    fn taps(&self, i: usize) -> (usize, &[f32]) {
        let w = &self.weights[i * self.stride..i * self.stride + self.len[i]];
        (self.start[i], w)
    }
}

/// Keys cubic with a = −0.5 (`HelperInterpCubic::aa_filter`, `cubic_convolution1/2`).
#[inline(always)]
fn keys_cubic(x: f32, arith: Arith) -> f32 {
    const A: f32 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        // ((A + 2) * x - (A + 3)) * x * x + 1
        let t = arith.mul_add(A + 2.0, x, -(A + 3.0));
        arith.mul_add(t * x, x, 1.0)
    } else if x < 2.0 {
        // ((A * x - 5A) * x + 8A) * x - 4A
        let t = arith.mul_add(A, x, -(5.0 * A));
        let t = arith.mul_add(t, x, 8.0 * A);
        arith.mul_add(t, x, -(4.0 * A))
    } else {
        0.0
    }
}

/// `HelperInterpBase::_compute_index_ranges_weights` + `_compute_indices_min_size_weights_aa` for
/// `scalar_t = float`. The casts mark where C++ promotes to double (`i + 0.5`, `+ 0.5`, `1.0 / scale`) and
/// rounds back to float on assignment.
#[inline(always)]
fn bicubic_aa_filter(in_size: usize, out_size: usize, arith: Arith) -> AxisFilter {
    // area_pixel_compute_scale<float>: (float)input_size / output_size.
    let scale = in_size as f32 / out_size as f32;
    let support: f32 = if scale >= 1.0 {
        (2.0 * scale as f64) as f32
    } else {
        2.0
    };
    let stride = support.ceil() as usize * 2 + 1;
    let invscale: f32 = if scale >= 1.0 {
        (1.0 / scale as f64) as f32
    } else {
        1.0
    };
    let mut start = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut weights = vec![0f32; out_size * stride];
    for i in 0..out_size {
        let center = (scale as f64 * (i as f64 + 0.5)) as f32;
        let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
        let xmax = (((center + support) as f64 + 0.5) as i64).min(in_size as i64);
        let xsize = (xmax - xmin).clamp(0, stride as i64) as usize;
        let w = &mut weights[i * stride..i * stride + xsize];
        let mut total = 0f32;
        for (j, wj) in w.iter_mut().enumerate() {
            let d = (j as i64 + xmin) as f32 - center;
            let x = ((d as f64 + 0.5) * invscale as f64) as f32;
            *wj = keys_cubic(x, arith);
            total += *wj;
        }
        if total != 0.0 {
            for wj in w.iter_mut() {
                *wj /= total;
            }
        }
        start.push(xmin as usize);
        len.push(xsize);
    }
    AxisFilter {
        start,
        len,
        weights,
        stride,
    }
}

/// Horizontal pass (`interpolate_aa_single_dim`) over rows of `in_w` floats. Each output pixel sums its
/// taps in the reference's order; `R` rows are computed side by side so that their independent sums
/// overlap in the pipeline.
#[inline(always)]
fn horizontal(src: &[f32], in_w: usize, out_w: usize, f: &AxisFilter, arith: Arith) -> Vec<f32> {
    const R: usize = 8;
    let rows = src.len() / in_w;
    let mut out = vec![0f32; rows * out_w];
    let mut r0 = 0;
    while r0 < rows {
        let n = R.min(rows - r0);
        let block = &src[r0 * in_w..(r0 + n) * in_w];
        let dst = &mut out[r0 * out_w..(r0 + n) * out_w];
        for x in 0..out_w {
            let (s, wt) = f.taps(x);
            let split = (arith.unfused_adds(wt.len()) + 1).min(wt.len());
            let mut acc = [0f32; R];
            for (r, a) in acc.iter_mut().enumerate().take(n) {
                let xs = &block[r * in_w + s..r * in_w + s + wt.len()];
                let (Some(&x0), Some(&w0)) = (xs.first(), wt.first()) else {
                    continue;
                };
                *a = x0 * w0;
            }
            for j in 1..wt.len() {
                let wj = wt[j];
                let fused = j >= split && arith == Arith::TorchCpu;
                for (r, a) in acc.iter_mut().enumerate().take(n) {
                    let v = block[r * in_w + s + j];
                    *a = if fused {
                        v.mul_add(wj, *a)
                    } else {
                        *a + v * wj
                    };
                }
            }
            for (r, &a) in acc.iter().enumerate().take(n) {
                dst[r * out_w + x] = a;
            }
        }
        r0 += n;
    }
    out
}

/// Vertical pass (`interpolate_aa_single_dim_zero_strides`) over planes of `in_h × w` floats. Rows are
/// accumulated tap by tap, which keeps each pixel's operation order.
#[inline(always)]
fn vertical(
    src: &[f32],
    in_h: usize,
    out_h: usize,
    w: usize,
    f: &AxisFilter,
    arith: Arith,
) -> Vec<f32> {
    let planes = src.len() / (in_h * w);
    let mut out = vec![0f32; planes * out_h * w];
    for (sp, dp) in src
        .chunks_exact(in_h * w)
        .zip(out.chunks_exact_mut(out_h * w))
    {
        for (y, dst_row) in dp.chunks_exact_mut(w).enumerate() {
            let (s, wt) = f.taps(y);
            let split = arith.unfused_adds(wt.len());
            for (j, &wj) in wt.iter().enumerate() {
                let src_row = &sp[(s + j) * w..(s + j + 1) * w];
                let pairs = dst_row.iter_mut().zip(src_row);
                // The branch is outside the element loops so that they vectorise.
                if j == 0 {
                    pairs.for_each(|(o, &v)| *o = v * wj);
                } else if j <= split || arith == Arith::Unfused {
                    pairs.for_each(|(o, &v)| *o += v * wj);
                } else {
                    pairs.for_each(|(o, &v)| *o = v.mul_add(wj, *o));
                }
            }
        }
    }
    out
}

#[inline(always)]
fn bicubic_kernel(
    planes: &[u8],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    arith: Arith,
) -> Vec<u8> {
    let mut cur: Vec<f32> = planes.iter().map(|&v| v as f32).collect();
    let mut w = in_w;
    if out_w != in_w {
        let f = bicubic_aa_filter(in_w, out_w, arith);
        cur = horizontal(&cur, in_w, out_w, &f, arith);
        w = out_w;
    }
    if out_h != in_h {
        let f = bicubic_aa_filter(in_h, out_h, arith);
        cur = vertical(&cur, in_h, out_h, w, &f, arith);
    }
    // clamp(0, 255), torch.round (half to even), cast.
    cur.iter()
        .map(|&v| v.clamp(0.0, 255.0).round_ties_even() as u8)
        .collect()
}

/// The kernel compiled for AVX2 + FMA: `f32::mul_add` becomes one instruction instead of a libm call
/// (fused exactly like the reference) and the row loops use 8-wide vectors.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bicubic_kernel_avx2(
    planes: &[u8],
    in_size: (usize, usize),
    out_size: (usize, usize),
    arith: Arith,
) -> Vec<u8> {
    bicubic_kernel(planes, in_size, out_size, arith)
}

/// Antialiased bicubic resize of planes of `in_h × in_w` (any number of planes) to `out_h × out_w`, uint8
/// in and out, bit-compatible with `torchvision.transforms.functional.resize(img, (out_h, out_w), BICUBIC)`.
pub fn resize_bicubic_aa(
    planes: &[u8],
    in_size: (usize, usize),
    out_size: (usize, usize),
    arith: Arith,
) -> Vec<u8> {
    if in_size == out_size || planes.is_empty() {
        // torchvision returns the input untouched.
        return planes.to_vec();
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU supports AVX2 and FMA (checked just above).
        return unsafe { bicubic_kernel_avx2(planes, in_size, out_size, arith) };
    }
    bicubic_kernel(planes, in_size, out_size, arith)
}

/// Source index of each output index for torch's legacy nearest (`nearest_idx`).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    if out_size == in_size {
        return (0..out_size).collect();
    }
    if out_size == 2 * in_size {
        return (0..out_size).map(|i| i >> 1).collect();
    }
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|i| ((i as f32 * scale).floor() as usize).min(in_size - 1))
        .collect()
}

/// Nearest-neighbour resize of planes of `in_h × in_w` (`interpolate(mode="nearest")`).
pub fn resize_nearest(
    planes: &[u8],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<u8> {
    let xs = nearest_indices(in_w, out_w);
    let ys = nearest_indices(in_h, out_h);
    let mut out = Vec::with_capacity(planes.len() / (in_h * in_w).max(1) * out_h * out_w);
    for plane in planes.chunks_exact(in_h * in_w) {
        for &y in &ys {
            let row = &plane[y * in_w..(y + 1) * in_w];
            out.extend(xs.iter().map(|&x| row[x]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_when_sizes_match() {
        let img: Vec<u8> = (0..2 * 3 * 5).map(|v| v as u8).collect();
        assert_eq!(
            resize_bicubic_aa(&img, (3, 5), (3, 5), Arith::TorchCpu),
            img
        );
        assert_eq!(resize_nearest(&img, (3, 5), (3, 5)), img);
    }

    #[test]
    fn weights_are_normalised_and_windows_in_range() {
        for (i, o) in [(1000, 448), (448, 1344), (17, 448), (2048, 1792), (1, 448)] {
            let f = bicubic_aa_filter(i, o, Arith::TorchCpu);
            for k in 0..o {
                let (s, w) = f.taps(k);
                assert!(s + w.len() <= i);
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{i}->{o} at {k}: {sum}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = vec![77u8; 3 * 37 * 53];
        let out = resize_bicubic_aa(&img, (37, 53), (448, 448), Arith::TorchCpu);
        assert!(out.iter().all(|&v| v == 77));
        let out = resize_bicubic_aa(&img, (37, 53), (20, 9), Arith::TorchCpu);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn torch_sums_fuse_only_the_remainder_of_four() {
        assert_eq!(Arith::TorchCpu.unfused_adds(4), 0);
        assert_eq!(Arith::TorchCpu.unfused_adds(5), 4);
        assert_eq!(Arith::TorchCpu.unfused_adds(7), 4);
        assert_eq!(Arith::TorchCpu.unfused_adds(13), 12);
    }

    #[test]
    fn nearest_matches_torch_rules() {
        assert_eq!(nearest_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(nearest_indices(5, 2), vec![0, 2]);
        assert_eq!(nearest_indices(3, 7), vec![0, 0, 0, 1, 1, 2, 2]);
    }
}
