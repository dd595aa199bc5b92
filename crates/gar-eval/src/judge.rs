//! Judge requests as data: the exact prompt text of each benchmark's LLM judge, with images
//! named (not rendered) so that a judge client can attach them. Builders are pure functions;
//! the prompt templates are byte-for-byte copies of the reference scripts (`prompts/*.txt`).

use serde::Serialize;

use crate::rle::BoxXywh;

/// One piece of a user message, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    Image { image: ImageRef },
}

/// Which picture goes at this place; the judge client renders and encodes it (PNG base64 in the
/// reference, sent with a `data:image/jpeg` prefix regardless).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ImageRef {
    /// The whole benchmark image.
    Full,
    /// The focal crop ([`focal_crop`]) of the image around mask `region`.
    FocalCrop { region: usize },
    /// The same crop of mask `region` as a 0/255 grey image.
    FocalCropMask { region: usize },
    /// The image with numbered boxes painted on it (MDVP `paint_util.paint_text_box`), sent with
    /// `detail: high`.
    PaintedBoxes,
}

/// A complete chat request for the judge.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JudgeRequest {
    pub model: &'static str,
    /// System message, if the reference sends one.
    pub system: Option<String>,
    pub user: Vec<Part>,
    pub temperature: f64,
    pub max_tokens: u32,
}

pub const GPT4O: &str = "gpt-4o-2024-11-20";
/// The served model name the reference Llama judge client asks for (`--model` default).
pub const LLAMA_JUDGE: &str = "llama3.1-8b";
/// System message of the Ferret and MDVP reviewers (LLaVA's `eval_gpt_review.py`).
pub const REVIEWER_SYSTEM: &str =
    "You are a helpful and precise assistant for checking the quality of the answer.";

pub(crate) fn text(s: impl Into<String>) -> Part {
    Part::Text { text: s.into() }
}

pub(crate) fn image(image: ImageRef) -> Part {
    Part::Image { image }
}

impl JudgeRequest {
    /// The text parts joined, i.e. what a text-only judge reads.
    pub fn user_text(&self) -> String {
        self.user
            .iter()
            .filter_map(|p| match p {
                Part::Text { text } => Some(text.as_str()),
                Part::Image { .. } => None,
            })
            .collect()
    }
}

/// Fills `{name}` fields of a template in one pass, like Python's `str.format` with keyword
/// arguments: values are inserted verbatim and never re-scanned. Unknown fields stay as they are.
pub fn fill(template: &str, fields: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find('}').and_then(|close| {
            let name = &after[..close];
            fields
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (close, *v))
        }) {
            Some((close, value)) => {
                out.push_str(value);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// The pixel rectangle `[x0, x1) × [y0, y1)` that the reference crops around a mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CropRect {
    pub x0: i64,
    pub y0: i64,
    pub x1: i64,
    pub y1: i64,
}

/// The "focal crop" of the GPT judges (DLC-Bench `eval_gpt_with_image.py`, GAR-Bench
/// `eval_simple.py`): the mask's box, each side at least `min_side` (56) pixels, expanded to
/// three times its size around its centre, clipped to the image. Python's `int()` truncates
/// toward zero, which `as i64` reproduces.
pub fn focal_crop(mask_box: BoxXywh, img_w: i64, img_h: i64, min_side: i64) -> CropRect {
    let (x0, y0) = (mask_box.x as i64, mask_box.y as i64);
    let (w, h) = (mask_box.w as i64, mask_box.h as i64);
    let xc = x0 as f64 + w as f64 / 2.0;
    let yc = y0 as f64 + h as f64 / 2.0;
    let (w, h) = (w.max(min_side), h.max(min_side));
    let x0 = (xc - w as f64 / 2.0) as i64;
    let y0 = (yc - h as f64 / 2.0) as i64;
    CropRect {
        x0: (x0 - w).max(0),
        y0: (y0 - h).max(0),
        x1: (x0 + 2 * w).min(img_w),
        y1: (y0 + 2 * h).min(img_h),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_is_single_pass() {
        let t = "a {x} b {y} {unknown} {x}";
        assert_eq!(
            fill(t, &[("x", "{y}"), ("y", "2")]),
            "a {y} b 2 {unknown} {y}"
        );
        assert_eq!(fill("{", &[]), "{");
        assert_eq!(fill("}{x", &[("x", "1")]), "}{x");
    }

    #[test]
    fn focal_crop_matches_reference_arithmetic() {
        // 10x20 box at (100, 50) in a 640x480 image: w -> 56, h -> 56, centre (105, 60).
        let r = focal_crop(
            BoxXywh {
                x: 100.0,
                y: 50.0,
                w: 10.0,
                h: 20.0,
            },
            640,
            480,
            56,
        );
        // x0 = int(105 - 28) = 77 → [21, 189); y0 = int(60 - 28) = 32 → [0, 144)
        assert_eq!(
            r,
            CropRect {
                x0: 21,
                y0: 0,
                x1: 189,
                y1: 144
            }
        );
        // Near the border int() truncates toward zero: x0 = int(0.5 - 28) = -27.
        let r = focal_crop(
            BoxXywh {
                x: 0.0,
                y: 0.0,
                w: 1.0,
                h: 1.0,
            },
            30,
            30,
            56,
        );
        assert_eq!(
            r,
            CropRect {
                x0: 0,
                y0: 0,
                x1: 30,
                y1: 30
            }
        );
    }
}
