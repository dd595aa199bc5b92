//! LayerNorm (vision) and RMSNorm (decoder) with PyTorch's rounding points.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

/// `nn.LayerNorm(dim, eps)` with affine weight and bias. Statistics, scale and shift are computed in f32 and the
/// result is rounded once to the input dtype, as PyTorch's CPU/CUDA kernels do for reduced precision inputs.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    /// The same weight and bias as host vectors, for the fused CPU pass (`nn::fused::layer_norm`).
    host: Option<(Vec<f32>, Vec<f32>)>,
    eps: f64,
}

impl LayerNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get(dim, "weight")?.to_dtype(DType::F32)?;
        let bias = vb.get(dim, "bias")?.to_dtype(DType::F32)?;
        // Trainable parameters (fine-tuning) must stay in the graph: only frozen CPU weights get the fused pass.
        let host = (weight.device().is_cpu() && !weight.track_op() && !bias.track_op())
            .then(|| Ok::<_, candle_core::Error>((weight.to_vec1()?, bias.to_vec1()?)))
            .transpose()?;
        Ok(Self {
            weight,
            bias,
            host,
            eps,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if let Some((w, b)) = &self.host {
            if let Some(y) = crate::nn::fused::layer_norm(x, w, b, self.eps)? {
                return Ok(y);
            }
        }
        let dtype = x.dtype();
        let x = x.to_dtype(DType::F32)?;
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let rstd = (var + self.eps)?.sqrt()?.recip()?;
        let normed = centered.broadcast_mul(&rstd)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)?
            .to_dtype(dtype)
    }
}

/// `LlamaRMSNorm`: `x·rsqrt(mean(x²)+eps)` in f32, rounded to the input dtype, *then* multiplied by the weight
/// in the weight's dtype (transformers `modeling_llama.py`; spec §5).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    pub fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dtype = x.dtype();
        let xf = x.to_dtype(DType::F32)?;
        let var = xf.sqr()?.mean_keepdim(D::Minus1)?;
        let rstd = (var + self.eps)?.sqrt()?.recip()?;
        let normed = xf.broadcast_mul(&rstd)?.to_dtype(dtype)?;
        normed.broadcast_mul(&self.weight)
    }
}
