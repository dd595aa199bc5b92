//! `SamPromptEncoder` for points and boxes (mask prompts are not used by GAR and not implemented),
//! and the image-wide positional encoding the decoder needs. Prompt coordinates arrive already in
//! the 1024-pixel model frame (see [`crate::preprocess::ResizeInfo`]).
//!
//! The random-Fourier positional encoding is computed on the host in the same precision steps as
//! transformers: coordinates in f64 up to `2·c − 1`, then f32 for the projection and sin/cos.

use candle_core::{Device, Tensor};

use crate::config::SamConfig;
use crate::error::Result;
use crate::weights::Weights;

#[derive(Clone)]
pub struct PromptEncoder {
    /// `(2, F)` Gaussian matrix, host copy.
    gaussian: Vec<f32>,
    feats: usize,
    /// point_embed[0..4]: negative, positive, box top-left, box bottom-right.
    point_embed: [Vec<f32>; 4],
    not_a_point: Vec<f32>,
    /// `(hidden,)` dense embedding used when no mask prompt is given.
    pub no_mask: Tensor,
    input_size: f64,
    grid: usize,
    hidden: usize,
    device: Device,
}

/// A point in the model frame with SAM's label: 1 positive, 0 negative, −1 "not a point" (padding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelPoint {
    pub x: f64,
    pub y: f64,
    pub label: i32,
}

impl PromptEncoder {
    pub fn load(w: &Weights, c: &SamConfig) -> Result<Self> {
        let hidden = c.prompt_encoder_config.hidden_size;
        let feats = c.vision_config.num_pos_feats;
        let gaussian = w
            .get_any(
                &[
                    "shared_image_embedding.positional_embedding",
                    "prompt_encoder.shared_embedding.positional_embedding",
                ],
                &[2, feats],
            )?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let vec = |name: &str| -> Result<Vec<f32>> {
            Ok(w.get(name, &[1, hidden])?.flatten_all()?.to_vec1::<f32>()?)
        };
        let point_embed = [
            vec("prompt_encoder.point_embed.0.weight")?,
            vec("prompt_encoder.point_embed.1.weight")?,
            vec("prompt_encoder.point_embed.2.weight")?,
            vec("prompt_encoder.point_embed.3.weight")?,
        ];
        Ok(Self {
            gaussian,
            feats,
            point_embed,
            not_a_point: vec("prompt_encoder.not_a_point_embed.weight")?,
            no_mask: w
                .get("prompt_encoder.no_mask_embed.weight", &[1, hidden])?
                .squeeze(0)?,
            input_size: c.prompt_encoder_config.image_size as f64,
            grid: c.vision_config.grid(),
            hidden,
            device: w.device().clone(),
        })
    }

    /// `SamPositionalEmbedding` of one point already mapped to `2·c − 1` (in f32, like torch).
    fn encode(&self, x: f32, y: f32, out: &mut Vec<f32>) {
        let f = self.feats;
        let two_pi = (2.0 * std::f64::consts::PI) as f32;
        let proj: Vec<f32> = (0..f)
            .map(|j| (x * self.gaussian[j] + y * self.gaussian[f + j]) * two_pi)
            .collect();
        out.extend(proj.iter().map(|v| v.sin()));
        out.extend(proj.iter().map(|v| v.cos()));
    }

    /// Sparse embeddings `(n, hidden)` for points (model frame) and an optional box `[x1, y1, x2, y2]`.
    /// Without a box a padding point is appended, exactly as transformers does (`pad=True`).
    pub fn sparse(&self, points: &[ModelPoint], bbox: Option<[f64; 4]>) -> Result<Tensor> {
        let mut rows: Vec<f32> = Vec::new();
        let mut n = 0;
        let norm = |v: f64| (2.0 * ((v + 0.5) / self.input_size) - 1.0) as f32;
        let mut all: Vec<ModelPoint> = points.to_vec();
        if bbox.is_none() && !points.is_empty() {
            all.push(ModelPoint {
                x: 0.0,
                y: 0.0,
                label: -1,
            });
        }
        for p in &all {
            let start = rows.len();
            if p.label == -1 {
                rows.extend_from_slice(&self.not_a_point);
            } else {
                self.encode(norm(p.x), norm(p.y), &mut rows);
                let add = match p.label {
                    0 => Some(&self.point_embed[0]),
                    1 => Some(&self.point_embed[1]),
                    _ => None,
                };
                if let Some(e) = add {
                    for (r, v) in rows[start..].iter_mut().zip(e) {
                        *r += v;
                    }
                }
            }
            n += 1;
        }
        if let Some([x1, y1, x2, y2]) = bbox {
            for (i, (x, y)) in [(x1, y1), (x2, y2)].into_iter().enumerate() {
                let start = rows.len();
                self.encode(norm(x), norm(y), &mut rows);
                for (r, v) in rows[start..].iter_mut().zip(&self.point_embed[2 + i]) {
                    *r += v;
                }
                n += 1;
            }
        }
        Ok(Tensor::from_vec(rows, (n, self.hidden), &self.device)?)
    }

    /// `get_image_wide_positional_embeddings`: `(grid·grid, hidden)`, row-major over (y, x).
    pub fn image_pe(&self) -> Result<Tensor> {
        let g = self.grid;
        let mut rows = Vec::with_capacity(g * g * self.hidden);
        for i in 0..g {
            for j in 0..g {
                // torch: cumsum(ones) − 0.5, divided by size, then 2·c − 1, all in f32.
                let y = ((i as f32 + 1.0) - 0.5) / g as f32;
                let x = ((j as f32 + 1.0) - 0.5) / g as f32;
                self.encode(2.0 * x - 1.0, 2.0 * y - 1.0, &mut rows);
            }
        }
        Ok(Tensor::from_vec(rows, (g * g, self.hidden), &self.device)?)
    }
}
