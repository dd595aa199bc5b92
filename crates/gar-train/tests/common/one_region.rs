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

pub fn encoded() -> EncodedSample {
    let (w, h) = (96u32, 64u32);
    let image = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 5 % 256) as u8,
            (y * 7 % 256) as u8,
            ((x * y) % 256) as u8,
        ])
    });
    let mask = GrayImage::from_fn(w, h, |x, y| {
        Luma([u8::from((10..40).contains(&x) && (8..30).contains(&y)) * 255])
    });
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
