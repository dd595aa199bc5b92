//! One Perception Encoder block: timm `EvaBlock` with `AttentionRope` (spec §3 step 5).
//!
//! Keys (relative to `blocks.{i}`): `norm1`, `attn.qkv` (fused, `[q; k; v]` rows), `attn.proj`, `gamma_1`,
//! `norm2`, `mlp.fc1`, `mlp.fc2`, `gamma_2` (LayerScale, only when the config sets `init_values`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::VisionConfig;
use crate::nn::attention::{attention_with, Products};
use crate::nn::fused::{add_scaled, gelu_erf};
use crate::nn::norm::LayerNorm;
use crate::nn::rope::VisionRope;
use crate::nn::Linear;

/// timm `AttentionRope`: fused qkv, RoPE on q and k of the patch tokens only (prefix tokens such as the CLS are
/// left unrotated), bidirectional SDPA, output projection.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: Linear,
    proj: Linear,
    num_heads: usize,
    head_dim: usize,
    num_prefix_tokens: usize,
    products: Products,
}

impl Attention {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        Ok(Self {
            qkv: Linear::new(d, 3 * d, cfg.qkv_bias, vb.pp("qkv"))?,
            proj: Linear::new(d, d, true, vb.pp("proj"))?,
            num_heads: cfg.num_heads,
            head_dim: cfg.head_dim(),
            num_prefix_tokens: cfg.num_prefix_tokens(),
            products: Products::F32,
        })
    }

    fn rotate(&self, x: &Tensor, rope: &VisionRope) -> Result<Tensor> {
        let npt = self.num_prefix_tokens;
        if npt == 0 {
            return rope.apply(x);
        }
        let n = x.dim(2)?;
        let prefix = x.narrow(2, 0, npt)?;
        let patches = rope.apply(&x.narrow(2, npt, n - npt)?)?;
        Tensor::cat(&[&prefix, &patches], 2)
    }

    pub fn forward(&self, x: &Tensor, rope: &VisionRope) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        // (b, n, 3·c) → (3, b, heads, n, hd), as `reshape(B, N, 3, H, -1).permute(2, 0, 3, 1, 4)`.
        let qkv = self
            .qkv
            .forward(x)?
            .reshape((b, n, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let q = self.rotate(&qkv.get(0)?, rope)?;
        let k = self.rotate(&qkv.get(1)?, rope)?;
        let v = qkv.get(2)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = attention_with(&q, &k, &v, scale, false, self.products)?;
        let y = y.transpose(1, 2)?.reshape((b, n, c))?;
        self.proj.forward(&y)
    }
}

/// timm `Mlp`: `fc2(GELU_erf(fc1(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(cfg.embed_dim, cfg.mlp_hidden, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.mlp_hidden, cfg.embed_dim, true, vb.pp("fc2"))?,
        })
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // `nn.GELU()` default is the exact (erf) form (multi-threaded on CPU, same values).
        self.fc2.forward(&gelu_erf(&self.fc1.forward(x)?)?)
    }
}

/// timm `EvaBlock` (pre-norm): `x += γ₁·attn(norm1(x))`, `x += γ₂·mlp(norm2(x))`.
#[derive(Debug, Clone)]
pub struct Block {
    norm1: LayerNorm,
    attn: Attention,
    gamma_1: Option<Tensor>,
    norm2: LayerNorm,
    mlp: Mlp,
    gamma_2: Option<Tensor>,
}

impl Block {
    /// The operands of the block's attention products ([`Products`]).
    pub fn set_attention_products(&mut self, products: Products) {
        self.attn.products = products;
    }

    /// Runs the block's four linears through [`crate::nn::w8a8`]; returns how many were converted.
    pub fn quantize_w8a8(&mut self) -> Result<usize> {
        let mut n = 0;
        for l in [
            &mut self.attn.qkv,
            &mut self.attn.proj,
            &mut self.mlp.fc1,
            &mut self.mlp.fc2,
        ] {
            n += usize::from(l.quantize_w8a8()?);
        }
        Ok(n)
    }

    pub fn new(cfg: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let d = cfg.embed_dim;
        let gamma = |name: &str| -> Result<Option<Tensor>> {
            if cfg.layer_scale {
                vb.get(d, name).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            norm1: LayerNorm::new(d, cfg.norm_eps, vb.pp("norm1"))?,
            attn: Attention::new(cfg, vb.pp("attn"))?,
            gamma_1: gamma("gamma_1")?,
            norm2: LayerNorm::new(d, cfg.norm_eps, vb.pp("norm2"))?,
            mlp: Mlp::new(cfg, vb.pp("mlp"))?,
            gamma_2: gamma("gamma_2")?,
        })
    }

    pub fn forward(&self, x: &Tensor, rope: &VisionRope) -> Result<Tensor> {
        Ok(self.forward_parts(x, rope)?.1)
    }

    /// The residual stream after the attention half and after the whole block (for parity tests).
    pub fn forward_parts(&self, x: &Tensor, rope: &VisionRope) -> Result<(Tensor, Tensor)> {
        let a = self.attn.forward(&self.norm1.forward(x)?, rope)?;
        let x = add_scaled(x, &a, self.gamma_1.as_ref())?;
        let m = self.mlp.forward(&self.norm2.forward(&x)?)?;
        let out = add_scaled(&x, &m, self.gamma_2.as_ref())?;
        Ok((x, out))
    }
}
