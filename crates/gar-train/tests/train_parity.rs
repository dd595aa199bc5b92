//! PyTorch parity of the training loss and of every parameter gradient (training.md §8), on the tiny
//! checkpoints. `fixtures/train/loss/<case>/` holds the reference loss and gradients that
//! `tools/reference/train/make_loss_fixtures.py` computed with transformers + timm + torchvision on the
//! inputs this test encodes (written by running it with `GAR_DUMP_TRAIN_INPUTS=<dir>`). The encoding is
//! checked here against the ids, labels and pixel checksums recorded in the fixture, so a drift of the
//! encoder is reported as such and not as a gradient mismatch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use gar_train::conversation::{crop_marker, RegionMask, SampleSpec, Turn};
use gar_train::encode::{encode, training_processor, EncodeOptions, EncodedSample};
use gar_train::forward::TrainModel;
use image::{GrayImage, Luma, Rgb, RgbImage};

const LOSS_REL_TOL: f64 = 1e-5;
/// Per tensor, max|ours − ref| / max|ref|. The f32 reference is itself only this good: the same
/// PyTorch computation in f64 differs from it by up to 1.8e-4 (pe-g, projector bias; 9.4e-5 on pe-l),
/// because the tiny random checkpoints have large logits (loss 137–267) and the vision gradients sum
/// over thousands of tokens. 5e-4 leaves room for that floor; a wrong formula shows as ≥ 1e-2.
const GRAD_REL_TOL: f64 = 5e-4;

/// Two tiles (thumbnail + one grid tile): the tiny models run the backward pass in seconds.
const OPTS: EncodeOptions = EncodeOptions {
    mask_resample: gar_train::encode::TrainMaskResample::Bicubic,
    max_num_tiles: Some(1),
};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A deterministic 120×80 picture (generated, so the test needs no data outside the repository)
/// with a rectangle and a disc as regions.
fn picture() -> (RgbImage, GrayImage, GrayImage) {
    let (w, h) = (120u32, 80u32);
    let image = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 3 + y) as u8,
            (y * 5 % 256) as u8,
            ((x * y / 7) % 256) as u8,
        ])
    });
    let rect = GrayImage::from_fn(w, h, |x, y| {
        Luma([u8::from((12..50).contains(&x) && (10..44).contains(&y)) * 255])
    });
    let disc = GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i32 - 88, y as i32 - 50);
        Luma([u8::from(dx * dx + dy * dy < 260) * 255])
    });
    (image, rect, disc)
}

fn spec(case: &str) -> SampleSpec {
    let (image, rect, disc) = picture();
    match case {
        "single" => SampleSpec {
            image,
            regions: vec![RegionMask {
                prompt_index: 0,
                mask: rect,
            }],
            turns: vec![Turn {
                user: format!(
                    "<image>\nThere are some objects I am curious about: <Prompt0>; \n<Prompt0>: {}\n\nDescribe <Prompt0>.",
                    crop_marker(0)
                ),
                assistant: "A striped red box with a dark edge.".into(),
            }],
        },
        "two" => SampleSpec {
            image,
            regions: vec![
                RegionMask {
                    prompt_index: 2,
                    mask: rect,
                },
                RegionMask {
                    prompt_index: 0,
                    mask: disc,
                },
            ],
            turns: vec![
                Turn {
                    user: format!(
                        "<image>\nThere are some objects I am curious about: <Prompt2>; <Prompt0>; \n<Prompt2>: {}\n<Prompt0>: {}\n\nWhich is left?",
                        crop_marker(2),
                        crop_marker(0)
                    ),
                    assistant: "<Prompt2> is left of <Prompt0>.".into(),
                },
                Turn {
                    user: "And the colour?".into(),
                    assistant: "Both are green.".into(),
                },
            ],
        },
        other => panic!("unknown case {other}"),
    }
}

