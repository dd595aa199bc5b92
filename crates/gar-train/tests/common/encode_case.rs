//! The sample spec stored in `fixtures/train/encode/<case>.json` (written by
//! `tools/reference/train/make_encode_fixtures.py`) as a [`SampleSpec`]: shared by the encoding parity
//! and the real-photo loss parity.

use std::path::{Path, PathBuf};

use gar_train::conversation::{RegionMask, SampleSpec, Turn};
use image::{GrayImage, Luma, Rgb, RgbImage};
use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `GAR_SHARED_DATA`, else `../shared/data` next to the repository.
pub fn shared_data() -> PathBuf {
    match std::env::var("GAR_SHARED_DATA") {
        Ok(p) => PathBuf::from(p),
        Err(_) => repo().join("../shared/data"),
    }
}

/// The generator's synthetic picture: R = (3x + y) mod 256, G = 5y mod 256, B = (x·y div 7) mod 256.
fn stripes() -> RgbImage {
    RgbImage::from_fn(120, 80, |x, y| {
        Rgb([
            ((3 * x + y) % 256) as u8,
            ((5 * y) % 256) as u8,
            ((x * y / 7) % 256) as u8,
        ])
    })
}

fn load_image(spec: &Value, data: &Path) -> RgbImage {
    if let Some(name) = spec["synthetic"].as_str() {
        assert_eq!(name, "stripes_120x80", "unknown synthetic image");
        return stripes();
    }
    let rel = spec["data"]
        .as_str()
        .expect("image needs \"synthetic\" or \"data\"");
    image::open(data.join(rel)).unwrap().to_rgb8()
}

/// A region's binary mask: a half-open box, a disc `(x−cx)² + (y−cy)² < r2`, or a PNG whose non-zero
/// grey pixels are inside (as the generator's `convert("L") > 0`).
fn region_mask(r: &Value, w: u32, h: u32, data: &Path) -> GrayImage {
    let inside = |b: bool| Luma([u8::from(b) * 255]);
    if let Some(b) = r["box"].as_array() {
        let b: Vec<u32> = b.iter().map(|v| v.as_u64().unwrap() as u32).collect();
        return GrayImage::from_fn(w, h, |x, y| {
            inside((b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y))
        });
    }
    if let Some(d) = r["disc"].as_array() {
        let d: Vec<i64> = d.iter().map(|v| v.as_i64().unwrap()).collect();
        return GrayImage::from_fn(w, h, |x, y| {
            let (dx, dy) = (i64::from(x) - d[0], i64::from(y) - d[1]);
            inside(dx * dx + dy * dy < d[2])
        });
    }
    let rel = r["mask_png"]
        .as_str()
        .expect("region needs box, disc or mask_png");
    let grey = image::open(data.join(rel)).unwrap().to_luma8();
    GrayImage::from_fn(grey.width(), grey.height(), |x, y| {
        inside(grey.get_pixel(x, y)[0] > 0)
    })
}

pub fn uses_shared_data(case: &Value) -> bool {
    case["image"]["data"].is_string()
        || case["regions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["mask_png"].is_string())
}

pub fn sample(case: &Value, data: &Path) -> SampleSpec {
    let image = load_image(&case["image"], data);
    let (w, h) = image.dimensions();
    let regions = case["regions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| RegionMask {
            prompt_index: r["prompt"].as_u64().unwrap() as usize,
            mask: region_mask(r, w, h, data),
        })
        .collect();
    let turns = case["turns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Turn {
            user: t["user"].as_str().unwrap().into(),
            assistant: t["assistant"].as_str().unwrap().into(),
        })
        .collect();
    SampleSpec {
        image,
        regions,
        turns,
    }
}
