//! Sample encoding and the differentiable training forward on the tiny fixture checkpoints: the encoded
//! layout (single BOS, crop runs, supervised answers), the training loss equal to the inference path's,
//! gradients reaching every tensor, placeholder rows, and autograd against finite differences.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use gar_models::{GarModel, GarQuirks};
use gar_train::conversation::{crop_marker, RegionMask, SampleSpec, Turn};
use gar_train::encode::{encode, training_processor, EncodeOptions, EncodedSample, IGNORE_INDEX};
use gar_train::forward::{run_logits, TrainModel};
use gar_train::loss::causal_lm_loss;
use image::{GrayImage, Luma};

#[path = "common/one_region.rs"]
#[allow(dead_code)]
mod one_region;

fn checkpoint(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/checkpoints")
        .join(name)
}

/// A deterministic 96×64 picture with two regions: a rectangle and a disc.
fn sample(prompts: [usize; 2], turns: Vec<Turn>) -> SampleSpec {
    let (image, rect) = (one_region::picture(), one_region::box_mask());
    let (w, h) = image.dimensions();
    let disc = GrayImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as i32 - 70, y as i32 - 40);
        Luma([if dx * dx + dy * dy < 150 { 255 } else { 0 }])
    });
    SampleSpec {
        image,
        regions: vec![
            RegionMask {
                prompt_index: prompts[0],
                mask: rect,
            },
            RegionMask {
                prompt_index: prompts[1],
                mask: disc,
            },
        ],
        turns,
    }
}

fn relation_turns(a: usize, b: usize) -> Vec<Turn> {
    vec![
        Turn {
            user: format!(
                "<image>\nThere are some objects I am curious about: <Prompt{a}>; <Prompt{b}>; \n<Prompt{a}>: {}\n<Prompt{b}>: {}\n\nWhat is left of what?",
                crop_marker(a),
                crop_marker(b)
            ),
            assistant: format!("<Prompt{a}> is left of <Prompt{b}>."),
        },
        Turn {
            user: "And the colour?".into(),
            assistant: "Both are red.".into(),
        },
    ]
}

/// Two tiles (thumbnail + one grid tile) keep the model tests to seconds.
const SMALL: EncodeOptions = EncodeOptions {
    mask_resample: gar_train::encode::TrainMaskResample::Bicubic,
    max_num_tiles: Some(1),
};

fn encoded(ckpt: &str, prompts: [usize; 2]) -> EncodedSample {
    let proc = training_processor(checkpoint(ckpt), SMALL).unwrap();
    let s = encode(
        &sample(prompts, relation_turns(prompts[0], prompts[1])),
        &proc,
        SMALL,
    )
    .unwrap();
    assert_eq!(s.num_tiles, 2);
    s
}

