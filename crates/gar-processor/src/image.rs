//! Image decoding and conversion to RGB exactly as the reference does it: `PIL.Image.open(path)` followed by
//! `image.convert("RGB")` (gar-spec §6.1).
//!
//! Every decoder first produces one of the two 8-bit PIL modes that matter here, `L` or `RGB`, with PIL's
//! rules for the other modes:
//! * alpha is dropped, never composited (RGBA → RGB, LA → L);
//! * palette images map each index through the palette (GIF: palette indices of the first frame);
//! * 16-bit grey (`I;16`) and 32-bit grey (`I`) are *clipped* to 0..=255, while 16-bit RGB/RGBA/LA keep the
//!   high byte (PIL's `RGB;16B`-style unpackers);
//! * CMYK JPEGs are read with Adobe's inverted convention and converted with PIL's `cmyk2rgb`.
//!
//! EXIF orientation is ignored unless [`LoadOptions::apply_exif_orientation`] is set: PIL does not rotate
//! on open and the reference never calls `exif_transpose`.

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use crate::error::{ProcessorError, Result};
use crate::region::BinaryMask;

/// PIL raises `DecompressionBombError` above twice `Image.MAX_IMAGE_PIXELS` (2 × 89,478,485 pixels): the
/// reference accepts everything below, so this is the default limit.
pub const DEFAULT_MAX_PIXELS: u64 = 2 * 89_478_485;

