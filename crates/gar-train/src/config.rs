//! `train.toml`: everything `gar train --config` needs. Relative paths are resolved against the
//! config file's folder. Example (GAR-1B's recipe on one rank):
//!
//! ```toml
//! out_dir = "runs/gar-1b-ft"
//! seed = 42
//!
//! [model]
//! dir = "models/GAR-1B"     # HF GAR folder: weights + config/tokenizer/processor files
//! dtype = "bf16"            # parameter dtype (f32 master weights are kept by the optimiser)
//! device = "cpu"            # or "cuda" (GPU LOCAL_RANK; multi-GPU runs all-reduce over NCCL)
//!
//! [data]
//! arrow = ["data/Seed-Dataset", "data/Fine-Grained-Dataset", "data/Relation-Dataset"]
//! jsonl = ["my_regions.jsonl"]
//! prompt_augmentation = true
//!
//! [optim]
//! lr = 1e-5
//! warmup_ratio = 0.03
//! schedule = "cosine"      # or "constant"
//! weight_decay = 0.0
//! betas = [0.9, 0.999]
//! eps = 1e-8
//! clip = 1.0               # 0 = no clipping
//!
//! [loop]
//! epochs = 1               # or steps = N (optimizer steps); steps wins when both are given
//! micro_batch = 1
//! accumulation = 2
//! save_every = 2500        # optimizer steps; 0 = only at the end
//! keep = 2                 # newest checkpoints kept; 0 = all
//! resume = true            # continue from the newest checkpoint in out_dir
//!
//! [freeze]                 # all false = full fine-tuning (GAR)
//! vision_tower = false
//!
//! [lora]                   # optional; the adapted base weights are frozen, adapters merged at export
//! rank = 16
//! alpha = 32
//! targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
//! ```

use crate::freeze::Freeze;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub out_dir: PathBuf,
    #[serde(default = "default_seed")]
    pub seed: u64,
    pub model: ModelConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(rename = "loop", default)]
    pub loop_: LoopConfig,
    #[serde(default)]
    pub freeze: Freeze,
    /// LoRA on LLM linears instead of (or besides) full fine-tuning; merged at export.
    pub lora: Option<crate::lora::LoraConfig>,
}

fn default_seed() -> u64 {
    42
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// HF GAR model folder; `None` only with `kind = "tiny"`.
    pub dir: Option<PathBuf>,
    /// `"gar"` (the training forward) or `"tiny"` (a small stand-in model for smoke runs).
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default = "default_dtype")]
    pub dtype: String,
    /// Caps the tile grid of each sample (`kind = "gar"`); the checkpoint's `max_num_tiles` by default.
    pub max_num_tiles: Option<usize>,
    /// `"cpu"` (default) or `"cuda"`: GPU `LOCAL_RANK` (0 without a launcher); needs a `cuda` build.
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_device() -> String {
    "cpu".into()
}

fn default_kind() -> String {
    "gar".into()
}
fn default_dtype() -> String {
    "bf16".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    #[serde(default)]
    pub arrow: Vec<PathBuf>,
    #[serde(default)]
    pub jsonl: Vec<PathBuf>,
    #[serde(default = "yes")]
    pub prompt_augmentation: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub lr: f64,
    pub warmup_ratio: f64,
    pub schedule: String,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    pub clip: f32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            warmup_ratio: 0.03,
            schedule: "cosine".into(),
            weight_decay: 0.0,
            betas: [0.9, 0.999],
            eps: 1e-8,
            clip: 1.0,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    pub steps: Option<usize>,
    pub epochs: Option<usize>,
    pub micro_batch: usize,
    pub accumulation: usize,
    pub save_every: u64,
    pub keep: usize,
    pub resume: bool,
}

impl Default for LoopConfig {
    fn default() -> Self {
        Self {
            steps: None,
            epochs: None,
            micro_batch: 1,
            accumulation: 1,
            save_every: 0,
            keep: 2,
            resume: true,
        }
    }
}

impl TrainConfig {
    /// Read and check a config; relative paths become relative to the file's folder.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut cfg: TrainConfig =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.out_dir);
        if let Some(d) = cfg.model.dir.as_mut() {
            fix(d);
        }
        cfg.data.arrow.iter_mut().for_each(fix);
        cfg.data.jsonl.iter_mut().for_each(fix);
        cfg.check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), String> {
        if self.data.arrow.is_empty() && self.data.jsonl.is_empty() {
            return Err("[data] names no arrow or jsonl source".into());
        }
        if self.loop_.steps.is_none() && self.loop_.epochs.is_none() {
            return Err("[loop] needs steps or epochs".into());
        }
        if self.loop_.micro_batch == 0 || self.loop_.accumulation == 0 {
            return Err("[loop] micro_batch and accumulation must be at least 1".into());
        }
        if !matches!(self.optim.schedule.as_str(), "cosine" | "constant") {
            return Err(format!(
                "[optim] schedule {:?}: use \"cosine\" or \"constant\"",
                self.optim.schedule
            ));
        }
        if self.optim.lr.is_nan()
            || self.optim.lr <= 0.0
            || !(0.0..1.0).contains(&self.optim.warmup_ratio)
        {
            return Err("[optim] lr must be > 0 and warmup_ratio in [0, 1)".into());
        }
        if !matches!(self.model.dtype.as_str(), "bf16" | "f16" | "f32") {
            return Err(format!(
                "[model] dtype {:?}: use bf16, f16 or f32",
                self.model.dtype
            ));
        }
        if !matches!(self.model.device.as_str(), "cpu" | "cuda") {
            return Err(format!(
                "[model] device {:?}: use \"cpu\" or \"cuda\"",
                self.model.device
            ));
        }
        match (self.model.kind.as_str(), &self.model.dir) {
            ("gar", None) => Err("[model] dir is required for kind = \"gar\"".into()),
            ("gar" | "tiny", _) => Ok(()),
            (k, _) => Err(format!("[model] kind {k:?}: use \"gar\" or \"tiny\"")),
        }
    }
}
