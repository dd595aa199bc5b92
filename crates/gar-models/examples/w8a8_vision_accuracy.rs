//! Vision-tower features with the block linears on `nn::w8a8` (8-bit weights and activations) against f32,
//! on a checkpoint's vision tower and a deterministic tile: cosine and relative error of the last hidden
//! state, and the time of each; then the same with bf16 attention products added (the fast CPU mode), and
//! last the projector's output (before pooling) of the fast mode (int8 projector on the fast tower's
//! features) against the f32 projector on the f32 features.
//!
//! `cargo run --release -p gar-models --example w8a8_vision_accuracy -- DIR [TILES]`
use std::sync::Arc;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use gar_models::nn::attention::Products;
use gar_models::projector::Projector;
use gar_models::vision::VisionTower;
use gar_models::weights::Checkpoint;
use gar_models::GarConfig;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .expect("usage: w8a8_vision_accuracy DIR [TILES]");
    let tiles: usize = args.next().map_or(1, |s| s.parse().expect("tiles"));
    let cfg =
        GarConfig::from_file(format!("{dir}/config.json")).map_err(candle_core::Error::msg)?;
    let ckpt = Arc::new(Checkpoint::open_dir(&dir).map_err(candle_core::Error::msg)?);
    let dev = Device::Cpu;
    let vb = ckpt.var_builder(DType::F32, &dev);
    let vb = if cfg.weight_prefix.is_empty() {
        vb
    } else {
        vb.pp(&cfg.weight_prefix)
    };
    let projector_vb = vb.pp("model").pp("multi_modal_projector");
    let vb = vb.pp("model").pp("vision_tower").pp("timm_model");
    let (h, w) = cfg.vision.img_size;
    // A smooth deterministic image in [-1, 1] (random noise would make every patch alike).
    let pixels: Vec<f32> = (0..tiles * 3 * h * w)
        .map(|i| {
            let (x, y, c) = ((i % w) as f32, ((i / w) % h) as f32, (i / (h * w)) as f32);
            (0.02 * x + 0.03 * y + c).sin() * (0.011 * x * (c + 1.0)).cos()
        })
        .collect();
    let pixels = Tensor::from_vec(pixels, (tiles, 3, h, w), &dev)?;
    let dense = VisionTower::new(&cfg.vision, vb.clone())?;
    let t = Instant::now();
    let want = dense.forward(&pixels, None)?;
    let dense_s = t.elapsed().as_secs_f64();
    drop(dense);
    let mut quant = VisionTower::new(&cfg.vision, vb)?;
    let converted = quant.quantize_w8a8()?;
    let t = Instant::now();
    let got = quant.forward(&pixels, None)?;
    let quant_s = t.elapsed().as_secs_f64();
    let head_dim = cfg.vision.head_dim();
    let (cos, worst, err) = compare(&want, &got)?;
    // The fast CPU mode adds bf16 attention products (where the CPU has AVX-512 BF16).
    quant.set_attention_products(Products::Bf16);
    let bf16 = Products::Bf16.apply_to(head_dim);
    let t = Instant::now();
    let fast = quant.forward(&pixels, None)?;
    let fast_s = t.elapsed().as_secs_f64();
    let (fcos, fworst, ferr) = compare(&want, &fast)?;
    let patches = |x: &Tensor| -> Result<Tensor> {
        let n = x.dim(1)?;
        let prefix = cfg.vision.num_prefix_tokens();
        x.narrow(1, prefix, n - prefix)
    };
    let new_projector = || {
        Projector::new(
            cfg.vision.embed_dim,
            cfg.text.hidden_size,
            cfg.projector_pooling_ratio,
            projector_vb.clone(),
        )
    };
    let want_proj = new_projector()?.project(&patches(&want)?)?;
    let mut quant_projector = new_projector()?;
    let projector_converted = quant_projector.quantize_w8a8()?;
    let fast_proj = quant_projector.project(&patches(&fast)?)?;
    let (pcos, pworst, perr) = compare(&want_proj, &fast_proj)?;
    println!(
        "{{\"tiles\":{tiles},\"converted_linears\":{converted},\"cosine\":{cos},\"worst_token_cosine\":{worst},\"relative_error\":{err},\"f32_s\":{dense_s},\"w8a8_s\":{quant_s},\"bf16_attention\":{bf16},\"w8a8_bf16_attention\":{{\"cosine\":{fcos},\"worst_token_cosine\":{fworst},\"relative_error\":{ferr},\"s\":{fast_s}}},\"projector\":{{\"converted_linears\":{projector_converted},\"cosine\":{pcos},\"worst_token_cosine\":{pworst},\"relative_error\":{perr}}}}}"
    );
    Ok(())
}

/// Cosine over all features, the worst cosine over output tokens, and the relative L2 error of `got`.
fn compare(want: &Tensor, got: &Tensor) -> Result<(f32, f32, f32)> {
    let (a, b) = (want.flatten_all()?, got.flatten_all()?);
    let dot = (&a * &b)?.sum_all()?.to_scalar::<f32>()?;
    let na = a.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let nb = b.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt();
    let err = (&a - &b)?.sqr()?.sum_all()?.to_scalar::<f32>()?.sqrt() / na;
    let d = want.dim(2)?;
    let (wa, wb) = (want.reshape(((), d))?, got.reshape(((), d))?);
    let tok_dot = (&wa * &wb)?.sum(1)?;
    let tok_n = (wa.sqr()?.sum(1)?.sqrt()? * wb.sqr()?.sum(1)?.sqrt()?)?;
    let worst = (tok_dot / tok_n)?.min(0)?.to_scalar::<f32>()?;
    Ok((dot / (na * nb), worst, err))
}
