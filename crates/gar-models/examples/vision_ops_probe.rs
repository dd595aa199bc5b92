//! Times the operations of one Perception Encoder block at GAR-1B shapes (1025 tokens, width 1024, 16 heads,
//! MLP 4096) one by one, best of N, to see where a vision tile's time goes without loading a checkpoint.
//!
//! `cargo run --release -p gar-models --example vision_ops_probe [-- REPEATS]`

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor, D};

fn best<T>(reps: usize, mut f: impl FnMut() -> Result<T>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let t = Instant::now();
        let out = f()?;
        best = best.min(t.elapsed().as_secs_f64());
        drop(out);
    }
    Ok(best)
}

fn main() -> Result<()> {
    let reps: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let dev = Device::Cpu;
    let (n, c, heads, hidden) = (1025usize, 1024usize, 16usize, 4096usize);
    let hd = c / heads;
    let x = Tensor::randn(0f32, 1., (1, n, c), &dev)?;
    let w_qkv = Tensor::randn(0f32, 0.02, (3 * c, c), &dev)?;
    let w_qkv_t = w_qkv.t()?.contiguous()?;
    let w_fc1 = Tensor::randn(0f32, 0.02, (hidden, c), &dev)?;
    let w_fc2 = Tensor::randn(0f32, 0.02, (c, hidden), &dev)?;
    let h = Tensor::randn(0f32, 1., (1, n, hidden), &dev)?;
    let q = Tensor::randn(0f32, 1., (1, heads, n, hd), &dev)?;
    let k = Tensor::randn(0f32, 1., (1, heads, n, hd), &dev)?;
    let v = Tensor::randn(0f32, 1., (1, heads, n, hd), &dev)?;
    let ln = {
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &dev);
        gar_models::nn::norm::LayerNorm::new(c, 1e-5, vb)?
    };
    let x2 = x.reshape((n, c))?;
    let flops = |m: usize, k: usize, n: usize| 2.0 * (m * k * n) as f64;
    let report = |name: &str, s: f64, fl: f64| {
        if fl > 0.0 {
            println!(
                "{name:<40} {:>8.1} ms  {:>6.1} GFLOP/s",
                s * 1e3,
                fl / s / 1e9
            );
        } else {
            println!("{name:<40} {:>8.1} ms", s * 1e3);
        }
    };
    let s = best(reps, || x2.matmul(&w_qkv.t()?))?;
    report("qkv x·Wᵀ (W stored out×in)", s, flops(n, c, 3 * c));
    let s = best(reps, || x2.matmul(&w_qkv_t))?;
    report("qkv x·W (W stored in×out)", s, flops(n, c, 3 * c));
    let s = best(reps, || x2.matmul(&w_fc1.t()?))?;
    report("fc1", s, flops(n, c, hidden));
    let h2 = h.reshape((n, hidden))?;
    let s = best(reps, || h2.matmul(&w_fc2.t()?))?;
    report("fc2", s, flops(n, hidden, c));
    // The same linears as 8-bit × 8-bit products (nn::w8a8), activation quantization included.
    if gar_models::nn::w8a8::available() {
        let x_rows = x2.flatten_all()?.to_vec1::<f32>()?;
        let h_rows = h.flatten_all()?.to_vec1::<f32>()?;
        for (name, w, rows_in, k) in [
            ("qkv w8a8", &w_qkv, &x_rows, c),
            ("fc1 w8a8", &w_fc1, &x_rows, c),
            ("fc2 w8a8", &w_fc2, &h_rows, hidden),
        ] {
            let (out, _) = w.dims2()?;
            let wq = gar_models::nn::w8a8::W8Matrix::quantize(
                &w.flatten_all()?.to_vec1::<f32>()?,
                out,
                k,
            )
            .map_err(candle_core::Error::msg)?;
            let s = best(reps, || Ok(wq.matmul(rows_in, n)))?;
            report(name, s, flops(n, k, out));
        }
    }
    let s = best(reps, || q.matmul(&k.t()?))?;
    report("scores q·kᵀ (16 heads)", s, flops(n, hd, n) * heads as f64);
    let scores = q.matmul(&k.t()?)?;
    let s = best(reps, || scores.clone() * 0.125)?;
    report("scores × scale", s, 0.0);
    let s = best(reps, || candle_nn::ops::softmax_last_dim(&scores))?;
    report("softmax_last_dim (16×1025×1025)", s, 0.0);
    // Before/after of the fused CPU kernels (gar_models::nn::fused), interleaved so both see the same load.
    let (mut old_sm, mut new_sm, mut old_g, mut new_g) = (f64::MAX, f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..reps {
        old_sm = old_sm.min(best(1, || {
            candle_nn::ops::softmax_last_dim(&(&scores * 0.125)?)
        })?);
        new_sm = new_sm.min(best(1, || {
            gar_models::nn::fused::scaled_softmax_last_dim(&scores, 0.125)
        })?);
        old_g = old_g.min(best(1, || h.gelu_erf())?);
        new_g = new_g.min(best(1, || gar_models::nn::fused::gelu_erf(&h))?);
    }
    report("scale + softmax, candle ops", old_sm, 0.0);
    report("scale + softmax, fused", new_sm, 0.0);
    // The attention's form: fresh scores overwritten by their probabilities (compare with "scores q·kᵀ").
    let fresh = best(reps, || {
        let scores = q.matmul(&k.t()?)?;
        gar_models::nn::fused::scaled_masked_softmax_last_dim_in_place(scores, 0.125, None)
    })?;
    report("scores q·kᵀ + softmax in place", fresh, 0.0);
    report("gelu_erf, candle op", old_g, 0.0);
    report("gelu_erf, fused::gelu_erf", new_g, 0.0);
    // Whole attention: the general path (candle's batched matmuls + fused softmax) against the blocked CPU
    // kernels, on the qkv-split views the vision tower hands over.
    let qkv3 = x2
        .matmul(&w_qkv.t()?)?
        .reshape((1, n, 3, heads, hd))?
        .permute((2, 0, 3, 1, 4))?;
    let (qv, kv, vv) = (qkv3.get(0)?, qkv3.get(1)?, qkv3.get(2)?);
    let attn_flops = 2.0 * flops(n, hd, n) * heads as f64;
    use gar_models::nn::attention::{attention_with, Products};
    let (mut general, mut blocked, mut bf16) = (f64::MAX, f64::MAX, f64::MAX);
    for _ in 0..reps {
        general = general.min(best(1, || {
            gar_models::nn::attention::general_attention(&qv, &kv, &vv, 0.125, false)
        })?);
        blocked = blocked.min(best(1, || {
            gar_models::nn::attention::attention(&qv, &kv, &vv, 0.125, false)
        })?);
        bf16 = bf16.min(best(1, || {
            attention_with(&qv, &kv, &vv, 0.125, false, Products::Bf16)
        })?);
    }
    report("attention, general path", general, attn_flops);
    report("attention, blocked kernels", blocked, attn_flops);
    report("attention, blocked, bf16 products", bf16, attn_flops);
    let (mut general, mut blocked, mut bf16) = (f64::MAX, f64::MAX, f64::MAX);
    let (lq, lk, lv) = (
        Tensor::randn(0f32, 1., (1, 32, 1024, 64), &dev)?,
        Tensor::randn(0f32, 1., (1, 8, 1024, 64), &dev)?,
        Tensor::randn(0f32, 1., (1, 8, 1024, 64), &dev)?,
    );
    for _ in 0..reps {
        general = general.min(best(1, || {
            gar_models::nn::attention::general_attention(&lq, &lk, &lv, 0.125, true)
        })?);
        blocked = blocked.min(best(1, || {
            gar_models::nn::attention::attention(&lq, &lk, &lv, 0.125, true)
        })?);
        bf16 = bf16.min(best(1, || {
            attention_with(&lq, &lk, &lv, 0.125, true, Products::Bf16)
        })?);
    }
    let causal_flops = 2.0 * flops(1024, 64, 1024) * 32.0 / 2.0;
    report(
        "prefill 1024, 32/8 heads causal, general",
        general,
        causal_flops,
    );
    report(
        "prefill 1024, 32/8 heads causal, blocked",
        blocked,
        causal_flops,
    );
    report(
        "prefill 1024, 32/8 heads causal, bf16 products",
        bf16,
        causal_flops,
    );
    let probs = candle_nn::ops::softmax_last_dim(&scores)?;
    let s = best(reps, || probs.matmul(&v))?;
    report("probs·v", s, flops(n, n, hd) * heads as f64);
    let s = best(reps, || h.gelu_erf())?;
    report("gelu_erf (1025×4096)", s, 0.0);
    let s = best(reps, || ln.forward(&x))?;
    report("layernorm (composed)", s, 0.0);
    let qkv = x2.matmul(&w_qkv.t()?)?;
    let s = best(reps, || {
        qkv.reshape((1, n, 3, heads, hd))?
            .permute((2, 0, 3, 1, 4))?
            .get(0)?
            .contiguous()
    })?;
    report("qkv split → q contiguous", s, 0.0);
    let s = best(reps, || q.transpose(1, 2)?.reshape((1, n, c)))?;
    report("attn out transpose+reshape", s, 0.0);
    let s = best(reps, || x.broadcast_add(&x))?;
    report("residual add (1025×1024)", s, 0.0);
    let s = best(reps, || q.to_dtype(DType::F32)?.contiguous())?;
    report("to_dtype f32 no-op + contiguous", s, 0.0);
    let s = best(reps, || x.sum_keepdim(D::Minus1))?;
    report("sum_keepdim", s, 0.0);
    Ok(())
}
