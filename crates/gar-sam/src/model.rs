//! The whole model: loading a checkpoint directory, the image embedding (expensive, once per image)
//! and prompt decoding (cheap, once per click), with transformers' pre- and post-processing.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::config::SamConfig;
use crate::error::{Result, SamError};
use crate::image_encoder::ImageEncoder;
use crate::mask_decoder::MaskDecoder;
use crate::postprocess::{upscale_mask, Mask};
use crate::preprocess::{preprocess, PreprocessConfig, ResizeInfo};
use crate::prompt::Prompt;
use crate::prompt_encoder::{ModelPoint, PromptEncoder};
use crate::weights::Weights;

/// Cloning is cheap: tensors are shared.
#[derive(Clone)]
pub struct Sam {
    config: SamConfig,
    preprocess: PreprocessConfig,
    encoder: ImageEncoder,
    prompt_encoder: PromptEncoder,
    decoder: MaskDecoder,
    /// Image-wide positional encoding `(grid², hidden)`: constant, computed once.
    image_pe: Tensor,
    device: Device,
}

impl std::fmt::Debug for Sam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sam")
            .field("config", &self.config)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// One image's embedding plus the geometry needed to map prompts in and masks out.
#[derive(Debug, Clone)]
pub struct ImageEmbedding {
    /// `(1, hidden, grid, grid)`, as `SamModel.get_image_embeddings` returns it.
    pub embeddings: Tensor,
    pub info: ResizeInfo,
}

/// The multimask decoder output for one prompt, before post-processing.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// `(3, 256, 256)` low-res mask logits (transformers' `pred_masks[0, 0]`).
    pub low_res: Tensor,
    /// Predicted IoU of each candidate (`iou_scores[0, 0]`).
    pub scores: Vec<f32>,
}

