//! GAR-Bench Caption-Simple / Caption-Detailed with the reference's GPT-4o judge layout
//! (`eval_simple.py`, `eval_detailed.py`): the full image, then per mask its focal crop and the
//! same crop of the mask, then the question; the verdict counts iff the reply is exactly "True".
//! Images are PNG-encoded and sent with a `data:image/jpeg` prefix, as the reference does.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use base64::Engine as _;
use gar_eval::garbench::{self, CaptionSplit};
use gar_eval::judge::{focal_crop, ImageRef, JudgeRequest};
use gar_eval::rle::CocoRle;
use image::{DynamicImage, GrayImage, RgbImage};
use serde_json::Value;

/// The reference's smallest focal-crop side.
const MIN_SIDE: i64 = 56;

pub struct Item {
    pub record: Value,
    pub image: PathBuf,
    pub masks: Vec<CocoRle>,
    pub request: JudgeRequest,
}

pub fn inputs(predictions: &Path, root: &Path, split: CaptionSplit) -> Result<Vec<Item>> {
    let text = std::fs::read_to_string(predictions)
        .with_context(|| format!("cannot read {}", predictions.display()))?;
    let records: Vec<Value> = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: expected a JSON list of predictions",
            predictions.display()
        )
    })?;
    let dir = root.join("evaluation/GAR-Bench/annotations");
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            let at = || format!("{} item {i}", predictions.display());
            let field = |k: &str| {
                r.get(k)
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .with_context(|| format!("{}: missing string `{k}`", at()))
            };
            let output = field("model_output")?;
            let prompt = match split {
                CaptionSplit::Simple => {
                    gar_eval::prompts::gar_bench_simple_prompt(&field("answer")?, &output)
                }
                CaptionSplit::Detailed => gar_eval::prompts::gar_bench_detailed_prompt(
                    &field("subject_name")?,
                    &field("object_name")?,
                    &field("predicate_name")?,
                    &output,
                ),
            };
            let masks: Vec<CocoRle> =
                serde_json::from_value(r.get("mask_rles").cloned().unwrap_or(Value::Null))
                    .with_context(|| {
                        format!("{}: `mask_rles` must be a list of COCO RLEs", at())
                    })?;
            Ok(Item {
                image: dir.join(field("image")?),
                request: garbench_request(&prompt, masks.len()),
                masks,
                record: r,
            })
        })
        .collect()
}

fn garbench_request(prompt: &str, masks: usize) -> JudgeRequest {
    gar_eval::prompts::gar_bench_request(prompt, masks)
}

/// Decodes an image file to RGB by content (the benchmarks' ".png" files are often JPEGs), as
/// PIL does.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let decoded = gar_processor::load_image(path, &gar_processor::LoadOptions::default())
        .with_context(|| format!("cannot open image {}", path.display()))?;
    RgbImage::from_raw(decoded.width(), decoded.height(), decoded.into_raw())
        .context("decoded image buffer size")
}

/// Renders the named images of one item.
pub struct Renderer {
    image: RgbImage,
    masks: Vec<CocoRle>,
}

impl Renderer {
    pub fn new(item: &Item) -> Result<Self> {
        Self::from_parts(&item.image, item.masks.clone())
    }

    /// An image file and its masks (DLC-Bench's GPT judge crops the same way).
    pub fn from_parts(path: &Path, masks: Vec<CocoRle>) -> Result<Self> {
        let image = load_rgb(path)?;
        Ok(Self { image, masks })
    }

    /// The image's (width, height).
    pub fn size(&self) -> (u32, u32) {
        self.image.dimensions()
    }

    /// The `image_url` object of the picture `which` names (no `detail`, as the reference).
    pub fn image_url(&self, which: ImageRef) -> Result<Value> {
        Ok(serde_json::json!({ "url": self.render(which)? }))
    }

