//! Times the 8-bit × 8-bit product (`nn::w8a8`) in both packings on GAR-1B's many-row shapes (a vision tile's
//! 1,025 tokens through the PE-L linears, 1,024 prompt tokens through the decoder's) and prints multiply-adds
//! per second: the kernel's efficiency against the CPU's peak (AVX2 `vpmaddwd`: 32 per cycle and core;
//! AVX-512 VNNI `vpdpbusd` on Zen 4: 64). Activation quantization is included, as in the model.
//! Run: `cargo run --release -p gar-models --example w8a8_probe [reps]`.
use gar_models::nn::w8a8::{Packing, W8Matrix};
use std::time::Instant;

fn main() {
    let reps: usize = std::env::args()
        .nth(1)
        .map_or(3, |s| s.parse().expect("reps"));
    // (rows, out, in): vision qkv, fc1, fc2; decoder q, gate/up, down.
    for (m, out, inp) in [
        (1025, 3072, 1024),
        (1025, 4096, 1024),
        (1025, 1024, 4096),
        (1024, 2048, 2048),
        (1024, 8192, 2048),
        (1024, 2048, 8192),
    ] {
        let w: Vec<f32> = (0..out * inp)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let x: Vec<f32> = (0..m * inp).map(|i| (i % 13) as f32 / 13.0 - 0.4).collect();
        let mut line = format!("{m:>5}×{inp:<5}→{out:<5}");
        for packing in [Packing::Pairs, Packing::Quads] {
            if !packing.runs_here() {
                continue;
            }
            let q = W8Matrix::quantize_packed(&w, out, inp, packing).expect("shape");
            let mut best = f64::MAX;
            let mut sink = 0f32;
            for _ in 0..reps {
                let t = Instant::now();
                let y = q.matmul(&x, m);
                best = best.min(t.elapsed().as_secs_f64());
                sink += y[y.len() / 2];
            }
            let gmacs = (m * out * inp) as f64 / best / 1e9;
            line += &format!(
                "  {packing:?} {:7.1} ms {gmacs:6.1} GMAC/s ({sink:.0})",
                best * 1e3
            );
        }
        println!("{line}");
    }
}
