//! Parity of the training encoder (training.md §2.6–§2.9) with an independent Python encoding:
//! `tools/reference/train/make_encode_fixtures.py` ran transformers' PerceptionLMProcessor chat template
//! on each constructed sample (image and bicubic label map), computed boxes from the full-resolution
//! masks and labels by `parse_label`, and stored the results in `fixtures/train/encode/<case>.json`
//! together with the sample itself. Here the Rust encoder runs on the same sample and must give the same
//! ids, labels, tile grid and boxes, and the same pixels and label map (checked by sums and strided
//! samples). The photo cases read `../shared/data` and are skipped with a message when it is absent.

use std::path::PathBuf;

use gar_train::encode::{encode, training_processor, EncodeOptions, TrainMaskResample};
use serde_json::Value;

#[path = "common/encode_case.rs"]
mod encode_case;
use encode_case::{sample, shared_data, uses_shared_data};

/// Boxes are `min/W`-style quotients of integers in f64 on both sides: equal up to rounding.
const BOX_TOL: f64 = 1e-9;
/// Pixel values are `(u8 − 127.5) / 127.5` in f32 on both sides, so each sampled value must agree to f32
/// rounding, and one u8 step (0.0078) anywhere would show in the sums. The sums are over ~3·10⁶ f32
/// values accumulated in f64, so 1e-9 relative (of the sum of squares) covers accumulation order only.
const PIXEL_SAMPLE_TOL: f64 = 1e-6;
const PIXEL_SUM_REL_TOL: f64 = 1e-9;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Expands the generator's `[[value, count], ...]`.
fn from_runs(v: &Value) -> Vec<i64> {
    let mut out = Vec::new();
    for pair in v.as_array().unwrap() {
        let value = pair[0].as_i64().unwrap();
        let count = pair[1].as_u64().unwrap() as usize;
        out.extend(std::iter::repeat_n(value, count));
    }
    out
}

/// Index of the first difference, for a readable failure.
fn first_diff<T: PartialEq>(a: &[T], b: &[T]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x != y)
}

