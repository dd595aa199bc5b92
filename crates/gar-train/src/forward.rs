//! The training forward (training.md §4.4): a GAR model whose every weight is a candle [`Var`] named by
//! its checkpoint key, run on one [`EncodedSample`] to the loss, differentiably (f32, or bf16 via
//! `load_as`; the loss is always computed on f32-upcast logits).
//!
//! The model code is gar-models' inference code: its fused kernels without a backward pass (softmax,
//! RoPE, the in-place KV cache) switch to differentiable compositions whenever their input tracks
//! gradients, which is exactly when the weights are `Var`s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use gar_models::{GarConfig, GarModel, GarQuirks, RegionBox};

use crate::encode::EncodedSample;
use crate::lora::Lora;
use crate::loss::causal_lm_loss;

/// Loading or running the training model.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("no *.safetensors file in {0}")]
    NoWeights(PathBuf),
    #[error("{path}: {msg}")]
    Checkpoint { path: PathBuf, msg: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// A GAR checkpoint loaded for training: `Var`s (f32 unless `load_as`) under their checkpoint key
/// names, optionally with LoRA adapters on LLM linears.
pub struct TrainModel {
    model: GarModel,
    cfg: GarConfig,
    vars: Vec<(String, Var)>,
    lora: Option<Lora>,
}

/// The loss of one sample and what it averaged over.
pub struct LossOutput {
    /// Scalar f32, still attached to the graph (call `backward`).
    pub loss: Tensor,
    pub supervised_tokens: usize,
}

impl TrainModel {
    /// Loads `dir/config.json` and every `*.safetensors` in `dir` (sharded or not) as f32 `Var`s.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self, TrainError> {
        Self::load_as(dir, DType::F32, device)
    }

    /// As `load`, with the weights stored (and the forward and backward run) in `dtype`: bf16 is the
    /// reference's training precision (spec §4.7); the optimiser keeps f32 masters.
    pub fn load_as(
        dir: impl AsRef<Path>,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, TrainError> {
        let dir = dir.as_ref();
        let cfg_path = dir.join("config.json");
        let cfg = GarConfig::from_file(&cfg_path).map_err(|e| TrainError::Checkpoint {
            path: cfg_path.clone(),
            msg: e.to_string(),
        })?;
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| TrainError::Checkpoint {
                path: dir.to_path_buf(),
                msg: e.to_string(),
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(TrainError::NoWeights(dir.to_path_buf()));
        }
        let mut vars = Vec::new();
        for f in &files {
            let tensors =
                candle_core::safetensors::load(f, device).map_err(|e| TrainError::Checkpoint {
                    path: f.clone(),
                    msg: e.to_string(),
                })?;
            for (name, t) in tensors {
                vars.push((name, Var::from_tensor(&t.to_dtype(dtype)?)?));
            }
        }
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        Self::from_vars(&cfg, vars, device)
    }

    /// Builds the model over existing `Var`s (for example after an optimiser restored them).
    pub fn from_vars(
        cfg: &GarConfig,
        vars: Vec<(String, Var)>,
        device: &Device,
    ) -> Result<Self, TrainError> {
        // The builder hands out the Vars' own tensors (same dtype and device, so no copy): gradients
        // computed through the model are found under these Vars.
        let map: HashMap<String, Tensor> = vars
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        let vb = VarBuilder::from_tensors(map, vars_dtype(&vars), device);
        let model = GarModel::new(cfg, vb, GarQuirks::default())?;
        Ok(Self {
            model,
            cfg: cfg.clone(),
            vars,
            lora: None,
        })
    }

    /// Trains `lora`'s adapters on top of the weights: every forward uses `W + (alpha/rank)·B·A` for
    /// the adapted keys, with `W` detached (the base is frozen; the trainer must also leave it out of
    /// the optimiser, see `Lora::targeted`).
    pub fn with_lora(mut self, lora: Lora) -> Result<Self, TrainError> {
        for name in lora.adapters.keys() {
            if !self.vars.iter().any(|(n, _)| n == name) {
                return Err(TrainError::Candle(candle_core::Error::Msg(format!(
                    "LoRA adapter for {name}, which the checkpoint does not have"
                ))));
            }
        }
        self.lora = Some(lora);
        Ok(self)
    }

    pub fn lora(&self) -> Option<&Lora> {
        self.lora.as_ref()
    }

    /// The model the next forward runs. Without LoRA the one built at load (its weights are the
    /// Vars themselves). With LoRA the adapted weights are new tensors `W + delta` computed from
    /// the adapters' current values, so the model is rebuilt over them for each forward (cheap: it
    /// only wraps tensors and builds the RoPE tables).
    fn current_model(&self) -> Result<std::borrow::Cow<'_, GarModel>, TrainError> {
        let Some(lora) = &self.lora else {
            return Ok(std::borrow::Cow::Borrowed(&self.model));
        };
        let mut map = HashMap::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            let t = match lora.adapters.get(name) {
                Some(adapter) => adapter.apply(&var.as_tensor().detach())?,
                None => var.as_tensor().clone(),
            };
            map.insert(name.clone(), t);
        }
        let device = self.model.device().clone();
        let vb = VarBuilder::from_tensors(map, vars_dtype(&self.vars), &device);
        Ok(std::borrow::Cow::Owned(GarModel::new(
            &self.cfg,
            vb,
            GarQuirks::default(),
        )?))
    }

    /// Every checkpoint tensor, by key name, sorted (LoRA adapters not included: see `lora`). A
    /// tied embedding / LM head is one entry.
    pub fn named_vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn model(&self) -> &GarModel {
        &self.model
    }

    /// Forward to the loss (training.md §4.4–§4.5) in the weights' dtype; the loss is f32.
    pub fn loss(&self, sample: &EncodedSample) -> Result<LossOutput, TrainError> {
        let logits = self.logits(sample)?;
        let loss = causal_lm_loss(&logits, &sample.labels)?;
        Ok(LossOutput {
            loss,
            supervised_tokens: sample.supervised_tokens(),
        })
    }

    /// Logits `(L, vocab)` f32 for every position of the sample.
    pub fn logits(&self, sample: &EncodedSample) -> Result<Tensor, TrainError> {
        let model = self.current_model()?;
        run_logits(&model, sample)
    }

    /// Each Var's gradient from `grads`, zeros where the loss does not depend on it.
    pub fn gradients(&self, grads: &GradStore) -> Result<Vec<(String, Tensor)>, TrainError> {
        self.vars
            .iter()
            .map(|(n, v)| {
                let g = match grads.get(v.as_tensor()) {
                    Some(g) => g.clone(),
                    None => v.as_tensor().zeros_like()?,
                };
                Ok((n.clone(), g))
            })
            .collect()
    }
}

