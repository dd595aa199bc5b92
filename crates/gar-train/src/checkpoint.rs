//! Checkpoints (resumable, exact) and the final export in the HF GAR layout.
//!
//! A checkpoint folder `checkpoint-<step>/` holds `model.safetensors` (every model weight under its
//! key, in its own dtype), `optimizer.safetensors` (`master.<key>` f32 master weights where the
//! parameter is not f32, `exp_avg.<key>`, `exp_avg_sq.<key>`) and `state.json` (step, data
//! position, seed, ranks). Resuming from it continues bit-identically: the master weights and
//! moments are exact, and the data side is a function of the position (see `trainer`).

use crate::model::LossModel;
use crate::optim::AdamW;
use crate::trainer::{LoopState, Trainer};
use candle_core::{DType, Device, Result, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const MODEL_FILE: &str = "model.safetensors";
const OPTIM_FILE: &str = "optimizer.safetensors";
const STATE_FILE: &str = "state.json";

fn io<T>(r: std::io::Result<T>, what: &Path) -> Result<T> {
    r.map_err(|e| candle_core::Error::Msg(format!("{}: {e}", what.display())))
}

pub fn checkpoint_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoint-{step}"))
}

/// Save into `dir` (written to a temporary folder first, then renamed, so a crash leaves either the
/// old or the new checkpoint).
pub fn save<M: LossModel>(trainer: &Trainer<M>, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        io(std::fs::remove_dir_all(&tmp), &tmp)?;
    }
    io(std::fs::create_dir_all(&tmp), &tmp)?;
    let weights: HashMap<String, Tensor> = trainer
        .model
        .vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&weights, tmp.join(MODEL_FILE))?;
    candle_core::safetensors::save(&optimizer_tensors(&trainer.opt), tmp.join(OPTIM_FILE))?;
    let state = serde_json::to_string_pretty(&trainer.state).map_err(candle_core::Error::wrap)?;
    io(std::fs::write(tmp.join(STATE_FILE), state), &tmp)?;
    if dir.exists() {
        io(std::fs::remove_dir_all(dir), dir)?;
    }
    io(std::fs::rename(&tmp, dir), dir)
}

fn optimizer_tensors(opt: &AdamW) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    for p in &opt.params {
        if let Some(m) = &p.master {
            t.insert(format!("master.{}", p.name), m.clone());
        }
        t.insert(format!("exp_avg.{}", p.name), p.exp_avg.clone());
        t.insert(format!("exp_avg_sq.{}", p.name), p.exp_avg_sq.clone());
    }
    t
}

/// Load a checkpoint into a trainer built with the same model layout and settings.
pub fn load<M: LossModel>(trainer: &mut Trainer<M>, dir: &Path) -> Result<()> {
    let state_path = dir.join(STATE_FILE);
    let state: LoopState =
        serde_json::from_str(&io(std::fs::read_to_string(&state_path), &state_path)?)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", state_path.display())))?;
    // Only rank 0 writes checkpoints; every rank holds the same weights and moments (they apply the
    // same reduced gradients) and has consumed the same number of samples, so any rank of the same
    // world size resumes from it. Another world size would deal the data out differently.
    if state.world_size != trainer.state.world_size {
        candle_core::bail!(
            "{} was written by a run with {} rank(s), this one has {}",
            dir.display(),
            state.world_size,
            trainer.state.world_size
        );
    }
    if state.seed != trainer.state.seed {
        // The data order and every sample's random choices derive from the seed: resuming under
        // another seed would silently train on a different stream.
        candle_core::bail!(
            "{} was written with seed {}, the config says {}",
            dir.display(),
            state.seed,
            trainer.state.seed
        );
    }
    let device = trainer
        .model
        .vars()
        .first()
        .map(|(_, v)| v.device().clone())
        .unwrap_or(Device::Cpu);
    let weights = candle_core::safetensors::load(dir.join(MODEL_FILE), &device)?;
    for (name, var) in trainer.model.vars() {
        let t = weights
            .get(&name)
            .ok_or_else(|| missing(dir, MODEL_FILE, &name))?;
        if t.shape() != var.shape() || t.dtype() != var.dtype() {
            candle_core::bail!(
                "{}: {name} is {:?} {:?}, the model has {:?} {:?}",
                dir.display(),
                t.dtype(),
                t.shape(),
                var.dtype(),
                var.shape()
            );
        }
        var.set(t)?;
    }
    let optim = candle_core::safetensors::load(dir.join(OPTIM_FILE), &device)?;
    for p in trainer.opt.params.iter_mut() {
        let get = |k: String| {
            optim
                .get(&k)
                .cloned()
                .ok_or_else(|| missing(dir, OPTIM_FILE, &k))
        };
        p.exp_avg = get(format!("exp_avg.{}", p.name))?;
        p.exp_avg_sq = get(format!("exp_avg_sq.{}", p.name))?;
        if p.master.is_some() {
            p.master = Some(get(format!("master.{}", p.name))?.to_dtype(DType::F32)?);
        }
    }
    trainer.opt.step = state.step;
    trainer.state = LoopState {
        rank: trainer.state.rank,
        ..state
    };
    Ok(())
}

fn missing(dir: &Path, file: &str, key: &str) -> candle_core::Error {
    candle_core::Error::Msg(format!("{}/{file} has no tensor {key}", dir.display()))
}

/// The newest `checkpoint-<step>` folder under `out`, if any.
pub fn latest(out: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(out).ok()?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let step: u64 = name.strip_prefix("checkpoint-")?.parse().ok()?;
            e.path()
                .join(STATE_FILE)
                .is_file()
                .then_some((step, e.path()))
        })
        .max_by_key(|(s, _)| *s)
        .map(|(_, p)| p)
}

/// Delete all but the `keep` newest checkpoints (keep = 0 keeps all).
pub fn prune(out: &Path, keep: usize) -> Result<()> {
    if keep == 0 {
        return Ok(());
    }
    let mut found: Vec<(u64, PathBuf)> = io(std::fs::read_dir(out), out)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let step = e
                .file_name()
                .into_string()
                .ok()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            Some((step, e.path()))
        })
        .collect();
    found.sort();
    let n = found.len();
    for (_, p) in found.into_iter().take(n.saturating_sub(keep)) {
        io(std::fs::remove_dir_all(&p), &p)?;
    }
    Ok(())
}

/// Write `weights` as `model.safetensors` in `dir` and copy every non-weight file of `source_dir`
/// (config.json, tokenizer and processor files, chat template, `.py` files) next to it: the HF
/// GAR layout the inference engine loads (training.md §6).
pub fn export(
    dir: &Path,
    weights: &HashMap<String, Tensor>,
    source_dir: Option<&Path>,
) -> Result<Vec<String>> {
    io(std::fs::create_dir_all(dir), dir)?;
    candle_core::safetensors::save(weights, dir.join(MODEL_FILE))?;
    let mut copied = Vec::new();
    if let Some(src) = source_dir {
        for e in io(std::fs::read_dir(src), src)? {
            let e = io(e, src)?;
            let name = e.file_name().to_string_lossy().to_string();
            let is_weights = name.ends_with(".safetensors")
                || name.ends_with(".safetensors.index.json")
                || name.ends_with(".bin")
                || name.ends_with(".pth");
            if e.path().is_file() && !is_weights {
                io(std::fs::copy(e.path(), dir.join(&name)), &e.path())?;
                copied.push(name);
            }
        }
    }
    copied.sort();
    Ok(copied)
}