/// (fixture folder, checkpoint, sample).
const CASES: [(&str, &str, &str); 2] = [
    ("pe-l_single", "tiny-pe-l", "single"),
    ("pe-g_two", "tiny-pe-g", "two"),
];

fn encoded(ckpt: &str, case: &str) -> EncodedSample {
    let proc = training_processor(repo().join("fixtures/checkpoints").join(ckpt), OPTS).unwrap();
    encode(&spec(case), &proc, OPTS).unwrap()
}

/// The encoded inputs as the Python reference reads them.
fn dump_inputs(s: &EncodedSample, path: &Path) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let t = s.num_tiles;
    let side = ((s.pixel_values.len() / (t * 3)) as f64).sqrt() as usize;
    let ids: Vec<i64> = s.input_ids.iter().map(|&i| i64::from(i)).collect();
    let boxes: Vec<f64> = s.regions.iter().flat_map(|r| r.bbox).collect();
    let crops: Vec<i64> = s
        .regions
        .iter()
        .map(|r| i64::from(r.crop_token_id))
        .collect();
    let (ncw, nch) = s.aspect_ratio;
    let mut m: HashMap<String, Tensor> = HashMap::new();
    m.insert("input_ids".into(), Tensor::new(ids, &dev)?);
    m.insert("labels".into(), Tensor::new(s.labels.clone(), &dev)?);
    m.insert(
        "pixel_values".into(),
        Tensor::from_slice(&s.pixel_values, (t, 3, side, side), &dev)?,
    );
    m.insert(
        "mask_labels".into(),
        Tensor::from_slice(&s.mask_labels, (t, side, side), &dev)?,
    );
    m.insert(
        "boxes".into(),
        Tensor::from_vec(boxes, (s.regions.len(), 4), &dev)?,
    );
    m.insert("crop_token_ids".into(), Tensor::new(crops, &dev)?);
    m.insert(
        "aspect_ratio".into(),
        Tensor::new(&[i64::from(ncw), i64::from(nch)], &dev)?,
    );
    candle_core::safetensors::save(&m, path)
}

