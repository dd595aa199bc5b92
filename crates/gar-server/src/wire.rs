//! Wire types of the JSON API and their conversion to engine inputs: base64 images, regions
//! (mask PNG, COCO RLE, box, polygon, or SAM prompts), sampling settings.

use base64::Engine as _;
use gar_models::SamplingConfig;
use gar_processor::{decode_image, decode_mask, CocoRle, LoadOptions, Region, RgbImage};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::worker::GenParams;

/// One region of `/v1/describe` and of the `regions` extension of `/v1/chat/completions`.
/// Exactly one of `mask`, `rle`, `box`, `polygon`, `points`, `scribble` (points may come with a
/// box: both then go to SAM together).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionIn {
    /// A base64 (or data URL) mask image; non-zero pixels are inside.
    pub mask: Option<String>,
    /// COCO RLE `{"size": [h, w], "counts": [...] or "..."}`.
    pub rle: Option<CocoRle>,
    /// `[x1, y1, x2, y2]` in pixels: a filled rectangle, or a SAM box prompt with `"sam": true`.
    #[serde(rename = "box")]
    pub bbox: Option<[f64; 4]>,
    /// `[[x, y], ...]` or flat `[x, y, x, y, ...]`, in pixels.
    pub polygon: Option<Value>,
    /// SAM clicks `[[x, y, label], ...]`, label 1 = foreground (default), 0 = background.
    pub points: Option<Vec<Vec<f64>>>,
    /// A SAM scribble: a polyline `[[x, y], ...]`.
    pub scribble: Option<Vec<[f64; 2]>>,
    /// Send `box` to SAM instead of using it as a rectangle.
    #[serde(default)]
    pub sam: bool,
}

/// A region after decoding: ready for the processor, or a prompt SAM must turn into a mask.
pub enum Decoded {
    Ready(Region),
    Sam(gar_sam::Prompt),
}

/// Sampling fields shared by the endpoints (defaults: the CLI's greedy decoding).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SamplingIn {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: Option<u64>,
    pub repetition_penalty: Option<f32>,
}

/// Strips a `data:...;base64,` prefix and decodes (standard or URL-safe alphabet, padding optional).
pub fn decode_base64(what: &str, text: &str) -> ApiResult<Vec<u8>> {
    let payload = match text.strip_prefix("data:") {
        Some(rest) => match rest.split_once(',') {
            Some((meta, data)) if meta.ends_with(";base64") => data,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "{what}: only base64 data URLs are accepted"
                )))
            }
        },
        None if text.starts_with("http://") || text.starts_with("https://") => {
            return Err(ApiError::bad_request(format!(
                "{what}: the server does not fetch URLs; send the image as base64 or a data URL"
            )))
        }
        None => text,
    };
    let clean: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let clean = clean.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(clean)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(clean))
        .map_err(|e| ApiError::bad_request(format!("{what}: invalid base64 ({e})")))
}

/// Decodes the request image as the CLI opens files (PIL `convert("RGB")` rules).
pub fn decode_rgb(bytes: &[u8], options: &LoadOptions) -> ApiResult<RgbImage> {
    decode_image(bytes, options).map_err(|e| ApiError::bad_request(format!("image: {e}")))
}

fn polygon(index: usize, value: &Value) -> ApiResult<Vec<f64>> {
    let bad = || {
        ApiError::bad_request(format!(
            "region {index}: polygon must be [[x, y], ...] or [x, y, ...]"
        ))
    };
    let items = value.as_array().ok_or_else(bad)?;
    let mut flat = Vec::with_capacity(items.len() * 2);
    for item in items {
        match item {
            Value::Array(xy) if xy.len() == 2 => {
                for v in xy {
                    flat.push(v.as_f64().ok_or_else(bad)?);
                }
            }
            Value::Number(n) => flat.push(n.as_f64().ok_or_else(bad)?),
            _ => return Err(bad()),
        }
    }
    if flat.len() < 6 || flat.len() % 2 != 0 {
        return Err(ApiError::bad_request(format!(
            "region {index}: a polygon needs at least three points"
        )));
    }
    Ok(flat)
}

