//! `SamImageProcessor` (the slow, PIL-based one `SamProcessor` loads) reproduced bit for bit:
//! RGBA composited over white (`convert_to_rgb`), PIL's bilinear resize of the uint8 image so the
//! longest side is 1024 (fixed-point, antialiased when shrinking), rescale by 1/255 in f64 then f32,
//! normalise with the ImageNet mean/std in f32, zero-pad bottom/right to 1024×1024.

use candle_core::{Device, Tensor};
use image::{DynamicImage, RgbImage};

use crate::error::Result;

/// Processor settings (`preprocessor_config.json`; defaults are the released models').
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(default)]
pub struct PreprocessConfig {
    pub image_mean: [f32; 3],
    pub image_std: [f32; 3],
    pub rescale_factor: f64,
    pub size: LongestEdge,
    pub pad_size: PadSize,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct LongestEdge {
    pub longest_edge: usize,
}

#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct PadSize {
    pub height: usize,
    pub width: usize,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        Self {
            image_mean: [0.485, 0.456, 0.406],
            image_std: [0.229, 0.224, 0.225],
            rescale_factor: 1.0 / 255.0,
            size: LongestEdge { longest_edge: 1024 },
            pad_size: PadSize {
                height: 1024,
                width: 1024,
            },
        }
    }
}

/// Original and resized sizes, `(height, width)`, and the point/box mapping between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResizeInfo {
    pub original: (usize, usize),
    pub resized: (usize, usize),
}

impl ResizeInfo {
    /// `_get_preprocess_shape`: scale so the longest side is `longest`, rounding half up.
    pub fn new(height: usize, width: usize, longest: usize) -> Self {
        let scale = longest as f64 / height.max(width) as f64;
        let r = |v: usize| (v as f64 * scale + 0.5) as usize;
        Self {
            original: (height, width),
            resized: (r(height), r(width)),
        }
    }

    /// `SamProcessor._normalize_coordinates`: original pixel coordinates → model frame (f64).
    pub fn to_model(&self, x: f64, y: f64) -> (f64, f64) {
        let sx = self.resized.1 as f64 / self.original.1 as f64;
        let sy = self.resized.0 as f64 / self.original.0 as f64;
        (x * sx, y * sy)
    }
}

