//! `SamMaskDecoder`: the two-way transformer between prompt tokens and image embeddings, the
//! upscaling path to 256×256, the per-mask hypernetworks and the IoU head. One prompt at a time
//! (transformers' batch and point-batch dimensions are both 1 here).

use candle_core::Tensor;

use crate::config::MaskDecoderConfig;
use crate::error::Result;
use crate::nn::{attention, merge_heads, split_heads, FeedForward, LayerNorm, Linear, UpConv2x2};
use crate::weights::Weights;

/// `SamAttention`: projections to an (optionally downsampled) internal width, multi-head attention.
#[derive(Clone)]
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(w: &Weights, prefix: &str, c: &MaskDecoderConfig, downsample: usize) -> Result<Self> {
        let (d, inner) = (c.hidden_size, c.hidden_size / downsample);
        Ok(Self {
            q: Linear::load(w, &format!("{prefix}.q_proj"), d, inner, true)?,
            k: Linear::load(w, &format!("{prefix}.k_proj"), d, inner, true)?,
            v: Linear::load(w, &format!("{prefix}.v_proj"), d, inner, true)?,
            out: Linear::load(w, &format!("{prefix}.out_proj"), inner, d, true)?,
            heads: c.num_attention_heads,
            scale: ((inner / c.num_attention_heads) as f64).powf(-0.5),
        })
    }

    /// `(1, nq, d)`, `(1, nk, d)`, `(1, nk, d)` → `(1, nq, d)`.
    fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let q = split_heads(&self.q.forward(q)?, self.heads)?;
        let k = split_heads(&self.k.forward(k)?, self.heads)?;
        let v = split_heads(&self.v.forward(v)?, self.heads)?;
        let o = attention(&q, &k, &v, self.scale, None)?;
        Ok(self.out.forward(&merge_heads(&o, self.heads)?)?)
    }
}

#[derive(Clone)]
struct TwoWayBlock {
    self_attn: Attention,
    norm1: LayerNorm,
    cross_t2i: Attention,
    norm2: LayerNorm,
    lin1: Linear,
    lin2: Linear,
    norm3: LayerNorm,
    norm4: LayerNorm,
    cross_i2t: Attention,
    skip_first_pe: bool,
}

impl TwoWayBlock {
    /// Returns updated (queries, keys). `qpe` are the initial tokens, `kpe` the image positional encoding.
    fn forward(
        &self,
        queries: &Tensor,
        keys: &Tensor,
        qpe: &Tensor,
        kpe: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let queries = if self.skip_first_pe {
            // The first layer replaces the tokens with their self-attention (no residual), as in SAM.
            self.self_attn.forward(queries, queries, queries)?
        } else {
            let q = (queries + qpe)?;
            (queries + self.self_attn.forward(&q, &q, queries)?)?
        };
        let queries = self.norm1.forward(&queries)?;
        let q = (&queries + qpe)?;
        let k = (keys + kpe)?;
        let queries = self
            .norm2
            .forward(&(&queries + self.cross_t2i.forward(&q, &k, keys)?)?)?;
        let mlp = self.lin2.forward(&self.lin1.forward(&queries)?.relu()?)?;
        let queries = self.norm3.forward(&(&queries + mlp)?)?;
        let q = (&queries + qpe)?;
        let keys = self
            .norm4
            .forward(&(keys + self.cross_i2t.forward(&k, &q, &queries)?)?)?;
        Ok((queries, keys))
    }
}

#[derive(Clone)]
pub struct MaskDecoder {
    /// iou token followed by the mask tokens: `(1 + num_mask_tokens, d)`.
    output_tokens: Tensor,
    layers: Vec<TwoWayBlock>,
    final_attn: Attention,
    final_norm: LayerNorm,
    up1: UpConv2x2,
    up_norm: LayerNorm,
    up2: UpConv2x2,
    hyper: Vec<FeedForward>,
    iou_head: FeedForward,
    num_mask_tokens: usize,
}

/// Decoder output for one prompt: all mask tokens' low-res logits and predicted IoUs.
pub struct DecoderOutput {
    /// `(num_mask_tokens, 4·grid, 4·grid)`; index 0 is the single-mask output, 1.. the multimask ones.
    pub masks: Tensor,
    /// `(num_mask_tokens,)`.
    pub iou: Tensor,
}

