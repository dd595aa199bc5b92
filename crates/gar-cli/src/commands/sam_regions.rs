//! SAM prompts on describe / ask / chat / inspect: each prompt group (see `regions.rs`) is
//! segmented first, exactly as `gar segment` does it (multimask output, highest predicted IoU),
//! and the chosen mask becomes a plain mask region for GAR.

use anyhow::{anyhow, Context, Result};
use candle_core::Device;
use clap::Args;
use gar_processor::{BinaryMask, Region, RgbImage};
use gar_sam::{resolve_sam, Prompt, Sam, SamPredictor};
use serde::Serialize;

use crate::exit::{Failure, Kind};

/// Which SAM checkpoint turns `--point` / `--box-sam` / `--scribble` into masks.
#[derive(Args, Debug, Clone)]
pub struct SamArgs {
    /// SAM checkpoint for --point/--box-sam/--scribble: a directory or a hub id in the Hugging
    /// Face cache. Loaded only when a SAM prompt is given.
    #[arg(long, env = "GAR_SAM", default_value = gar_sam::DEFAULT_SAM)]
    pub sam: String,
    /// Hub revision when --sam is a hub id.
    #[arg(long, default_value = "main")]
    pub sam_revision: String,
}

/// What SAM chose for one region (reported on stderr, or as `sam` in --json output).
#[derive(Debug, Clone, Serialize)]
pub struct SamChoice {
    /// Predicted IoU of the chosen candidate.
    pub score: f32,
    /// Predicted IoU of every candidate.
    pub scores: Vec<f32>,
    /// Index of the chosen candidate.
    pub best: usize,
    /// Pixels in the chosen mask.
    pub area: usize,
}

/// Checks every prompt against the image before anything is loaded (a bad click is exit 3).
pub fn validate(prompts: &[(usize, &Prompt)], image: &RgbImage) -> Result<()> {
    for (index, prompt) in prompts {
        prompt
            .validate(image.width() as usize, image.height() as usize)
            .map_err(|e| Failure::new(Kind::Input, anyhow!("region {index}: {e}")))?;
    }
    Ok(())
}

/// Loads SAM once and segments every prompt (one image embedding for all of them).
pub fn segment_all(
    args: &SamArgs,
    image: &RgbImage,
    prompts: &[(usize, &Prompt)],
) -> Result<Vec<(Region, SamChoice)>> {
    let dir = resolve_sam(&args.sam, &args.sam_revision).map_err(Failure::from_sam)?;
    let device = Device::cuda_if_available(0).unwrap_or(Device::Cpu);
    let sam = Sam::load(&dir, &device).map_err(Failure::from_sam)?;
    let mut predictor = SamPredictor::new(sam);
    let rgb = image::RgbImage::from_raw(image.width(), image.height(), image.as_raw().to_vec())
        .context("decoded image buffer has the wrong size")?;
    let mut out = Vec::with_capacity(prompts.len());
    for (_, prompt) in prompts {
        let seg = predictor.segment(&rgb, prompt).map_err(Failure::from_sam)?;
        let mask = seg.mask();
        let choice = SamChoice {
            score: seg.score(),
            scores: seg.scores.clone(),
            best: seg.best,
            area: mask.area(),
        };
        let binary = BinaryMask::new(mask.width as u32, mask.height as u32, mask.data.clone())
            .map_err(|e| Failure::new(Kind::Runtime, e))?;
        out.push((Region::Mask(binary), choice));
    }
    Ok(out)
}

/// One stderr line per SAM region (text mode).
pub fn report(choices: &[Option<SamChoice>]) {
    for (index, choice) in choices.iter().enumerate() {
        if let Some(c) = choice {
            eprintln!(
                "sam: region {index}: mask {} of {} (predicted IoU {:.4}; candidates {:?}), {} px",
                c.best + 1,
                c.scores.len(),
                c.score,
                c.scores,
                c.area
            );
        }
    }
}
