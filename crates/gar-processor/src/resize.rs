//! The two resampling kernels of the reference, on planar (`CHW`) uint8 images:
//!
//! * [`resize_bicubic_aa`]: torchvision's `resize(uint8, BICUBIC, antialias=True)`, i.e. cast to float32,
//!   PyTorch CPU `_upsample_bicubic2d_aa` (separable, PIL-style support, Keys cubic a = −0.5), clamp to
//!   [0, 255], round half to even (gar-spec §6.3). The weight formulas, their mixed float/double
//!   intermediates, the pass order (width first, then height; an axis whose size does not change is not
//!   filtered) and the sequential float32 accumulation follow ATen's `UpSampleKernel.cpp`, including the
//!   fused multiply-adds the compiler forms there (see [`Arith`]).
//! * [`resize_nearest`]: torch's legacy `"nearest"` (`src = min(floor(dst * (in / out)), in - 1)` in float32).

/// Float contraction used by the kernel. ATen's CPU kernels are built with FMA enabled (the AVX2/AVX512
/// variants the dispatcher picks), so `a * b + c` patterns in the filter and in the accumulation are single
/// fused operations there. [`Arith::Fused`] reproduces that and is the default; [`Arith::Separate`] rounds
/// every product (what a build without contraction computes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Arith {
    #[default]
    Fused,
    Separate,
}

