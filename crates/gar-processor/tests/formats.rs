//! Decoding and RGB/L conversion against Pillow 11.3 on small files of every supported format and mode
//! (`tests/data/formats`, made by `tests/data/gen_formats.py`), and COCO polygon/box rasterisation
//! against pycocotools (`tests/data/coco_polygons.json`, made by `tests/data/gen_coco_polygons.py`).

mod common;

use std::path::PathBuf;

use gar_processor::{
    decode_image, decode_mask, CocoRle, LoadOptions, ProcessorError, Region, RleCounts,
};

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[test]
fn every_format_converts_like_pil() {
    let dir = data_dir().join("formats");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let s = p.to_string_lossy();
            !s.ends_with(".rgb.png") && !s.ends_with(".l.png") && !s.ends_with(".oriented.png")
        })
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 30);
    let opts = LoadOptions::default();
    let mut failures = Vec::new();
    for path in &inputs {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(path).unwrap();
        let rgb = decode_image(&bytes, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        let (w, h, want) = common::png(&dir.join(format!("{name}.rgb.png")));
        assert_eq!((rgb.width(), rgb.height()), (w, h), "{name}: size");
        let diff = rgb
            .as_raw()
            .iter()
            .zip(&want)
            .filter(|(a, b)| a != b)
            .count();
        if diff > 0 {
            failures.push(format!(
                "{name}: {diff} / {} RGB values differ from PIL",
                want.len()
            ));
        }
        // Masks: inside = non-zero after PIL's convert("L").
        let mask = decode_mask(&bytes, &opts).unwrap();
        let (_, _, l) = common::png(&dir.join(format!("{name}.l.png")));
        let inside: Vec<bool> = l.iter().map(|&v| v != 0).collect();
        if mask.as_slice() != inside.as_slice() {
            failures.push(format!("{name}: mask differs from PIL convert(\"L\") != 0"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn exif_orientation_only_when_asked() {
    let dir = data_dir().join("formats");
    for name in ["exif6.jpg", "exif3.jpg"] {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        // Default: like PIL's open, no rotation (checked against .rgb.png above).
        let plain = decode_image(&bytes, &LoadOptions::default()).unwrap();
        let (w, h, _) = common::png(&dir.join(format!("{name}.rgb.png")));
        assert_eq!((plain.width(), plain.height()), (w, h));
        let opts = LoadOptions {
            apply_exif_orientation: true,
            ..LoadOptions::default()
        };
        let oriented = decode_image(&bytes, &opts).unwrap();
        let (w, h, want) = common::png(&dir.join(format!("{name}.oriented.png")));
        assert_eq!((oriented.width(), oriented.height()), (w, h), "{name}");
        assert_eq!(
            oriented.as_raw(),
            want.as_slice(),
            "{name}: ImageOps.exif_transpose"
        );
    }
}

#[test]
fn corrupt_and_unsupported_files_are_errors() {
    let opts = LoadOptions::default();
    let png = std::fs::read(data_dir().join("formats/rgb.png")).unwrap();
    assert!(matches!(
        decode_image(&png[..png.len() / 2], &opts),
        Err(ProcessorError::Decode(_))
    ));
    let jpg = std::fs::read(data_dir().join("formats/q90.jpg")).unwrap();
    let mut broken = jpg[..40].to_vec();
    broken.extend_from_slice(&[0xFF, 0xD9]);
    assert!(matches!(
        decode_image(&broken, &opts),
        Err(ProcessorError::Decode(_))
    ));
    assert!(matches!(
        decode_image(b"GIF89a", &opts),
        Err(ProcessorError::Decode(_))
    ));
    assert!(matches!(
        decode_image(b"\0\0\0\0plain bytes", &opts),
        Err(ProcessorError::UnsupportedFormat)
    ));
    let small = LoadOptions {
        max_pixels: 100,
        ..opts
    };
    for f in [
        "rgb.png",
        "q90.jpg",
        "p.gif",
        "lossy.webp",
        "rgb.bmp",
        "rgb.tif",
    ] {
        let bytes = std::fs::read(data_dir().join("formats").join(f)).unwrap();
        assert!(
            matches!(
                decode_image(&bytes, &small),
                Err(ProcessorError::ImageTooLarge { .. })
            ),
            "{f}: the pixel limit must apply"
        );
    }
}

#[test]
fn polygons_and_boxes_match_pycocotools() {
    let v = common::read_json(&data_dir().join("coco_polygons.json"));
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 80);
    for (i, c) in cases.iter().enumerate() {
        let (h, w) = (
            c["h"].as_u64().unwrap() as u32,
            c["w"].as_u64().unwrap() as u32,
        );
        let polys: Vec<Vec<f64>> = serde_json::from_value(c["polygons"].clone()).unwrap();
        let got = Region::Polygon(polys.clone()).to_mask(w, h, i).unwrap();
        let want = CocoRle {
            size: [h, w],
            counts: RleCounts::Compressed(c["counts"].as_str().unwrap().to_string()),
        }
        .decode()
        .unwrap();
        assert_eq!(got, want, "case {i} ({})", c["kind"]);
        assert_eq!(got.area(), c["area"].as_u64().unwrap(), "case {i}");
        if c["kind"] == "box" {
            let p = &polys[0];
            let b = Region::Box {
                x0: p[0],
                y0: p[1],
                x1: p[2],
                y1: p[5],
            };
            assert_eq!(b.to_mask(w, h, i).unwrap(), want, "box case {i}");
        }
    }
}
