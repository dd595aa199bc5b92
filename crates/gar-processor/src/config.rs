//! The few checkpoint settings the processor needs, read from the checkpoint's JSON files:
//! * `preprocessor_config.json`: tile size, `max_num_tiles`, rescale/normalise constants (§6);
//! * `processor_config.json` (optional): `patch_size`, `pooling_ratio` → image tokens per tile (§7.4);
//! * `config.json`: GAR's `prompt_numbers` and `crop_tokens_ids` at the top level and `image_token_id`
//!   (top level for Perception-LM, under `mllm_config` for GAR) (§1.4).
//!
//! Missing keys take the transformers / GAR class defaults.

use std::path::Path;

use serde_json::Value;

use crate::error::{ProcessorError, Result};

/// `PerceptionLMImageProcessorFast` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PreprocessorConfig {
    pub tile_size: u32,
    pub max_num_tiles: usize,
    /// `"thumb+tile"` (thumbnail + grid) or anything else (thumbnail only).
    pub vision_input_type: String,
    pub do_rescale: bool,
    pub rescale_factor: f64,
    pub do_normalize: bool,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
}

impl Default for PreprocessorConfig {
    fn default() -> Self {
        Self {
            tile_size: 448,
            max_num_tiles: 36,
            vision_input_type: "thumb+tile".into(),
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
        }
    }
}

impl PreprocessorConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let d = Self::default();
        let bad = |key: &str| ProcessorError::config(path, format!("bad value for {key:?}"));
        let tile_size = match v.get("tile_size") {
            Some(x) => x
                .as_u64()
                .filter(|&t| t > 0)
                .ok_or_else(|| bad("tile_size"))? as u32,
            None => d.tile_size,
        };
        let max_num_tiles = match v.get("max_num_tiles") {
            Some(x) => x.as_u64().ok_or_else(|| bad("max_num_tiles"))? as usize,
            None => d.max_num_tiles,
        };
        let triple = |key: &str, default: [f64; 3]| -> Result<[f64; 3]> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(Value::Number(n)) => {
                    let x = n.as_f64().ok_or_else(|| bad(key))?;
                    Ok([x; 3])
                }
                Some(Value::Array(a)) if a.len() == 3 => {
                    let mut out = [0.0; 3];
                    for (o, x) in out.iter_mut().zip(a) {
                        *o = x.as_f64().ok_or_else(|| bad(key))?;
                    }
                    Ok(out)
                }
                Some(_) => Err(bad(key)),
            }
        };
        let flag =
            |key: &str, default: bool| v.get(key).and_then(Value::as_bool).unwrap_or(default);
        Ok(Self {
            tile_size,
            max_num_tiles,
            vision_input_type: v
                .get("vision_input_type")
                .and_then(Value::as_str)
                .unwrap_or(&d.vision_input_type)
                .to_string(),
            do_rescale: flag("do_rescale", d.do_rescale),
            rescale_factor: v
                .get("rescale_factor")
                .and_then(Value::as_f64)
                .unwrap_or(d.rescale_factor),
            do_normalize: flag("do_normalize", d.do_normalize),
            image_mean: triple("image_mean", d.image_mean)?,
            image_std: triple("image_std", d.image_std)?,
        })
    }

    /// How uint8 tile values become `pixel_values`.
    ///
    /// transformers fuses rescale and normalise: `mean / rescale_factor` and `std / rescale_factor` in Python
    /// floats, cast to float32 by `F.normalize`, then `(x - mean) / std` on float32 (gar-spec §6.4).
    pub fn normalization(&self) -> Normalization {
        let f32x3 = |f: &dyn Fn(usize) -> f64| [f(0) as f32, f(1) as f32, f(2) as f32];
        match (self.do_rescale, self.do_normalize) {
            (true, true) => Normalization::Affine {
                mean: f32x3(&|c| self.image_mean[c] * (1.0 / self.rescale_factor)),
                std: f32x3(&|c| self.image_std[c] * (1.0 / self.rescale_factor)),
            },
            (false, true) => Normalization::Affine {
                mean: f32x3(&|c| self.image_mean[c]),
                std: f32x3(&|c| self.image_std[c]),
            },
            (true, false) => Normalization::Rescale(self.rescale_factor as f32),
            (false, false) => Normalization::Identity,
        }
    }

    pub fn uses_tiles(&self) -> bool {
        self.vision_input_type == "thumb+tile"
    }
}