/// Writes every case's encoded inputs when `GAR_DUMP_TRAIN_INPUTS` names a folder (the first step of
/// the fixture generator); does nothing otherwise.
#[test]
fn dump_encoded_inputs_for_the_reference() {
    let Ok(dir) = std::env::var("GAR_DUMP_TRAIN_INPUTS") else {
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    for (name, ckpt, case) in CASES {
        let s = encoded(ckpt, case);
        dump_inputs(&s, &Path::new(&dir).join(format!("{name}.safetensors"))).unwrap();
    }
}

fn check_case(name: &str, ckpt: &str, case: &str) {
    let dir = repo().join("fixtures/train/loss").join(name);
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let s = encoded(ckpt, case);

    // The inputs are those the reference ran on.
    let ids: Vec<u32> = serde_json::from_value(meta["input_ids"].clone()).unwrap();
    let labels: Vec<i64> = serde_json::from_value(meta["labels"].clone()).unwrap();
    assert_eq!(
        s.input_ids, ids,
        "{name}: input_ids drifted from the fixture"
    );
    assert_eq!(s.labels, labels, "{name}: labels drifted from the fixture");
    let pix_sum: f64 = s.pixel_values.iter().map(|&v| f64::from(v)).sum();
    let pix_abs: f64 = s.pixel_values.iter().map(|&v| f64::from(v).abs()).sum();
    let lab_sum: u64 = s.mask_labels.iter().map(|&v| u64::from(v)).sum();
    let want_sum = meta["pixel_sum"].as_f64().unwrap();
    let want_abs = meta["pixel_abs_sum"].as_f64().unwrap();
    assert!(
        (pix_sum - want_sum).abs() <= 1e-6 * want_abs,
        "{name}: pixels {pix_sum} vs {want_sum}"
    );
    assert!(
        (pix_abs - want_abs).abs() <= 1e-6 * want_abs,
        "{name}: |pixels| {pix_abs} vs {want_abs}"
    );
    assert_eq!(lab_sum, meta["mask_label_sum"].as_u64().unwrap(), "{name}");

    let dev = Device::Cpu;
    let model = TrainModel::load(repo().join("fixtures/checkpoints").join(ckpt), &dev).unwrap();
    let out = model.loss(&s).unwrap();
    let loss = f64::from(out.loss.to_scalar::<f32>().unwrap());
    let want_loss = meta["loss"].as_f64().unwrap();
    let loss_rel = (loss - want_loss).abs() / want_loss.abs();
    println!("{name}: loss {loss:.7} vs reference {want_loss:.7} (relative {loss_rel:.2e})");
    assert!(loss_rel < LOSS_REL_TOL, "{name}: loss relative {loss_rel}");

    let grads = out.loss.backward().unwrap();
    let ours = model.gradients(&grads).unwrap();
    let reference = candle_core::safetensors::load(dir.join("grads.safetensors"), &dev).unwrap();
    assert_eq!(
        ours.len(),
        reference.len(),
        "{name}: every checkpoint tensor has a reference gradient"
    );
    let mut worst = (0f64, String::new());
    let mut failures = Vec::new();
    for (key, g) in &ours {
        let r = reference
            .get(key)
            .unwrap_or_else(|| panic!("{name}: no reference gradient for {key}"));
        assert_eq!(g.dims(), r.dims(), "{name}: {key} shape");
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let r: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
        let max_ref = r.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        let max_diff = g
            .iter()
            .zip(&r)
            .fold(0f64, |m, (&a, &b)| m.max(f64::from(a - b).abs()));
        // A tensor the loss does not reach has an all-zero reference: ours must be zero too.
        let rel = if max_ref > 0.0 {
            max_diff / max_ref
        } else {
            max_diff
        };
        if rel > worst.0 {
            worst = (rel, key.clone());
        }
        if rel >= GRAD_REL_TOL {
            failures.push(format!("{key}: {rel:.2e} (max|ref| {max_ref:.2e})"));
        }
    }
    println!(
        "{name}: {} gradients, worst max|diff|/max|ref| {:.2e} at {}",
        ours.len(),
        worst.0,
        worst.1
    );
    assert!(failures.is_empty(), "{name}: gradients off: {failures:#?}");
}

#[test]
fn loss_and_gradients_match_pytorch_tiny_pe_l_single_region() {
    let (n, c, s) = CASES[0];
    check_case(n, c, s);
}

#[test]
fn loss_and_gradients_match_pytorch_tiny_pe_g_two_regions() {
    let (n, c, s) = CASES[1];
    check_case(n, c, s);
}

// ---------------------------------------------------------------------------------------------
// Real-photo samples (training.md §8.1): the reference ran on the independent Python encoding of
// `fixtures/train/encode/<case>.json` (which `encode_parity` ties to ours) and stored the loss and
// per-tensor gradient summaries in `fixtures/train/loss_photo/<case>.json`
// (`tools/reference/train/make_photo_loss_fixtures.py`).

#[path = "common/encode_case.rs"]
mod encode_case;

fn check_photo_case(name: &str) {
    let want: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(format!("fixtures/train/loss_photo/{name}.json")))
            .unwrap(),
    )
    .unwrap();
    let enc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join(format!("fixtures/train/encode/{name}.json")))
            .unwrap(),
    )
    .unwrap();
    let case = &enc["case"];
    let data = encode_case::shared_data();
    if encode_case::uses_shared_data(case) && !data.is_dir() {
        eprintln!("{name}: skipped, {} is absent", data.display());
        return;
    }
    let opts = EncodeOptions {
        mask_resample: gar_train::encode::TrainMaskResample::Bicubic,
        max_num_tiles: case["max_num_tiles"].as_u64().map(|n| n as usize),
    };
    let ckpt = repo()
        .join("fixtures/checkpoints")
        .join(case["checkpoint"].as_str().unwrap());
    let proc = training_processor(&ckpt, opts).unwrap();
    let s = encode(&encode_case::sample(case, &data), &proc, opts).unwrap();
    assert_eq!(
        s.supervised_tokens() as u64,
        want["supervised_tokens"].as_u64().unwrap(),
        "{name}: supervised tokens"
    );

    let dev = Device::Cpu;
    let model = TrainModel::load(&ckpt, &dev).unwrap();
    let out = model.loss(&s).unwrap();
    let loss = f64::from(out.loss.to_scalar::<f32>().unwrap());
    let want_loss = want["loss"].as_f64().unwrap();
    let loss_rel = (loss - want_loss).abs() / want_loss.abs();
    println!("{name}: loss {loss:.7} vs reference {want_loss:.7} (relative {loss_rel:.2e})");
    assert!(loss_rel < LOSS_REL_TOL, "{name}: loss relative {loss_rel}");

    let grads = out.loss.backward().unwrap();
    let ours = model.gradients(&grads).unwrap();
    let reference = want["grads"].as_object().unwrap();
    assert_eq!(ours.len(), reference.len(), "{name}: gradient count");
    let mut worst = (0f64, String::new());
    let mut failures = Vec::new();
    for (key, g) in &ours {
        let r = &reference[key.as_str()];
        let shape: Vec<usize> = serde_json::from_value(r["shape"].clone()).unwrap();
        assert_eq!(g.dims(), shape.as_slice(), "{name}: {key} shape");
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        let max_ref = r["max_abs"].as_f64().unwrap();
        let scale = if max_ref > 0.0 { max_ref } else { 1.0 };
        // Same measure as the full-tensor cases (max|diff| / max|ref|), on the stored values and the
        // tensor's max and L2 norm.
        let stride = r["stride"].as_u64().unwrap() as usize;
        let mut rel = r["sample"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .fold(0f64, |m, (j, v)| {
                m.max((f64::from(g[j * stride]) - v.as_f64().unwrap()).abs() / scale)
            });
        let max_ours = g.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        rel = rel.max((max_ours - max_ref).abs() / scale);
        let norm_ours = g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>().sqrt();
        let norm_ref = r["sq_sum"].as_f64().unwrap().sqrt();
        rel = rel.max((norm_ours - norm_ref).abs() / norm_ref.max(scale));
        if rel > worst.0 {
            worst = (rel, key.clone());
        }
        if rel >= GRAD_REL_TOL {
            failures.push(format!("{key}: {rel:.2e} (max|ref| {max_ref:.2e})"));
        }
    }
    println!(
        "{name}: {} gradients, worst relative deviation {:.2e} at {}",
        ours.len(),
        worst.0,
        worst.1
    );
    assert!(failures.is_empty(), "{name}: gradients off: {failures:#?}");
}

