//! The loop end to end on the tiny model: resume is bit-identical, simulated ranks equal
//! accumulation, freezing keeps weights fixed, the loss goes down.

use candle_core::{DType, Device, Tensor};
use gar_train::allreduce::{LocalGroup, SingleProcess};
use gar_train::checkpoint;
use gar_train::choices::SeededChoices;
use gar_train::construct::{construct, ConstructConfig};
use gar_train::conversation::SampleSpec;
use gar_train::data::{Message, RawRow, RowSource, VecSource};
use gar_train::freeze::Freeze;
use gar_train::model::{LossModel, TinyModel};
use gar_train::optim::AdamWConfig;
use gar_train::trainer::{LoopSettings, Trainer};
use image::{GrayImage, Rgb, RgbImage};
use std::sync::Arc;

fn rows(n: usize) -> Vec<RawRow> {
    (0..n)
        .map(|i| {
            let (w, h) = (24 + (i as u32 % 3) * 4, 20);
            let img = RgbImage::from_fn(w, h, |x, y| {
                Rgb([
                    (x * 9 + i as u32 * 31) as u8,
                    (y * 11) as u8,
                    (i * 50) as u8,
                ])
            });
            let masks: Vec<GrayImage> = (0..1 + i % 3)
                .map(|k| {
                    GrayImage::from_fn(w, h, |x, y| {
                        image::Luma([u8::from(x as usize % 5 == k || y < 3 + k as u32)])
                    })
                })
                .collect();
            let mut conversations = Vec::new();
            for k in 0..masks.len() {
                conversations.push(Message {
                    from: "human".into(),
                    value: "<image>\nWhat?".into(),
                });
                conversations.push(Message {
                    from: "gpt".into(),
                    value: format!("object {} of row {i}. It is red.", k * 7 + i),
                });
            }
            RawRow {
                image: Some(img),
                conversations,
                masks: Some(masks),
            }
        })
        .collect()
}

fn settings(steps: usize, accumulation: usize) -> LoopSettings {
    LoopSettings {
        lr: 5e-2,
        warmup_ratio: 0.2,
        cosine: true,
        steps,
        micro_batch: 1,
        accumulation,
        clip: 1.0,
        seed: 7,
        adamw: AdamWConfig {
            weight_decay: 0.01,
            ..Default::default()
        },
        freeze: Freeze::default(),
        frozen_names: Vec::new(),
        construct: ConstructConfig::default(),
    }
}

