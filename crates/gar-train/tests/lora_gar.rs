//! LoRA in the GAR training forward: adapters `W + (alpha/rank)·B·A` on the Llama linears of the
//! tiny checkpoint. Zero-initialised B gives exactly the base loss, gradients reach B at once and A
//! after a step, the base weights get no gradient and never move, and a few AdamW steps on the
//! adapters alone lower the loss.

use candle_core::{Device, Tensor};
use gar_train::forward::TrainModel;
use gar_train::lora::{Lora, LoraConfig};
use gar_train::optim::{AdamW, AdamWConfig};

#[path = "common/one_region.rs"]
mod one_region;
use one_region::{checkpoint, encoded};

fn lora_config() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        targets: [
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        ]
        .map(String::from)
        .to_vec(),
    }
}

fn scalar(t: &Tensor) -> f32 {
    t.to_scalar::<f32>().unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn lora_starts_at_the_base_loss_trains_the_adapters_only_and_lowers_the_loss() {
    let dev = Device::Cpu;
    let sample = encoded();
    let base = TrainModel::load(checkpoint(), &dev).unwrap();
    let base_loss = scalar(&base.loss(&sample).unwrap().loss);

    let model = TrainModel::load(checkpoint(), &dev).unwrap();
    let lora = Lora::new(&lora_config(), model.named_vars(), 7).unwrap();
    // 2 layers × 7 linears.
    assert_eq!(lora.adapters.len(), 14);
    let model = model.with_lora(lora).unwrap();
    let adapters = model.lora().unwrap().vars();
    let before: Vec<(String, Vec<f32>)> = model
        .named_vars()
        .iter()
        .map(|(n, v)| (n.clone(), values(v.as_tensor())))
        .collect();

    // B = 0: the adapted weights are the base weights bit for bit, so is the loss.
    let out = model.loss(&sample).unwrap();
    let loss0 = scalar(&out.loss);
    assert_eq!(
        loss0.to_bits(),
        base_loss.to_bits(),
        "{loss0} vs {base_loss}"
    );

    // At B = 0, dL/dB = scale·dW·Aᵀ is non-zero and dL/dA = scale·Bᵀ·dW is zero; the adapted
    // bases are detached (no gradient), the other weights still get theirs.
    let grads = out.loss.backward().unwrap();
    for (name, var) in &adapters {
        let g = grads.get(var.as_tensor()).expect("adapter in the graph");
        let max = values(g).iter().fold(0f32, |m, v| m.max(v.abs()));
        if name.ends_with(".lora_B") {
            assert!(max > 0.0, "{name}: no gradient");
        } else {
            assert_eq!(max, 0.0, "{name}: gradient with B = 0");
        }
    }
    let targeted = model.lora().unwrap().targeted();
    for (name, var) in model.named_vars() {
        let got = grads.get(var.as_tensor());
        if targeted.contains(name) {
            assert!(got.is_none(), "{name}: the frozen base got a gradient");
        }
    }
    assert!(grads
        .get(
            model.named_vars()[model
                .named_vars()
                .iter()
                .position(|(n, _)| n == "mask_patch_embedding.weight")
                .unwrap()]
            .1
            .as_tensor()
        )
        .is_some());

    // AdamW on the adapters alone: the loss falls; A moves once B is non-zero.
    let mut opt = AdamW::new(AdamWConfig::default(), adapters.clone()).unwrap();
    let mut losses = vec![loss0];
    let mut grads = grads;
    for step in 0..5 {
        let g: Vec<Tensor> = adapters
            .iter()
            .map(|(_, v)| grads.get(v.as_tensor()).unwrap().clone())
            .collect();
        opt.apply(&g, 1e-2).unwrap();
        let out = model.loss(&sample).unwrap();
        losses.push(scalar(&out.loss));
        grads = out.loss.backward().unwrap();
        if step == 0 {
            let a_grad = adapters
                .iter()
                .filter(|(n, _)| n.ends_with(".lora_A"))
                .map(|(_, v)| values(grads.get(v.as_tensor()).unwrap()))
                .map(|g| g.iter().fold(0f32, |m, v| m.max(v.abs())))
                .fold(0f32, f32::max);
            assert!(a_grad > 0.0, "A gets no gradient after B moved");
        }
    }
    println!("LoRA losses: {losses:?}");
    assert!(
        losses[5] < 0.5 * losses[0],
        "five adapter steps did not lower the loss: {losses:?}"
    );
    // The checkpoint weights never moved.
    for ((name, var), (_, old)) in model.named_vars().iter().zip(&before) {
        assert_eq!(&values(var.as_tensor()), old, "{name} changed");
    }
}

/// An adapter for a key the checkpoint lacks is refused with a message.
#[test]
fn lora_for_a_missing_weight_is_refused() {
    let dev = Device::Cpu;
    let model = TrainModel::load(checkpoint(), &dev).unwrap();
    let other = TrainModel::load(checkpoint(), &dev).unwrap();
    let mut lora = Lora::new(&lora_config(), other.named_vars(), 1).unwrap();
    let (_, adapter) = lora.adapters.pop_first().unwrap();
    lora.adapters.insert(
        "mllm.model.language_model.layers.9.mlp.up_proj.weight".into(),
        adapter,
    );
    let err = model.with_lora(lora).err().expect("refused").to_string();
    assert!(err.contains("layers.9"), "{err}");
}
