//! `gar train --config train.toml`: the training loop with progress bar, JSONL log, checkpoints
//! (resumable), a loss-curve SVG and the final export in the HF GAR layout.
//!
//! The loop is generic over `gar_train::model::LossModel`: `kind = "gar"` trains the checkpoint
//! through the GAR training forward (f32 or bf16), `kind = "tiny"` a small stand-in model (fast smoke tests
//! of data, loop, checkpoints and export).

use super::dist::Launch;
use crate::exit::{Failure, Kind};
use anyhow::{bail, Context};
use candle_core::{DType, Tensor};
use gar_train::allreduce::AllReduce;
use gar_train::checkpoint;
use gar_train::config::TrainConfig;
use gar_train::construct::ConstructConfig;
use gar_train::data::{arrow::ArrowSource, jsonl::JsonlSource, Concat, RowSource};
use gar_train::encode::EncodeOptions;
use gar_train::gar_loss::GarLossModel;
use gar_train::lora::Lora;
use gar_train::model::{LossModel, TinyModel};
use gar_train::optim::AdamWConfig;
use gar_train::sampler::DistributedSampler;
use gar_train::trainer::{LoopSettings, StepLog, Trainer};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

pub fn run(config: &Path) -> anyhow::Result<()> {
    // A bad config or unreadable data is the user's input problem (exit code 3).
    let input = |e: anyhow::Error| Failure::new(Kind::Input, e);
    let cfg = TrainConfig::load(config).map_err(|e| input(anyhow::Error::msg(e)))?;
    let launch = Launch::from_env().map_err(input)?;
    let device = launch.device(&cfg.model.device).map_err(input)?;
    let source = open_data(&cfg).map_err(input)?;
    // After the cheap checks, so a bad config fails at once instead of after the rendezvous.
    let reducer = launch.process_group(&device)?;
    let dtype = match cfg.model.dtype.as_str() {
        "f32" => DType::F32,
        "f16" => DType::F16,
        _ => DType::BF16,
    };
    match cfg.model.kind.as_str() {
        "tiny" => {
            let model = TinyModel::new(cfg.seed, dtype, &device)?;
            let (model, frozen) = match &cfg.lora {
                Some(l) => {
                    let lora = Lora::new(l, &model.vars(), cfg.seed)
                        .map_err(|e| Failure::new(Kind::Input, e))?;
                    let frozen = lora.targeted();
                    (model.with_lora(lora), frozen)
                }
                None => (model, Vec::new()),
            };
            train(model, frozen, &cfg, source, reducer)
        }
        "gar" => {
            let Some(dir) = &cfg.model.dir else {
                bail!("[model] dir is required with kind = \"gar\"")
            };
            match dtype {
                DType::F32 => {}
                DType::BF16 => eprintln!(
                    "note: training in bf16 (weights, forward, backward; f32 optimiser masters). The \
                     PyTorch-parity checks cover f32 only: set [model] dtype = \"f32\" for that path"
                ),
                _ => {
                    return Err(input(anyhow::anyhow!(
                        "[model] dtype = {:?} is not supported with kind = \"gar\": use \"bf16\" or \"f32\"",
                        cfg.model.dtype
                    ))
                    .into())
                }
            }
            let options = EncodeOptions {
                max_num_tiles: cfg.model.max_num_tiles,
                ..EncodeOptions::default()
            };
            let model = GarLossModel::load_as(dir, options, dtype, &device)
                .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
            let (model, frozen) = match &cfg.lora {
                Some(l) => {
                    let lora = Lora::new(l, &model.vars(), cfg.seed)
                        .map_err(|e| Failure::new(Kind::Input, e))?;
                    let frozen = lora.targeted();
                    let model = model
                        .with_lora(lora)
                        .map_err(|e| Failure::new(Kind::Input, e))?;
                    (model, frozen)
                }
                None => (model, Vec::new()),
            };
            train(model, frozen, &cfg, source, reducer)
        }
        other => bail!("[model] kind = {other:?}: expected \"gar\" or \"tiny\""),
    }
}

fn open_data(cfg: &TrainConfig) -> anyhow::Result<Arc<dyn RowSource>> {
    let mut sources: Vec<Box<dyn RowSource>> = Vec::new();
    for dir in &cfg.data.arrow {
        sources.push(Box::new(ArrowSource::open(dir)?));
    }
    for file in &cfg.data.jsonl {
        sources.push(Box::new(JsonlSource::open(file)?));
    }
    let all = Concat::new(sources);
    if all.is_empty() {
        bail!("the training data has no rows");
    }
    Ok(Arc::new(all))
}

