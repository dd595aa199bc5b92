//! Request payloads → engine inputs: decode the image and regions off the async runtime, then
//! turn SAM prompts into masks on the SAM thread.

use std::sync::Arc;

use gar_processor::{decode_image, BinaryMask, Region, RgbImage};

use crate::error::{ApiError, ApiResult};
use crate::wire::{check_not_empty, decode_rgb, Decoded, RegionIn};
use crate::AppState;

pub struct Prepared {
    /// One image, or several in message order (then `regions` is empty).
    pub images: Vec<Arc<RgbImage>>,
    pub regions: Vec<Region>,
}

/// Decodes the images of a multi-image request. Regions are refused: GAR's label map and feature
/// replay are defined on one image (the reference replays crops from one tile grid), and a guess
/// about which image a region belongs to would be silently wrong. Transparency is ignored here
/// (no alpha regions).
pub async fn prepare_images(
    state: &AppState,
    images: Vec<Vec<u8>>,
    regions: &[RegionIn],
) -> ApiResult<Prepared> {
    if !regions.is_empty() {
        return Err(ApiError::bad_request(format!(
            "regions refer to one image, but this request has {} images: send one image with regions, \
             or several images without regions",
            images.len()
        )));
    }
    let options = state.limits.load;
    let decoded = tokio::task::spawn_blocking(move || -> ApiResult<Vec<Arc<RgbImage>>> {
        images
            .iter()
            .enumerate()
            .map(|(i, bytes)| {
                decode_image(bytes, &options)
                    .map(Arc::new)
                    .map_err(|e| ApiError::bad_request(format!("image {i}: {e}")))
            })
            .collect()
    })
    .await
    .map_err(|_| ApiError::internal("image decoding failed"))??;
    Ok(Prepared {
        images: decoded,
        regions: Vec::new(),
    })
}

/// Decodes `bytes` and `regions`. With `alpha_region` and no explicit region, a transparent
/// part in the image's alpha channel becomes the region (DAM's RGBA convention).
pub async fn prepare(
    state: &AppState,
    bytes: Vec<u8>,
    regions: Vec<RegionIn>,
    alpha_region: bool,
) -> ApiResult<Prepared> {
    let limit = state.workers.info.prompt_numbers;
    if regions.len() > limit {
        return Err(ApiError::bad_request(format!(
            "{} regions given; this checkpoint takes at most {limit} (<Prompt0>..<Prompt{}>)",
            regions.len(),
            limit - 1
        )));
    }
    let options = state.limits.load;
    // Decoding large PNGs is CPU work: keep it off the async workers.
    let (image, decoded) = tokio::task::spawn_blocking(move || -> ApiResult<_> {
        let image = decode_rgb(&bytes, &options)?;
        let mut decoded = regions
            .iter()
            .enumerate()
            .map(|(i, r)| r.decode(i, &options))
            .collect::<ApiResult<Vec<_>>>()?;
        if decoded.is_empty() && alpha_region {
            if let Some(mask) = alpha_mask(&bytes)? {
                decoded.push(Decoded::Ready(Region::Mask(mask)));
            }
        }
        for (i, d) in decoded.iter().enumerate() {
            if let Decoded::Ready(region) = d {
                check_not_empty(i, region, &image)?;
            }
        }
        Ok((Arc::new(image), decoded))
    })
    .await
    .map_err(|_| ApiError::internal("image decoding failed"))??;

    let mut out = Vec::with_capacity(decoded.len());
    let mut sam_image = None;
    for (i, d) in decoded.into_iter().enumerate() {
        match d {
            Decoded::Ready(region) => out.push(region),
            Decoded::Sam(prompt) => {
                if !state.workers.has_sam() {
                    return Err(ApiError::bad_request(format!(
                        "region {i}: points, scribbles and SAM boxes need SAM; start the server with --sam"
                    )));
                }
                let rgb = match &sam_image {
                    Some(rgb) => Arc::clone(rgb),
                    None => {
                        let rgb = Arc::new(to_image_rgb(&image)?);
                        sam_image = Some(Arc::clone(&rgb));
                        rgb
                    }
                };
                let seg = state.workers.segment(rgb, prompt).await?;
                if seg.mask.area() == 0 {
                    return Err(ApiError::bad_request(format!(
                        "region {i}: SAM found an empty mask"
                    )));
                }
                let mask =
                    BinaryMask::new(seg.mask.width as u32, seg.mask.height as u32, seg.mask.data)?;
                out.push(Region::Mask(mask));
            }
        }
    }
    Ok(Prepared {
        images: vec![image],
        regions: out,
    })
}

/// The `image` crate's RGB buffer that SAM takes.
pub fn to_image_rgb(image: &RgbImage) -> ApiResult<image::RgbImage> {
    image::RgbImage::from_raw(image.width(), image.height(), image.as_raw().to_vec())
        .ok_or_else(|| ApiError::internal("image buffer size"))
}

/// The alpha channel as a mask when it is not fully opaque (alpha > 0 = inside).
fn alpha_mask(bytes: &[u8]) -> ApiResult<Option<BinaryMask>> {
    let img =
        image::load_from_memory(bytes).map_err(|e| ApiError::bad_request(format!("image: {e}")))?;
    if !img.color().has_alpha() {
        return Ok(None);
    }
    let rgba = img.to_rgba8();
    let alpha: Vec<u8> = rgba.pixels().map(|p| p.0[3]).collect();
    if alpha.iter().all(|&a| a == 255) {
        return Ok(None);
    }
    let data = alpha.iter().map(|&a| a > 0).collect();
    Ok(Some(BinaryMask::new(rgba.width(), rgba.height(), data)?))
}