fn trainer(dtype: DType, s: LoopSettings) -> Trainer<TinyModel> {
    let model = TinyModel::new(3, dtype, &Device::Cpu).unwrap();
    Trainer::new(
        model,
        Arc::new(VecSource(rows(11))),
        Box::new(SingleProcess),
        s,
    )
    .unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn snapshot(t: &Trainer<TinyModel>) -> Vec<Vec<u32>> {
    let mut out: Vec<Vec<u32>> = t
        .model
        .vars()
        .iter()
        .map(|(_, v)| bits(v.as_tensor()))
        .collect();
    for p in &t.opt.params {
        out.push(bits(&p.master_weight().unwrap()));
        out.push(bits(&p.exp_avg));
        out.push(bits(&p.exp_avg_sq));
    }
    out
}

#[test]
fn six_steps_straight_equal_three_plus_resume_plus_three() {
    let dir = std::env::temp_dir().join(format!("gar-train-resume-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut straight = trainer(DType::BF16, settings(6, 2));
    let logs: Vec<_> = (0..6).map(|_| straight.step().unwrap()).collect();

    let mut first = trainer(DType::BF16, settings(6, 2));
    for _ in 0..3 {
        first.step().unwrap();
    }
    let ck = checkpoint::checkpoint_dir(&dir, 3);
    checkpoint::save(&first, &ck).unwrap();
    drop(first);
    assert_eq!(checkpoint::latest(&dir), Some(ck.clone()));
    // A fresh model with different initial weights: everything must come from the checkpoint.
    let model = TinyModel::new(99, DType::BF16, &Device::Cpu).unwrap();
    let mut resumed = Trainer::new(
        model,
        Arc::new(VecSource(rows(11))),
        Box::new(SingleProcess),
        settings(6, 2),
    )
    .unwrap();
    checkpoint::load(&mut resumed, &ck).unwrap();
    let resumed_logs: Vec<_> = (0..3).map(|_| resumed.step().unwrap()).collect();
    assert!(resumed.is_done());
    for (a, b) in logs[3..].iter().zip(&resumed_logs) {
        assert_eq!(
            (
                a.step,
                a.loss.to_bits(),
                a.lr.to_bits(),
                a.grad_norm.to_bits()
            ),
            (
                b.step,
                b.loss.to_bits(),
                b.lr.to_bits(),
                b.grad_norm.to_bits()
            )
        );
    }
    assert_eq!(snapshot(&straight), snapshot(&resumed));
    assert_eq!(straight.state, resumed.state);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn fixed_samples(n: usize) -> Vec<SampleSpec> {
    let rows = rows(n);
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            construct(
                r,
                &ConstructConfig::default(),
                &mut SeededChoices::new(i as u64),
            )
            .unwrap()
        })
        .collect()
}

fn weights(t: &Trainer<TinyModel>) -> Vec<Vec<f32>> {
    t.model
        .vars()
        .iter()
        .map(|(_, v)| {
            v.as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

#[test]
fn simulated_ranks_equal_one_rank_with_accumulation() {
    const N: usize = 3;
    let samples = fixed_samples(2 * N);
    // One rank, accumulation N: step k sees samples N·k .. N·k + N − 1 as its micro-batches.
    // GAR's schedule counts micro-iterations, so A = N and N ranks × A = 1 see different rates by
    // design; a constant rate isolates the gradient path.
    let flat = |a| LoopSettings {
        cosine: false,
        ..settings(2, a)
    };
    let mut single = trainer(DType::F32, flat(N));
    for k in 0..2 {
        let micro: Vec<Vec<SampleSpec>> =
            (0..N).map(|r| vec![samples[N * k + r].clone()]).collect();
        single.step_on(&micro).unwrap();
    }
    // N ranks (threads), accumulation 1: rank r sees sample N·k + r at step k.
    let groups = LocalGroup::new(N);
    let samples = Arc::new(samples);
    let handles: Vec<_> = groups
        .into_iter()
        .map(|g| {
            let samples = samples.clone();
            std::thread::spawn(move || {
                let r = gar_train::allreduce::AllReduce::rank(&g);
                let model = TinyModel::new(3, DType::F32, &Device::Cpu).unwrap();
                let mut t =
                    Trainer::new(model, Arc::new(VecSource(rows(11))), Box::new(g), flat(1))
                        .unwrap();
                for k in 0..2 {
                    t.step_on(&[vec![samples[N * k + r].clone()]]).unwrap();
                }
                weights(&t)
            })
        })
        .collect();
    let per_rank: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    // Ranks agree bit for bit with each other (same reduced gradient) …
    assert!(per_rank.iter().all(|w| *w == per_rank[0]));
    // … and with the single rank up to the summation order of the mean.
    let want = weights(&single);
    let mut worst = 0f32;
    for (a, b) in per_rank[0].iter().flatten().zip(want.iter().flatten()) {
        worst = worst.max((a - b).abs() / b.abs().max(1e-3));
    }
    assert!(worst < 1e-4, "max relative difference {worst}");
}

/// Adam is nearly invariant to a gradient scale, so check the reduced gradient itself too: the mean
/// over N simulated ranks equals the accumulation of `grad(loss / N)` over N micro-batches.
#[test]
fn all_reduce_mean_equals_accumulated_gradient() {
    use gar_train::accumulate::GradAccumulator;
    use gar_train::allreduce::AllReduce;
    const N: usize = 4;
    let samples = Arc::new(fixed_samples(N));
    let model = TinyModel::new(3, DType::F32, &Device::Cpu).unwrap();
    let vars: Vec<_> = model.vars().into_iter().map(|(_, v)| v).collect();
    let refs: Vec<_> = vars.iter().collect();
    let mut acc = GradAccumulator::new(vars.len(), N);
    for s in samples.iter() {
        let loss = (model.loss(std::slice::from_ref(s)).unwrap() / N as f64).unwrap();
        acc.add(&refs, &loss.backward().unwrap()).unwrap();
    }
    let want = acc.take(&refs).unwrap();
    let handles: Vec<_> = LocalGroup::new(N)
        .into_iter()
        .map(|g| {
            let samples = samples.clone();
            std::thread::spawn(move || {
                let model = TinyModel::new(3, DType::F32, &Device::Cpu).unwrap();
                let vars: Vec<_> = model.vars().into_iter().map(|(_, v)| v).collect();
                let grads = model
                    .loss(std::slice::from_ref(&samples[g.rank()]))
                    .unwrap()
                    .backward()
                    .unwrap();
                let mut gs: Vec<Tensor> = vars
                    .iter()
                    .map(|v| grads.get(v.as_tensor()).unwrap().clone())
                    .collect();
                g.all_reduce_mean(&mut gs).unwrap();
                gs
            })
        })
        .collect();
    for h in handles {
        let got = h.join().unwrap();
        for (a, b) in got.iter().zip(&want) {
            let d = (a - b)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let m = b
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(d <= 1e-6 * m.max(1e-6), "difference {d} at scale {m}");
        }
    }
}

#[test]
fn frozen_groups_do_not_move_and_loss_decreases() {
    let mut s = settings(30, 1);
    s.freeze = Freeze {
        vision_tower: true,
        embeddings: true,
        ..Default::default()
    };
    let mut t = trainer(DType::F32, s);
    let before = weights(&t);
    let names: Vec<String> = t.model.vars().iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        t.opt.params.len(),
        3,
        "vision tower, embed_tokens and lm_head are frozen"
    );
    let samples = fixed_samples(4);
    let loss_of =
        |t: &Trainer<TinyModel>| t.model.loss(&samples).unwrap().to_scalar::<f32>().unwrap();
    let l0 = loss_of(&t);
    for _ in 0..30 {
        t.step().unwrap();
    }
    let after = weights(&t);
    for ((n, a), b) in names.iter().zip(&after).zip(&before) {
        let frozen =
            n.contains("vision_tower") || n.contains("embed_tokens") || n.contains("lm_head");
        assert_eq!(a == b, frozen, "{n}");
    }
    let l1 = loss_of(&t);
    assert!(l1 < l0, "loss {l0} → {l1}");
}

#[test]
fn failed_rows_are_replaced() {
    let mut data = rows(4);
    data[1].image = None;
    data[2].masks.as_mut().unwrap()[0] = GrayImage::new(3, 3);
    let source = VecSource(data);
    assert_eq!(source.len(), 4);
    let model = TinyModel::new(3, DType::F32, &Device::Cpu).unwrap();
    let mut t = Trainer::new(
        model,
        Arc::new(source),
        Box::new(SingleProcess),
        settings(8, 1),
    )
    .unwrap();
    let resampled: usize = (0..8).map(|_| t.step().unwrap().resampled).sum();
    assert!(resampled > 0);
}

#[test]
fn lora_trains_adapters_only_and_merges_exactly() {
    use gar_train::lora::{Lora, LoraConfig};
    let base = TinyModel::new(3, DType::F32, &Device::Cpu).unwrap();
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: vec!["layers.0".into()],
    };
    let lora = Lora::new(&cfg, &base.vars(), 5).unwrap();
    let targeted = lora.targeted();
    assert_eq!(
        targeted,
        vec!["mllm.model.language_model.layers.0.weight".to_string()]
    );
    let model = base.with_lora(lora);
    let mut s = settings(20, 1);
    // Freezing the LLM group must not freeze the adapters that live under its keys.
    s.freeze = Freeze {
        llm: true,
        ..Default::default()
    };
    s.frozen_names = targeted.clone();
    let mut t = Trainer::new(
        model,
        Arc::new(VecSource(rows(11))),
        Box::new(SingleProcess),
        s,
    )
    .unwrap();
    let names: Vec<String> = t.opt.params.iter().map(|p| p.name.clone()).collect();
    assert!(
        names.iter().any(|n| n.ends_with(".lora_A"))
            && names.iter().any(|n| n.ends_with(".lora_B"))
    );
    assert!(!names.contains(&targeted[0]));
    let base_before = t
        .model
        .vars()
        .into_iter()
        .find(|(n, _)| *n == targeted[0])
        .unwrap()
        .1
        .as_tensor()
        .copy()
        .unwrap();
    for _ in 0..20 {
        t.step().unwrap();
    }
    let vars = t.model.vars();
    let base_after = vars
        .iter()
        .find(|(n, _)| *n == targeted[0])
        .unwrap()
        .1
        .as_tensor();
    assert_eq!(
        bits(&base_before),
        bits(base_after),
        "the adapted base weight stays frozen"
    );
    let b = vars
        .iter()
        .find(|(n, _)| n.ends_with(".lora_B"))
        .unwrap()
        .1
        .as_tensor();
    assert!(
        b.abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            > 0.0,
        "B moved away from zero"
    );
    // Export: merged weights in a plain model give the adapted model's loss.
    let mut weights: std::collections::HashMap<String, Tensor> = vars
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    t.model.lora().unwrap().merge(&mut weights).unwrap();
    assert_eq!(weights.len(), gar_train::model::TINY_NAMES.len());
    let plain = TinyModel::from_vars(
        gar_train::model::TINY_NAMES
            .iter()
            .map(|n| {
                (
                    n.to_string(),
                    candle_core::Var::from_tensor(&weights[*n]).unwrap(),
                )
            })
            .collect(),
    );
    let samples = fixed_samples(4);
    let a = t.model.loss(&samples).unwrap().to_scalar::<f32>().unwrap();
    let b = plain.loss(&samples).unwrap().to_scalar::<f32>().unwrap();
    assert!((a - b).abs() <= 1e-6 * a.abs(), "{a} vs {b}");
}
