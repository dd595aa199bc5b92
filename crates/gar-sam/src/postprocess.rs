//! `SamImageProcessor.post_process_masks`: low-res logits → bilinear (torch, `align_corners=False`)
//! to the padded 1024 frame → crop to the resized image → bilinear to the original size → `> 0`.
//! Plus the [`Mask`] type the rest of the crate and the CLI hand around.

use crate::preprocess::ResizeInfo;

/// torch `upsample_bilinear2d` source taps for one axis: `(i0, i1, λ0, λ1)` per output index,
/// computed in f32 like torch's CPU kernel (`scale = in/out`, `src = scale·(dst + ½) − ½`, clamped at 0).
fn taps(in_size: usize, out_size: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_size as f32 / out_size as f32;
    (0..out_size)
        .map(|d| {
            let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(in_size - 1);
            let l1 = (src - i0 as f32).clamp(0.0, 1.0);
            let i1 = if i0 < in_size - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of a row-major `(in_h, in_w)` plane, evaluating only output rows `0..keep_h` and
/// columns `0..keep_w` (the crop that follows the first resize needs nothing else).
fn resize_plane(
    src: &[f32],
    (in_h, in_w): (usize, usize),
    (out_h, out_w): (usize, usize),
    (keep_h, keep_w): (usize, usize),
) -> Vec<f32> {
    let ty = taps(in_h, out_h);
    let tx = taps(in_w, out_w);
    let mut out = Vec::with_capacity(keep_h * keep_w);
    for &(y0, y1, wy0, wy1) in &ty[..keep_h] {
        let r0 = &src[y0 * in_w..(y0 + 1) * in_w];
        let r1 = &src[y1 * in_w..(y1 + 1) * in_w];
        for &(x0, x1, wx0, wx1) in &tx[..keep_w] {
            let top = wx0 * r0[x0] + wx1 * r0[x1];
            let bottom = wx0 * r1[x0] + wx1 * r1[x1];
            out.push(wy0 * top + wy1 * bottom);
        }
    }
    out
}

/// One low-res logit plane `(side, side)` → binary mask at the original image size.
pub fn upscale_mask(
    low_res: &[f32],
    side: usize,
    pad: (usize, usize),
    info: &ResizeInfo,
    threshold: f32,
) -> Mask {
    let (rh, rw) = info.resized;
    let (oh, ow) = info.original;
    let padded = resize_plane(low_res, (side, side), pad, (rh, rw));
    let full = resize_plane(&padded, (rh, rw), (oh, ow), (oh, ow));
    Mask {
        width: ow,
        height: oh,
        data: full.into_iter().map(|v| v > threshold).collect(),
    }
}

/// A binary mask at image resolution, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    pub width: usize,
    pub height: usize,
    pub data: Vec<bool>,
}

impl Mask {
    pub fn area(&self) -> usize {
        self.data.iter().filter(|&&v| v).count()
    }

    /// Intersection over union with another mask of the same size (1.0 when both are empty).
    pub fn iou(&self, other: &Mask) -> f64 {
        let (mut inter, mut union) = (0usize, 0usize);
        for (a, b) in self.data.iter().zip(&other.data) {
            inter += (*a && *b) as usize;
            union += (*a || *b) as usize;
        }
        if union == 0 {
            1.0
        } else {
            inter as f64 / union as f64
        }
    }

    /// 8-bit grayscale image, 255 inside and 0 outside.
    pub fn to_image(&self) -> image::GrayImage {
        let px = self.data.iter().map(|&v| if v { 255 } else { 0 }).collect();
        image::GrayImage::from_raw(self.width as u32, self.height as u32, px)
            .expect("mask buffer matches its size")
    }

    /// Uncompressed COCO RLE counts: run lengths in column-major order, starting with a (possibly
    /// empty) run of zeros, as `pycocotools.mask.encode` counts them before compression.
    pub fn rle_counts(&self) -> Vec<u64> {
        let mut counts = Vec::new();
        let (mut current, mut run) = (false, 0u64);
        for x in 0..self.width {
            for y in 0..self.height {
                let v = self.data[y * self.width + x];
                if v != current {
                    counts.push(run);
                    current = v;
                    run = 0;
                }
                run += 1;
            }
        }
        counts.push(run);
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_match_torch_half_pixel_rule() {
        // 2 → 4: src = 0.5·(d + ½) − ½ = −0.25 (clamped), 0.25, 0.75, 1.25 (i0 = 1, clamped i1)
        let t = taps(2, 4);
        assert_eq!(t[0], (0, 1, 1.0, 0.0));
        assert_eq!(t[1], (0, 1, 0.75, 0.25));
        assert_eq!(t[2], (0, 1, 0.25, 0.75));
        assert_eq!(t[3].0, 1);
        assert_eq!(t[3].1, 1);
    }

    #[test]
    fn rle_counts_are_column_major_starting_with_zeros() {
        // 2×3 (h×w): column-major sequence 1,0 | 1,1 | 0,0
        let m = Mask {
            width: 3,
            height: 2,
            data: vec![true, true, false, false, true, false],
        };
        assert_eq!(m.rle_counts(), vec![0, 1, 1, 2, 2]);
        assert_eq!(m.area(), 3);
        assert_eq!(m.iou(&m), 1.0);
    }
}
