//! Shared helpers of the parity tests: where the fixtures and the benchmark data live, PNG/JSON readers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gar_processor::{load_image, load_mask, BinaryMask, CocoRle, LoadOptions, Region, RgbImage};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Workspace root (`crates/gar-processor/../..`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Committed fixtures: they are part of the repository, so their absence is a failure.
pub fn fixtures() -> PathBuf {
    workspace().join("fixtures")
}

/// The benchmark/demo data (`../shared/data` next to the workspace), or `None` with a printed notice:
/// tests that need it skip when it is absent (a user's checkout), CI always has it.
pub fn shared_data(test: &str) -> Option<PathBuf> {
    let p = workspace().join("../shared/data");
    if p.is_dir() {
        Some(p)
    } else {
        println!(
            "SKIP {test}: {} is absent (benchmark data not checked out)",
            p.display()
        );
        None
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A PNG fixture as raw 8-bit channels (RGB or L), with its size.
pub fn png(path: &Path) -> (u32, u32, Vec<u8>) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (w, h) = (img.width(), img.height());
    let raw = match img {
        image::DynamicImage::ImageLuma8(b) => b.into_raw(),
        // PIL keeps a transparency colour on L images, which PNG stores as tRNS: grey levels only.
        image::DynamicImage::ImageLumaA8(b) => b.into_raw().chunks_exact(2).map(|p| p[0]).collect(),
        other => other.to_rgb8().into_raw(),
    };
    (w, h, raw)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// T × C × S × S (CHW tiles) → the fixtures' "stacked tiles" image: T·S rows × S columns, HWC bytes.
pub fn stack_hwc(tiles: &[u8], channels: usize, tile: usize) -> Vec<u8> {
    let plane = tile * tile;
    let mut out = Vec::with_capacity(tiles.len());
    for t in tiles.chunks_exact(channels * plane) {
        for i in 0..plane {
            for c in 0..channels {
                out.push(t[c * plane + i]);
            }
        }
    }
    out
}

pub fn load_rgb(data: &Path, rel: &str) -> RgbImage {
    load_image(data.join(rel), &LoadOptions::default()).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A fixture's region entry (`{"prompt": K, "mask_png"|"rle"|"box"|"polygon": ...}`) → (K, Region).
pub fn region(data: &Path, v: &Value) -> (usize, Region) {
    let k = v["prompt"].as_u64().expect("prompt") as usize;
    let r = if let Some(p) = v.get("mask_png").and_then(Value::as_str) {
        let m: BinaryMask = load_mask(data.join(p), &LoadOptions::default()).expect("mask png");
        Region::Mask(m)
    } else if let Some(rle) = v.get("rle") {
        Region::Rle(serde_json::from_value::<CocoRle>(rle.clone()).expect("rle"))
    } else if let Some(b) = v.get("box") {
        let b: Vec<f64> = serde_json::from_value(b.clone()).expect("box");
        Region::Box {
            x0: b[0],
            y0: b[1],
            x1: b[2],
            y1: b[3],
        }
    } else if let Some(p) = v.get("polygon") {
        Region::Polygon(serde_json::from_value(p.clone()).expect("polygon"))
    } else {
        panic!("unknown region {v}")
    };
    (k, r)
}

pub fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

/// Numbers of the JSON array under `"key"` in a file, parsed with Rust's correctly rounded `f64` parser
/// (serde_json's default float parsing can be one ulp off, e.g. 0.9953161592505855).
pub fn exact_numbers(path: &Path, key: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let start = text
        .find(&format!("\"{key}\""))
        .unwrap_or_else(|| panic!("{key} in {}", path.display()));
    let rest = &text[start + key.len() + 2..];
    let open = rest.find('[').expect("array");
    let mut depth = 0usize;
    let mut end = open;
    for (i, ch) in rest[open..].char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    rest[open..end]
        .split(|c: char| c == '[' || c == ']' || c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<f64>().unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}
