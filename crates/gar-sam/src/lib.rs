//! Segment Anything (SAM ViT-B / ViT-L / ViT-H) for GAR: clicks, boxes and scribbles → masks.
//!
//! GAR only consumes masks; its reference turns prompts into masks with transformers' `SamModel` +
//! `SamProcessor` (`facebook/sam-vit-huge`, `multimask_output=True`, highest predicted IoU). This crate
//! reproduces that pipeline: same preprocessing (PIL bilinear resize to 1024, normalise, pad), same
//! model, same post-processing (bilinear upscaling, threshold 0), same selection.
//!
//! ```no_run
//! use gar_sam::{Prompt, Sam, SamPredictor};
//! # fn main() -> gar_sam::Result<()> {
//! let sam = Sam::load("sam-vit-huge/", &candle_core::Device::Cpu)?;
//! let mut predictor = SamPredictor::new(sam);
//! let image = gar_sam::load_rgb("photo.jpg")?;
//! let first = predictor.segment(&image, &Prompt::point(320.0, 240.0))?; // runs the image encoder
//! let box_ = Prompt::default().with_box([100.0, 80.0, 500.0, 400.0]);
//! let second = predictor.segment(&image, &box_)?; // reuses the cached embedding
//! println!("{} px, IoU score {}", second.mask().area(), second.score());
//! # Ok(()) }
//! ```

pub mod config;
pub mod error;
mod image_encoder;
mod mask_decoder;
pub mod model;
mod nn;
pub mod postprocess;
pub mod predictor;
pub mod preprocess;
pub mod prompt;
mod prompt_encoder;
pub mod resolve;
pub mod weights;

pub use config::SamConfig;
pub use error::{Result, SamError};
pub use model::{ImageEmbedding, Prediction, Sam};
pub use postprocess::Mask;
pub use predictor::{ImageKey, SamPredictor, Segmentation};
pub use prompt::{Point, Prompt};
pub use resolve::{resolve_sam, DEFAULT_SAM};
pub use weights::{Layout, Weights};

use std::path::Path;

/// Opens an image file as the processor sees it (`convert_to_rgb`: alpha composited over white).
pub fn load_rgb(path: impl AsRef<Path>) -> Result<image::RgbImage> {
    let path = path.as_ref();
    let img = image::ImageReader::open(path)
        .map_err(|e| SamError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .with_guessed_format()
        .map_err(|e| SamError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?
        .decode()
        .map_err(|e| SamError::Image {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    Ok(preprocess::to_rgb(&img))
}
