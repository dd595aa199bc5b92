//! Checkpoint access by transformers' key names. A checkpoint is either in the HF layout
//! (`facebook/sam-vit-*`, what `SamModel.save_pretrained` writes) or in Meta's original layout
//! (`image_encoder.blocks.0.norm1.weight`, …, converted to safetensors); the latter is renamed through
//! [`meta_to_hf`], the one explicit rename map, so model code only ever sees HF names.
//!
//! Every lookup checks the shape and names the tensor when something does not fit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};

use crate::error::{Result, SamError};

/// Key layout of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// transformers' `SamModel` names (`vision_encoder.layers.0.layer_norm1.weight`).
    Hf,
    /// Meta's `segment_anything` names (`image_encoder.blocks.0.norm1.weight`).
    Meta,
}

enum Source {
    Mmaped(MmapedSafetensors),
    Tensors(HashMap<String, Tensor>),
    /// Any requested tensor is drawn on demand: benchmarks build full-size models without files.
    Random,
}

/// Named tensors, looked up by HF name and returned as f32 on the target device.
pub struct Weights {
    source: Source,
    /// HF name → stored name (identity for the HF layout).
    names: HashMap<String, String>,
    /// Stored shapes, by HF name.
    shapes: HashMap<String, Vec<usize>>,
    layout: Layout,
    device: Device,
    desc: String,
}

/// Ordered substring replacements of transformers' `convert_sam_to_hf.py`; order matters (the
/// `iou_prediction_head` shifts, then the generic ones).
const META_TO_HF: &[(&str, &str)] = &[
    (
        "iou_prediction_head.layers.0",
        "iou_prediction_head.proj_in",
    ),
    (
        "iou_prediction_head.layers.1",
        "iou_prediction_head.layers.0",
    ),
    (
        "iou_prediction_head.layers.2",
        "iou_prediction_head.proj_out",
    ),
    (
        "mask_decoder.output_upscaling.0",
        "mask_decoder.upscale_conv1",
    ),
    (
        "mask_decoder.output_upscaling.1",
        "mask_decoder.upscale_layer_norm",
    ),
    (
        "mask_decoder.output_upscaling.3",
        "mask_decoder.upscale_conv2",
    ),
    ("mask_downscaling.0", "mask_embed.conv1"),
    ("mask_downscaling.1", "mask_embed.layer_norm1"),
    ("mask_downscaling.3", "mask_embed.conv2"),
    ("mask_downscaling.4", "mask_embed.layer_norm2"),
    ("mask_downscaling.6", "mask_embed.conv3"),
    ("point_embeddings", "point_embed"),
    (
        "pe_layer.positional_encoding_gaussian_matrix",
        "shared_embedding.positional_embedding",
    ),
    ("image_encoder", "vision_encoder"),
    ("neck.0", "neck.conv1"),
    ("neck.1", "neck.layer_norm1"),
    ("neck.2", "neck.conv2"),
    ("neck.3", "neck.layer_norm2"),
    ("patch_embed.proj", "patch_embed.projection"),
    (".norm", ".layer_norm"),
    ("blocks", "layers"),
];

/// Renames one Meta `segment_anything` key to its transformers name (the rename map of
/// `convert_sam_to_hf.py`, including the hypernetwork MLP layer shift).
pub fn meta_to_hf(name: &str) -> String {
    let mut key = name.to_string();
    for (from, to) in META_TO_HF {
        if key.contains(from) {
            key = key.replace(from, to);
        }
    }
    // `output_hypernetworks_mlps.N.layers.{0,1,2}` → `proj_in`, `layers.0`, `proj_out`.
    let parts: Vec<&str> = key.split('.').collect();
    if let Some(i) = parts.iter().position(|p| *p == "output_hypernetworks_mlps") {
        if parts.get(i + 2) == Some(&"layers") {
            let renamed = match parts.get(i + 3) {
                Some(&"0") => Some("proj_in"),
                Some(&"1") => Some("layers.0"),
                Some(&"2") => Some("proj_out"),
                _ => None,
            };
            if let Some(r) = renamed {
                let mut out: Vec<&str> = parts[..i + 2].to_vec();
                out.push(r);
                out.extend_from_slice(&parts[i + 4..]);
                key = out.join(".");
            }
        }
    }
    key
}

/// The key that tells a Meta-layout checkpoint apart.
const META_MARKER: &str = "image_encoder.patch_embed.proj.weight";

