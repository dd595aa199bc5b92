//! Accuracy of weight quantization on a real-layout checkpoint (e.g. the GAR-1B-shaped random-weight one that
//! `tools/reference/bench/make_gar1b_checkpoint.py` writes): the language model runs in f32 and quantized on
//! the same prompt (pseudo-random token ids), prefill then greedy decode teacher-forced on the f32 model's
//! tokens, and the logits are compared at every step (cosine, top-1 agreement).
//!
//! `cargo run --release -p gar-models --example quant_accuracy -- DIR [q8|q4|bf16] [PROMPT_TOKENS] [STEPS]`
//!
//! `bf16` compares dense bf16 compute with f32 instead: a yardstick for how strongly the checkpoint amplifies
//! small perturbations (the random test checkpoints are built to have sharp attention and large logits).
//!
//! Prefill runs the quantized model's many-row path (dequantized weights, f32 activations), the decode
//! steps its few-row kernel (activations quantized per block too), so both paths are measured.

use candle_core::{DType, Device, IndexOp, Result, Tensor};
use gar_models::{GarModel, GarQuirks, Llama, Quant, QuantReport};

fn cosine(a: &Tensor, b: &Tensor) -> Result<f32> {
    let dot = (a * b)?.sum_all()?.to_scalar::<f32>()?;
    let na = a.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let nb = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    Ok(dot / (na * nb))
}

fn argmax(logits: &Tensor) -> Result<u32> {
    logits.flatten_all()?.argmax(0)?.to_scalar::<u32>()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args
        .first()
        .expect("usage: quant_accuracy DIR [q8|q4] [PROMPT_TOKENS] [STEPS]");
    let mode = args.get(1).map_or("q8", |s| s.as_str());
    let prompt: usize = args.get(2).map_or(Ok(512), |s| s.parse())?;
    let steps: usize = args.get(3).map_or(Ok(32), |s| s.parse())?;

    let dev = Device::Cpu;
    let model = GarModel::load(dir, DType::F32, &dev, GarQuirks::default())?;
    let dense: Llama = model.llama().clone();
    let (quantized, report) = if mode == "bf16" {
        let m = GarModel::load(dir, DType::BF16, &dev, GarQuirks::default())?;
        (m.llama().clone(), QuantReport::default())
    } else {
        let quant: Quant = mode.parse().map_err(anyhow::Error::msg)?;
        let mut q = dense.clone(); // shares the f32 tensors until quantize replaces them
        let report = q.quantize(quant)?;
        (q, report)
    };
    let vocab = dense.config().vocab_size as u64;
    // A fixed pseudo-random prompt (LCG), the same for both models.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let ids: Vec<u32> = (0..prompt)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab) as u32
        })
        .collect();

    let mut caches = [
        dense.new_cache(prompt + steps),
        quantized.new_cache(prompt + steps),
    ];
    let mut logits = Vec::new();
    for (m, cache) in [&dense, &quantized].into_iter().zip(caches.iter_mut()) {
        let h = m.forward(&m.embed(&ids)?, 0, cache)?;
        logits.push(m.last_logits(&h)?.i(0)?);
    }
    let prefill_cos = cosine(&logits[0], &logits[1])?;
    let mut cosines = Vec::new();
    let mut agree = 0;
    for step in 0..steps {
        let (tf, tq) = (argmax(&logits[0])?, argmax(&logits[1])?);
        agree += usize::from(tf == tq);
        if step > 0 {
            cosines.push(cosine(&logits[0], &logits[1])?);
        }
        // Teacher forcing: both models continue with the f32 model's token.
        for (k, (m, cache)) in [&dense, &quantized]
            .into_iter()
            .zip(caches.iter_mut())
            .enumerate()
        {
            let h = m.forward(&m.embed(&[tf])?, prompt + step, cache)?;
            logits[k] = m.last_logits(&h)?.i(0)?;
        }
    }
    let min = cosines.iter().cloned().fold(f32::INFINITY, f32::min);
    let mean = cosines.iter().sum::<f32>() / cosines.len().max(1) as f32;
    println!(
        "{}",
        serde_json::json!({
            "model": dir, "mode": mode, "formats": report.formats,
            "quantized_linears": report.quantized, "prompt_tokens": prompt, "steps": steps,
            "prefill_logit_cosine": prefill_cos,
            "decode_logit_cosine_min": min, "decode_logit_cosine_mean": mean,
            "top1_agreement": format!("{agree}/{steps}"),
        })
    );
    Ok(())
}
