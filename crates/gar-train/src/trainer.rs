//! The training loop: micro-batches → `loss / A` backward → accumulate → all-reduce mean →
//! clip → AdamW at the scheduled rate (training.md §5.4–5.6).
//!
//! Determinism: the construction RNG of every sample is derived from (seed, the sample's position
//! in the global order of its epoch), not drawn from one long-lived stream, so the data side of a
//! resumed run needs only the number of samples consumed, and N ranks see exactly the samples (and
//! random choices) one rank would see with an N× larger step.

use crate::accumulate::GradAccumulator;
use crate::allreduce::AllReduce;
use crate::choices::SeededChoices;
use crate::clip::clip_global_norm;
use crate::construct::{construct_with_resampling, ConstructConfig};
use crate::conversation::SampleSpec;
use crate::data::RowSource;
use crate::freeze::Freeze;
use crate::model::LossModel;
use crate::optim::{AdamW, AdamWConfig};
use crate::sampler::DistributedSampler;
use crate::schedule::WarmupCosine;
use candle_core::{Result, Var};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct LoopSettings {
    pub lr: f64,
    pub warmup_ratio: f64,
    /// `false` = the rate stays at `lr` (no warm-up, no annealing).
    pub cosine: bool,
    pub steps: usize,
    pub micro_batch: usize,
    pub accumulation: usize,
    /// Global-norm clip; 0 disables.
    pub clip: f32,
    pub seed: u64,
    pub adamw: AdamWConfig,
    pub freeze: Freeze,
    /// Weights frozen by name on top of the groups (e.g. the bases of LoRA adapters).
    pub frozen_names: Vec<String>,
    pub construct: ConstructConfig,
}

/// Where the loop stands; everything a resume needs besides weights and moments.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Completed optimizer steps.
    pub step: u64,
    /// Samples this rank has consumed (its data position).
    pub samples_consumed: u64,
    pub seed: u64,
    pub rank: usize,
    pub world_size: usize,
}

/// One line of the training log.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: usize,
    pub tokens_per_s: f64,
    pub seconds: f64,
    /// Rows replaced because construction failed (§2.10) during this step.
    pub resampled: usize,
}

pub struct Trainer<M: LossModel> {
    pub model: M,
    pub opt: AdamW,
    pub settings: LoopSettings,
    pub state: LoopState,
    schedule: WarmupCosine,
    sampler: DistributedSampler,
    source: Arc<dyn RowSource>,
    reducer: Box<dyn AllReduce>,
    epoch_cache: Option<(u64, Vec<usize>)>,
}

impl<M: LossModel> Trainer<M> {
    pub fn new(
        model: M,
        source: Arc<dyn RowSource>,
        reducer: Box<dyn AllReduce>,
        settings: LoopSettings,
    ) -> Result<Self> {
        if source.is_empty() {
            candle_core::bail!("the training data has no rows");
        }
        if settings.accumulation == 0 || settings.micro_batch == 0 {
            candle_core::bail!("micro_batch and accumulation must be at least 1");
        }
        let trainable: Vec<(String, Var)> = model
            .vars()
            .into_iter()
            .filter(|(n, _)| !settings.freeze.is_frozen(n))
            .collect();
        if trainable.is_empty() {
            candle_core::bail!("every parameter is frozen: nothing to train");
        }
        let opt = AdamW::new(settings.adamw.clone(), trainable)?;
        let schedule = WarmupCosine::from_ratio(
            settings.lr,
            settings.warmup_ratio,
            settings.steps * settings.accumulation,
        );
        let sampler = DistributedSampler {
            len: source.len(),
            world: reducer.world_size(),
            rank: reducer.rank(),
            per_device: settings.micro_batch * settings.accumulation,
            seed: settings.seed,
            lengths: None,
        };
        let state = LoopState {
            seed: settings.seed,
            rank: reducer.rank(),
            world_size: reducer.world_size(),
            ..Default::default()
        };
        Ok(Self {
            model,
            opt,
            settings,
            state,
            schedule,
            sampler,
            source,
            reducer,
            epoch_cache: None,
        })
    }

    pub fn is_done(&self) -> bool {
        self.state.step as usize >= self.settings.steps
    }

    /// The next sample of this rank; failures are replaced as in §2.10.
    fn next_sample(&mut self) -> Result<(SampleSpec, usize)> {
        let per_epoch = self.sampler.samples_per_rank() as u64;
        let pos = self.state.samples_consumed;
        let (epoch, within) = (pos / per_epoch, (pos % per_epoch) as usize);
        if self.epoch_cache.as_ref().map(|c| c.0) != Some(epoch) {
            self.epoch_cache = Some((epoch, self.sampler.epoch_indices(epoch)));
        }
        let index = self.epoch_cache.as_ref().expect("filled above").1[within];
        // The sampler deals the global order round-robin: this rank's `within`-th sample is the
        // global sample `within · world + rank` (with world 1 this is just `pos`).
        let world = self.sampler.world as u64;
        let global = epoch * per_epoch * world + within as u64 * world + self.state.rank as u64;
        let mut ch = SeededChoices::new(sample_seed(self.settings.seed, global));
        self.state.samples_consumed += 1;
        match construct_with_resampling(
            self.source.as_ref(),
            index,
            &self.settings.construct,
            &mut ch,
        ) {
            Ok(r) => Ok((r.sample, r.failures.len())),
            Err(failures) => {
                let last = failures
                    .last()
                    .map(|(i, e)| format!("row {i}: {e}"))
                    .unwrap_or_default();
                candle_core::bail!(
                    "{} rows in a row could not be built into samples (last: {last})",
                    failures.len()
                )
            }
        }
    }

