//! Region shapes as the benchmark files store them: COCO compressed RLE masks, polygons and
//! xywh boxes. Masks stay as data (the string) until someone asks for runs, a bounding box or
//! pixels; the judge prompts only need the bounding box (for the focal crop).

use serde::{Deserialize, Serialize};

/// A COCO *compressed* RLE mask: `size` is `[height, width]`, `counts` the LEB128-like string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CocoRle {
    pub size: [u32; 2],
    pub counts: String,
}

/// A pixel box `x, y, w, h` (COCO convention: `w = x_max - x_min + 1` for masks).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxXywh {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

impl CocoRle {
    pub fn height(&self) -> usize {
        self.size[0] as usize
    }

    pub fn width(&self) -> usize {
        self.size[1] as usize
    }

    /// Decodes the count string into run lengths (alternating background / foreground,
    /// starting with background, column-major). Port of pycocotools' `rleFrString`.
    pub fn runs(&self) -> Result<Vec<u64>, String> {
        let bytes = self.counts.as_bytes();
        let mut runs: Vec<u64> = Vec::new();
        let mut p = 0;
        while p < bytes.len() {
            let (mut x, mut k, mut more) = (0i64, 0u32, true);
            while more {
                let Some(&b) = bytes.get(p) else {
                    return Err("RLE string ends inside a number".into());
                };
                let c = i64::from(b) - 48;
                if !(0..64).contains(&c) || k > 12 {
                    return Err(format!("invalid RLE character {:?} at {p}", b as char));
                }
                x |= (c & 0x1f) << (5 * k);
                more = c & 0x20 != 0;
                p += 1;
                k += 1;
                if !more && c & 0x10 != 0 {
                    x |= -1i64 << (5 * k); // sign-extend the last group
                }
            }
            // From the third count on, values are deltas to the count two places back.
            if runs.len() > 2 {
                x += runs[runs.len() - 2] as i64;
            }
            let run = u64::try_from(x).map_err(|_| format!("negative run length {x}"))?;
            runs.push(run);
        }
        let total: u64 = runs.iter().sum();
        let expected = self.height() as u64 * self.width() as u64;
        if total != expected {
            return Err(format!(
                "runs cover {total} pixels, the {}x{} mask has {expected}",
                self.size[0], self.size[1]
            ));
        }
        Ok(runs)
    }

    /// Number of foreground pixels.
    pub fn area(&self) -> Result<u64, String> {
        Ok(self.runs()?.iter().skip(1).step_by(2).sum())
    }

    /// Tight bounding box of the foreground, `None` for an empty mask. Computed from the runs
    /// without building the pixel array.
    pub fn bbox(&self) -> Result<Option<BoxXywh>, String> {
        let h = self.height() as u64;
        let (mut x0, mut y0, mut x1, mut y1) = (u64::MAX, u64::MAX, 0u64, 0u64);
        let mut pos = 0u64;
        for (i, &run) in self.runs()?.iter().enumerate() {
            if i % 2 == 1 && run > 0 {
                let (first, last) = (pos, pos + run - 1);
                let (cx0, cx1) = (first / h, last / h);
                x0 = x0.min(cx0);
                x1 = x1.max(cx1);
                if cx0 == cx1 {
                    y0 = y0.min(first % h);
                    y1 = y1.max(last % h);
                } else {
                    // A run that crosses a column boundary touches both the bottom and the top row.
                    y0 = 0;
                    y1 = h - 1;
                }
            }
            pos += run;
        }
        if x0 == u64::MAX {
            return Ok(None);
        }
        Ok(Some(BoxXywh {
            x: x0 as f64,
            y: y0 as f64,
            w: (x1 - x0 + 1) as f64,
            h: (y1 - y0 + 1) as f64,
        }))
    }

    /// Row-major 0/1 pixels (`height * width`).
    pub fn to_mask(&self) -> Result<Vec<u8>, String> {
        let (h, w) = (self.height(), self.width());
        let mut out = vec![0u8; h * w];
        let mut pos = 0usize;
        for (i, &run) in self.runs()?.iter().enumerate() {
            if i % 2 == 1 {
                for idx in pos..pos + run as usize {
                    out[(idx % h) * w + idx / h] = 1;
                }
            }
            pos += run as usize;
        }
        Ok(out)
    }
}

/// Bounding box of COCO polygons (`[[x1, y1, x2, y2, …], …]`), as `pycocotools` would see the
/// outline before rasterising; `None` when there are no points.
pub fn polygon_bbox(polygons: &[Vec<f64>]) -> Option<BoxXywh> {
    let pts = polygons.iter().flat_map(|p| p.chunks_exact(2));
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    let mut any = false;
    for pt in pts {
        any = true;
        x0 = x0.min(pt[0]);
        y0 = y0.min(pt[1]);
        x1 = x1.max(pt[0]);
        y1 = y1.max(pt[1]);
    }
    any.then_some(BoxXywh {
        x: x0,
        y: y0,
        w: x1 - x0,
        h: y1 - y0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rle(h: u32, w: u32, counts: &str) -> CocoRle {
        CocoRle {
            size: [h, w],
            counts: counts.into(),
        }
    }

    #[test]
    fn decodes_small_masks() {
        // 3x3 mask, runs 4 background, 2 foreground, 3 background: pixels (x=1,y=1), (x=1,y=2).
        let m = rle(3, 3, "423");
        assert_eq!(m.runs().unwrap(), vec![4, 2, 3]);
        assert_eq!(m.area().unwrap(), 2);
        let b = m.bbox().unwrap().unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (1.0, 1.0, 1.0, 2.0));
        assert_eq!(m.to_mask().unwrap(), vec![0, 0, 0, 0, 1, 0, 0, 1, 0]);
    }

    #[test]
    fn run_across_columns_spans_full_height() {
        // runs 2 bg, 3 fg, 4 bg on a 3x3: foreground at column 0 row 2 and column 1 rows 0..1.
        let m = rle(3, 3, "234");
        let b = m.bbox().unwrap().unwrap();
        assert_eq!((b.x, b.y, b.w, b.h), (0.0, 0.0, 2.0, 3.0));
    }

    #[test]
    fn rejects_bad_strings() {
        assert!(rle(3, 3, "42").runs().is_err()); // covers 6 of 9 pixels
        assert!(rle(3, 3, "4\u{7f}").runs().is_err());
        assert!(rle(2, 2, "").bbox().is_err());
        assert_eq!(rle(2, 2, "4").bbox().unwrap(), None);
    }

    #[test]
    fn polygon_box() {
        let b = polygon_bbox(&[vec![
            230.39, 52.48, 286.41, 52.48, 286.41, 84.48, 230.39, 84.48,
        ]])
        .unwrap();
        assert!((b.w - 56.02).abs() < 1e-9 && (b.h - 32.0).abs() < 1e-9);
    }
}