impl MaskDecoder {
    pub fn load(w: &Weights, c: &MaskDecoderConfig) -> Result<Self> {
        let p = "mask_decoder";
        let d = c.hidden_size;
        let nmt = c.num_multimask_outputs + 1;
        let eps = c.layer_norm_eps;
        let iou_token = w.get(&format!("{p}.iou_token.weight"), &[1, d])?;
        let mask_tokens = w.get(&format!("{p}.mask_tokens.weight"), &[nmt, d])?;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let b = format!("{p}.transformer.layers.{i}");
            let ds = c.attention_downsample_rate;
            layers.push(TwoWayBlock {
                self_attn: Attention::load(w, &format!("{b}.self_attn"), c, 1)?,
                norm1: LayerNorm::load(w, &format!("{b}.layer_norm1"), d, eps)?,
                cross_t2i: Attention::load(w, &format!("{b}.cross_attn_token_to_image"), c, ds)?,
                norm2: LayerNorm::load(w, &format!("{b}.layer_norm2"), d, eps)?,
                lin1: Linear::load(w, &format!("{b}.mlp.lin1"), d, c.mlp_dim, true)?,
                lin2: Linear::load(w, &format!("{b}.mlp.lin2"), c.mlp_dim, d, true)?,
                norm3: LayerNorm::load(w, &format!("{b}.layer_norm3"), d, eps)?,
                norm4: LayerNorm::load(w, &format!("{b}.layer_norm4"), d, eps)?,
                cross_i2t: Attention::load(w, &format!("{b}.cross_attn_image_to_token"), c, ds)?,
                skip_first_pe: i == 0,
            });
        }
        let hyper = (0..nmt)
            .map(|i| {
                FeedForward::load(
                    w,
                    &format!("{p}.output_hypernetworks_mlps.{i}"),
                    d,
                    d,
                    d / 8,
                    3,
                )
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            output_tokens: Tensor::cat(&[iou_token, mask_tokens], 0)?,
            layers,
            final_attn: Attention::load(
                w,
                &format!("{p}.transformer.final_attn_token_to_image"),
                c,
                c.attention_downsample_rate,
            )?,
            // `nn.LayerNorm(hidden)` without eps: torch's default 1e-5.
            final_norm: LayerNorm::load(
                w,
                &format!("{p}.transformer.layer_norm_final_attn"),
                d,
                1e-5,
            )?,
            up1: UpConv2x2::load(w, &format!("{p}.upscale_conv1"), d, d / 4)?,
            // `SamLayerNorm` default eps.
            up_norm: LayerNorm::load(w, &format!("{p}.upscale_layer_norm"), d / 4, 1e-6)?,
            up2: UpConv2x2::load(w, &format!("{p}.upscale_conv2"), d / 4, d / 8)?,
            hyper,
            iou_head: FeedForward::load(
                w,
                &format!("{p}.iou_prediction_head"),
                d,
                c.iou_head_hidden_dim,
                nmt,
                c.iou_head_depth,
            )?,
            num_mask_tokens: nmt,
        })
    }

    /// `image`: `(grid·grid, d)` embeddings (channels-last, dense prompt already added);
    /// `image_pe`: `(grid·grid, d)`; `sparse`: `(n, d)` prompt tokens.
    pub fn forward(
        &self,
        image: &Tensor,
        image_pe: &Tensor,
        sparse: &Tensor,
        grid: usize,
    ) -> Result<DecoderOutput> {
        let tokens = Tensor::cat(&[&self.output_tokens, sparse], 0)?.unsqueeze(0)?;
        let kpe = image_pe.unsqueeze(0)?;
        let mut queries = tokens.clone();
        let mut keys = image.unsqueeze(0)?;
        for layer in &self.layers {
            (queries, keys) = layer.forward(&queries, &keys, &tokens, &kpe)?;
        }
        let q = (&queries + &tokens)?;
        let k = (&keys + &kpe)?;
        let attn = self.final_attn.forward(&q, &k, &keys)?;
        let queries = self.final_norm.forward(&(&queries + attn)?)?.squeeze(0)?;

        let iou_token = queries.narrow(0, 0, 1)?;
        let mask_tokens = queries.narrow(0, 1, self.num_mask_tokens)?;
        let d = keys.dim(2)?;
        let up = self
            .up1
            .forward(&keys.squeeze(0)?.reshape((grid, grid, d))?)?;
        let up = self.up_norm.forward(&up)?.gelu_erf()?;
        let up = self.up2.forward(&up)?.gelu_erf()?;
        let (h, w, c) = up.dims3()?;
        let hyper = self
            .hyper
            .iter()
            .enumerate()
            .map(|(i, mlp)| mlp.forward(&mask_tokens.narrow(0, i, 1)?))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let hyper = Tensor::cat(&hyper, 0)?; // (nmt, c)
        let masks =
            hyper
                .matmul(&up.reshape((h * w, c))?.t()?)?
                .reshape((self.num_mask_tokens, h, w))?;
        let iou = self.iou_head.forward(&iou_token)?.squeeze(0)?;
        Ok(DecoderOutput { masks, iou })
    }
}
