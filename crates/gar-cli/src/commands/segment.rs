//! `gar segment`: clicks, a box or a scribble → a mask, with SAM (gar-sam), as GAR's
//! `demo/gar_with_sam.py` does it (image opened with PIL's `convert("RGB")`, transformers'
//! preprocessing, multimask output, highest predicted IoU).
//!
//! Output contract: the chosen mask is written to `--out` at the image's resolution (8-bit PNG,
//! 0/255). With `--json` the last stdout line is one JSON object with at least `score` (predicted
//! IoU of the chosen mask), `scores` (all candidates) and `area` (mask pixels).

use std::path::PathBuf;
use std::time::Instant;

use std::io::Write;

use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use clap::Args;
use gar_engine::overlay::{draw_overlay, OverlayRegion};
use gar_processor::{load_image, LoadOptions};
use gar_sam::prompt::{parse_box, parse_polyline};
use gar_sam::{resolve_sam, Point, Prompt, Sam, SamError, SamPredictor};
use image::{Rgb, RgbImage};
use serde_json::json;

use crate::exit::{Failure, Kind};

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// SAM checkpoint: a directory (config.json + model.safetensors, as SamModel.save_pretrained
    /// writes it) or a hub id already in the Hugging Face cache.
    #[arg(long, env = "GAR_SAM", default_value = gar_sam::DEFAULT_SAM)]
    sam: String,
    /// Hub revision when --sam is a hub id.
    #[arg(long, default_value = "main")]
    sam_revision: String,
    /// The image to segment.
    #[arg(long)]
    image: PathBuf,
    /// A click in image pixels; label 1 = foreground (default), 0 = background. Repeatable.
    #[arg(long = "point", value_name = "X,Y[,LABEL]", allow_hyphen_values = true)]
    points: Vec<String>,
    /// A box in image pixels (top-left and bottom-right corners).
    #[arg(long = "box", value_name = "X1,Y1,X2,Y2", allow_hyphen_values = true)]
    bbox: Option<String>,
    /// A polyline; it becomes 5 foreground points evenly spaced along it (see gar-sam's README).
    #[arg(long, value_name = "X,Y;X,Y;...", allow_hyphen_values = true)]
    scribble: Option<String>,
    /// Where to write the mask (PNG, 0/255, the image's size).
    #[arg(long)]
    out: PathBuf,
    /// Also write the image with the mask tinted and the prompt drawn on it.
    #[arg(long)]
    overlay: Option<PathBuf>,
    /// Include the mask as uncompressed COCO RLE (column-major counts) in the output.
    #[arg(long)]
    rle: bool,
    /// Print one JSON object as the last stdout line.
    #[arg(long)]
    json: bool,
    /// Run on the CPU even when a GPU build finds a GPU.
    #[arg(long)]
    cpu: bool,
}

fn build_prompt(args: &SegmentArgs) -> Result<Prompt, SamError> {
    let mut prompt = Prompt::default();
    for p in &args.points {
        prompt.points.push(p.parse::<Point>()?);
    }
    if let Some(s) = &args.scribble {
        prompt
            .points
            .extend(Prompt::scribble(&parse_polyline(s)?)?.points);
    }
    prompt.bbox = args.bbox.as_deref().map(parse_box).transpose()?;
    if prompt.points.is_empty() && prompt.bbox.is_none() {
        return Err(SamError::Prompt(
            "give at least one --point, a --box or a --scribble".into(),
        ));
    }
    Ok(prompt)
}