    /// A data URL of the picture `which` names.
    pub fn render(&self, which: ImageRef) -> Result<String> {
        let picture = match which {
            ImageRef::Full => DynamicImage::ImageRgb8(self.image.clone()),
            ImageRef::FocalCrop { region } => {
                let (x, y, w, h) = self.crop(region)?;
                DynamicImage::ImageRgb8(
                    image::imageops::crop_imm(&self.image, x, y, w, h).to_image(),
                )
            }
            ImageRef::FocalCropMask { region } => {
                let (x, y, w, h) = self.crop(region)?;
                let rle = &self.masks[region];
                let pixels: Vec<u8> = rle
                    .to_mask()
                    .map_err(|e| anyhow!("mask {region}: {e}"))?
                    .into_iter()
                    .map(|v| v * 255)
                    .collect();
                let mask = GrayImage::from_raw(rle.width() as u32, rle.height() as u32, pixels)
                    .context("mask buffer size")?;
                DynamicImage::ImageLuma8(image::imageops::crop_imm(&mask, x, y, w, h).to_image())
            }
            ImageRef::PaintedBoxes => return Err(anyhow!("painted boxes are an MDVP-Bench image")),
        };
        let mut png = Vec::new();
        picture
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .context("PNG encoding")?;
        Ok(format!(
            "data:image/jpeg;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        ))
    }

    /// The focal crop of mask `region` as (x, y, width, height).
    fn crop(&self, region: usize) -> Result<(u32, u32, u32, u32)> {
        let rle = self
            .masks
            .get(region)
            .with_context(|| format!("no mask {region}"))?;
        let bbox = rle
            .bbox()
            .map_err(|e| anyhow!("mask {region}: {e}"))?
            .with_context(|| format!("mask {region} is empty"))?;
        let r = focal_crop(
            bbox,
            self.image.width() as i64,
            self.image.height() as i64,
            MIN_SIDE,
        );
        Ok((
            r.x0 as u32,
            r.y0 as u32,
            (r.x1 - r.x0) as u32,
            (r.y1 - r.y0) as u32,
        ))
    }
}

/// Writes the judged file (the predictions with `eval_result`) and scores it like `gar eval replay`.
pub fn judged(
    items: &[Item],
    replies: &[String],
    out: &Path,
    split: CaptionSplit,
) -> Result<(PathBuf, garbench::CaptionReplay)> {
    let name = match split {
        CaptionSplit::Simple => "simple_eval.json",
        CaptionSplit::Detailed => "detailed_eval.json",
    };
    let path = out.join(name);
    let records: Vec<Value> = items
        .iter()
        .zip(replies)
        .map(|(item, reply)| {
            let mut r = item.record.clone();
            r["eval_result"] = Value::String(reply.clone());
            r
        })
        .collect();
    std::fs::write(&path, serde_json::to_string_pretty(&records)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    let scored = garbench::replay_captions(&path, split)?;
    Ok((path, scored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(url: &str) -> DynamicImage {
        let b64 = url
            .strip_prefix("data:image/jpeg;base64,")
            .expect("the reference's prefix");
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap();
        image::load_from_memory_with_format(&png, image::ImageFormat::Png).unwrap()
    }

    #[test]
    fn renders_the_full_image_focal_crops_and_mask_crops() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
        if !root.is_dir() {
            eprintln!("SKIP: ../shared/data is absent");
            return;
        }
        // The published GAR-1B outputs are predictions in the reference format.
        let preds = root.join("evaluation/GAR-Bench/model_outputs/gar_1b_simple.json");
        let items = inputs(&preds, &root, CaptionSplit::Simple).unwrap();
        let item = items
            .iter()
            .find(|i| i.image.is_file())
            .expect("an item with its image");
        let r = Renderer::new(item).unwrap();
        let full = decode(&r.render(ImageRef::Full).unwrap());
        assert_eq!((full.width(), full.height()), r.image.dimensions());
        assert_eq!(item.request.user.len(), 2 + 4 * item.masks.len() + 1);
        for k in 0..item.masks.len() {
            let (_, _, w, h) = r.crop(k).unwrap();
            let crop = decode(&r.render(ImageRef::FocalCrop { region: k }).unwrap());
            let mask = decode(&r.render(ImageRef::FocalCropMask { region: k }).unwrap()).to_luma8();
            assert_eq!((crop.width(), crop.height()), (w, h));
            assert_eq!(mask.dimensions(), (w, h));
            assert!(mask.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
            // The whole mask lies inside its focal crop (three times its box).
            let area = item.masks[k].area().unwrap();
            assert_eq!(mask.pixels().filter(|p| p.0[0] == 255).count() as u64, area);
        }
    }
}