#[test]
fn loss_and_gradients_match_pytorch_photo_two_regions_python_encoded() {
    check_photo_case("pe-l_photo_two");
}

#[test]
fn loss_and_gradients_match_pytorch_photo_one_region_python_encoded() {
    check_photo_case("pe-g_photo_single");
}

// ---------------------------------------------------------------------------------------------
// One optimiser step on the GAR gradients (training.md §5.3–§5.4, §8.2 item 8).

/// GAR's optimiser settings, as `tools/reference/train/make_step_fixtures.py` applies them.
const STEP_LR: f64 = 1e-5;
const STEP_CLIP: f32 = 1.0;

/// The update Δ = w_after − w_before of every checkpoint tensor after gar-train's global-norm clip
/// and one AdamW step on `grads` (checkpoint key → gradient), plus the norm before clipping.
fn rust_step(ckpt: &str, grads: &HashMap<String, Tensor>) -> (f32, HashMap<String, Vec<f32>>) {
    use gar_train::clip::clip_global_norm;
    use gar_train::optim::{AdamW, AdamWConfig};
    let dev = Device::Cpu;
    let model = TrainModel::load(repo().join("fixtures/checkpoints").join(ckpt), &dev).unwrap();
    let vars = model.named_vars().to_vec();
    let before: Vec<Vec<f32>> = vars
        .iter()
        .map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
        .collect();
    let mut g: Vec<Tensor> = vars
        .iter()
        .map(|(n, _)| {
            grads
                .get(n)
                .unwrap_or_else(|| panic!("no gradient for {n}"))
                .clone()
        })
        .collect();
    let norm = clip_global_norm(&mut g, STEP_CLIP).unwrap();
    let mut opt = AdamW::new(AdamWConfig::default(), vars.clone()).unwrap();
    opt.apply(&g, STEP_LR).unwrap();
    let deltas = vars
        .iter()
        .zip(before)
        .map(|((n, v), b)| {
            let a: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            (n.clone(), a.iter().zip(&b).map(|(x, y)| x - y).collect())
        })
        .collect();
    (norm, deltas)
}