impl Weights {
    /// Memory-maps `files` (one file or all shards) and detects the key layout.
    pub fn open(files: &[PathBuf], device: &Device) -> Result<Self> {
        for f in files {
            if !f.is_file() {
                return Err(SamError::MissingFile {
                    dir: f.parent().unwrap_or(Path::new(".")).to_path_buf(),
                    what: f
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                });
            }
        }
        // SAFETY: the files are opened read-only; as with any mmap, they must not be truncated while
        // the model is alive (the same contract as candle's own VarBuilder::from_mmaped_safetensors).
        let st = unsafe { MmapedSafetensors::multi(files) }.map_err(|e| SamError::Config {
            path: files.first().cloned().unwrap_or_default(),
            message: format!("not a readable safetensors file: {e}"),
        })?;
        let stored: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect();
        let desc = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Self::index(Source::Mmaped(st), stored, device, desc))
    }

    /// Wraps in-memory tensors (tests, conversions).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, device: &Device) -> Self {
        let stored = tensors
            .iter()
            .map(|(k, v)| (k.clone(), v.dims().to_vec()))
            .collect();
        Self::index(
            Source::Tensors(tensors),
            stored,
            device,
            "in-memory tensors".into(),
        )
    }

    /// A source that fabricates every requested tensor with random values (benchmarks only).
    pub fn random(device: &Device) -> Self {
        Self {
            source: Source::Random,
            names: HashMap::new(),
            shapes: HashMap::new(),
            layout: Layout::Hf,
            device: device.clone(),
            desc: "random weights".into(),
        }
    }

    fn index(
        source: Source,
        stored: Vec<(String, Vec<usize>)>,
        device: &Device,
        desc: String,
    ) -> Self {
        let layout = if stored.iter().any(|(k, _)| k == META_MARKER) {
            Layout::Meta
        } else {
            Layout::Hf
        };
        let mut names = HashMap::new();
        let mut shapes = HashMap::new();
        for (stored_name, shape) in stored {
            let hf = match layout {
                Layout::Hf => stored_name.clone(),
                Layout::Meta => meta_to_hf(&stored_name),
            };
            shapes.insert(hf.clone(), shape);
            names.insert(hf, stored_name);
        }
        Self {
            source,
            names,
            shapes,
            layout,
            device: device.clone(),
            desc,
        }
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Stored shape of an HF-named tensor, if present.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.shapes.get(name).map(Vec::as_slice)
    }

    /// Number of `prefix.N.…` blocks present (e.g. encoder depth of a config-less checkpoint).
    pub fn count_blocks(&self, prefix: &str) -> usize {
        (0..)
            .take_while(|i| {
                let p = format!("{prefix}.{i}.");
                self.shapes.keys().any(|k| k.starts_with(&p))
            })
            .count()
    }

    /// The tensor `name` (HF naming) with exactly `shape`, as f32 on the target device.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Source::Random = self.source {
            return random_tensor(name, shape, &self.device);
        }
        let Some(stored) = self.names.get(name) else {
            return Err(SamError::MissingTensor {
                name: name.to_string(),
                file: self.desc.clone(),
            });
        };
        let got = &self.shapes[name];
        if got.as_slice() != shape {
            return Err(SamError::Shape {
                name: stored.clone(),
                expected: shape.to_vec(),
                got: got.clone(),
            });
        }
        let t = match &self.source {
            Source::Mmaped(st) => st.load(stored, &self.device)?,
            Source::Tensors(map) => map[stored].to_device(&self.device)?,
            Source::Random => unreachable!("handled above"),
        };
        Ok(t.to_dtype(DType::F32)?)
    }

    /// Like [`Weights::get`], trying `names` in order (tied tensors saved under either name).
    pub fn get_any(&self, names: &[&str], shape: &[usize]) -> Result<Tensor> {
        if let Some(n) = names.iter().find(|n| self.names.contains_key(**n)) {
            return self.get(n, shape);
        }
        self.get(names[0], shape)
    }
}

/// Plausible random values: unit layer norms, small biases, fan-in-scaled matrices.
fn random_tensor(name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
    if name.contains("norm") && name.ends_with("weight") {
        return Ok(Tensor::ones(shape, DType::F32, device)?);
    }
    let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
    let std = if shape.len() > 1 {
        1.0 / (fan_in as f64).sqrt()
    } else {
        0.02
    };
    Ok(Tensor::randn(0f32, std as f32, shape, device)?)
}

#[cfg(test)]
mod tests {
    use super::meta_to_hf;

    #[test]
    fn meta_names_map_to_hf_names() {
        let cases = [
            (
                "image_encoder.blocks.3.norm1.weight",
                "vision_encoder.layers.3.layer_norm1.weight",
            ),
            (
                "image_encoder.blocks.3.attn.rel_pos_h",
                "vision_encoder.layers.3.attn.rel_pos_h",
            ),
            (
                "image_encoder.patch_embed.proj.weight",
                "vision_encoder.patch_embed.projection.weight",
            ),
            (
                "image_encoder.neck.2.weight",
                "vision_encoder.neck.conv2.weight",
            ),
            (
                "image_encoder.neck.3.bias",
                "vision_encoder.neck.layer_norm2.bias",
            ),
            (
                "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
                "prompt_encoder.shared_embedding.positional_embedding",
            ),
            (
                "prompt_encoder.point_embeddings.2.weight",
                "prompt_encoder.point_embed.2.weight",
            ),
            (
                "mask_decoder.transformer.norm_final_attn.weight",
                "mask_decoder.transformer.layer_norm_final_attn.weight",
            ),
            (
                "mask_decoder.transformer.layers.1.norm4.bias",
                "mask_decoder.transformer.layers.1.layer_norm4.bias",
            ),
            (
                "mask_decoder.output_upscaling.3.weight",
                "mask_decoder.upscale_conv2.weight",
            ),
            (
                "mask_decoder.output_hypernetworks_mlps.2.layers.0.weight",
                "mask_decoder.output_hypernetworks_mlps.2.proj_in.weight",
            ),
            (
                "mask_decoder.output_hypernetworks_mlps.2.layers.1.bias",
                "mask_decoder.output_hypernetworks_mlps.2.layers.0.bias",
            ),
            (
                "mask_decoder.output_hypernetworks_mlps.2.layers.2.bias",
                "mask_decoder.output_hypernetworks_mlps.2.proj_out.bias",
            ),
            (
                "mask_decoder.iou_prediction_head.layers.1.weight",
                "mask_decoder.iou_prediction_head.layers.0.weight",
            ),
            (
                "mask_decoder.iou_prediction_head.layers.2.weight",
                "mask_decoder.iou_prediction_head.proj_out.weight",
            ),
        ];
        for (meta, hf) in cases {
            assert_eq!(meta_to_hf(meta), hf, "{meta}");
        }
    }
}
