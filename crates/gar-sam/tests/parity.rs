//! Parity with transformers' `SamModel` + `SamProcessor` on the tiny random checkpoint in
//! `fixtures/sam/` (made by `tools/reference/sam/make_sam_fixtures.py`), on real images from
//! `../shared/data`. Run with `--nocapture` to see the measured differences.

mod common;

use candle_core::Tensor;
use common::{fixture, max_abs_diff, Fixture};
use gar_sam::preprocess::resize_bilinear_pil;
use gar_sam::{Mask, Prompt, SamPredictor};

/// Embeddings and logits are f32 through the same operations in a different order.
const EMBEDDING_TOL: f32 = 1e-4;
const LOGIT_TOL: f32 = 1e-3;
const SCORE_TOL: f32 = 1e-4;
const MIN_IOU: f64 = 0.99;

fn checksum(bytes: &[u8]) -> (i64, i64) {
    let mut s = 0i64;
    let mut w = 0i64;
    for (i, &b) in bytes.iter().enumerate() {
        s += b as i64;
        w += b as i64 * (i as i64 % 251);
    }
    (s, w)
}

#[test]
fn preprocessing_is_bit_exact() {
    let Some(fx) = fixture() else { return };
    for (key, meta) in fx.cases["images"].as_object().unwrap() {
        let rgb = fx.image(key);
        let decoded = checksum(rgb.as_raw());
        assert_eq!(
            decoded,
            (
                meta["decoded_sum"].as_i64().unwrap(),
                meta["decoded_wsum"].as_i64().unwrap()
            ),
            "{key}: decoded pixels differ from PIL's"
        );
        let (pixels, info) = fx.sam.pixel_values(&rgb).unwrap();
        let resized_size: Vec<usize> =
            serde_json::from_value(meta["reshaped_size"].clone()).unwrap();
        assert_eq!([info.resized.0, info.resized.1], resized_size[..], "{key}");
        let resized = resize_bilinear_pil(&rgb, info.resized.1, info.resized.0);
        assert_eq!(
            checksum(resized.as_raw()),
            (
                meta["resized_sum"].as_i64().unwrap(),
                meta["resized_wsum"].as_i64().unwrap()
            ),
            "{key}: resized pixels differ from PIL's bilinear"
        );
        let want = fx.tensor(&format!("{key}.pixel_values_s32"));
        let got = strided(&pixels.squeeze(0).unwrap(), 32);
        let d = max_abs_diff(&got, &want);
        println!("{key}: pixel_values max |Δ| = {d:e}");
        assert_eq!(d, 0.0, "{key}: pixel_values differ");
    }
    for check in fx.cases["resize_checks"].as_array().unwrap() {
        let rgb = fx.image(check["image"].as_str().unwrap());
        let (w, h) = (
            check["size"][0].as_u64().unwrap() as usize,
            check["size"][1].as_u64().unwrap() as usize,
        );
        let out = resize_bilinear_pil(&rgb, w, h);
        assert_eq!(
            checksum(out.as_raw()),
            (
                check["sum"].as_i64().unwrap(),
                check["wsum"].as_i64().unwrap()
            ),
            "PIL bilinear {} → {w}×{h}",
            check["image"]
        );
    }
}

/// `t[..., ::s, ::s]` of a `(c, h, w)` tensor.
fn strided(t: &Tensor, s: usize) -> Tensor {
    let (c, h, w) = t.dims3().unwrap();
    let v = t.to_vec3::<f32>().unwrap();
    let mut out: Vec<f32> = Vec::new();
    for plane in v.iter().take(c) {
        for row in plane.iter().take(h).step_by(s) {
            out.extend(row.iter().take(w).step_by(s));
        }
    }
    Tensor::from_vec(out, (c, h.div_ceil(s), w.div_ceil(s)), t.device()).unwrap()
}

