//! Small building blocks shared by the vision tower and the decoder. They follow PyTorch's numerics where the
//! reference depends on them (norm statistics in f32, output rounding points), which candle's fused ops do
//! not always do for bf16/f16.

pub mod attention;
pub mod kv_cache;
pub mod norm;
pub mod rope;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// `nn.Linear`: `y = x·Wᵀ (+ b)`, weight `(out, in)` under `<prefix>.weight`.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn new(in_dim: usize, out_dim: usize, bias: bool, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.get(out_dim, "bias")?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// A linear layer over an existing weight (used for a tied `lm_head`).
    pub fn from_weight(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }

    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // Flatten leading dims into one matrix so a single GEMM runs against the (transposed, strided) weight.
        let dims = x.dims();
        let Some(&in_dim) = dims.last() else {
            candle_core::bail!("linear layer applied to a scalar");
        };
        let rows = x.elem_count() / in_dim.max(1);
        let y = x.reshape((rows, in_dim))?.matmul(&self.weight.t()?)?;
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims.to_vec();
        out_dims.pop();
        out_dims.push(self.weight.dim(0)?);
        y.reshape(out_dims)
    }
}
