//! RoI Align for GAR's feature replay (spec §8.4), our own implementation of torchvision's `roi_align`
//! (`aligned=True`, fixed `sampling_ratio`), for one box over a `(H, W, C)` feature map.
//!
//! The sampling geometry (which cells, which bilinear weights) depends only on the box and the map size, so it
//! is planned on the host in f32 exactly as torchvision's CPU kernel computes it ([`plan`]); the feature values
//! are then gathered and weighted on the feature map's device ([`roi_align`]), summing in the kernel's order.
//! [`roi_align_naive`] is a line-by-line port of the kernel loop used to test the tensor path.

use candle_core::{DType, Result, Tensor};

/// torchvision `roi_align` arguments (for one box; the batch index is always 0 here).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiAlignParams {
    pub pooled_h: usize,
    pub pooled_w: usize,
    /// Multiplies the box coordinates (torchvision casts the Python float to the kernel type, f32).
    pub spatial_scale: f32,
    /// Samples per bin along each axis (GAR: 2).
    pub sampling_ratio: usize,
    /// Half-pixel shift (GAR: true).
    pub aligned: bool,
}

/// GAR's replay box (spec §8.4 step 4): for a normalized `bbox` on a `feat_w × feat_h` merged map whose cells
/// cover `cell` original pixels (patch × pooling = 28), returns the RoI handed to `roi_align` — computed like the
/// reference, in f64 left to right (`x·orig_w·ss`), stored as f32 — and the `spatial_scale` to use: `ss = 1/cell`
/// again when `double_scale` (the reference quirk: the box is already in feature units and gets scaled twice),
/// else 1.
pub fn gar_replay_roi(
    bbox: [f64; 4],
    feat_w: usize,
    feat_h: usize,
    cell: usize,
    double_scale: bool,
) -> ([f32; 4], f32) {
    let (orig_w, orig_h) = ((feat_w * cell) as f64, (feat_h * cell) as f64);
    let ss = feat_w as f64 / orig_w;
    let roi = [
        (bbox[0] * orig_w * ss) as f32,
        (bbox[1] * orig_h * ss) as f32,
        (bbox[2] * orig_w * ss) as f32,
        (bbox[3] * orig_h * ss) as f32,
    ];
    (roi, if double_scale { ss as f32 } else { 1.0 })
}

/// One bilinear sample: four flat positions `y·W + x` and their weights (all zero when out of range).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub pos: [usize; 4],
    pub w: [f32; 4],
}

/// torchvision `pre_calc_for_bilinear_interpolate` for one box `[x1, y1, x2, y2]` (unscaled):
/// `pooled_h · pooled_w · ratio²` samples ordered (ph, pw, iy, ix).
pub fn plan(height: usize, width: usize, roi: [f32; 4], p: &RoiAlignParams) -> Vec<Sample> {
    if height == 0 || width == 0 {
        return Vec::new();
    }
    let offset = if p.aligned { 0.5f32 } else { 0.0 };
    let start_w = roi[0] * p.spatial_scale - offset;
    let start_h = roi[1] * p.spatial_scale - offset;
    let end_w = roi[2] * p.spatial_scale - offset;
    let end_h = roi[3] * p.spatial_scale - offset;
    let mut roi_w = end_w - start_w;
    let mut roi_h = end_h - start_h;
    if !p.aligned {
        // Legacy mode forces malformed boxes to 1×1.
        roi_w = roi_w.max(1.0);
        roi_h = roi_h.max(1.0);
    }
    let bin_h = roi_h / p.pooled_h as f32;
    let bin_w = roi_w / p.pooled_w as f32;
    let grid = p.sampling_ratio.max(1);
    let (hf, wf) = (height as f32, width as f32);
    let mut out = Vec::with_capacity(p.pooled_h * p.pooled_w * grid * grid);
    for ph in 0..p.pooled_h {
        for pw in 0..p.pooled_w {
            for iy in 0..grid {
                let yy = start_h + ph as f32 * bin_h + (iy as f32 + 0.5) * bin_h / grid as f32;
                for ix in 0..grid {
                    let xx = start_w + pw as f32 * bin_w + (ix as f32 + 0.5) * bin_w / grid as f32;
                    out.push(bilinear(yy, xx, height, width, hf, wf));
                }
            }
        }
    }
    out
}