/// `convert_to_rgb`: RGB as is; anything else via RGBA, alpha-composited over opaque white with
/// PIL's integer arithmetic (`ImagingAlphaComposite`, 7 bits of extra precision).
pub fn to_rgb(image: &DynamicImage) -> RgbImage {
    if let DynamicImage::ImageRgb8(rgb) = image {
        return rgb.clone();
    }
    if !image.color().has_alpha() {
        return image.to_rgb8();
    }
    let rgba = image.to_rgba8();
    let (w, h) = rgba.dimensions();
    let mut out = RgbImage::new(w, h);
    for (o, p) in out.pixels_mut().zip(rgba.pixels()) {
        let a = p.0[3] as u32;
        for c in 0..3 {
            o.0[c] = if a == 0 {
                255
            } else {
                // Over white: coef1 = a·128, coef2 = (255 − a)·128 (outa255 = 255·255 exactly).
                let tmp = p.0[c] as u32 * a * 128 + 255 * (255 - a) * 128 + (0x80 << 7);
                ((((tmp >> 8) + tmp) >> 8) >> 7) as u8
            };
        }
    }
    out
}

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL `precompute_coeffs` for the bilinear (triangle) filter, already normalised to fixed point.
/// Returns, per output pixel, the first input index and its integer weights.
fn bilinear_coeffs(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filterscale; // bilinear support 1.0 × filterscale
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            let ss = 1.0 / filterscale;
            // C casts truncate toward zero; `as i64` does the same.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| {
                    let t = ((x as f64 - center + 0.5) * ss).abs();
                    if t < 1.0 {
                        1.0 - t
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|&k| {
                    let k = if total != 0.0 { k / total } else { k };
                    let v = k * (1u32 << PRECISION_BITS) as f64;
                    if v < 0.0 {
                        (v - 0.5) as i32
                    } else {
                        (v + 0.5) as i32
                    }
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL `Image.resize(..., BILINEAR)` of an RGB image: horizontal pass, then vertical, each rounded
/// to uint8, skipping a pass whose size does not change (as `ImagingResampleInner` does).
pub fn resize_bilinear_pil(src: &RgbImage, out_w: usize, out_h: usize) -> RgbImage {
    let (w, h) = (src.width() as usize, src.height() as usize);
    if (w, h) == (out_w, out_h) {
        return src.clone();
    }
    let data = src.as_raw();
    let half = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass (only rows the vertical pass reads; all of them for a bilinear filter).
    let horiz: Vec<u8> = if w != out_w {
        let cx = bilinear_coeffs(w, out_w);
        let mut out = vec![0u8; out_w * h * 3];
        for y in 0..h {
            let row = &data[y * w * 3..(y + 1) * w * 3];
            for (xx, (xmin, k)) in cx.iter().enumerate() {
                for c in 0..3 {
                    let mut acc = half;
                    for (i, kv) in k.iter().enumerate() {
                        acc += row[(xmin + i) * 3 + c] as i32 * kv;
                    }
                    out[(y * out_w + xx) * 3 + c] = clip8(acc);
                }
            }
        }
        out
    } else {
        data.to_vec()
    };
    let vert: Vec<u8> = if h != out_h {
        let cy = bilinear_coeffs(h, out_h);
        let mut out = vec![0u8; out_w * out_h * 3];
        for (yy, (ymin, k)) in cy.iter().enumerate() {
            for x in 0..out_w * 3 {
                let mut acc = half;
                for (i, kv) in k.iter().enumerate() {
                    acc += horiz[(ymin + i) * out_w * 3 + x] as i32 * kv;
                }
                out[yy * out_w * 3 + x] = clip8(acc);
            }
        }
        out
    } else {
        horiz
    };
    RgbImage::from_raw(out_w as u32, out_h as u32, vert).expect("buffer sized to the image")
}

/// The processor's `pixel_values` for one image: `(1, 3, pad_h, pad_w)` f32, plus the sizes.
pub fn preprocess(
    rgb: &RgbImage,
    cfg: &PreprocessConfig,
    device: &Device,
) -> Result<(Tensor, ResizeInfo)> {
    let info = ResizeInfo::new(
        rgb.height() as usize,
        rgb.width() as usize,
        cfg.size.longest_edge,
    );
    let (rh, rw) = info.resized;
    let resized = resize_bilinear_pil(rgb, rw, rh);
    let (ph, pw) = (cfg.pad_size.height, cfg.pad_size.width);
    let mut px = vec![0f32; 3 * ph * pw];
    for (x, y, p) in resized.enumerate_pixels() {
        for c in 0..3 {
            // numpy: (u8 as f64 · factor) → f32, then (v − mean) / std in f32.
            let v = (p.0[c] as f64 * cfg.rescale_factor) as f32;
            px[c * ph * pw + y as usize * pw + x as usize] =
                (v - cfg.image_mean[c]) / cfg.image_std[c];
        }
    }
    Ok((Tensor::from_vec(px, (1, 3, ph, pw), device)?, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preprocess_shape_rounds_half_up() {
        assert_eq!(ResizeInfo::new(427, 640, 1024).resized, (683, 1024));
        assert_eq!(ResizeInfo::new(1365, 2048, 1024).resized, (683, 1024));
        assert_eq!(ResizeInfo::new(640, 515, 1024).resized, (1024, 824));
        assert_eq!(ResizeInfo::new(770, 1024, 1024).resized, (770, 1024));
    }

    #[test]
    fn bilinear_weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(640, 1024), (2048, 1024), (7, 3), (3, 7)] {
            for (_, k) in bilinear_coeffs(i, o) {
                let s: i32 = k.iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= k.len() as i32,
                    "{i}->{o}"
                );
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(13, 9, image::Rgb([10, 200, 77]));
        let r = resize_bilinear_pil(&img, 29, 5);
        assert!(r.pixels().all(|p| p.0 == [10, 200, 77]));
    }

    #[test]
    fn alpha_composite_matches_pil_corners() {
        let mut img = image::RgbaImage::new(3, 1);
        img.put_pixel(0, 0, image::Rgba([10, 20, 30, 0]));
        img.put_pixel(1, 0, image::Rgba([10, 20, 30, 255]));
        img.put_pixel(2, 0, image::Rgba([0, 100, 200, 128]));
        let rgb = to_rgb(&DynamicImage::ImageRgba8(img));
        assert_eq!(rgb.get_pixel(0, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(1, 0).0, [10, 20, 30]);
        // PIL: Image.alpha_composite(white, (0,100,200,128)) → (127, 177, 227)
        assert_eq!(rgb.get_pixel(2, 0).0, [127, 177, 227]);
    }
}
