//! Small layers shared by the three SAM parts, loaded from [`Weights`] by HF name.

use candle_core::{Module, Tensor};

use crate::error::Result;
use crate::weights::Weights;

/// `nn.Linear`: `x · Wᵀ + b` over the last dimension (any number of leading dimensions).
#[derive(Clone)]
pub struct Linear {
    weight_t: Tensor,
    bias: Option<Tensor>,
}

impl Linear {
    pub fn load(w: &Weights, prefix: &str, inp: usize, out: usize, bias: bool) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[out, inp])?;
        let bias = if bias {
            Some(w.get(&format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        // Transposed once at load time so every forward is a plain matmul.
        Ok(Self {
            weight_t: weight.t()?.contiguous()?,
            bias,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // One 2-D matmul over all leading dimensions: a broadcast matmul would run one small
        // GEMM per leading index (e.g. per window row), several times slower.
        let dims = x.dims();
        let inp = dims[dims.len() - 1];
        let rows = x.elem_count() / inp.max(1);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("at least one dimension") = self.weight_t.dim(1)?;
        let y = x
            .reshape((rows, inp))?
            .matmul(&self.weight_t)?
            .reshape(out_dims)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

/// `nn.LayerNorm` over the last dimension. SAM's channels-first `SamLayerNorm` is the same operation
/// applied to channels-last data, which is how this crate keeps its feature maps.
#[derive(Clone)]
pub struct LayerNorm(candle_nn::LayerNorm);

impl LayerNorm {
    pub fn load(w: &Weights, prefix: &str, dim: usize, eps: f64) -> Result<Self> {
        let weight = w.get(&format!("{prefix}.weight"), &[dim])?;
        let bias = w.get(&format!("{prefix}.bias"), &[dim])?;
        Ok(Self(candle_nn::LayerNorm::new(weight, bias, eps)))
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.0.forward(&x.contiguous()?)
    }
}

/// `SamFeedForward`: proj_in, ReLU, (depth − 2) × (Linear, ReLU), proj_out.
#[derive(Clone)]
pub struct FeedForward {
    proj_in: Linear,
    layers: Vec<Linear>,
    proj_out: Linear,
}

impl FeedForward {
    pub fn load(
        w: &Weights,
        prefix: &str,
        inp: usize,
        hidden: usize,
        out: usize,
        depth: usize,
    ) -> Result<Self> {
        let layers = (0..depth.saturating_sub(2))
            .map(|i| Linear::load(w, &format!("{prefix}.layers.{i}"), hidden, hidden, true))
            .collect::<Result<_>>()?;
        Ok(Self {
            proj_in: Linear::load(w, &format!("{prefix}.proj_in"), inp, hidden, true)?,
            layers,
            proj_out: Linear::load(w, &format!("{prefix}.proj_out"), hidden, out, true)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = self.proj_in.forward(x)?.relu()?;
        for l in &self.layers {
            x = l.forward(&x)?.relu()?;
        }
        self.proj_out.forward(&x)
    }
}

/// Adds a bias to the logits of batch rows `start..start + len`: `(start, len, logits) → logits`.
pub type BiasFn<'a> = &'a dyn Fn(usize, usize, &Tensor) -> candle_core::Result<Tensor>;

/// Attention core `softmax(q·kᵀ·scale + bias)·v` on `(batch, n, d)` tensors. `bias`, when given,
/// is added to the `(batch, nq, nk)` logits. Batches are processed in chunks so that the logits of
/// one chunk stay near `MAX_LOGITS` floats: a global layer of ViT-H would otherwise hold
/// 16 × 4096² floats (1 GiB) several times over.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    bias: Option<BiasFn<'_>>,
) -> candle_core::Result<Tensor> {
    const MAX_LOGITS: usize = 64 << 20;
    let (b, nq, _) = q.dims3()?;
    let nk = k.dim(1)?;
    let chunk = (MAX_LOGITS / (nq * nk).max(1)).clamp(1, b);
    let mut outs = Vec::with_capacity(b.div_ceil(chunk));
    for start in (0..b).step_by(chunk) {
        let len = chunk.min(b - start);
        let qc = q.narrow(0, start, len)?;
        let kc = k.narrow(0, start, len)?;
        let vc = v.narrow(0, start, len)?;
        let mut logits = (qc * scale)?.matmul(&kc.t()?)?;
        if let Some(f) = bias {
            logits = f(start, len, &logits)?;
        }
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        outs.push(probs.matmul(&vc)?);
    }
    if outs.len() == 1 {
        Ok(outs.pop().expect("one chunk"))
    } else {
        Tensor::cat(&outs, 0)
    }
}

/// `ConvTranspose2d(kernel 2, stride 2)` on channels-last `(h, w, cin)` input, as one matmul:
/// each input pixel writes its own 2×2 output block, so no overlap handling is needed.
#[derive(Clone)]
pub struct UpConv2x2 {
    /// `(cin, cout·4)`, laid out `cout, dy, dx` like torch's `(cin, cout, 2, 2)` weight.
    weight: Tensor,
    bias: Tensor,
    cout: usize,
}

impl UpConv2x2 {
    pub fn load(w: &Weights, prefix: &str, cin: usize, cout: usize) -> Result<Self> {
        let weight = w
            .get(&format!("{prefix}.weight"), &[cin, cout, 2, 2])?
            .reshape((cin, cout * 4))?;
        let bias = w.get(&format!("{prefix}.bias"), &[cout])?;
        Ok(Self { weight, bias, cout })
    }

    /// `(h, w, cin)` → `(2h, 2w, cout)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (h, w, cin) = x.dims3()?;
        let y = x.reshape((h * w, cin))?.matmul(&self.weight)?;
        // (h, w, cout, dy, dx) → (h, dy, w, dx, cout)
        let y = y
            .reshape((h, w, self.cout, 2, 2))?
            .permute((0, 3, 1, 4, 2))?
            .reshape((2 * h, 2 * w, self.cout))?;
        y.broadcast_add(&self.bias)
    }
}

/// Splits `(b, n, heads·d)` into `(b·heads, n, d)`.
pub fn split_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .reshape((b * heads, n, c / heads))
}

/// Inverse of [`split_heads`].
pub fn merge_heads(x: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    x.reshape((bh / heads, heads, n, d))?
        .transpose(1, 2)?
        .reshape((bh / heads, n, heads * d))
}