/// torchvision's bilinear branch logic (samples within one pixel outside the map clamp to the border).
fn bilinear(y: f32, x: f32, height: usize, width: usize, hf: f32, wf: f32) -> Sample {
    if y < -1.0 || y > hf || x < -1.0 || x > wf {
        return Sample {
            pos: [0; 4],
            w: [0.0; 4],
        };
    }
    let mut y = y.max(0.0);
    let mut x = x.max(0.0);
    let mut y_low = y as usize;
    let mut x_low = x as usize;
    let y_high;
    let x_high;
    if y_low >= height - 1 {
        y_low = height - 1;
        y_high = y_low;
        y = y_low as f32;
    } else {
        y_high = y_low + 1;
    }
    if x_low >= width - 1 {
        x_low = width - 1;
        x_high = x_low;
        x = x_low as f32;
    } else {
        x_high = x_low + 1;
    }
    let ly = y - y_low as f32;
    let lx = x - x_low as f32;
    let hy = 1.0 - ly;
    let hx = 1.0 - lx;
    Sample {
        pos: [
            y_low * width + x_low,
            y_low * width + x_high,
            y_high * width + x_low,
            y_high * width + x_high,
        ],
        w: [hy * hx, hy * lx, ly * hx, ly * lx],
    }
}

/// RoI Align of `features` `(H, W, C)` (any float dtype; computed in f32) → `(pooled_h · pooled_w, C)` f32,
/// rows in row-major (ph, pw) order.
pub fn roi_align(features: &Tensor, roi: [f32; 4], p: &RoiAlignParams) -> Result<Tensor> {
    let (h, w, c) = features.dims3()?;
    if h == 0 || w == 0 {
        candle_core::bail!("roi_align on an empty {h}x{w} map");
    }
    let samples = plan(h, w, roi, p);
    let per_cell = 4 * p.sampling_ratio.max(1).pow(2);
    let mut idx = Vec::with_capacity(samples.len() * 4);
    let mut wts = Vec::with_capacity(samples.len() * 4);
    for s in &samples {
        idx.extend(s.pos.iter().map(|&i| i as u32));
        wts.extend_from_slice(&s.w);
    }
    let dev = features.device();
    let n = idx.len();
    let idx = Tensor::from_vec(idx, n, dev)?;
    let wts = Tensor::from_vec(wts, (n, 1), dev)?;
    let flat = features.to_dtype(DType::F32)?.reshape((h * w, c))?;
    let weighted = flat.index_select(&idx, 0)?.broadcast_mul(&wts)?;
    let cells = p.pooled_h * p.pooled_w;
    // Per output cell: Σ over samples of (w1·a + w2·b + w3·c + w4·d), then divided by the sample count.
    let summed = weighted.reshape((cells, per_cell, c))?.sum(1)?;
    summed / (per_cell / 4) as f64
}