/// The dtype the model runs in: the weights' (all loaded in one dtype).
fn vars_dtype(vars: &[(String, Var)]) -> DType {
    vars.first().map_or(DType::F32, |(_, v)| v.dtype())
}

/// The forward shared by training and the inference-path cross-check in the tests.
pub fn run_logits(model: &GarModel, sample: &EncodedSample) -> Result<Tensor, TrainError> {
    let dev = model.device();
    let t = sample.num_tiles;
    let ts = sample.pixel_values.len() / (t * 3);
    let side = (ts as f64).sqrt() as usize;
    let pixels = Tensor::from_slice(&sample.pixel_values, (t, 3, side, side), dev)?;
    let labels = Tensor::from_slice(&sample.mask_labels, (t, side, side), dev)?;
    let features = model.encode_image(&pixels, Some(&labels))?;
    // A region can be in the label map without crop tokens in the text (relation tags beyond
    // prompt_numbers, §2.4): only the crop ids that occur are replayed, as the reference does.
    let regions: Vec<RegionBox> = sample
        .regions
        .iter()
        .filter(|r| sample.input_ids.contains(&r.crop_token_id))
        .map(|r| RegionBox {
            crop_token_id: r.crop_token_id,
            bbox: r.bbox,
        })
        .collect();
    let (ncw, nch) = sample.aspect_ratio;
    let embeds = model.embed_prompt(
        &sample.input_ids,
        Some(&features),
        (ncw as usize, nch as usize),
        &regions,
    )?;
    let len = sample.input_ids.len();
    let mut cache = model.new_cache(len);
    let hidden = model.forward(&embeds, 0, &mut cache)?;
    Ok(model.logits(&hidden.squeeze(0)?)?)
}