/// Worst disagreement with the reference step, in units of the learning rate: over the sampled
/// positions, and over the per-tensor sums Σ Δ and Σ |Δ| (divided by the tensor size).
struct StepDiff {
    worst_sample: (f64, String),
    /// Over the sampled positions whose reference gradient is at least `DETERMINED` × the tensor's
    /// largest: there the sign of the update does not depend on the gradients' f32 noise.
    worst_determined: (f64, String),
    determined: usize,
    sampled: usize,
    worst_sum: (f64, String),
    nonzero_mismatch: Vec<String>,
}

/// Gradient entries below this fraction of their tensor's largest are within reach of the f32 noise
/// of the gradients (train_parity allows 5e-4 of the largest), so the first Adam step's near-sign
/// update may legitimately flip there.
const DETERMINED: f64 = 5e-3;

fn compare_step(
    name: &str,
    deltas: &HashMap<String, Vec<f32>>,
    reference_grads: &HashMap<String, Tensor>,
) -> StepDiff {
    let dir = repo().join("fixtures/train/step");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("step.json")).unwrap()).unwrap();
    let case = &meta["cases"][name];
    let samples =
        candle_core::safetensors::load(dir.join(format!("{name}.safetensors")), &Device::Cpu)
            .unwrap();
    let tensors = case["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), deltas.len(), "{name}: tensor count");
    let mut d = StepDiff {
        worst_sample: (0.0, String::new()),
        worst_sum: (0.0, String::new()),
        worst_determined: (0.0, String::new()),
        determined: 0,
        sampled: 0,
        nonzero_mismatch: Vec::new(),
    };
    for (key, t) in tensors {
        let ours = deltas
            .get(key)
            .unwrap_or_else(|| panic!("{name}: no tensor {key}"));
        assert_eq!(ours.len() as u64, t["numel"].as_u64().unwrap(), "{key}");
        let index: Vec<i64> = samples[&format!("{key}.index")].to_vec1().unwrap();
        let want: Vec<f32> = samples[&format!("{key}.delta")].to_vec1().unwrap();
        let g: Vec<f32> = reference_grads[key]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let g_max = g.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
        for (&i, &w) in index.iter().zip(&want) {
            let e = f64::from(ours[i as usize] - w).abs() / STEP_LR;
            let what = || format!("{key}[{i}]: ours {} ref {w}", ours[i as usize]);
            if e > d.worst_sample.0 {
                d.worst_sample = (e, what());
            }
            d.sampled += 1;
            if f64::from(g[i as usize]).abs() >= DETERMINED * g_max {
                d.determined += 1;
                if e > d.worst_determined.0 {
                    d.worst_determined = (e, what());
                }
            }
        }
        let n = ours.len() as f64;
        let sum: f64 = ours.iter().map(|&v| f64::from(v)).sum();
        let abs_sum: f64 = ours.iter().map(|&v| f64::from(v).abs()).sum();
        for (got, field) in [(sum, "sum"), (abs_sum, "abs_sum")] {
            let e = (got - t[field].as_f64().unwrap()).abs() / (n * STEP_LR);
            if e > d.worst_sum.0 {
                d.worst_sum = (e, format!("{key} {field}"));
            }
        }
        let nonzero = ours.iter().filter(|&&v| v != 0.0).count() as u64;
        let want_nonzero = t["nonzero"].as_u64().unwrap();
        if nonzero != want_nonzero {
            d.nonzero_mismatch
                .push(format!("{key}: {nonzero} vs {want_nonzero}"));
        }
    }
    d
}

