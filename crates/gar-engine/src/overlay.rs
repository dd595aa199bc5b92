//! Region overlays: each region's mask tinted in its own colour, its contour drawn solid, and its
//! prompt index written next to it, so a user sees which `<PromptK>` is which region.

use image::{Rgb, RgbImage};

/// Distinct, colour-blind-friendly colours (Okabe–Ito), one per prompt index.
const PALETTE: [[u8; 3]; 8] = [
    [230, 159, 0],
    [86, 180, 233],
    [0, 158, 115],
    [240, 228, 66],
    [0, 114, 178],
    [213, 94, 0],
    [204, 121, 167],
    [255, 255, 255],
];
const TINT: f32 = 0.35;

/// 3×5 bitmap digits: each row is 3 bits, most significant bit on the left.
const DIGITS: [[u8; 5]; 10] = [
    [7, 5, 5, 5, 7],
    [2, 6, 2, 2, 7],
    [7, 1, 7, 4, 7],
    [7, 1, 7, 1, 7],
    [5, 5, 7, 1, 1],
    [7, 4, 7, 1, 7],
    [7, 4, 7, 5, 7],
    [7, 1, 1, 1, 1],
    [7, 5, 7, 5, 7],
    [7, 5, 7, 1, 7],
];

/// One region to draw: a row-major boolean mask of the image's size and its prompt index.
pub struct OverlayRegion<'a> {
    pub mask: &'a [bool],
    pub prompt_index: usize,
}

/// Draws `regions` over a copy of `image`. Masks must have `width × height` entries.
pub fn draw_overlay(image: &RgbImage, regions: &[OverlayRegion<'_>]) -> RgbImage {
    let (w, h) = image.dimensions();
    let mut out = image.clone();
    for region in regions {
        let color = PALETTE[region.prompt_index % PALETTE.len()];
        let inside = |x: i64, y: i64| {
            x >= 0
                && y >= 0
                && x < w as i64
                && y < h as i64
                && region.mask[(y as usize) * w as usize + x as usize]
        };
        let mut first: Option<(u32, u32)> = None;
        for y in 0..h {
            for x in 0..w {
                if !inside(x as i64, y as i64) {
                    continue;
                }
                first.get_or_insert((x, y));
                let (xi, yi) = (x as i64, y as i64);
                let edge = !(inside(xi - 1, yi)
                    && inside(xi + 1, yi)
                    && inside(xi, yi - 1)
                    && inside(xi, yi + 1));
                let px = out.get_pixel_mut(x, y);
                *px = if edge { Rgb(color) } else { blend(*px, color) };
            }
        }
        if let Some((x, y)) = first {
            draw_label(&mut out, x, y, region.prompt_index, color);
        }
    }
    out
}

fn blend(px: Rgb<u8>, color: [u8; 3]) -> Rgb<u8> {
    let mix = |a: u8, b: u8| ((1.0 - TINT) * a as f32 + TINT * b as f32).round() as u8;
    Rgb([
        mix(px[0], color[0]),
        mix(px[1], color[1]),
        mix(px[2], color[2]),
    ])
}

/// Writes the prompt index in a coloured box whose top-left corner is near (x, y), scaled with
/// the image so it stays readable on large photos.
fn draw_label(img: &mut RgbImage, x: u32, y: u32, index: usize, color: [u8; 3]) {
    let (w, h) = img.dimensions();
    let scale = (w.max(h) / 300).max(2);
    let digits: Vec<usize> = index
        .to_string()
        .bytes()
        .map(|b| (b - b'0') as usize)
        .collect();
    let box_w = (digits.len() as u32 * 4 + 1) * scale;
    let box_h = 7 * scale;
    let x0 = x.min(w.saturating_sub(box_w));
    let y0 = y.min(h.saturating_sub(box_h));
    for dy in 0..box_h {
        for dx in 0..box_w {
            if x0 + dx < w && y0 + dy < h {
                img.put_pixel(x0 + dx, y0 + dy, Rgb(color));
            }
        }
    }
    for (i, &d) in digits.iter().enumerate() {
        for (row, bits) in DIGITS[d].iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) == 0 {
                    continue;
                }
                for sy in 0..scale {
                    for sx in 0..scale {
                        let px = x0 + (1 + i as u32 * 4 + col) * scale + sx;
                        let py = y0 + (1 + row as u32) * scale + sy;
                        if px < w && py < h {
                            img.put_pixel(px, py, Rgb([0, 0, 0]));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contour_is_solid_and_inside_is_tinted() {
        // The label box sits at the region's first pixel (20, 20); probe away from it.
        let img = RgbImage::from_pixel(80, 80, Rgb([100, 100, 100]));
        let mut mask = vec![false; 80 * 80];
        for y in 20..60 {
            for x in 20..60 {
                mask[y * 80 + x] = true;
            }
        }
        let out = draw_overlay(
            &img,
            &[OverlayRegion {
                mask: &mask,
                prompt_index: 1,
            }],
        );
        assert_eq!(out.get_pixel(59, 45), &Rgb(PALETTE[1]));
        assert_eq!(out.get_pixel(45, 59), &Rgb(PALETTE[1]));
        let inside = out.get_pixel(45, 45);
        assert_ne!(inside, &Rgb([100, 100, 100]));
        assert_ne!(inside, &Rgb(PALETTE[1]));
        assert_eq!(out.get_pixel(5, 5), &Rgb([100, 100, 100]));
    }
}
