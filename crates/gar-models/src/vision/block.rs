//! One Perception Encoder block: timm `EvaBlock` with `AttentionRope` (spec §3 step 5).
//!
//! Keys (relative to `blocks.{i}`): `norm1`, `attn.qkv` (fused, `[q; k; v]` rows), `attn.proj`, `gamma_1`,
//! `norm2`, `mlp.fc1`, `mlp.fc2`, `gamma_2` (LayerScale, only when the config sets `init_values`).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::config::VisionConfig;
use crate::nn::attention::{attention_with, Products};
use crate::nn::norm::LayerNorm;
use crate::nn::rope::VisionRope;
use crate::nn::{Linear, Then};

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

    /// `residual + γ · attn(x)` (`residual + attn(x)` without γ), the residual step fused into the output
    /// projection where it can be.
    pub fn forward_residual(
        &self,
        x: &Tensor,
        rope: &VisionRope,
        residual: &Tensor,
        gamma: Option<&Tensor>,
    ) -> Result<Tensor> {
        let y = self.heads(x, rope)?;
        self.proj.forward_then(
            &y,
            Then {
                residual: Some((residual, gamma)),
                ..Then::default()
            },
        )
    }

    pub fn forward(&self, x: &Tensor, rope: &VisionRope) -> Result<Tensor> {
        self.proj.forward(&self.heads(x, rope)?)
    }

    /// Everything before the output projection: `(b, n, c)` of concatenated head outputs.
    fn heads(&self, x: &Tensor, rope: &VisionRope) -> Result<Tensor> {
        let (b, n, c) = x.dims3()?;
        let fused = self.qkv.forward(x)?;
        // (b, n, 3·c) → (3, b, heads, n, hd), as `reshape(B, N, 3, H, -1).permute(2, 0, 3, 1, 4)`.
        let qkv = fused
            .reshape((b, n, 3, self.num_heads, self.head_dim))?
            .permute((2, 0, 3, 1, 4))?;
        let (q, k) = match rope.split_rotate_qk(&fused, self.num_heads, self.num_prefix_tokens)? {
            Some(qk) => qk,
            None => (
                self.rotate(&qkv.get(0)?, rope)?,
                self.rotate(&qkv.get(1)?, rope)?,
            ),
        };
        let v = qkv.get(2)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let y = attention_with(&q, &k, &v, scale, false, self.products)?;
        y.transpose(1, 2)?.reshape((b, n, c))
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

    /// `residual + γ · mlp(x)` (`residual + mlp(x)` without γ), the GELU and the residual step fused into
    /// the linears where they can be.
    pub fn forward_residual(
        &self,
        x: &Tensor,
        residual: &Tensor,
        gamma: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.fc2.forward_then(
            &self.hidden(x)?,
            Then {
                residual: Some((residual, gamma)),
                ..Then::default()
            },
        )
    }

    /// `GELU(fc1(x))`: `nn.GELU()` defaults to the exact (erf) form (multi-threaded on CPU, same values).
    fn hidden(&self, x: &Tensor) -> Result<Tensor> {
        self.fc1.forward_then(
            x,
            Then {
                gelu: true,
                ..Then::default()
            },
        )
    }
}

impl Module for Mlp {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc2.forward(&self.hidden(x)?)
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
        let x =
            self.attn
                .forward_residual(&self.norm1.forward(x)?, rope, x, self.gamma_1.as_ref())?;
        let out = self
            .mlp
            .forward_residual(&self.norm2.forward(&x)?, &x, self.gamma_2.as_ref())?;
        Ok((x, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use std::collections::BTreeMap;

    /// The one-pass split and rotation of q and k gives bit for bit the composed ops' tensors, with and
    /// without a class token, for several tiles at once.
    #[test]
    fn fused_qk_split_matches_composed_ops() -> Result<()> {
        let dev = Device::Cpu;
        for arch in [
            "vit_pe_core_large_patch14_336",
            "vit_pe_core_gigantic_patch14_448",
        ] {
            let mut args = BTreeMap::new();
            args.insert("embed_dim".to_string(), serde_json::json!(128));
            args.insert("num_heads".to_string(), serde_json::json!(4));
            args.insert("img_size".to_string(), serde_json::json!(112));
            let cfg = VisionConfig::from_timm(arch, &args, None).expect("config");
            let attn = Attention::new(&cfg, VarBuilder::zeros(DType::F32, &dev))?;
            let rope = VisionRope::new(&cfg, &dev)?;
            let (rows, cols) = cfg.grid();
            let n = rows * cols + cfg.num_prefix_tokens();
            let (heads, hd) = (cfg.num_heads, cfg.head_dim());
            let fused = Tensor::randn(0f32, 1., (3, n, 3 * heads * hd), &dev)?;
            let split = fused
                .reshape((3, n, 3, heads, hd))?
                .permute((2, 0, 3, 1, 4))?;
            let (q, k) = rope
                .split_rotate_qk(&fused, heads, cfg.num_prefix_tokens())?
                .expect("the CPU f32 path applies");
            for (got, part) in [(q, 0), (k, 1)] {
                let want = attn.rotate(&split.get(part)?, &rope)?;
                assert_eq!(got.dims(), want.dims());
                let (got, want) = (
                    got.flatten_all()?.to_vec1::<f32>()?,
                    want.flatten_all()?.to_vec1::<f32>()?,
                );
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{arch}: part {part} differs"
                );
            }
        }
        Ok(())
    }
}