/// Direct port of torchvision's CPU `roi_align_forward_kernel_impl` for one box on a `(C, H, W)` f32 map;
/// returns `(C, pooled_h, pooled_w)` flattened. Used as the test oracle.
pub fn roi_align_naive(
    input: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    roi: [f32; 4],
    p: &RoiAlignParams,
) -> Vec<f32> {
    let samples = plan(height, width, roi, p);
    let grid = p.sampling_ratio.max(1);
    let count = (grid * grid) as f32;
    let mut out = vec![0f32; channels * p.pooled_h * p.pooled_w];
    for c in 0..channels {
        let map = &input[c * height * width..(c + 1) * height * width];
        let mut k = 0;
        for ph in 0..p.pooled_h {
            for pw in 0..p.pooled_w {
                let mut acc = 0f32;
                for _ in 0..grid * grid {
                    let s = &samples[k];
                    k += 1;
                    acc += s.w[0] * map[s.pos[0]]
                        + s.w[1] * map[s.pos[1]]
                        + s.w[2] * map[s.pos[2]]
                        + s.w[3] * map[s.pos[3]];
                }
                out[(c * p.pooled_h + ph) * p.pooled_w + pw] = acc / count;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn params(scale: f32) -> RoiAlignParams {
        RoiAlignParams {
            pooled_h: 4,
            pooled_w: 3,
            spatial_scale: scale,
            sampling_ratio: 2,
            aligned: true,
        }
    }

    /// Boxes covering the branches: inside, clamp below 0, beyond the far edge (y_low ≥ H−1), fully outside
    /// (zero samples), degenerate (zero size), reversed.
    const BOXES: [[f32; 4]; 7] = [
        [1.2, 0.7, 5.9, 4.1],
        [-3.0, -2.5, 2.0, 1.0],
        [4.0, 3.0, 9.5, 7.8],
        [-20.0, -20.0, -5.0, -6.0],
        [2.0, 2.0, 2.0, 2.0],
        [5.0, 4.0, 1.0, 0.5],
        [0.0, 0.0, 7.0, 6.0],
    ];

    #[test]
    fn tensor_path_matches_kernel_port() -> Result<()> {
        let (c, h, w) = (5, 6, 7);
        let data: Vec<f32> = (0..c * h * w)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let chw = Tensor::from_vec(data.clone(), (c, h, w), &Device::Cpu)?;
        let hwc = chw.permute((1, 2, 0))?.contiguous()?;
        for scale in [1.0f32, 0.5, 1.0 / 28.0 * 16.0] {
            for roi in BOXES {
                let p = params(scale);
                let naive = roi_align_naive(&data, c, h, w, roi, &p);
                // (cells, C) → (C, cells) to compare with the CHW-ordered oracle.
                let got = roi_align(&hwc, roi, &p)?
                    .t()?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                for (a, b) in naive.iter().zip(&got) {
                    assert!(
                        (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                        "{roi:?}: {a} vs {b}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn edge_branches() {
        let p = params(1.0);
        // Entirely outside: every sample is zero.
        let s = plan(6, 7, [-20.0, -20.0, -5.0, -6.0], &p);
        assert!(s.iter().all(|s| s.w == [0.0; 4]));
        // Beyond the far corner but within one pixel: clamped to the last row/column with full weight.
        let s = bilinear(5.7, 6.4, 6, 7, 6.0, 7.0);
        assert_eq!(s.pos, [5 * 7 + 6; 4]);
        assert_eq!(s.w, [1.0, 0.0, 0.0, 0.0]);
        // Slightly negative coordinates clamp to 0.
        let s = bilinear(-0.5, -0.9, 6, 7, 6.0, 7.0);
        assert_eq!(s.pos, [0, 1, 7, 8]);
        assert_eq!(s.w, [1.0, 0.0, 0.0, 0.0]);
        // Interior point.
        let s = bilinear(1.25, 2.5, 6, 7, 6.0, 7.0);
        assert_eq!(s.pos, [9, 10, 16, 17]);
        assert_eq!(s.w, [0.375, 0.375, 0.125, 0.125]);
    }

    #[test]
    fn constant_map_is_preserved_inside() -> Result<()> {
        let hwc = Tensor::full(3.5f32, (8, 8, 2), &Device::Cpu)?;
        let out = roi_align(&hwc, [1.0, 1.0, 6.0, 5.0], &params(1.0))?;
        for v in out.flatten_all()?.to_vec1::<f32>()? {
            assert!((v - 3.5).abs() < 1e-6);
        }
        Ok(())
    }
}
