//! JPEG decoding with libjpeg-turbo's algorithms (mozjpeg, same integer IDCT and fancy upsampling as the
//! libjpeg-turbo inside PIL): pixel-identical to `Image.open(jpg).convert("RGB")`. The pure-Rust decoder of
//! the `image` crate differs by up to ±3 on about 0.5 % of pixels, which the resize then spreads.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mozjpeg::{ColorSpace, Decompress, Marker};

use crate::error::{ProcessorError, Result};
use crate::image::{check_size, LoadOptions, PilImage, Pixels};

/// Returns the image and its EXIF orientation (1 when absent).
pub(crate) fn decode_jpeg(bytes: &[u8], options: &LoadOptions) -> Result<(PilImage, u8)> {
    // libjpeg reports fatal errors by unwinding out of its error handler (see the mozjpeg docs); this turns
    // them back into an error value.
    match catch_unwind(AssertUnwindSafe(|| decode_inner(bytes, options))) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libjpeg error".into());
            Err(ProcessorError::Decode(msg))
        }
    }
}

fn decode_inner(bytes: &[u8], options: &LoadOptions) -> Result<(PilImage, u8)> {
    let io = |e: std::io::Error| ProcessorError::Decode(e.to_string());
    let d = Decompress::with_markers(&[Marker::APP(1)])
        .from_mem(bytes)
        .map_err(io)?;
    let (w, h) = d.size();
    check_size(w as u64, h as u64, options)?;
    let orientation = d
        .markers()
        .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
        .find_map(image::metadata::Orientation::from_exif_chunk)
        .map_or(1, |o| o.to_exif());
    let pixels = match d.color_space() {
        ColorSpace::JCS_GRAYSCALE => {
            let mut s = d.grayscale().map_err(io)?;
            let v = s.read_scanlines::<u8>().map_err(io)?;
            s.finish().map_err(io)?;
            Pixels::L(v)
        }
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut s = d.to_colorspace(ColorSpace::JCS_CMYK).map_err(io)?;
            let v = s.read_scanlines::<u8>().map_err(io)?;
            s.finish().map_err(io)?;
            Pixels::Rgb(v.chunks_exact(4).flat_map(cmyk_to_rgb).collect())
        }
        _ => {
            let mut s = d.rgb().map_err(io)?;
            let v = s.read_scanlines::<u8>().map_err(io)?;
            s.finish().map_err(io)?;
            Pixels::Rgb(v)
        }
    };
    let img = PilImage {
        width: w as u32,
        height: h as u32,
        pixels,
    };
    Ok((img, orientation))
}

/// PIL opens CMYK JPEGs as `CMYK;I` (Adobe's inverted storage) and converts with `cmyk2rgb`.
fn cmyk_to_rgb(raw: &[u8]) -> [u8; 3] {
    let muldiv255 = |a: i32, b: i32| {
        let t = a * b + 128;
        ((t >> 8) + t) >> 8
    };
    let k = 255 - raw[3] as i32;
    let nk = 255 - k;
    let ch = |c: u8| (nk - muldiv255(255 - c as i32, nk)).clamp(0, 255) as u8;
    [ch(raw[0]), ch(raw[1]), ch(raw[2])]
}
