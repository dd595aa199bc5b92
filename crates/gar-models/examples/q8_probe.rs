//! Times the Q8_0 few-row product (`nn::q8`) on GAR-1B's decoder shapes and prints the weight bytes it streams
//! per second, to compare with the machine's streaming-read bandwidth (`gar bench --bandwidth`).
//! The same shapes also run through the panel-layout int8 × int8 GEMM (`nn::w8a8`), which could serve both
//! decode and prefill from one copy of the weights.
//! Run: `cargo run --release -p gar-models --example q8_probe [rows]` (rows = input rows, default 1).
use candle_core::{Device, Tensor};
use gar_models::nn::q8::Q8Matrix;
use gar_models::nn::w8a8::W8Matrix;
use std::time::Instant;

fn main() {
    let m: usize = std::env::args()
        .nth(1)
        .map_or(1, |s| s.parse().expect("rows"));
    // (out, in) of the q/k/v/o, gate/up, down projections and the LM head.
    for (rows, cols) in [
        (2048, 2048),
        (512, 2048),
        (8192, 2048),
        (2048, 8192),
        (128256, 2048),
    ] {
        let w: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919 % 1000) as f32 - 500.0) / 500.0)
            .collect();
        let q = Q8Matrix::quantize(&w, rows, cols).expect("shape");
        let p = W8Matrix::quantize(&w, rows, cols).expect("shape");
        drop(w);
        let x: Vec<f32> = (0..m * cols).map(|i| (i % 13) as f32 / 13.0).collect();
        if m >= 32 {
            // Prefill-sized: the int8 product against dequantize + f32 GEMM (what `Linear` did for many rows).
            let xt = Tensor::from_slice(&x, (m, cols), &Device::Cpu).expect("x");
            let (mut t8, mut tf, mut tp) = (f64::MAX, f64::MAX, f64::MAX);
            for _ in 0..3 {
                let t = Instant::now();
                let y = p.matmul(&x, m);
                tp = tp.min(t.elapsed().as_secs_f64());
                std::hint::black_box(y);
                let t = Instant::now();
                let y = q.matmul(&x, m);
                t8 = t8.min(t.elapsed().as_secs_f64());
                std::hint::black_box(y);
                let t = Instant::now();
                let w = Tensor::from_vec(q.dequantize(), (rows, cols), &Device::Cpu).expect("w");
                let y = xt.matmul(&w.t().expect("t")).expect("gemm");
                tf = tf.min(t.elapsed().as_secs_f64());
                std::hint::black_box(y);
            }
            let flop = 2.0 * (m * rows * cols) as f64;
            println!(
                "{rows:>6}×{cols:<5} m={m}: q8 {:8.1} ms ({:5.1} GFLOP/s)  w8a8 {:8.1} ms ({:5.1} GFLOP/s)  dequantize+f32 GEMM {:8.1} ms ({:5.1} GFLOP/s)",
                t8 * 1e3,
                flop / t8 / 1e9,
                tp * 1e3,
                flop / tp / 1e9,
                tf * 1e3,
                flop / tf / 1e9
            );
            continue;
        }
        // Enough repeats to stream ~4 GB, so the matrix is read from memory, not cache, except the small ones.
        let reps = (4e9 / (rows * cols) as f64).ceil() as usize;
        let mut sink = 0f32;
        let t = Instant::now();
        for _ in 0..reps {
            sink += q.matmul(&x, m)[0];
        }
        let s = t.elapsed().as_secs_f64() / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            sink += p.matmul(&x, m)[0];
        }
        let sp = t.elapsed().as_secs_f64() / reps as f64;
        let gb = (rows * cols) as f64 * 34.0 / 32.0 / 1e9;
        println!(
            "{rows:>6}×{cols:<5} m={m}: q8 {:8.3} ms {:6.1} GB/s  w8a8 {:8.3} ms {:6.1} GB/s  ({sink:.1})",
            s * 1e3,
            gb / s,
            sp * 1e3,
            gb / sp
        );
    }
}