fn train<M: LossModel>(
    model: M,
    frozen_names: Vec<String>,
    cfg: &TrainConfig,
    source: Arc<dyn RowSource>,
    reducer: Box<dyn AllReduce>,
) -> anyhow::Result<()> {
    let l = &cfg.loop_;
    let per_step = l.micro_batch * l.accumulation;
    let sampler = DistributedSampler {
        len: source.len(),
        world: reducer.world_size(),
        rank: reducer.rank(),
        per_device: per_step,
        seed: cfg.seed,
        lengths: None,
    };
    let steps = match (l.steps, l.epochs) {
        (Some(s), _) => s,
        (None, Some(e)) => e * sampler.samples_per_rank() / per_step,
        (None, None) => unreachable!("checked by TrainConfig::load"),
    };
    let o = &cfg.optim;
    let settings = LoopSettings {
        lr: o.lr,
        warmup_ratio: o.warmup_ratio,
        cosine: o.schedule == "cosine",
        steps,
        micro_batch: l.micro_batch,
        accumulation: l.accumulation,
        clip: o.clip,
        seed: cfg.seed,
        adamw: AdamWConfig {
            beta1: o.betas[0],
            beta2: o.betas[1],
            eps: o.eps,
            weight_decay: o.weight_decay,
        },
        freeze: cfg.freeze.clone(),
        frozen_names,
        construct: ConstructConfig {
            prompt_augmentation: cfg.data.prompt_augmentation,
            ..Default::default()
        },
    };
    let out = &cfg.out_dir;
    // Every rank holds the same weights after each step, so rank 0 alone writes the log,
    // checkpoints, curve and export (out_dir must be shared for the other ranks to resume; the
    // ranks check that they stand at the same step).
    let writer = reducer.rank() == 0;
    if writer {
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut trainer = Trainer::new(model, source, reducer, settings)?;
    if l.resume {
        if let Some(dir) = checkpoint::latest(out) {
            checkpoint::load(&mut trainer, &dir)?;
            eprintln!(
                "resumed from {} (step {})",
                dir.display(),
                trainer.state.step
            );
        }
    }
    trainer.check_ranks_agree()?;
    let log_path = out.join("log.jsonl");
    let mut log = match writer {
        true => Some(open_log(&log_path, trainer.state.step)?),
        false => None,
    };
    let bar = match writer {
        true => indicatif::ProgressBar::new(steps as u64),
        false => indicatif::ProgressBar::hidden(),
    }
    .with_position(trainer.state.step);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps  {msg}  [{elapsed_precise} < {eta_precise}]",
        )
        .expect("static template"),
    );
    while !trainer.is_done() {
        let entry = trainer.step()?;
        if let Some(log) = log.as_mut() {
            writeln!(log, "{}", serde_json::to_string(&entry)?)?;
            log.flush()?;
        }
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  |g| {:.3}",
            entry.loss, entry.lr, entry.grad_norm
        ));
        bar.inc(1);
        if !entry.loss.is_finite() {
            bar.abandon();
            bail!(
                "loss is {} at step {}; stopping (the last checkpoint is kept)",
                entry.loss,
                entry.step
            );
        }
        let step = trainer.state.step;
        if writer && ((l.save_every > 0 && step % l.save_every == 0) || trainer.is_done()) {
            checkpoint::save(&trainer, &checkpoint::checkpoint_dir(out, step))?;
            checkpoint::prune(out, l.keep)?;
        }
    }
    bar.finish();
    if !writer {
        eprintln!(
            "rank {} trained {} steps (rank 0 writes the outputs)",
            trainer.state.rank, trainer.state.step
        );
        return Ok(());
    }
    let curve = read_log(&log_path)?;
    std::fs::write(out.join("loss.svg"), gar_train::plot::loss_svg(&curve))?;
    let mut weights: HashMap<String, Tensor> = trainer
        .model
        .vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    if let Some(lora) = trainer.model.lora() {
        lora.merge(&mut weights)?;
    }
    let export_dir = out.join("export");
    let copied = checkpoint::export(&export_dir, &weights, cfg.model.dir.as_deref())?;
    eprintln!(
        "trained {} steps; log {}, curve {}, model {} ({} files copied from the source model)",
        trainer.state.step,
        log_path.display(),
        out.join("loss.svg").display(),
        export_dir.display(),
        copied.len()
    );
    Ok(())
}

/// Open the log for appending, dropping lines past `step` (left by a run that died after its last
/// checkpoint), so a resumed run's log has each step once.
fn open_log(path: &Path, step: u64) -> anyhow::Result<std::fs::File> {
    let kept: Vec<String> = match std::fs::read_to_string(path) {
        Ok(text) => text
            .lines()
            .filter(|l| serde_json::from_str::<StepLog>(l).is_ok_and(|e| e.step <= step))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    let mut f =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    for l in kept {
        writeln!(f, "{l}")?;
    }
    Ok(f)
}

fn read_log(path: &Path) -> anyhow::Result<Vec<(f64, f64)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<StepLog>(l).ok())
        .map(|e| (e.step as f64, e.loss))
        .collect())
}
