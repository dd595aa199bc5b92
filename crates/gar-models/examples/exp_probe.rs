//! Times `vmath::exp_affine_in_place` (with `max_of`, as the attention softmax runs them) on one
//! prefill-length row that stays in L1, and prints nanoseconds and cycles per value.
//! `cargo run --release -p gar-models --example exp_probe [-- GHZ]` (GHZ: the core clock, default 3.66).
use std::time::Instant;

fn main() {
    let ghz: f64 = std::env::args()
        .nth(1)
        .map_or(3.66, |s| s.parse().expect("GHz"));
    let n = 4800;
    let mut row: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 5.0).collect();
    let reps = 20000;
    let t = Instant::now();
    let mut sum = 0f32;
    for _ in 0..reps {
        let m = gar_models::nn::vmath::max_of(&row);
        sum += gar_models::nn::vmath::exp_affine_in_place(&mut row, 0.125, m * 0.125 - 1.0);
    }
    let ns = t.elapsed().as_secs_f64() * 1e9 / (reps * n) as f64;
    println!(
        "{ns:.3} ns a value ({:.2} cycles at {ghz} GHz; checksum {sum})",
        ns * ghz
    );
}