/// A SAM prompt from clicks, an optional box and an optional scribble.
pub fn sam_prompt(
    points: Option<&[Vec<f64>]>,
    bbox: Option<[f64; 4]>,
    scribble: Option<&[[f64; 2]]>,
) -> ApiResult<gar_sam::Prompt> {
    let mut prompt = gar_sam::Prompt::default();
    for p in points.unwrap_or_default() {
        let (x, y, positive) = match p[..] {
            [x, y] => (x, y, true),
            [x, y, label] if label == 0.0 || label == 1.0 => (x, y, label == 1.0),
            _ => {
                return Err(ApiError::bad_request(
                    "a point is [x, y] or [x, y, label] with label 0 or 1",
                ))
            }
        };
        prompt.points.push(gar_sam::Point { x, y, positive });
    }
    if let Some(line) = scribble {
        let line: Vec<(f64, f64)> = line.iter().map(|p| (p[0], p[1])).collect();
        let s = gar_sam::Prompt::scribble(&line).map_err(crate::worker::sam_error)?;
        prompt.points.extend(s.points);
    }
    prompt.bbox = bbox;
    if prompt.points.is_empty() && prompt.bbox.is_none() {
        return Err(ApiError::bad_request("give points, a box or a scribble"));
    }
    Ok(prompt)
}

impl RegionIn {
    /// Decodes one region; `index` labels errors.
    pub fn decode(&self, index: usize, options: &LoadOptions) -> ApiResult<Decoded> {
        let given = [
            self.mask.is_some(),
            self.rle.is_some(),
            self.polygon.is_some(),
            self.points.is_some() || self.scribble.is_some(),
            self.bbox.is_some() && self.points.is_none() && self.scribble.is_none(),
        ];
        if given.iter().filter(|&&g| g).count() != 1 {
            return Err(ApiError::bad_request(format!(
                "region {index}: give exactly one of mask, rle, box, polygon, points or scribble"
            )));
        }
        let region = if let Some(mask) = &self.mask {
            let bytes = decode_base64(&format!("region {index} mask"), mask)?;
            let m = decode_mask(&bytes, options)
                .map_err(|e| ApiError::bad_request(format!("region {index} mask: {e}")))?;
            Region::Mask(m)
        } else if let Some(rle) = &self.rle {
            Region::Rle(rle.clone())
        } else if let Some(poly) = &self.polygon {
            Region::Polygon(vec![polygon(index, poly)?])
        } else if self.points.is_some() || self.scribble.is_some() || self.sam {
            return Ok(Decoded::Sam(sam_prompt(
                self.points.as_deref(),
                self.bbox,
                self.scribble.as_deref(),
            )?));
        } else if let Some([x0, y0, x1, y1]) = self.bbox {
            Region::Box { x0, y0, x1, y1 }
        } else {
            return Err(ApiError::bad_request(format!("region {index} is empty")));
        };
        Ok(Decoded::Ready(region))
    }
}

/// Refuses regions that cover no pixel of the image (the model would see no region at all).
pub fn check_not_empty(index: usize, region: &Region, image: &RgbImage) -> ApiResult<()> {
    let mask = region
        .to_mask(image.width(), image.height(), index)
        .map_err(|e| ApiError::bad_request(format!("region {index}: {e}")))?;
    if mask.area() == 0 {
        return Err(ApiError::bad_request(format!(
            "region {index}: the mask is empty"
        )));
    }
    Ok(())
}

impl SamplingIn {
    /// Checks the values like the CLI's flags do.
    pub fn to_params(&self, max_new_tokens: usize, limit: usize) -> ApiResult<GenParams> {
        if max_new_tokens == 0 || max_new_tokens > limit {
            return Err(ApiError::bad_request(format!(
                "max_new_tokens must be in 1..={limit}"
            )));
        }
        let temperature = self.temperature.unwrap_or(0.0);
        if !(temperature.is_finite() && temperature >= 0.0) {
            return Err(ApiError::bad_request("temperature must be ≥ 0"));
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::bad_request("top_p must be in (0, 1]"));
            }
        }
        let repetition_penalty = self.repetition_penalty.unwrap_or(1.0);
        if !(repetition_penalty.is_finite() && repetition_penalty > 0.0) {
            return Err(ApiError::bad_request("repetition_penalty must be > 0"));
        }
        Ok(GenParams {
            max_new_tokens,
            sampling: SamplingConfig {
                temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty,
                seed: self.seed.unwrap_or(0),
            },
        })
    }
}
