//! The bicubic kernel against torchvision on synthetic images (`tests/data/resize_cases.json`, made by
//! `tests/data/gen_resize_cases.py`): whole outputs compared through their sha256. Runs without the
//! benchmark data.

mod common;

use gar_processor::{resize_bicubic_aa, Arith};

/// Same bytes as `pixels()` in gen_resize_cases.py.
fn pixels(h: usize, w: usize, seed: u64) -> Vec<u8> {
    (0..3 * h * w)
        .map(|i| {
            let noise = (i as u64)
                .wrapping_mul(6364136223846793005)
                .wrapping_add(seed.wrapping_mul(1442695040888963407))
                >> 56;
            let ramp = (i % w) as u64 * 255 / (w.max(2) - 1) as u64;
            ((noise + ramp) / 2) as u8
        })
        .collect()
}

#[test]
fn bicubic_matches_torchvision_bit_for_bit() {
    let v = common::read_json(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/resize_cases.json"),
    );
    let cases = v["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut unfused_mismatches = 0;
    for c in cases {
        let g = |k: &str| c[k].as_u64().unwrap() as usize;
        let (h, w, oh, ow) = (g("h"), g("w"), g("oh"), g("ow"));
        let input = pixels(h, w, g("seed") as u64);
        let out = resize_bicubic_aa(&input, (h, w), (oh, ow), Arith::TorchCpu);
        let mean = out.iter().map(|&v| v as f64).sum::<f64>() / out.len() as f64;
        assert!(
            (mean - c["mean"].as_f64().unwrap()).abs() < 1e-3,
            "{h}x{w}->{oh}x{ow}: input generator differs"
        );
        assert_eq!(
            common::sha256_hex(&out),
            c["sha256"].as_str().unwrap(),
            "{h}x{w} -> {oh}x{ow}"
        );
        let plain = resize_bicubic_aa(&input, (h, w), (oh, ow), Arith::Unfused);
        unfused_mismatches +=
            usize::from(common::sha256_hex(&plain) != c["sha256"].as_str().unwrap());
    }
    // The reference's fused multiply-adds matter: without them most outputs are off somewhere.
    assert!(unfused_mismatches > cases.len() / 2, "{unfused_mismatches}");
}
