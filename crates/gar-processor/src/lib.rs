//! GAR input processing: images to tiles, regions to label maps and boxes, prompts to token ids, and
//! generated ids back to text, reproducing the PyTorch reference (`docs/gar-spec.md` §6–§9).
//!
//! The entry point is [`GarProcessor`]:
//!
//! ```no_run
//! use gar_processor::{load_image, load_mask, GarProcessor, LoadOptions, Region, Request};
//!
//! let processor = GarProcessor::from_dir("checkpoints/GAR-1B")?;
//! let opts = LoadOptions::default();
//! let image = load_image("image.jpg", &opts)?;
//! let mask = load_mask("mask.png", &opts)?;
//! let inputs = processor.process(&image, &[Region::Mask(mask)], &Request::describe())?;
//! assert_eq!(inputs.input_ids[0], processor.special_tokens().bos);
//! # Ok::<(), gar_processor::ProcessorError>(())
//! ```

mod config;
mod decode;
mod error;
mod image;
mod inputs;
#[cfg(feature = "libjpeg")]
mod jpeg;
mod mask;
mod processor;
mod prompt;
mod region;
mod resize;
mod tiling;
mod tokens;

pub use config::{GarFields, MediaTokenConfig, Normalization, PreprocessorConfig};
pub use decode::{clean_up_tokenization, py_strip, TextStream};
pub use error::{ProcessorError, Result, Warning};
pub use image::{
    decode_image, decode_mask, load_image, load_mask, LoadOptions, RgbImage, DEFAULT_MAX_PIXELS,
};
pub use inputs::{Bos, GarInputs, ProcessorOptions, RegionInput};
pub use mask::MaskResample;
pub use processor::GarProcessor;
pub use prompt::{
    mentioned_prompts, ChatTemplate, FollowUp, Prompt, Request, CROP_TOKENS_PER_REGION,
    DEFAULT_INSTRUCTION,
};
pub use region::{polygon_runs, BinaryMask, CocoRle, Region, RleCounts};
pub use resize::{resize_bicubic_aa, resize_nearest, Arith};
pub use tiling::{select_grid, supported_aspect_ratios};
pub use tokens::{
    crop_token_name, prompt_token_name, SpecialTokens, TokenizerConfig, NO_PROMPT_TOKEN,
};