pub fn run(args: SegmentArgs) -> Result<()> {
    // Cheap checks first: a typo in a prompt should not cost a checkpoint load.
    let prompt = build_prompt(&args).map_err(Failure::from_sam)?;
    let image = load_image(&args.image, &LoadOptions::default()).map_err(|e| {
        let msg = format!("cannot load image {}: {e}", args.image.display());
        Failure::new(Kind::Input, anyhow!(msg))
    })?;
    let rgb = RgbImage::from_raw(image.width(), image.height(), image.into_raw())
        .context("decoded image buffer has the wrong size")?;
    prompt
        .validate(rgb.width() as usize, rgb.height() as usize)
        .map_err(Failure::from_sam)?;

    let t0 = Instant::now();
    let dir = resolve_sam(&args.sam, &args.sam_revision).map_err(Failure::from_sam)?;
    let device = if args.cpu {
        Device::Cpu
    } else {
        Device::cuda_if_available(0).unwrap_or(Device::Cpu)
    };
    let sam = Sam::load(&dir, &device).map_err(Failure::from_sam)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let mut predictor = SamPredictor::new(sam);
    let t1 = Instant::now();
    let emb = predictor.embedding(&rgb).map_err(Failure::from_sam)?;
    let encoder_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let pred = predictor
        .sam()
        .decode(&emb, &prompt)
        .map_err(Failure::from_sam)?;
    let decoder_ms = t2.elapsed().as_secs_f64() * 1e3;
    let best = pred.best();
    let mask = predictor
        .sam()
        .mask(&emb, &pred, best)
        .map_err(Failure::from_sam)?;

    mask.to_image()
        .save_with_format(&args.out, image::ImageFormat::Png)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    if let Some(path) = &args.overlay {
        let mut out = draw_overlay(
            &rgb,
            &[OverlayRegion {
                mask: &mask.data,
                prompt_index: 0,
            }],
        );
        draw_prompt(&mut out, &prompt);
        out.save_with_format(path, image::ImageFormat::Png)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }

    let area = mask.area();
    // writeln! rather than println!: a closed pipe (`| head`) becomes an error, not a panic.
    let mut stdout = std::io::stdout().lock();
    if args.json {
        let mut obj = json!({
            "score": pred.scores[best],
            "scores": pred.scores,
            "best": best,
            "area": area,
            "width": mask.width,
            "height": mask.height,
            "mask": args.out,
            "overlay": args.overlay,
            "sam": dir,
            "prompt": {
                "points": prompt.points.iter().map(|p| [p.x, p.y, p.positive as u8 as f64]).collect::<Vec<_>>(),
                "box": prompt.bbox,
            },
            "timings_ms": {"load": load_ms, "image_encoder": encoder_ms, "decoder": decoder_ms},
        });
        if args.rle {
            obj["rle"] = json!({"size": [mask.height, mask.width], "counts": mask.rle_counts()});
        }
        writeln!(stdout, "{obj}")?;
    } else {
        writeln!(
            stdout,
            "mask {} of {} (predicted IoU {:.4}; candidates {:?}): {} px of {}×{} → {}",
            best + 1,
            pred.scores.len(),
            pred.scores[best],
            pred.scores,
            area,
            mask.width,
            mask.height,
            args.out.display()
        )?;
        writeln!(
            stdout,
            "timings: load {load_ms:.0} ms, image encoder {encoder_ms:.0} ms, decoder {decoder_ms:.0} ms"
        )?;
        if args.rle {
            let rle = json!({"size": [mask.height, mask.width], "counts": mask.rle_counts()});
            writeln!(stdout, "{rle}")?;
        }
    }
    Ok(())
}

/// Marks clicks (green = foreground, red = background; 7-px squares with a white rim) and the box.
fn draw_prompt(img: &mut RgbImage, prompt: &Prompt) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    let put = |img: &mut RgbImage, x: i64, y: i64, c: [u8; 3]| {
        if (0..w).contains(&x) && (0..h).contains(&y) {
            img.put_pixel(x as u32, y as u32, Rgb(c));
        }
    };
    if let Some([x1, y1, x2, y2]) = prompt.bbox {
        let (x1, y1, x2, y2) = (x1 as i64, y1 as i64, x2 as i64, y2 as i64);
        for x in x1..=x2 {
            put(img, x, y1, [255, 0, 0]);
            put(img, x, y2, [255, 0, 0]);
        }
        for y in y1..=y2 {
            put(img, x1, y, [255, 0, 0]);
            put(img, x2, y, [255, 0, 0]);
        }
    }
    for p in &prompt.points {
        let c = if p.positive { [0, 200, 0] } else { [220, 0, 0] };
        let (cx, cy) = (p.x as i64, p.y as i64);
        for dy in -4..=4i64 {
            for dx in -4..=4i64 {
                let rim = dx.abs() == 4 || dy.abs() == 4;
                put(img, cx + dx, cy + dy, if rim { [255, 255, 255] } else { c });
            }
        }
    }
}
