//! Readers: the HF `datasets` Arrow layout (fixtures/train/arrow, written with pyarrow by
//! tools/reference/train/make_arrow_fixture.py) and the JSONL format.

use gar_train::choices::SeededChoices;
use gar_train::construct::{construct, ConstructConfig};
use gar_train::data::{arrow::ArrowSource, jsonl::JsonlSource, Concat, RowSource};
use image::GrayImage;
use std::path::PathBuf;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/train/arrow")
}

fn area_and_box(m: &GrayImage) -> (u64, [u32; 4]) {
    let (mut area, mut b) = (0u64, [u32::MAX, u32::MAX, 0, 0]);
    for (x, y, p) in m.enumerate_pixels() {
        if p[0] != 0 {
            area += 1;
            b = [b[0].min(x), b[1].min(y), b[2].max(x), b[3].max(y)];
        }
    }
    (area, b)
}

#[test]
fn arrow_shards_read_like_datasets_wrote_them() {
    let src = ArrowSource::open(&fixture_dir().join("dataset")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap(),
    )
    .unwrap();
    let rows = expected["rows"].as_array().unwrap();
    assert_eq!(src.len(), rows.len());
    // Read out of order so that batch switching and the cache are exercised.
    for i in [4, 0, 2, 1, 3, 0] {
        let row = src.row(i).unwrap();
        let want = &rows[i];
        let img = row.image.as_ref().unwrap();
        assert_eq!(
            img.dimensions(),
            (
                want["width"].as_u64().unwrap() as u32,
                want["height"].as_u64().unwrap() as u32
            )
        );
        let sum: u64 = img.as_raw().iter().map(|&v| v as u64).sum();
        assert_eq!(sum, want["rgb_sum"].as_u64().unwrap(), "row {i}");
        let conv: Vec<[String; 2]> = row
            .conversations
            .iter()
            .map(|m| [m.from.clone(), m.value.clone()])
            .collect();
        let want_conv: Vec<[String; 2]> =
            serde_json::from_value(want["conversations"].clone()).unwrap();
        assert_eq!(conv, want_conv);
        match (&row.masks, want["masks"].as_array()) {
            (None, None) => {}
            (Some(masks), Some(wm)) => {
                assert_eq!(masks.len(), wm.len());
                for (m, w) in masks.iter().zip(wm) {
                    let (area, bbox) = area_and_box(m);
                    assert_eq!(area, w["area"].as_u64().unwrap(), "row {i}");
                    let wb: [u32; 4] = serde_json::from_value(w["box"].clone()).unwrap();
                    assert_eq!(bbox, wb, "row {i}");
                }
            }
            (got, want) => panic!(
                "row {i}: masks {:?} vs {want:?}",
                got.as_ref().map(Vec::len)
            ),
        }
        // Every fixture row is a valid sample.
        construct(
            &row,
            &ConstructConfig::default(),
            &mut SeededChoices::new(i as u64),
        )
        .unwrap();
    }
    assert!(matches!(
        src.row(5),
        Err(gar_train::data::DataError::OutOfRange { .. })
    ));
}

#[test]
fn arrow_errors_are_reported_not_panics() {
    let tmp = std::env::temp_dir().join(format!("gar-arrow-bad-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    assert!(ArrowSource::open(&tmp).is_err(), "no state.json");
    std::fs::write(
        tmp.join("state.json"),
        r#"{"_data_files": [{"filename": "x.arrow"}]}"#,
    )
    .unwrap();
    std::fs::write(tmp.join("x.arrow"), b"not arrow at all, definitely").unwrap();
    let e = ArrowSource::open(&tmp)
        .err()
        .expect("garbage shard is refused");
    assert!(e.to_string().contains("x.arrow"), "{e}");
    // A truncated real shard.
    let real = std::fs::read(fixture_dir().join("dataset/data-00000-of-00002.arrow")).unwrap();
    std::fs::write(tmp.join("x.arrow"), &real[..real.len() / 2]).unwrap();
    assert!(ArrowSource::open(&tmp).is_err());
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn jsonl_rows_with_png_rle_and_box_regions() {
    let tmp = std::env::temp_dir().join(format!("gar-jsonl-{}", std::process::id()));
    std::fs::create_dir_all(tmp.join("m")).unwrap();
    let img = image::RgbImage::from_fn(20, 16, |x, y| image::Rgb([x as u8 * 10, y as u8 * 10, 7]));
    img.save(tmp.join("a.png")).unwrap();
    let png_mask = GrayImage::from_fn(20, 16, |x, y| {
        image::Luma([if x < 5 && y < 4 { 255 } else { 0 }])
    });
    png_mask.save(tmp.join("m/a0.png")).unwrap();
    let rle_mask = GrayImage::from_fn(20, 16, |x, y| image::Luma([u8::from(x >= 10 && y >= 8)]));
    let counts = gar_train::rle::encode(&rle_mask);
    let line = serde_json::json!({
        "image": "a.png",
        "regions": [{"mask": "m/a0.png"}, {"rle": {"size": [16, 20], "counts": counts}}, {"box": [2, 3, 6, 5]}],
        "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "one"},
                          {"from": "human", "value": "q"}, {"from": "gpt", "value": "two"},
                          {"from": "human", "value": "q"}, {"from": "gpt", "value": "three"}]
    });
    let no_regions = serde_json::json!({"image": "a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]});
    std::fs::write(tmp.join("d.jsonl"), format!("{line}\n\n{no_regions}\n")).unwrap();
    let src = JsonlSource::open(&tmp.join("d.jsonl")).unwrap();
    assert_eq!(src.len(), 2);
    let row = src.row(0).unwrap();
    let masks = row.masks.as_ref().unwrap();
    assert_eq!(area_and_box(&masks[0]), (20, [0, 0, 4, 3]));
    assert_eq!(masks[1], rle_mask);
    assert_eq!(area_and_box(&masks[2]), (8, [2, 3, 5, 4]));
    assert!(src.row(1).unwrap().masks.is_none());
    // Concatenation with the Arrow set: JSONL rows come after the 5 Arrow rows.
    let both = Concat::new(vec![
        Box::new(ArrowSource::open(&fixture_dir().join("dataset")).unwrap()),
        Box::new(JsonlSource::open(&tmp.join("d.jsonl")).unwrap()),
    ]);
    assert_eq!(both.len(), 7);
    assert_eq!(both.row(5).unwrap().conversations[1].value, "one");
    // Errors name the file and line.
    std::fs::write(tmp.join("bad.jsonl"), "{\"image\": 3}\n").unwrap();
    let e = JsonlSource::open(&tmp.join("bad.jsonl"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("bad.jsonl:1"), "{e}");
    std::fs::remove_dir_all(&tmp).unwrap();
}
