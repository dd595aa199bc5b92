//! COCO compressed RLE (training.md §1.3): the ASCII `counts` string of pycocotools, decoded to a
//! binary mask. Only the compressed string form exists in GAR's data; polygons are not supported.

use image::GrayImage;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RleError {
    #[error("RLE counts string is truncated (a chunk continues past the end)")]
    Truncated,
    #[error("RLE character {0:?} is outside the encoding's range")]
    BadChar(char),
    #[error("RLE runs cover {got} pixels but the mask has {want} (= height × width)")]
    Length { got: i64, want: i64 },
    #[error("RLE has a negative run length")]
    Negative,
}

/// Parse the compressed counts string into run lengths (`rleFrString`).
pub fn parse_counts(s: &str) -> Result<Vec<i64>, RleError> {
    let bytes = s.as_bytes();
    let mut counts: Vec<i64> = Vec::new();
    let mut p = 0;
    while p < bytes.len() {
        let (mut x, mut k, mut more) = (0i64, 0u32, true);
        while more {
            let Some(&b) = bytes.get(p) else {
                return Err(RleError::Truncated);
            };
            if !(48..48 + 64).contains(&b) {
                return Err(RleError::BadChar(b as char));
            }
            let c = (b - 48) as i64;
            x |= (c & 0x1f) << (5 * k);
            more = c & 0x20 != 0;
            p += 1;
            k += 1;
            // Sign-extend from the last chunk's top data bit.
            if !more && c & 0x10 != 0 {
                x |= -1i64 << (5 * k);
            }
            if k > 12 {
                return Err(RleError::Truncated);
            }
        }
        // Delta coding: from the third count on, each count is stored relative to the one two back.
        let m = counts.len();
        if m > 2 {
            x += counts[m - 2];
        }
        counts.push(x);
    }
    Ok(counts)
}

/// Decode to an (h, w) mask with values 0/1. Runs fill the image column-major, starting with zeros.
pub fn decode(height: u32, width: u32, counts: &str) -> Result<GrayImage, RleError> {
    let runs = parse_counts(counts)?;
    let want = height as i64 * width as i64;
    let mut got = 0i64;
    for &r in &runs {
        if r < 0 {
            return Err(RleError::Negative);
        }
        got += r;
    }
    if got != want {
        return Err(RleError::Length { got, want });
    }
    let mut mask = GrayImage::new(width, height);
    let (mut idx, mut value) = (0u64, 0u8);
    let h = height as u64;
    for &r in &runs {
        if value == 1 {
            for j in idx..idx + r as u64 {
                mask.put_pixel((j / h) as u32, (j % h) as u32, image::Luma([1]));
            }
        }
        idx += r as u64;
        value ^= 1;
    }
    Ok(mask)
}

/// Encode a binary mask (non-zero = inside) as a compressed counts string; the inverse of `decode`,
/// used to write test data and the JSONL format's examples.
pub fn encode(mask: &GrayImage) -> String {
    let (w, h) = mask.dimensions();
    let mut runs: Vec<i64> = Vec::new();
    let (mut cur, mut len) = (0u8, 0i64);
    for x in 0..w {
        for y in 0..h {
            let v = u8::from(mask.get_pixel(x, y)[0] != 0);
            if v != cur {
                runs.push(len);
                cur = v;
                len = 0;
            }
            len += 1;
        }
    }
    runs.push(len);
    let mut out = String::new();
    for i in 0..runs.len() {
        let mut x = runs[i];
        if i > 2 {
            x -= runs[i - 2];
        }
        loop {
            let mut c = x & 0x1f;
            x >>= 5;
            let more = if c & 0x10 != 0 { x != -1 } else { x != 0 };
            if more {
                c |= 0x20;
            }
            out.push((c as u8 + 48) as char);
            if !more {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_runs_round_trip() {
        // A 4×3 mask with pixels (row 1..2, col 0) and (row 1..3, col 2). Column-major it reads
        // 0 1 1 0 | 0 0 0 0 | 0 1 1 1: runs 1 zero, 2 ones, 6 zeros, 3 ones.
        let mut m = GrayImage::new(3, 4);
        for (x, y) in [(0, 1), (0, 2), (2, 1), (2, 2), (2, 3)] {
            m.put_pixel(x, y, image::Luma([1]));
        }
        let s = encode(&m);
        assert_eq!(parse_counts(&s).unwrap(), vec![1, 2, 6, 3]);
        assert_eq!(decode(4, 3, &s).unwrap(), m);
        assert!(matches!(decode(4, 4, &s), Err(RleError::Length { .. })));
        assert!(decode(4, 3, "\u{7f}").is_err());
    }

    #[test]
    fn large_counts_use_several_chunks_and_deltas() {
        let mut m = GrayImage::new(100, 90);
        for x in 10..70 {
            for y in 5..80 {
                m.put_pixel(x, y, image::Luma([1]));
            }
        }
        let s = encode(&m);
        assert_eq!(decode(90, 100, &s).unwrap(), m);
    }
}