/// How files are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    /// Rotate/flip according to the EXIF orientation tag. Off by default, like the reference.
    pub apply_exif_orientation: bool,
    /// Refuse images with more pixels than this (decompression bombs).
    pub max_pixels: u64,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            apply_exif_orientation: false,
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (`HWC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbImage {
    /// Wraps an interleaved RGB buffer of `width * height * 3` bytes.
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(ProcessorError::EmptyImage);
        }
        let expected = width as usize * height as usize * 3;
        if data.len() != expected {
            return Err(ProcessorError::InvalidBuffer(format!(
                "{width}x{height} RGB needs {expected} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    /// Interleaved RGB bytes, `height * width * 3`.
    pub fn as_raw(&self) -> &[u8] {
        &self.data
    }

    pub fn into_raw(self) -> Vec<u8> {
        self.data
    }

    /// The image as three planes (`CHW`), the layout torch works on.
    pub(crate) fn to_planes(&self) -> Vec<u8> {
        let n = self.width as usize * self.height as usize;
        let mut planes = vec![0u8; 3 * n];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            planes[i] = px[0];
            planes[n + i] = px[1];
            planes[2 * n + i] = px[2];
        }
        planes
    }
}

/// Reads and decodes an image file (PNG, JPEG, WebP, BMP, GIF first frame, TIFF) to RGB.
pub fn load_image(path: impl AsRef<Path>, options: &LoadOptions) -> Result<RgbImage> {
    let bytes = read_file(path.as_ref())?;
    decode_image(&bytes, options)
}

/// Decodes an encoded image held in memory to RGB.
pub fn decode_image(bytes: &[u8], options: &LoadOptions) -> Result<RgbImage> {
    decode_pil(bytes, options)?.into_rgb()
}

/// Reads a mask image of any mode. A pixel is inside when PIL's `convert("L")` of it is non-zero, which is
/// what the demos do (`np.array(Image.open(mask).convert("L")).astype(bool)`).
pub fn load_mask(path: impl AsRef<Path>, options: &LoadOptions) -> Result<BinaryMask> {
    let bytes = read_file(path.as_ref())?;
    decode_mask(&bytes, options)
}

/// In-memory variant of [`load_mask`].
pub fn decode_mask(bytes: &[u8], options: &LoadOptions) -> Result<BinaryMask> {
    let img = decode_pil(bytes, options)?;
    let (width, height) = (img.width, img.height);
    let luma = img.into_luma();
    BinaryMask::from_luma(width, height, &luma)
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ProcessorError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The 8-bit PIL modes every decoder is reduced to.
pub(crate) enum Pixels {
    L(Vec<u8>),
    Rgb(Vec<u8>),
}

pub(crate) struct PilImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Pixels,
}

impl PilImage {
    /// PIL `convert("RGB")`: grey is replicated.
    fn into_rgb(self) -> Result<RgbImage> {
        let data = match self.pixels {
            Pixels::Rgb(v) => v,
            Pixels::L(v) => v.iter().flat_map(|&g| [g, g, g]).collect(),
        };
        RgbImage::new(self.width, self.height, data)
    }

    /// PIL `convert("L")`: ITU-R 601-2 luma in PIL's 16.16 fixed point (`rgb2l`).
    pub(crate) fn into_luma(self) -> Vec<u8> {
        match self.pixels {
            Pixels::L(v) => v,
            Pixels::Rgb(v) => v
                .chunks_exact(3)
                .map(|p| {
                    let l = p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000;
                    (l >> 16) as u8
                })
                .collect(),
        }
    }
}

pub(crate) fn decode_pil(bytes: &[u8], options: &LoadOptions) -> Result<PilImage> {
    let format = image::guess_format(bytes).map_err(|_| ProcessorError::UnsupportedFormat)?;
    let (img, orientation) = match format {
        ImageFormat::Gif => (decode_gif(bytes, options)?, 1),
        ImageFormat::Jpeg => decode_jpeg(bytes, options)?,
        ImageFormat::Png | ImageFormat::WebP | ImageFormat::Bmp | ImageFormat::Tiff => {
            decode_with_image_crate(bytes, format, options)?
        }
        _ => return Err(ProcessorError::UnsupportedFormat),
    };
    if options.apply_exif_orientation && orientation != 1 {
        Ok(orient(img, orientation))
    } else {
        Ok(img)
    }
}

#[cfg(feature = "libjpeg")]
fn decode_jpeg(bytes: &[u8], options: &LoadOptions) -> Result<(PilImage, u8)> {
    crate::jpeg::decode_jpeg(bytes, options)
}

#[cfg(not(feature = "libjpeg"))]
fn decode_jpeg(bytes: &[u8], options: &LoadOptions) -> Result<(PilImage, u8)> {
    decode_with_image_crate(bytes, ImageFormat::Jpeg, options)
}

pub(crate) fn check_size(width: u64, height: u64, options: &LoadOptions) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(ProcessorError::EmptyImage);
    }
    let pixels = width.saturating_mul(height);
    if pixels > options.max_pixels {
        return Err(ProcessorError::ImageTooLarge {
            width,
            height,
            pixels,
            limit: options.max_pixels,
        });
    }
    Ok(())
}

fn decode_err(e: impl std::fmt::Display) -> ProcessorError {
    ProcessorError::Decode(e.to_string())
}

/// PNG, WebP, BMP, TIFF (and JPEG without the `libjpeg` feature) through the `image` crate.
fn decode_with_image_crate(
    bytes: &[u8],
    format: ImageFormat,
    options: &LoadOptions,
) -> Result<(PilImage, u8)> {
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format);
    let mut limits = image::Limits::no_limits();
    // The pixel limit is checked below; this caps what a lying header can make the decoder allocate.
    limits.max_alloc = Some(options.max_pixels.saturating_mul(16).max(1 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_err)?;
    let (w, h) = decoder.dimensions();
    check_size(w as u64, h as u64, options)?;
    let orientation = decoder.orientation().map(|o| o.to_exif()).unwrap_or(1);
    let img = DynamicImage::from_decoder(decoder).map_err(decode_err)?;
    Ok((from_dynamic(img), orientation))
}

/// Maps the `image` crate's pixel types onto PIL's 8-bit modes (see the module docs for the rules).
fn from_dynamic(img: DynamicImage) -> PilImage {
    let (width, height) = (img.width(), img.height());
    let high = |v: u16| (v >> 8) as u8;
    let pixels = match img {
        DynamicImage::ImageLuma8(b) => Pixels::L(b.into_raw()),
        DynamicImage::ImageLumaA8(b) => {
            Pixels::L(b.into_raw().chunks_exact(2).map(|p| p[0]).collect())
        }
        DynamicImage::ImageRgb8(b) => Pixels::Rgb(b.into_raw()),
        DynamicImage::ImageRgba8(b) => Pixels::Rgb(drop_alpha(&b.into_raw(), |v| v)),
        // PIL opens 16-bit grey as `I;16`, whose conversion to L/RGB clips.
        DynamicImage::ImageLuma16(b) => {
            Pixels::L(b.into_raw().iter().map(|&v| v.min(255) as u8).collect())
        }
        DynamicImage::ImageLumaA16(b) => {
            Pixels::L(b.into_raw().chunks_exact(2).map(|p| high(p[0])).collect())
        }
        DynamicImage::ImageRgb16(b) => Pixels::Rgb(b.into_raw().iter().map(|&v| high(v)).collect()),
        DynamicImage::ImageRgba16(b) => Pixels::Rgb(drop_alpha(&b.into_raw(), high)),
        // Float images have no PIL RGB equivalent; scale [0, 1] to 0..=255 (documented deviation).
        other => Pixels::Rgb(other.to_rgb8().into_raw()),
    };
    PilImage {
        width,
        height,
        pixels,
    }
}

fn drop_alpha<T: Copy>(rgba: &[T], f: impl Fn(T) -> u8) -> Vec<u8> {
    rgba.chunks_exact(4)
        .flat_map(|p| [f(p[0]), f(p[1]), f(p[2])])
        .collect()
}

/// First GIF frame as PIL builds it: the logical screen filled with the frame's transparency index (else
/// index 0), the frame's indices pasted at its offset, then every index mapped through the palette.
fn decode_gif(bytes: &[u8], options: &LoadOptions) -> Result<PilImage> {
    let mut opts = gif::DecodeOptions::new();
    opts.set_color_output(gif::ColorOutput::Indexed);
    let mut decoder = opts.read_info(Cursor::new(bytes)).map_err(decode_err)?;
    let (width, height) = (decoder.width() as u32, decoder.height() as u32);
    check_size(width as u64, height as u64, options)?;
    let global = decoder.global_palette().map(<[u8]>::to_vec);
    let frame = decoder
        .read_next_frame()
        .map_err(decode_err)?
        .ok_or_else(|| ProcessorError::Decode("GIF without any frame".into()))?;
    let (w, h) = (width as usize, height as usize);
    let mut indices = vec![frame.transparent.unwrap_or(0); w * h];
    let (fw, fh) = (frame.width as usize, frame.height as usize);
    let (left, top) = (frame.left as usize, frame.top as usize);
    for (fy, row) in frame.buffer.chunks_exact(fw.max(1)).take(fh).enumerate() {
        let y = top + fy;
        if y >= h || left >= w {
            continue;
        }
        let n = fw.min(w - left);
        indices[y * w + left..y * w + left + n].copy_from_slice(&row[..n]);
    }
    let pixels = match frame.palette.as_ref().or(global.as_ref()) {
        Some(palette) => Pixels::Rgb(
            indices
                .iter()
                .flat_map(|&i| {
                    let k = i as usize * 3;
                    palette
                        .get(k..k + 3)
                        .map_or([0, 0, 0], |c| [c[0], c[1], c[2]])
                })
                .collect(),
        ),
        // No palette at all: PIL reads the indices as grey levels (mode L).
        None => Pixels::L(indices),
    };
    Ok(PilImage {
        width,
        height,
        pixels,
    })
}

/// Applies an EXIF orientation (1..=8) the way PIL's `ImageOps.exif_transpose` does.
fn orient(img: PilImage, orientation: u8) -> PilImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let swap = matches!(orientation, 5..=8);
    let (ow, oh) = if swap { (h, w) } else { (w, h) };
    // Source pixel for output (x, y).
    let src = |x: usize, y: usize| -> (usize, usize) {
        match orientation {
            2 => (w - 1 - x, y),
            3 => (w - 1 - x, h - 1 - y),
            4 => (x, h - 1 - y),
            5 => (y, x),
            6 => (y, h - 1 - x),
            7 => (w - 1 - y, h - 1 - x),
            8 => (w - 1 - y, x),
            _ => (x, y),
        }
    };
    let remap = |data: &[u8], ch: usize| -> Vec<u8> {
        let mut out = Vec::with_capacity(data.len());
        for y in 0..oh {
            for x in 0..ow {
                let (sx, sy) = src(x, y);
                let i = (sy * w + sx) * ch;
                out.extend_from_slice(&data[i..i + ch]);
            }
        }
        out
    };
    let pixels = match &img.pixels {
        Pixels::L(v) => Pixels::L(remap(v, 1)),
        Pixels::Rgb(v) => Pixels::Rgb(remap(v, 3)),
    };
    PilImage {
        width: ow as u32,
        height: oh as u32,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rgb(w: u32, h: u32) -> PilImage {
        let data = (0..w * h).flat_map(|i| [i as u8, 0, 0]).collect();
        PilImage {
            width: w,
            height: h,
            pixels: Pixels::Rgb(data),
        }
    }

    fn red(img: &PilImage) -> Vec<u8> {
        match &img.pixels {
            Pixels::Rgb(v) => v.chunks(3).map(|p| p[0]).collect(),
            Pixels::L(v) => v.clone(),
        }
    }

    #[test]
    fn orientation_matches_pil_transposes() {
        // 3x2 image with pixel values 0..6 row-major:  0 1 2 / 3 4 5
        let cases: [(u8, (u32, u32), [u8; 6]); 7] = [
            (2, (3, 2), [2, 1, 0, 5, 4, 3]),
            (3, (3, 2), [5, 4, 3, 2, 1, 0]),
            (4, (3, 2), [3, 4, 5, 0, 1, 2]),
            (5, (2, 3), [0, 3, 1, 4, 2, 5]),
            (6, (2, 3), [3, 0, 4, 1, 5, 2]),
            (7, (2, 3), [5, 2, 4, 1, 3, 0]),
            (8, (2, 3), [2, 5, 1, 4, 0, 3]),
        ];
        for (o, size, want) in cases {
            let out = orient(rgb(3, 2), o);
            assert_eq!((out.width, out.height), size, "orientation {o}");
            assert_eq!(red(&out), want, "orientation {o}");
        }
    }

    #[test]
    fn luma_uses_pil_fixed_point() {
        let img = PilImage {
            width: 4,
            height: 1,
            pixels: Pixels::Rgb(vec![0, 0, 1, 0, 1, 0, 1, 0, 0, 255, 255, 255]),
        };
        // (0,0,1) and (1,0,0) round to 0 in PIL: such mask pixels are *outside*.
        assert_eq!(img.into_luma(), vec![0, 1, 0, 255]);
    }

    #[test]
    fn refuses_bombs_and_garbage() {
        let opts = LoadOptions {
            max_pixels: 10,
            ..LoadOptions::default()
        };
        assert!(matches!(
            check_size(4, 4, &opts),
            Err(ProcessorError::ImageTooLarge { pixels: 16, .. })
        ));
        assert!(matches!(
            decode_image(b"not an image at all", &LoadOptions::default()),
            Err(ProcessorError::UnsupportedFormat)
        ));
    }
}
