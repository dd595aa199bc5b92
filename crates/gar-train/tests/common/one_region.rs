//! One generated 96×64 picture with one box-shaped mask as `<Prompt1>`, encoded for tiny-pe-l with
//! a single tile: the sample the bf16 and LoRA training tests share.

use std::path::PathBuf;

use gar_train::conversation::{crop_marker, RegionMask, SampleSpec, Turn};
use gar_train::encode::{encode, training_processor, EncodeOptions, EncodedSample};
use image::{GrayImage, Luma, Rgb, RgbImage};

pub fn checkpoint() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/checkpoints/tiny-pe-l")
}

const OPTS: EncodeOptions = EncodeOptions {
    mask_resample: gar_train::encode::TrainMaskResample::Bicubic,
    max_num_tiles: Some(1),
};

/// The deterministic 96×64 test picture (also used by `train_forward.rs`).
pub fn picture() -> RgbImage {
    RgbImage::from_fn(96, 64, |x, y| {
        Rgb([
            (x * 5 % 256) as u8,
            (y * 7 % 256) as u8,
            ((x * y) % 256) as u8,
        ])
    })
}

/// The box mask `[10, 40) × [8, 30)` of [`picture`].
pub fn box_mask() -> GrayImage {
    GrayImage::from_fn(96, 64, |x, y| {
        Luma([u8::from((10..40).contains(&x) && (8..30).contains(&y)) * 255])
    })
}

pub fn encoded() -> EncodedSample {
    let (image, mask) = (picture(), box_mask());
    let spec = SampleSpec {
        image,
        regions: vec![RegionMask {
            prompt_index: 1,
            mask,
        }],
        turns: vec![Turn {
            user: format!(
                "<image>\nThere are some objects I am curious about: <Prompt1>; \n<Prompt1>: {}Describe this masked region in detail.",
                crop_marker(1)
            ),
            assistant: "A red box.".into(),
        }],
    };
    let proc = training_processor(checkpoint(), OPTS).unwrap();
    encode(&spec, &proc, OPTS).unwrap()
}
