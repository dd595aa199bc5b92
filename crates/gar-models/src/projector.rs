//! `PerceptionLMMultiModalProjector` + `PerceptionLMAdaptiveAvgPooling` (spec §4): per-patch
//! `linear_2(GELU_erf(linear_1(x)))`, then average pooling of the square patch grid by `projector_pooling_ratio`
//! (2×2 blocks for PLM: 32×32 → 16×16 = 256 tokens per tile, row-major).
//!
//! Keys (relative to `model.multi_modal_projector`): `linear_1.{weight,bias}`, `linear_2.{weight,bias}`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::nn::{Linear, Then};

#[derive(Debug, Clone)]
pub struct Projector {
    linear_1: Linear,
    linear_2: Linear,
    pooling_ratio: usize,
}

impl Projector {
    pub fn new(
        vision_dim: usize,
        hidden: usize,
        pooling_ratio: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            linear_1: Linear::new(vision_dim, hidden, true, vb.pp("linear_1"))?,
            linear_2: Linear::new(hidden, hidden, true, vb.pp("linear_2"))?,
            pooling_ratio,
        })
    }

    /// The two linears: `(T, N, D)` → `(T, N, H)` (before pooling). The GELU is the vision MLP's
    /// multi-threaded one ([`crate::nn::fused::gelu_erf`], fused into an 8-bit `linear_1`): candle's
    /// single-threaded op took ≈ 40 ms of a GAR-1B tile.
    pub fn project(&self, x: &Tensor) -> Result<Tensor> {
        let gelu = Then {
            gelu: true,
            ..Then::default()
        };
        self.linear_2.forward(&self.linear_1.forward_then(x, gelu)?)
    }

    /// Runs both linears through [`crate::nn::w8a8`]; returns how many were converted.
    pub fn quantize_w8a8(&mut self) -> Result<usize> {
        Ok(usize::from(self.linear_1.quantize_w8a8()?)
            + usize::from(self.linear_2.quantize_w8a8()?))
    }

    /// Average pooling of the `√N × √N` token grid by the pooling ratio: `(T, N, H)` → `(T, N/r², H)`.
    /// `adaptive_avg_pool2d` to an exact divisor is the mean of non-overlapping r×r blocks.
    pub fn pool(&self, x: &Tensor) -> Result<Tensor> {
        let r = self.pooling_ratio;
        if r == 1 {
            return Ok(x.clone());
        }
        let (t, n, h) = x.dims3()?;
        let side = (n as f64).sqrt().round() as usize;
        if side * side != n || !side.is_multiple_of(r) {
            candle_core::bail!("cannot pool {n} tokens (not a square grid divisible by {r})");
        }
        let s = side / r;
        // Accumulate in f32 and round once, as PyTorch's pooling kernels do for reduced precision.
        let sum = x
            .to_dtype(DType::F32)?
            .reshape((t, s, r, s, r, h))?
            .sum(4)?
            .sum(2)?;
        (sum / (r * r) as f64)?
            .reshape((t, s * s, h))?
            .to_dtype(x.dtype())
    }

    /// `project` then `pool`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.pool(&self.project(x)?)
    }
}