/// uint8 → float32 mapping of `pixel_values`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Normalization {
    /// `(x - mean[c]) / std[c]` in float32.
    Affine {
        mean: [f32; 3],
        std: [f32; 3],
    },
    /// `x * factor` in float32.
    Rescale(f32),
    Identity,
}

impl Normalization {
    #[inline]
    pub fn apply(&self, channel: usize, x: u8) -> f32 {
        let x = x as f32;
        match self {
            Normalization::Affine { mean, std } => (x - mean[channel]) / std[channel],
            Normalization::Rescale(f) => x * f,
            Normalization::Identity => x,
        }
    }
}

/// `PerceptionLMProcessor` settings that decide the number of `<|image|>` tokens per tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MediaTokenConfig {
    pub patch_size: u32,
    pub pooling_ratio: u32,
}

impl Default for MediaTokenConfig {
    fn default() -> Self {
        Self {
            patch_size: 14,
            pooling_ratio: 2,
        }
    }
}

impl MediaTokenConfig {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let d = Self::default();
        let get = |key: &str, default: u32| -> Result<u32> {
            match v.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(x) => x
                    .as_u64()
                    .filter(|&n| n > 0)
                    .map(|n| n as u32)
                    .ok_or_else(|| ProcessorError::config(path, format!("bad value for {key:?}"))),
            }
        };
        Ok(Self {
            patch_size: get("patch_size", d.patch_size)?,
            pooling_ratio: get("pooling_ratio", d.pooling_ratio)?,
        })
    }

    /// `(tile // patch // pool)²`, computed with Python's integer divisions (256 for 448/14/2).
    pub fn tokens_per_tile(&self, tile_size: u32) -> usize {
        let side = (tile_size / self.patch_size / self.pooling_ratio) as usize;
        side * side
    }
}

/// GAR fields of `config.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GarFields {
    /// Number of `<PromptK>` slots (K < prompt_numbers); also the background label.
    pub prompt_numbers: usize,
    /// `crop_tokens_ids` as saved, if present; checked against the tokenizer.
    pub crop_tokens_ids: Option<Vec<u32>>,
    /// `image_token_id` as saved, if present; checked against the tokenizer.
    pub image_token_id: Option<u32>,
}

impl Default for GarFields {
    fn default() -> Self {
        Self {
            prompt_numbers: 5,
            crop_tokens_ids: None,
            image_token_id: None,
        }
    }
}

impl GarFields {
    pub fn from_file(path: &Path) -> Result<Self> {
        let v = read_json(path)?;
        let bad = |key: &str| ProcessorError::config(path, format!("bad value for {key:?}"));
        let prompt_numbers = match v.get("prompt_numbers") {
            None | Some(Value::Null) => Self::default().prompt_numbers,
            Some(x) => x.as_u64().ok_or_else(|| bad("prompt_numbers"))? as usize,
        };
        let crop_tokens_ids = match v.get("crop_tokens_ids") {
            None | Some(Value::Null) => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|x| {
                        x.as_u64()
                            .map(|n| n as u32)
                            .ok_or_else(|| bad("crop_tokens_ids"))
                    })
                    .collect::<Result<Vec<_>>>()?,
            ),
            Some(_) => return Err(bad("crop_tokens_ids")),
        };
        let image_token_id = v
            .get("image_token_id")
            .or_else(|| v.get("mllm_config").and_then(|m| m.get("image_token_id")))
            .and_then(Value::as_u64)
            .map(|n| n as u32);
        Ok(Self {
            prompt_numbers,
            crop_tokens_ids,
            image_token_id,
        })
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| ProcessorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ProcessorError::config(path, e))
}