    /// Checks that every rank stands at the same step (e.g. after a resume: a rank that did not
    /// find rank 0's checkpoint — an `out_dir` not shared between nodes — would start from step 0
    /// and silently train something else). Every rank learns the mean step; a rank whose own step
    /// differs from it fails, and the others then fail at their next exchange.
    pub fn check_ranks_agree(&self) -> Result<()> {
        if self.reducer.world_size() == 1 {
            return Ok(());
        }
        let device = self.model.vars().first().map(|(_, v)| v.device().clone());
        let device = device.unwrap_or(candle_core::Device::Cpu);
        let step = self.state.step as f64;
        let mut t = [candle_core::Tensor::new(&[step as f32], &device)?];
        self.reducer.all_reduce_mean(&mut t)?;
        let mean = t[0].to_vec1::<f32>()?[0] as f64;
        if (mean - step).abs() > 1e-3 {
            candle_core::bail!(
                "rank {} is at step {} but the ranks' mean step is {mean}: the ranks resumed from \
                 different checkpoints (is out_dir shared by all ranks?)",
                self.reducer.rank(),
                self.state.step
            );
        }
        Ok(())
    }

    /// One optimizer step on the next A micro-batches of this rank's data.
    pub fn step(&mut self) -> Result<StepLog> {
        let t0 = Instant::now();
        let mut resampled = 0;
        let mut micro_batches = Vec::with_capacity(self.settings.accumulation);
        for _ in 0..self.settings.accumulation {
            let mut batch = Vec::with_capacity(self.settings.micro_batch);
            for _ in 0..self.settings.micro_batch {
                let (sample, failed) = self.next_sample()?;
                resampled += failed;
                batch.push(sample);
            }
            micro_batches.push(batch);
        }
        let mut log = self.step_on(&micro_batches)?;
        log.resampled = resampled;
        log.seconds = t0.elapsed().as_secs_f64();
        log.tokens_per_s = log.tokens as f64 / log.seconds.max(1e-9);
        Ok(log)
    }

    /// One optimizer step on given micro-batches (one per accumulation slot).
    pub fn step_on(&mut self, micro_batches: &[Vec<SampleSpec>]) -> Result<StepLog> {
        let t0 = Instant::now();
        let a = micro_batches.len();
        if a != self.settings.accumulation {
            candle_core::bail!(
                "{a} micro-batches for accumulation {}",
                self.settings.accumulation
            );
        }
        let vars: Vec<Var> = self.opt.params.iter().map(|p| p.var.clone()).collect();
        let var_refs: Vec<&Var> = vars.iter().collect();
        let mut acc = GradAccumulator::new(vars.len(), a);
        let (mut loss_sum, mut tokens) = (0f64, 0usize);
        for batch in micro_batches {
            let loss = self.model.loss(batch)?;
            loss_sum += loss.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            tokens += self.model.tokens(batch);
            // §5.4: backward of loss / A, so the accumulated gradient is the mean.
            let grads = (loss / a as f64)?.backward()?;
            acc.add(&var_refs, &grads)?;
        }
        let mut grads = acc.take(&var_refs)?;
        self.reducer.all_reduce_mean(&mut grads)?;
        if self.reducer.world_size() > 1 {
            // Log the loss of the whole step (all ranks), not only this rank's share.
            let device = grads.first().map(|g| g.device().clone());
            let device = device.unwrap_or(candle_core::Device::Cpu);
            let mut l = [candle_core::Tensor::new(&[loss_sum as f32], &device)?];
            self.reducer.all_reduce_mean(&mut l)?;
            loss_sum = l[0].to_vec1::<f32>()?[0] as f64;
        }
        let grad_norm = if self.settings.clip > 0.0 {
            clip_global_norm(&mut grads, self.settings.clip)?
        } else {
            crate::clip::global_norm(&grads)?
        };
        let lr = if self.settings.cosine {
            self.schedule.lr_at_step(self.state.step as usize, a)
        } else {
            self.settings.lr
        };
        self.opt.apply(&grads, lr)?;
        self.state.step += 1;
        let seconds = t0.elapsed().as_secs_f64();
        Ok(StepLog {
            step: self.state.step,
            loss: loss_sum / a as f64,
            lr,
            grad_norm: grad_norm as f64,
            tokens,
            tokens_per_s: tokens as f64 / seconds.max(1e-9),
            seconds,
            resampled: 0,
        })
    }
}

/// A per-sample seed: SplitMix64 over (seed, global position) so neighbouring samples get
/// unrelated streams.
pub fn sample_seed(seed: u64, position: u64) -> u64 {
    let mut z = seed ^ position.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
