//! Shared fixture access for the integration tests. Tests that need `../shared/data` print a SKIP
//! line and pass when it is absent (a user's checkout); CI always has it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{Device, Tensor};
use gar_sam::{Mask, Point, Prompt, Sam};
use image::RgbImage;

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn tiny_dir() -> PathBuf {
    workspace_root().join("fixtures/sam/tiny")
}

pub fn shared_data() -> Option<PathBuf> {
    let dir = workspace_root().join("../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "SKIP: {} is absent (benchmark images are not in the repository)",
            dir.display()
        );
        None
    }
}

pub struct Fixture {
    pub sam: Sam,
    pub cases: serde_json::Value,
    pub reference: HashMap<String, Tensor>,
    pub shared: PathBuf,
}

/// The tiny checkpoint, the reference outputs and the images, or `None` (after printing SKIP).
pub fn fixture() -> Option<Fixture> {
    let shared = shared_data()?;
    let root = workspace_root().join("fixtures/sam");
    let sam = Sam::load(tiny_dir(), &Device::Cpu).expect("tiny checkpoint loads");
    let cases = serde_json::from_str(&std::fs::read_to_string(root.join("cases.json")).unwrap())
        .expect("cases.json");
    let reference =
        candle_core::safetensors::load(root.join("reference.safetensors"), &Device::Cpu).unwrap();
    Some(Fixture {
        sam,
        cases,
        reference,
        shared,
    })
}

impl Fixture {
    /// Decodes an image as the reference does (`Image.open(path).convert("RGB")`), PIL-exact.
    pub fn image(&self, key: &str) -> RgbImage {
        let rel = self.cases["images"][key]["path"].as_str().unwrap();
        let img = gar_processor::load_image(self.shared.join(rel), &Default::default()).unwrap();
        RgbImage::from_raw(img.width(), img.height(), img.into_raw()).unwrap()
    }

    pub fn tensor(&self, name: &str) -> Tensor {
        self.reference
            .get(name)
            .unwrap_or_else(|| panic!("reference tensor {name}"))
            .to_dtype(candle_core::DType::F32)
            .unwrap()
    }

    /// The three reference candidates (stacked vertically in one 1-bit PNG).
    pub fn masks(&self, case: &str) -> Vec<Mask> {
        let path = workspace_root().join(format!("fixtures/sam/masks/{case}.png"));
        let img = image::open(path).unwrap().to_luma8();
        let (w, h3) = (img.width() as usize, img.height() as usize);
        let h = h3 / 3;
        (0..3)
            .map(|i| Mask {
                width: w,
                height: h,
                data: img.as_raw()[i * w * h..(i + 1) * w * h]
                    .iter()
                    .map(|&v| v > 0)
                    .collect(),
            })
            .collect()
    }

    pub fn prompt(case: &serde_json::Value) -> Prompt {
        let points = case["points"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| Point {
                        x: p[0].as_f64().unwrap(),
                        y: p[1].as_f64().unwrap(),
                        positive: p[2].as_f64().unwrap() == 1.0,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let bbox = case["box"].as_array().map(|b| {
            [
                b[0].as_f64().unwrap(),
                b[1].as_f64().unwrap(),
                b[2].as_f64().unwrap(),
                b[3].as_f64().unwrap(),
            ]
        });
        Prompt { points, bbox }
    }
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}