impl Prediction {
    /// The reference's choice: highest predicted IoU, first one on ties (`torch.argmax`).
    pub fn best(&self) -> usize {
        let mut best = 0;
        for (i, s) in self.scores.iter().enumerate() {
            if *s > self.scores[best] {
                best = i;
            }
        }
        best
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| SamError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| SamError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// `model.safetensors`, or every shard listed by `model.safetensors.index.json`.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let json: serde_json::Value = read_json(&index)?;
        let mut files: Vec<String> = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .map(|m| {
                m.values()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files.dedup();
        if !files.is_empty() {
            return Ok(files.into_iter().map(|f| dir.join(f)).collect());
        }
    }
    Err(SamError::MissingFile {
        dir: dir.to_path_buf(),
        what: "model.safetensors (or model.safetensors.index.json)".into(),
    })
}

impl Sam {
    /// Loads a checkpoint directory: `config.json` + `model.safetensors` as `SamModel.save_pretrained`
    /// writes them (HF key names), or a Meta-layout safetensors file (config optional: ViT-B/L/H are
    /// recognised from their shapes). `preprocessor_config.json` is read when present.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(SamError::MissingFile {
                dir: dir.to_path_buf(),
                what: "directory (path does not exist)".into(),
            });
        }
        let weights = Weights::open(&weight_files(dir)?, device)?;
        let config_path = dir.join("config.json");
        let config = if config_path.is_file() {
            read_json(&config_path)?
        } else {
            infer_config(&weights).ok_or_else(|| SamError::MissingFile {
                dir: dir.to_path_buf(),
                what: "config.json (and the weights are not a standard ViT-B/L/H)".into(),
            })?
        };
        let pre_path = dir.join("preprocessor_config.json");
        let preprocess = if pre_path.is_file() {
            read_json(&pre_path)?
        } else {
            PreprocessConfig::default()
        };
        Self::from_weights(&weights, config, preprocess).map_err(|e| match e {
            SamError::Config { message, .. } => SamError::Config {
                path: config_path,
                message,
            },
            e => e,
        })
    }

    /// Builds the model from any weight source (HF names).
    pub fn from_weights(
        weights: &Weights,
        config: SamConfig,
        preprocess: PreprocessConfig,
    ) -> Result<Self> {
        config.validate().map_err(|message| SamError::Config {
            path: PathBuf::from("config.json"),
            message,
        })?;
        let encoder = ImageEncoder::load(weights, &config.vision_config)?;
        let prompt_encoder = PromptEncoder::load(weights, &config)?;
        let decoder = MaskDecoder::load(weights, &config.mask_decoder_config)?;
        let image_pe = prompt_encoder.image_pe()?;
        Ok(Self {
            config,
            preprocess,
            encoder,
            prompt_encoder,
            decoder,
            image_pe,
            device: weights.device().clone(),
        })
    }

    /// A model of the given shape with random weights (benchmarks).
    pub fn random(config: SamConfig, device: &Device) -> Result<Self> {
        Self::from_weights(
            &Weights::random(device),
            config,
            PreprocessConfig::default(),
        )
    }

    pub fn config(&self) -> &SamConfig {
        &self.config
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The processor's `pixel_values` `(1, 3, 1024, 1024)` and sizes for an RGB image.
    pub fn pixel_values(&self, rgb: &RgbImage) -> Result<(Tensor, ResizeInfo)> {
        if rgb.width() == 0 || rgb.height() == 0 {
            return Err(SamError::Prompt("the image is empty (0 pixels)".into()));
        }
        preprocess(rgb, &self.preprocess, &self.device)
    }

    /// Runs the image encoder: the expensive step, to be done once per image.
    pub fn embed(&self, rgb: &RgbImage) -> Result<ImageEmbedding> {
        let (pixels, info) = self.pixel_values(rgb)?;
        Ok(ImageEmbedding {
            embeddings: self.encoder.forward(&pixels)?,
            info,
        })
    }

    /// Decodes one prompt (original-image pixel coordinates) against an embedding: the three
    /// multimask candidates and their predicted IoUs (`multimask_output=True`).
    pub fn decode(&self, emb: &ImageEmbedding, prompt: &Prompt) -> Result<Prediction> {
        let (h, w) = emb.info.original;
        prompt.validate(w, h)?;
        let points: Vec<ModelPoint> = prompt
            .points
            .iter()
            .map(|p| {
                let (x, y) = emb.info.to_model(p.x, p.y);
                ModelPoint {
                    x,
                    y,
                    label: p.positive as i32,
                }
            })
            .collect();
        // The processor turns boxes into float32 before scaling them in float64.
        let bbox = prompt.bbox.map(|b| {
            let b = b.map(|v| v as f32 as f64);
            let (x1, y1) = emb.info.to_model(b[0], b[1]);
            let (x2, y2) = emb.info.to_model(b[2], b[3]);
            [x1, y1, x2, y2]
        });
        let sparse = self.prompt_encoder.sparse(&points, bbox)?;
        let grid = self.config.vision_config.grid();
        let hidden = self.config.mask_decoder_config.hidden_size;
        let image = emb
            .embeddings
            .squeeze(0)?
            .reshape((hidden, grid * grid))?
            .t()?
            .broadcast_add(&self.prompt_encoder.no_mask)?;
        let out = self
            .decoder
            .forward(&image, &self.image_pe, &sparse, grid)?;
        let n = self.config.mask_decoder_config.num_multimask_outputs;
        Ok(Prediction {
            low_res: out.masks.narrow(0, 1, n)?,
            scores: out.iou.narrow(0, 1, n)?.to_vec1::<f32>()?,
        })
    }

    /// `post_process_masks` of candidate `index`: binary mask at the original image size.
    pub fn mask(&self, emb: &ImageEmbedding, pred: &Prediction, index: usize) -> Result<Mask> {
        let plane = pred.low_res.get(index)?;
        let side = plane.dim(0)?;
        let logits = plane.flatten_all()?.to_vec1::<f32>()?;
        let pad = (
            self.preprocess.pad_size.height,
            self.preprocess.pad_size.width,
        );
        Ok(upscale_mask(&logits, side, pad, &emb.info, 0.0))
    }
}

/// Config of a checkpoint without `config.json`: the ViT-B/L/H preset matching the encoder's width
/// (patch-embedding rows) and depth (number of blocks).
fn infer_config(w: &Weights) -> Option<SamConfig> {
    let hidden = w.shape_of("vision_encoder.patch_embed.projection.weight")?[0];
    SamConfig::preset_for(hidden, w.count_blocks("vision_encoder.layers"))
}