fn check_step(name: &str, ckpt: &str, case: &str) {
    let dir = repo().join("fixtures/train/step");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("step.json")).unwrap()).unwrap();
    let want_norm = meta["cases"][name]["grad_norm"].as_f64().unwrap();
    assert_eq!(meta["lr"].as_f64(), Some(STEP_LR));

    // (1) The reference gradients through gar-train's clip + AdamW: the optimiser alone.
    let dev = Device::Cpu;
    let reference = candle_core::safetensors::load(
        repo()
            .join("fixtures/train/loss")
            .join(name)
            .join("grads.safetensors"),
        &dev,
    )
    .unwrap();
    let (norm, deltas) = rust_step(ckpt, &reference);
    let d = compare_step(name, &deltas, &reference);
    let norm_rel = (f64::from(norm) - want_norm).abs() / want_norm;
    println!(
        "{name}, reference gradients: norm rel {norm_rel:.1e}; worst sample {:.2e} lr ({}); worst sum {:.2e} lr ({}); nonzero mismatches {:?}",
        d.worst_sample.0, d.worst_sample.1, d.worst_sum.0, d.worst_sum.1, d.nonzero_mismatch
    );
    assert!(norm_rel < 1e-6, "{name}: grad norm {norm} vs {want_norm}");
    assert!(d.worst_sample.0 < 1e-6, "{name}: {}", d.worst_sample.1);
    assert!(d.worst_sum.0 < 1e-6, "{name}: {}", d.worst_sum.1);
    assert!(d.nonzero_mismatch.is_empty(), "{:?}", d.nonzero_mismatch);

    // (2) Our own gradients (forward + backward) through the same step: the whole chain.
    let model = TrainModel::load(repo().join("fixtures/checkpoints").join(ckpt), &dev).unwrap();
    let out = model.loss(&encoded(ckpt, case)).unwrap();
    let grads = out.loss.backward().unwrap();
    let ours: HashMap<String, Tensor> = model.gradients(&grads).unwrap().into_iter().collect();
    drop(model);
    let (norm, deltas) = rust_step(ckpt, &ours);
    let d = compare_step(name, &deltas, &reference);
    let norm_rel = (f64::from(norm) - want_norm).abs() / want_norm;
    println!(
        "{name}, our gradients: norm rel {norm_rel:.1e}; {}/{} samples determined, worst {:.2e} lr ({}); \
         worst of all samples {:.2e} lr ({}); worst sum {:.2e} lr ({}); nonzero mismatches {:?}",
        d.determined, d.sampled, d.worst_determined.0, d.worst_determined.1, d.worst_sample.0,
        d.worst_sample.1, d.worst_sum.0, d.worst_sum.1, d.nonzero_mismatch
    );
    assert!(norm_rel < 1e-4, "{name}: grad norm {norm} vs {want_norm}");
    assert!(
        d.worst_determined.0 < 1e-4,
        "{name}: update off where the gradient's sign is certain: {}",
        d.worst_determined.1
    );
    // A near-zero gradient entry may flip its update (±lr); the per-tensor sums average that out.
    assert!(d.worst_sum.0 < 1e-3, "{name}: {}", d.worst_sum.1);
}

#[test]
fn one_adamw_step_matches_torch_tiny_pe_l() {
    let (n, c, s) = CASES[0];
    check_step(n, c, s);
}

#[test]
fn one_adamw_step_matches_torch_tiny_pe_g() {
    let (n, c, s) = CASES[1];
    check_step(n, c, s);
}
