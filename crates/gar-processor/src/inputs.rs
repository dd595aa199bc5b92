//! What the processor produces ([`GarInputs`]) and the switches that shape it.

use crate::error::Warning;
use crate::mask::MaskResample;
use crate::resize::Arith;

/// BOS policy. The chat template already writes `<|begin_of_text|>`; the question is whether the
/// tokenizer's post-processor adds another one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Bos {
    /// Tokenise with `add_special_tokens=true`: the Llama-3 post-processor prepends a second BOS. This is
    /// what the reference inference path feeds (`processor(text=rendered)`, gar-spec §7.4).
    #[default]
    Double,
    /// Tokenise with `add_special_tokens=false`: the template's BOS only (training path,
    /// `apply_chat_template(tokenize=True)`).
    Single,
}

/// Processor-wide switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessorOptions {
    pub bos: Bos,
    pub mask_resample: MaskResample,
    /// Overrides `preprocessor_config.json`'s `max_num_tiles` (a request may override again).
    pub max_num_tiles: Option<usize>,
    /// Float contraction of the resize kernel; the default matches PyTorch's CPU build.
    pub arith: Arith,
}

/// One region as the model sees it, in prompt order.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionInput {
    /// K of `<PromptK>`; also the region's value in `mask_labels`.
    pub prompt_index: usize,
    /// Index of the region in the caller's slice.
    pub region: usize,
    /// Id of the 256 feature-replay tokens of this region (`<|reserved_special_token_{K+2}|>`).
    pub crop_token_id: u32,
    /// `(x_min / W, y_min / H, x_max / W, y_max / H)` of the mask at the image's resolution, max inclusive.
    pub bbox: [f64; 4],
    /// Pixels inside the region at the image's resolution.
    pub area: u64,
}

/// Everything the model needs for one request.
#[derive(Debug, Clone)]
pub struct GarInputs {
    /// Side of a square tile (448).
    pub tile_size: usize,
    /// T = 1 + ncw·nch (thumbnail first); with several images, the sum over images.
    pub num_tiles: usize,
    /// Tiles of each image in message order (one entry for a single image).
    pub image_tiles: Vec<usize>,
    /// `(ncw, nch)`: grid columns and rows (of the first image, the one regions refer to).
    pub aspect_ratio: (u32, u32),
    /// T × 3 × tile × tile uint8 tiles (CHW): thumbnail, then grid tiles row-major; image after image.
    pub tiles_u8: Vec<u8>,
    /// Same layout, `(u8 − mean) / std` in float32 (`(u8 − 127.5) / 127.5` for GAR).
    pub pixel_values: Vec<f32>,
    /// T × tile × tile labels on the same tiles: K inside `<PromptK>`'s region, `background_label`
    /// elsewhere.
    pub mask_labels: Vec<u8>,
    /// `prompt_numbers` (the `<NO_Prompt>` label).
    pub background_label: u8,
    pub input_ids: Vec<u32>,
    /// Regions in prompt order, each with its own box.
    pub regions: Vec<RegionInput>,
    /// The rendered chat text before `<|image|>` expansion.
    pub prompt_text: String,
    pub warnings: Vec<Warning>,
}

impl GarInputs {
    /// Boxes in prompt order.
    pub fn bboxes(&self) -> Vec<[f64; 4]> {
        self.regions.iter().map(|r| r.bbox).collect()
    }

    /// Crop token ids in prompt order.
    pub fn crop_token_ids(&self) -> Vec<u32> {
        self.regions.iter().map(|r| r.crop_token_id).collect()
    }

    /// The mask image the model embeds (`labels != background` as 0/1), T × tile × tile; the reference
    /// repeats it over 3 channels.
    pub fn region_mask(&self) -> Vec<f32> {
        self.mask_labels
            .iter()
            .map(|&l| f32::from(u8::from(l != self.background_label)))
            .collect()
    }
}
