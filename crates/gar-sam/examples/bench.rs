//! Timing of the image encoder and the prompt decoder at real model sizes, with random weights made
//! in memory (nothing to download, nothing committed).
//!
//!     cargo run --release -p gar-sam --example bench -- [b|l|h] [encoder runs] [decoder runs]
//!     cargo run --release -p gar-sam --features cuda --example bench -- h
//!
//! Prints one line per stage and, last, one JSON object.

use std::time::Instant;

use candle_core::Device;
use gar_sam::{Prompt, Sam, SamConfig, SamPredictor};

fn main() -> gar_sam::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let variant = args.first().map(String::as_str).unwrap_or("b");
    let encoder_runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2).max(1);
    let decoder_runs: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
        .max(1);
    let config = match variant {
        "l" => SamConfig::vit_l(),
        "h" => SamConfig::vit_h(),
        _ => SamConfig::vit_b(),
    };
    let device = Device::cuda_if_available(0)?;
    let t = Instant::now();
    let sam = Sam::random(config, &device)?;
    println!(
        "ViT-{}: random weights built in {:.2} s on {:?}",
        variant.to_uppercase(),
        t.elapsed().as_secs_f64(),
        device
    );

    // A textured 640×480 image (upscaled to 1024×768 by the preprocessing, like a COCO photo).
    let image = image::RgbImage::from_fn(640, 480, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x ^ y) % 256) as u8])
    });
    // Kernels are asynchronous on GPUs: wait for them before reading the clock.
    let sync = |sam: &Sam| sam.device().synchronize();

    let mut encoder_ms = Vec::new();
    for i in 0..encoder_runs {
        let t = Instant::now();
        sam.embed(&image)?;
        sync(&sam)?;
        encoder_ms.push(t.elapsed().as_secs_f64() * 1e3);
        println!("image encoder run {i}: {:.1} ms", encoder_ms[i]);
    }

    let mut predictor = SamPredictor::new(sam.clone());
    predictor.embedding(&image)?;
    let prompts = [
        Prompt::point(320.0, 240.0),
        Prompt::default().with_box([100.0, 80.0, 500.0, 400.0]),
        Prompt::point(200.0, 100.0).with_box([50.0, 50.0, 400.0, 300.0]),
    ];
    let (mut decode_ms, mut post_ms) = (Vec::new(), Vec::new());
    let emb = predictor.embedding(&image)?;
    for i in 0..decoder_runs {
        let p = &prompts[i % prompts.len()];
        let t = Instant::now();
        let pred = sam.decode(&emb, p)?;
        sync(&sam)?;
        decode_ms.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let _ = sam.mask(&emb, &pred, pred.best())?;
        post_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let enc = median(&mut encoder_ms);
    let dec = median(&mut decode_ms);
    let post = median(&mut post_ms);
    println!("median image encoder: {enc:.1} ms");
    println!("median decoder (prompt encoder + mask decoder): {dec:.2} ms");
    println!("median post-processing (one mask to 640×480): {post:.2} ms");
    println!(
        "{}",
        serde_json::json!({
            "model": format!("vit-{variant}"),
            "device": format!("{device:?}"),
            "image_encoder_ms": enc,
            "decoder_ms": dec,
            "postprocess_ms": post,
            "encoder_runs": encoder_runs,
            "decoder_runs": decoder_runs,
        })
    );
    Ok(())
}