#[test]
fn embeddings_masks_and_scores_match_transformers() {
    let Some(fx) = fixture() else { return };
    let mut predictor = SamPredictor::new(fx.sam.clone());
    let mut worst = (0f32, 0f32, 0f32, 1f64);
    for (key, _) in fx.cases["images"].as_object().unwrap() {
        let rgb = fx.image(key);
        let emb = predictor.embedding(&rgb).unwrap();
        let e = emb.embeddings.squeeze(0).unwrap();
        let (got, want) = match fx.reference.get(&format!("{key}.embeddings")) {
            Some(full) => (e, full.squeeze(0).unwrap()),
            None => (
                strided(&e, 2),
                fx.tensor(&format!("{key}.embeddings_s2"))
                    .squeeze(0)
                    .unwrap(),
            ),
        };
        let d = max_abs_diff(&got, &want);
        println!("{key}: embeddings max |Δ| = {d:e}");
        assert!(d < EMBEDDING_TOL, "{key}: embeddings differ by {d}");
        worst.0 = worst.0.max(d);
    }
    for case in fx.cases["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let rgb = fx.image(case["image"].as_str().unwrap());
        let prompt = Fixture::prompt(case);
        let seg = predictor.segment(&rgb, &prompt).unwrap();

        let want_scores = fx.tensor(&format!("{name}.iou_scores"));
        let got_scores = Tensor::new(seg.scores.as_slice(), want_scores.device()).unwrap();
        let ds = max_abs_diff(&got_scores, &want_scores);

        let low = &seg.prediction.low_res;
        let (c, h, w) = low.dims3().unwrap();
        let v = low.to_vec3::<f32>().unwrap();
        let mut sample: Vec<f32> = Vec::new();
        for plane in v.iter().take(c) {
            for row in plane.iter().take(h).skip(1).step_by(5) {
                sample.extend(row.iter().take(w).skip(1).step_by(5));
            }
        }
        let want_low = fx.tensor(&format!("{name}.low_res_s5"));
        let got_low = Tensor::from_vec(sample, want_low.dims(), want_low.device()).unwrap();
        let dl = max_abs_diff(&got_low, &want_low);

        let want_masks = fx.masks(name);
        let ious: Vec<f64> = seg
            .masks
            .iter()
            .zip(&want_masks)
            .map(|(a, b)| a.iou(b))
            .collect();
        let best = case["best"].as_u64().unwrap() as usize;
        println!(
            "{name}: scores max |Δ| = {ds:e}, low-res logits max |Δ| = {dl:e}, mask IoUs {ious:.5?}, \
             best {} (ref {best}), area {} (ref {})",
            seg.best,
            seg.mask().area(),
            case["area"]
        );
        assert!(ds < SCORE_TOL, "{name}: IoU scores differ by {ds}");
        assert!(dl < LOGIT_TOL, "{name}: low-res logits differ by {dl}");
        assert_eq!(seg.best, best, "{name}: different candidate chosen");
        for (i, iou) in ious.iter().enumerate() {
            assert!(*iou >= MIN_IOU, "{name}: candidate {i} IoU {iou}");
        }
        worst.1 = worst.1.max(dl);
        worst.2 = worst.2.max(ds);
        worst.3 = worst.3.min(ious.iter().cloned().fold(1.0, f64::min));
    }
    println!(
        "worst: embeddings {:e}, logits {:e}, scores {:e}, mask IoU {:.6}",
        worst.0, worst.1, worst.2, worst.3
    );
}

#[test]
fn later_prompts_on_the_same_image_skip_the_encoder() {
    let Some(fx) = fixture() else { return };
    let mut predictor = SamPredictor::with_cache_capacity(fx.sam.clone(), 1);
    let a = fx.image("demo3");
    let b = fx.image("coco18519");
    predictor.segment(&a, &Prompt::point(320.0, 200.0)).unwrap();
    assert_eq!(predictor.encoder_runs(), 1);
    let t = std::time::Instant::now();
    predictor
        .segment(&a, &Prompt::default().with_box([100.0, 80.0, 500.0, 400.0]))
        .unwrap();
    predictor.segment(&a, &Prompt::point(10.0, 10.0)).unwrap();
    println!("two cached prompts: {:?}", t.elapsed());
    assert_eq!(predictor.encoder_runs(), 1, "cached image re-encoded");
    predictor.segment(&b, &Prompt::point(250.0, 300.0)).unwrap();
    assert_eq!(predictor.encoder_runs(), 2);
    // Capacity 1: `a` was evicted by `b`; the same pixels in a new buffer hit by content.
    predictor
        .segment(&b.clone(), &Prompt::point(1.0, 1.0))
        .unwrap();
    assert_eq!(predictor.encoder_runs(), 2);
    predictor.segment(&a, &Prompt::point(1.0, 1.0)).unwrap();
    assert_eq!(predictor.encoder_runs(), 3);
    // A one-pixel change is a different image.
    let mut a2 = a.clone();
    a2.get_pixel_mut(0, 0).0[0] ^= 1;
    predictor.segment(&a2, &Prompt::point(1.0, 1.0)).unwrap();
    assert_eq!(predictor.encoder_runs(), 4);
}

#[test]
fn cached_and_fresh_embeddings_give_identical_masks() {
    let Some(fx) = fixture() else { return };
    let rgb = fx.image("demo3");
    let prompt = Prompt::point(320.0, 200.0);
    let mut predictor = SamPredictor::new(fx.sam.clone());
    predictor.segment(&rgb, &Prompt::point(5.0, 5.0)).unwrap();
    let cached = predictor.segment(&rgb, &prompt).unwrap();
    let fresh = {
        let emb = fx.sam.embed(&rgb).unwrap();
        let pred = fx.sam.decode(&emb, &prompt).unwrap();
        fx.sam.mask(&emb, &pred, pred.best()).unwrap()
    };
    assert_eq!(cached.mask(), &fresh);
    let _: &Mask = cached.mask();
}