#[test]
fn encoding_layout_follows_the_training_rules() {
    let proc = training_processor(checkpoint("tiny-pe-l"), SMALL).unwrap();
    let s = encode(&sample([2, 0], relation_turns(2, 0)), &proc, SMALL).unwrap();
    let tok = proc.special_tokens();
    assert_eq!(s.input_ids[0], tok.bos);
    assert_eq!(
        s.input_ids.iter().filter(|&&t| t == tok.bos).count(),
        1,
        "single BOS"
    );
    let n_image = s.input_ids.iter().filter(|&&t| t == tok.image).count();
    assert_eq!(n_image, proc.tokens_per_tile() * s.num_tiles);
    for r in &s.regions {
        let pos: Vec<usize> = (0..s.input_ids.len())
            .filter(|&p| s.input_ids[p] == r.crop_token_id)
            .collect();
        assert_eq!(pos.len(), 256);
        assert_eq!(pos[255] - pos[0], 255, "one contiguous run");
        assert!(pos.iter().all(|&p| s.labels[p] == IGNORE_INDEX));
    }
    // Regions come in prompt order with the crop token of their K and boxes of their own mask.
    assert_eq!(
        s.regions.iter().map(|r| r.prompt_index).collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert_eq!(
        s.regions[0].bbox,
        [58.0 / 96.0, 28.0 / 64.0, 82.0 / 96.0, 52.0 / 64.0]
    );
    assert_eq!(
        s.regions[1].bbox,
        [10.0 / 96.0, 8.0 / 64.0, 39.0 / 96.0, 29.0 / 64.0]
    );
    // Supervised = both answers and their <|eot_id|>, nothing else.
    let eot = proc.tokenizer().token_to_id("<|eot_id|>").unwrap();
    let kept: Vec<u32> = s
        .labels
        .iter()
        .filter(|&&l| l != IGNORE_INDEX)
        .map(|&l| l as u32)
        .collect();
    let answer = |t: &str| {
        proc.tokenizer()
            .encode(t, false)
            .unwrap()
            .get_ids()
            .to_vec()
    };
    let mut want = answer("<Prompt2> is left of <Prompt0>.");
    want.push(eot);
    want.extend(answer("Both are red."));
    want.push(eot);
    assert_eq!(kept, want);
    assert_eq!(s.supervised_tokens(), want.len());
    // Bicubic resampling reaches past the nearest-resampled region on its boundary (§2.7 item 5).
    let proc_n = training_processor(
        checkpoint("tiny-pe-l"),
        EncodeOptions {
            mask_resample: gar_train::encode::TrainMaskResample::Nearest,
            max_num_tiles: Some(1),
        },
    )
    .unwrap();
    let n = encode(&sample([2, 0], relation_turns(2, 0)), &proc_n, SMALL).unwrap();
    assert_eq!(n.input_ids, s.input_ids);
    let inside = |e: &EncodedSample| e.region_mask().iter().filter(|&&v| v > 0.0).count();
    assert!(
        inside(&s) > inside(&n),
        "bicubic {} vs nearest {}",
        inside(&s),
        inside(&n)
    );
}

#[test]
fn bad_samples_are_rejected() {
    let proc = training_processor(checkpoint("tiny-pe-l"), SMALL).unwrap();
    // Crop marker of a prompt without a mask.
    let mut s = sample([0, 1], relation_turns(0, 1));
    s.turns[1].user = format!("{} again?", crop_marker(3));
    assert!(encode(&s, &proc, SMALL).is_err());
    // Mask of another size.
    let mut s = sample([0, 1], relation_turns(0, 1));
    s.regions[0].mask = GrayImage::new(10, 10);
    assert!(encode(&s, &proc, SMALL)
        .unwrap_err()
        .to_string()
        .contains("10x10"));
    // No turns.
    let mut s = sample([0, 1], relation_turns(0, 1));
    s.turns.clear();
    assert!(encode(&s, &proc, SMALL).is_err());
}

/// The training forward (Vars, differentiable compositions) gives the inference path's loss (plain
/// tensors, fused kernels).
fn check_loss_matches_inference(ckpt: &str, prompts: [usize; 2]) {
    let dev = Device::Cpu;
    let s = encoded(ckpt, prompts);
    let train = TrainModel::load(checkpoint(ckpt), &dev).unwrap();
    let out = train.loss(&s).unwrap();
    let loss = out.loss.to_scalar::<f32>().unwrap();
    let infer = GarModel::load(checkpoint(ckpt), DType::F32, &dev, GarQuirks::default()).unwrap();
    let ref_loss = causal_lm_loss(&run_logits(&infer, &s).unwrap(), &s.labels)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let rel = ((loss - ref_loss) / ref_loss).abs();
    assert!(
        loss.is_finite() && rel < 1e-5,
        "{ckpt}: train {loss} vs inference {ref_loss}"
    );
    assert_eq!(out.supervised_tokens, s.supervised_tokens());
}

#[test]
fn training_loss_equals_inference_loss_tied() {
    check_loss_matches_inference("tiny-pe-l", [0, 1]);
}

#[test]
fn training_loss_equals_inference_loss_untied() {
    check_loss_matches_inference("tiny-pe-g", [2, 1]);
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn row_max(t: &Tensor, row: u32) -> f32 {
    max_abs(&t.get(row as usize).unwrap())
}

#[test]
fn every_tensor_gets_a_gradient_and_placeholders_follow_8_2() {
    let dev = Device::Cpu;
    for (ckpt, tied) in [("tiny-pe-l", true), ("tiny-pe-g", false)] {
        let s = encoded(ckpt, [1, 0]);
        let train = TrainModel::load(checkpoint(ckpt), &dev).unwrap();
        let grads = train.loss(&s).unwrap().loss.backward().unwrap();
        let grads = train.gradients(&grads).unwrap();
        assert_eq!(grads.len(), train.named_vars().len());
        for (name, g) in &grads {
            assert!(max_abs(g) > 0.0, "{ckpt}: {name} has no gradient");
        }
        let embed = &grads
            .iter()
            .find(|(n, _)| n.ends_with("language_model.embed_tokens.weight"))
            .unwrap()
            .1;
        let cfg = train.model().config();
        let image = cfg.image_token_id;
        let crop = s.regions[0].crop_token_id;
        let text = s.input_ids[1];
        assert!(
            row_max(embed, text) > 0.0,
            "{ckpt}: a looked-up text row gets gradient"
        );
        if tied {
            // The LM head still reaches every row of the shared matrix.
            assert!(
                row_max(embed, image) > 0.0,
                "{ckpt}: tied image row {}",
                row_max(embed, image)
            );
            assert!(row_max(embed, crop) > 0.0, "{ckpt}: tied crop row {crop}");
        } else {
            // Overwritten positions send nothing to their embedding rows.
            assert_eq!(row_max(embed, image), 0.0, "{ckpt}: image row");
            assert_eq!(row_max(embed, crop), 0.0, "{ckpt}: crop row");
        }
    }
}

/// Autograd against central differences on the largest-gradient entry of a few tensors along the
/// whole path (LM head / embeddings, decoder, projector, vision tower, mask conv).
#[test]
fn gradients_match_finite_differences() {
    let dev = Device::Cpu;
    let s = encoded("tiny-pe-g", [0, 1]);
    let train = TrainModel::load(checkpoint("tiny-pe-g"), &dev).unwrap();
    let grads = train.loss(&s).unwrap().loss.backward().unwrap();
    let grads = train.gradients(&grads).unwrap();
    let loss_at = || f64::from(train.loss(&s).unwrap().loss.to_scalar::<f32>().unwrap());
    for key in [
        "mllm.lm_head.weight",
        "mllm.model.language_model.layers.0.self_attn.q_proj.weight",
        "mllm.model.multi_modal_projector.linear_1.weight",
        "mllm.model.vision_tower.timm_model.blocks.0.attn.qkv.weight",
        "mask_patch_embedding.weight",
    ] {
        let (_, var) = train
            .named_vars()
            .iter()
            .find(|(n, _)| n == key)
            .unwrap_or_else(|| panic!("{key}"));
        let g = grads
            .iter()
            .find(|(n, _)| n == key)
            .unwrap()
            .1
            .flatten_all()
            .unwrap();
        let gv = g.to_vec1::<f32>().unwrap();
        let (i, &gi) = gv
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
            .unwrap();
        let orig = var
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // A step that moves the loss by ~1e-3: small enough for the linear regime, large enough for f32.
        let eps = (1e-3 / gi.abs()).clamp(1e-4, 1e-2);
        let set = |delta: f32| {
            let mut v = orig.clone();
            v[i] += delta;
            var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                .unwrap();
        };
        set(eps);
        let up = loss_at();
        set(-eps);
        let down = loss_at();
        set(0.0);
        let fd = (up - down) / (2.0 * f64::from(eps));
        let rel = (fd - f64::from(gi)).abs() / f64::from(gi).abs();
        assert!(
            rel < 2e-2,
            "{key}[{i}]: autograd {gi} vs finite difference {fd}"
        );
    }
}
