//! bf16 training of the GAR forward (spec §4.7, first part): weights stored as bf16 `Var`s, forward and
//! backward in bf16, loss on f32-upcast logits, AdamW on f32 masters with the bf16 weights written back
//! rounded. Checked against our f32 training forward on the tiny checkpoint, not against a PyTorch
//! bf16 run (see the bounds below for why that comparison says little on these random weights).

use candle_core::{DType, Device, Tensor};
use gar_train::forward::TrainModel;
use gar_train::optim::{AdamW, AdamWConfig};

#[path = "common/one_region.rs"]
mod one_region;
use one_region::{checkpoint, encoded};

fn f32s(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    if aa == 0.0 && bb == 0.0 {
        return 1.0;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(f64::MIN_POSITIVE)
}

#[test]
fn bf16_training_forward_tracks_f32_and_trains_on_f32_masters() {
    let dev = Device::Cpu;
    let sample = encoded();
    let f32_model = TrainModel::load(checkpoint(), &dev).unwrap();
    let out = f32_model.loss(&sample).unwrap();
    let loss32 = f64::from(out.loss.to_scalar::<f32>().unwrap());
    let grads32 = f32_model.gradients(&out.loss.backward().unwrap()).unwrap();

    let model = TrainModel::load_as(checkpoint(), DType::BF16, &dev).unwrap();
    assert!(model
        .named_vars()
        .iter()
        .all(|(_, v)| v.dtype() == DType::BF16));
    let out = model.loss(&sample).unwrap();
    assert_eq!(out.loss.dtype(), DType::F32);
    let loss16 = f64::from(out.loss.to_scalar::<f32>().unwrap());
    let grads16 = model.gradients(&out.loss.backward().unwrap()).unwrap();
    let rel = (loss16 - loss32).abs() / loss32;
    let mut worst = (1f64, String::new());
    for ((name, g16), (_, g32)) in grads16.iter().zip(&grads32) {
        assert_eq!(g16.dtype(), DType::BF16, "{name}");
        let c = cosine(&f32s(g16), &f32s(g32));
        if c < worst.0 {
            worst = (c, name.clone());
        }
    }
    println!(
        "loss f32 {loss32:.5}, bf16 {loss16:.5} (relative {rel:.2e}); lowest gradient cosine {:.5} ({})",
        worst.0, worst.1
    );
    // Measured: loss 2.3e-2 relative, lowest cosine 0.73 (cls_token), most tensors 0.9–0.99. The
    // random tiny checkpoint is ill-conditioned for bf16 (logits in the hundreds): PyTorch's own bf16
    // run of the train_parity pe-l case is 1.9e-2 off its f32 loss with a median gradient cosine of
    // 0.2, so these bounds only catch a broken bf16 path (wrong dtype plumbing, lost gradients).
    assert!(rel < 5e-2, "bf16 loss {loss16} vs f32 {loss32}");
    assert!(
        worst.0 > 0.5,
        "gradient of {} off: cosine {}",
        worst.1,
        worst.0
    );

    // Four AdamW steps: the bf16 weights are the f32 masters rounded; the loss falls.
    let vars = model.named_vars().to_vec();
    let mut opt = AdamW::new(AdamWConfig::default(), vars.clone()).unwrap();
    let mut losses = vec![loss16];
    let mut grads = grads16;
    for _ in 0..4 {
        let g: Vec<Tensor> = grads.iter().map(|(_, g)| g.clone()).collect();
        opt.apply(&g, 1e-3).unwrap();
        let out = model.loss(&sample).unwrap();
        losses.push(f64::from(out.loss.to_scalar::<f32>().unwrap()));
        grads = model.gradients(&out.loss.backward().unwrap()).unwrap();
    }
    for p in &opt.params {
        let master = p.master.as_ref().expect("bf16 parameters keep f32 masters");
        assert_eq!(
            f32s(&master.to_dtype(DType::BF16).unwrap()),
            f32s(p.var.as_tensor()),
            "{}",
            p.name
        );
    }
    println!("bf16 losses: {losses:?}");
    // Measured 198.2 → 191.5 → 172.9 → 184.4 → 163.4 (full model, unclipped, lr 1e-3).
    assert!(losses[4] < 0.9 * losses[0], "{losses:?}");
}