fn check_case(name: &str) {
    let path = repo().join(format!("fixtures/train/encode/{name}.json"));
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let case = &want["case"];
    let data = shared_data();
    if uses_shared_data(case) && !data.is_dir() {
        eprintln!(
            "{name}: skipped, {} is absent (the photo case needs the GAR demo assets)",
            data.display()
        );
        return;
    }
    let opts = EncodeOptions {
        mask_resample: TrainMaskResample::Bicubic,
        max_num_tiles: case["max_num_tiles"].as_u64().map(|n| n as usize),
    };
    let ckpt = repo()
        .join("fixtures/checkpoints")
        .join(case["checkpoint"].as_str().unwrap());
    let proc = training_processor(ckpt, opts).unwrap();
    let s = encode(&sample(case, &data), &proc, opts).unwrap();

    // Tokens and labels: exact.
    let ids: Vec<i64> = s.input_ids.iter().map(|&i| i64::from(i)).collect();
    let want_ids = from_runs(&want["input_ids_rle"]);
    assert_eq!(
        ids.len(),
        want_ids.len(),
        "{name}: {} ids vs Python's {} (first difference at {:?})",
        ids.len(),
        want_ids.len(),
        first_diff(&ids, &want_ids)
    );
    if let Some(p) = first_diff(&ids, &want_ids) {
        panic!(
            "{name}: input_ids differ first at {p}: {:?} vs Python's {:?}",
            &ids[p.saturating_sub(3)..(p + 4).min(ids.len())],
            &want_ids[p.saturating_sub(3)..(p + 4).min(ids.len())]
        );
    }
    let want_labels = from_runs(&want["labels_rle"]);
    if let Some(p) = first_diff(&s.labels, &want_labels) {
        panic!(
            "{name}: labels differ first at {p}: {} vs Python's {}",
            s.labels[p], want_labels[p]
        );
    }
    assert_eq!(s.labels.len(), want_labels.len(), "{name}: labels length");

    // Tile grid.
    let (ncw, nch) = s.aspect_ratio;
    assert_eq!(
        [u64::from(ncw), u64::from(nch)],
        [
            want["aspect_ratio"][0].as_u64().unwrap(),
            want["aspect_ratio"][1].as_u64().unwrap()
        ],
        "{name}: tile grid"
    );
    assert_eq!(
        s.num_tiles as u64,
        want["num_tiles"].as_u64().unwrap(),
        "{name}: tiles"
    );

    // Boxes, per prompt, with the crop token that carries them.
    let want_boxes = want["boxes"].as_array().unwrap();
    assert_eq!(s.regions.len(), want_boxes.len(), "{name}: region count");
    for b in want_boxes {
        let k = b["prompt"].as_u64().unwrap() as usize;
        let r = s
            .regions
            .iter()
            .find(|r| r.prompt_index == k)
            .unwrap_or_else(|| panic!("{name}: no region for <Prompt{k}>"));
        assert_eq!(
            u64::from(r.crop_token_id),
            b["crop_token_id"].as_u64().unwrap(),
            "{name}: crop token of <Prompt{k}>"
        );
        for (i, (&ours, theirs)) in r.bbox.iter().zip(b["box"].as_array().unwrap()).enumerate() {
            let theirs = theirs.as_f64().unwrap();
            assert!(
                (ours - theirs).abs() <= BOX_TOL,
                "{name}: box of <Prompt{k}>[{i}] {ours} vs {theirs}"
            );
        }
    }

    // Pixels: length, sums, strided sample.
    let px = &s.pixel_values;
    assert_eq!(
        px.len() as u64,
        want["pixel_len"].as_u64().unwrap(),
        "{name}: pixel count"
    );
    let sum: f64 = px.iter().map(|&v| f64::from(v)).sum();
    let sq: f64 = px.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    let (want_sum, want_sq) = (
        want["pixel_sum"].as_f64().unwrap(),
        want["pixel_sq_sum"].as_f64().unwrap(),
    );
    assert!(
        (sum - want_sum).abs() <= PIXEL_SUM_REL_TOL * want_sq,
        "{name}: pixel sum {sum} vs {want_sum}"
    );
    assert!(
        (sq - want_sq).abs() <= PIXEL_SUM_REL_TOL * want_sq,
        "{name}: pixel sum of squares {sq} vs {want_sq}"
    );
    let stride = want["pixel_stride"].as_u64().unwrap() as usize;
    let mut max_dev = 0f64;
    for (j, w) in want["pixel_sample"].as_array().unwrap().iter().enumerate() {
        let (ours, theirs) = (f64::from(px[j * stride]), w.as_f64().unwrap());
        max_dev = max_dev.max((ours - theirs).abs());
        assert!(
            (ours - theirs).abs() <= PIXEL_SAMPLE_TOL,
            "{name}: pixel_values[{}] {ours} vs {theirs}",
            j * stride
        );
    }

    // Label map the model recovers from global_mask_values: exact.
    let labels = &s.mask_labels;
    assert_eq!(
        u64::from(s.background_label),
        want["background_label"].as_u64().unwrap(),
        "{name}: background label"
    );
    assert_eq!(
        labels.len() as u64,
        want["label_len"].as_u64().unwrap(),
        "{name}: label map size"
    );
    let hist: Vec<u64> = (0..=s.background_label)
        .map(|k| labels.iter().filter(|&&l| l == k).count() as u64)
        .collect();
    let want_hist: Vec<u64> = want["label_histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(hist, want_hist, "{name}: label histogram");
    let lsum: u64 = labels.iter().map(|&l| u64::from(l)).sum();
    assert_eq!(
        lsum,
        want["label_sum"].as_u64().unwrap(),
        "{name}: label sum"
    );
    let stride = want["label_stride"].as_u64().unwrap() as usize;
    for (j, w) in want["label_sample"].as_array().unwrap().iter().enumerate() {
        assert_eq!(
            u64::from(labels[j * stride]),
            w.as_u64().unwrap(),
            "{name}: label map [{}]",
            j * stride
        );
    }
    println!(
        "{name}: {} ids, {} supervised labels, grid {ncw}x{nch}, {} regions; pixel sum off by {:.1e}, \
         sum of squares by {:.1e}, sampled pixels by at most {max_dev:.1e}; label map equal",
        ids.len(),
        s.labels.iter().filter(|&&l| l != -100).count(),
        s.regions.len(),
        (sum - want_sum).abs(),
        (sq - want_sq).abs()
    );
}

#[test]
fn one_region_one_turn_matches_python() {
    check_case("pe-l_synth_single");
}

#[test]
fn two_regions_two_turns_matches_python() {
    check_case("pe-g_synth_two");
}

#[test]
fn photo_two_regions_matches_python() {
    check_case("pe-l_photo_two");
}

#[test]
fn photo_one_region_matches_python() {
    check_case("pe-g_photo_single");
}
