//! Global-norm gradient clipping as `torch.nn.utils.clip_grad_norm_` (training.md §5.4): total L2
//! norm over all gradients in f32; every gradient is scaled by `min(1, max_norm / (norm + 1e-6))`.

use candle_core::{DType, Result, Tensor};

/// The global L2 norm of `grads` (f32).
pub fn global_norm(grads: &[Tensor]) -> Result<f32> {
    // Per-tensor norms first, then the norm of the norms — the order torch uses.
    let mut sq = 0f32;
    for g in grads {
        let n = g
            .to_dtype(DType::F32)?
            .sqr()?
            .sum_all()?
            .sqrt()?
            .to_scalar::<f32>()?;
        sq += n * n;
    }
    Ok(sq.sqrt())
}

/// Clip in place; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f32) -> Result<f32> {
    let norm = global_norm(grads)?;
    let coef = (max_norm / (norm + 1e-6)).min(1.0);
    if coef < 1.0 {
        for g in grads.iter_mut() {
            *g = g.to_dtype(DType::F32)?.affine(coef as f64, 0.0)?;
        }
    }
    Ok(norm)
}