impl Arith {
    #[inline(always)]
    fn mul_add(self, a: f32, b: f32, c: f32) -> f32 {
        match self {
            Arith::Fused => a.mul_add(b, c),
            Arith::Separate => a * b + c,
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
pub(crate) fn bicubic_aa_filter(in_size: usize, out_size: usize, arith: Arith) -> AxisFilter {
    // area_pixel_compute_scale<float>: (float)input_size / output_size.
    let scale = in_size as f32 / out_size as f32;
    let support: f32 = if scale >= 1.0 { (2.0 * scale as f64) as f32 } else { 2.0 };
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

/// `interpolate_aa_single_dim`: `out = x0 * w0; out += xj * wj` in float32.
#[inline(always)]
fn dot(src: impl Iterator<Item = f32>, w: &[f32], arith: Arith) -> f32 {
    let mut acc = 0f32;
    for (j, (x, &wj)) in src.zip(w).enumerate() {
        acc = if j == 0 { x * wj } else { arith.mul_add(x, wj, acc) };
    }
    acc
}

/// Antialiased bicubic resize of `channels` planes of `in_h × in_w` to `out_h × out_w`, uint8 in and out,
/// bit-compatible with `torchvision.transforms.functional.resize(img, (out_h, out_w), BICUBIC)`.
pub fn resize_bicubic_aa(
    planes: &[u8],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    arith: Arith,
) -> Vec<u8> {
    debug_assert_eq!(planes.len(), channels * in_h * in_w);
    if (in_h, in_w) == (out_h, out_w) {
        // torchvision returns the input untouched.
        return planes.to_vec();
    }
    let mut cur: Vec<f32> = planes.iter().map(|&v| v as f32).collect();
    let mut w = in_w;
    if out_w != in_w {
        let f = bicubic_aa_filter(in_w, out_w, arith);
        let mut next = vec![0f32; channels * in_h * out_w];
        for (src_row, dst_row) in cur.chunks_exact(in_w).zip(next.chunks_exact_mut(out_w)) {
            for (x, out) in dst_row.iter_mut().enumerate() {
                let (s, wt) = f.taps(x);
                *out = dot(src_row[s..s + wt.len()].iter().copied(), wt, arith);
            }
        }
        cur = next;
        w = out_w;
    }
    if out_h != in_h {
        let f = bicubic_aa_filter(in_h, out_h, arith);
        let mut next = vec![0f32; channels * out_h * w];
        for (src, dst) in cur
            .chunks_exact(in_h * w)
            .zip(next.chunks_exact_mut(out_h * w))
        {
            for (y, dst_row) in dst.chunks_exact_mut(w).enumerate() {
                let (s, wt) = f.taps(y);
                // Row-wise accumulation keeps the per-pixel order x0*w0 + x1*w1 + ... of the reference.
                for (j, &wj) in wt.iter().enumerate() {
                    let src_row = &src[(s + j) * w..(s + j + 1) * w];
                    if j == 0 {
                        for (o, &x) in dst_row.iter_mut().zip(src_row) {
                            *o = x * wj;
                        }
                    } else {
                        for (o, &x) in dst_row.iter_mut().zip(src_row) {
                            *o = arith.mul_add(x, wj, *o);
                        }
                    }
                }
            }
        }
        cur = next;
    }
    // clamp(0, 255), torch.round (half to even), cast.
    to_u8(&cur)
}

#[doc(hidden)]
pub fn scratch_float(planes: &[u8], channels: usize, (in_h, in_w): (usize, usize), (out_h, out_w): (usize, usize), arith: Arith) -> Vec<f32> {
    let mut cur: Vec<f32> = planes.iter().map(|&v| v as f32).collect();
    let mut w = in_w;
    if out_w != in_w {
        let f = bicubic_aa_filter(in_w, out_w, arith);
        let mut next = vec![0f32; channels * in_h * out_w];
        for (src_row, dst_row) in cur.chunks_exact(in_w).zip(next.chunks_exact_mut(out_w)) {
            for (x, out) in dst_row.iter_mut().enumerate() {
                let (s, wt) = f.taps(x);
                *out = dot(src_row[s..s + wt.len()].iter().copied(), wt, arith);
            }
        }
        cur = next;
        w = out_w;
    }
    if out_h != in_h {
        let f = bicubic_aa_filter(in_h, out_h, arith);
        let mut next = vec![0f32; channels * out_h * w];
        for (src, dst) in cur.chunks_exact(in_h * w).zip(next.chunks_exact_mut(out_h * w)) {
            for (y, dst_row) in dst.chunks_exact_mut(w).enumerate() {
                let (s, wt) = f.taps(y);
                for (j, &wj) in wt.iter().enumerate() {
                    let src_row = &src[(s + j) * w..(s + j + 1) * w];
                    if j == 0 { for (o, &x) in dst_row.iter_mut().zip(src_row) { *o = x * wj; } }
                    else { for (o, &x) in dst_row.iter_mut().zip(src_row) { *o = arith.mul_add(x, wj, *o); } }
                }
            }
        }
        cur = next;
    }
    cur
}

fn to_u8(cur: &[f32]) -> Vec<u8> {
    cur.iter()
        .map(|&v| v.clamp(0.0, 255.0).round_ties_even() as u8)
        .collect()
}

/// Source index of each output index for torch's legacy nearest (`nearest_idx`).
pub(crate) fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
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

/// Nearest-neighbour resize of `channels` planes (`interpolate(mode="nearest")`).
pub fn resize_nearest(
    planes: &[u8],
    channels: usize,
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
) -> Vec<u8> {
    debug_assert_eq!(planes.len(), channels * in_h * in_w);
    let xs = nearest_indices(in_w, out_w);
    let ys = nearest_indices(in_h, out_h);
    let mut out = Vec::with_capacity(channels * out_h * out_w);
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
        assert_eq!(resize_bicubic_aa(&img, 2, (3, 5), (3, 5), Arith::Fused), img);
        assert_eq!(resize_nearest(&img, 2, (3, 5), (3, 5)), img);
    }

    #[test]
    fn weights_are_normalised_and_windows_in_range() {
        for (i, o) in [(1000, 448), (448, 1344), (17, 448), (2048, 1792), (1, 448)] {
            let f = bicubic_aa_filter(i, o, Arith::Fused);
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
        let out = resize_bicubic_aa(&img, 3, (37, 53), (448, 448), Arith::Fused);
        assert!(out.iter().all(|&v| v == 77));
        let out = resize_bicubic_aa(&img, 3, (37, 53), (20, 9), Arith::Fused);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn nearest_matches_torch_rules() {
        assert_eq!(nearest_indices(3, 6), vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(nearest_indices(5, 2), vec![0, 2]);
        assert_eq!(nearest_indices(3, 7), vec![0, 0, 0, 1, 1, 2, 2]);
    }
}
