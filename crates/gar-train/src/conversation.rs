//! The interface between sample construction and the training forward: one sample after
//! construction (training.md §2), before tokenisation.

use image::{GrayImage, RgbImage};

/// One training sample: the image, each region's mask tagged with the `K` of its `<PromptK>`, and
/// the dialogue. In the turns, the marker `[[crop K]]` stands for the crop tokens of `<PromptK>`.
#[derive(Clone, Debug)]
pub struct SampleSpec {
    pub image: RgbImage,
    pub regions: Vec<RegionMask>,
    pub turns: Vec<Turn>,
}

/// A binary region mask (non-zero = inside) and the prompt index it is bound to.
#[derive(Clone, Debug)]
pub struct RegionMask {
    pub prompt_index: usize,
    pub mask: GrayImage,
}

/// One user/assistant exchange; only assistant text is supervised.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub user: String,
    pub assistant: String,
}

/// The marker that stands for the crop tokens of `<PromptK>` in a turn.
pub fn crop_marker(prompt_index: usize) -> String {
    format!("[[crop {prompt_index}]]")
}
