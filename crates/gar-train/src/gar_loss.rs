//! The GAR training forward as the loop's [`LossModel`]: each sample is encoded (§2.6–2.9) and
//! run through [`TrainModel`]; the batch loss is the mean of the per-sample token means (§4.5).

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use gar_processor::GarProcessor;

use crate::conversation::SampleSpec;
use crate::encode::{encode, training_processor, EncodeOptions};
use crate::forward::{TrainError, TrainModel};
use crate::model::LossModel;

pub struct GarLossModel {
    model: TrainModel,
    processor: GarProcessor,
    options: EncodeOptions,
    /// Tokens of the last batch passed to `loss` (for the loop's tokens/s), so `tokens` need not
    /// encode the batch a second time.
    last_tokens: Cell<usize>,
}

impl GarLossModel {
    /// Loads the checkpoint's weights as f32 `Var`s and its processor set up for training.
    pub fn load(
        dir: impl AsRef<Path>,
        options: EncodeOptions,
        device: &Device,
    ) -> std::result::Result<Self, TrainError> {
        Self::load_as(dir, options, DType::F32, device)
    }

    /// As `load`, with the weights (and the forward and backward) in `dtype` (f32 or bf16).
    pub fn load_as(
        dir: impl AsRef<Path>,
        options: EncodeOptions,
        dtype: DType,
        device: &Device,
    ) -> std::result::Result<Self, TrainError> {
        let dir = dir.as_ref();
        let processor = training_processor(dir, options).map_err(|e| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            model: TrainModel::load_as(dir, dtype, device)?,
            processor,
            options,
            last_tokens: Cell::new(0),
        })
    }

    /// Train LoRA adapters instead of the weights they adapt (see `TrainModel::with_lora`; the
    /// trainer must freeze `lora.targeted()`).
    pub fn with_lora(mut self, lora: crate::lora::Lora) -> std::result::Result<Self, TrainError> {
        self.model = self.model.with_lora(lora)?;
        Ok(self)
    }

    pub fn train_model(&self) -> &TrainModel {
        &self.model
    }
}

fn to_candle(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

impl LossModel for GarLossModel {
    fn vars(&self) -> Vec<(String, Var)> {
        let mut vars = self.model.named_vars().to_vec();
        if let Some(lora) = self.model.lora() {
            vars.extend(lora.vars());
        }
        vars
    }

    fn lora(&self) -> Option<&crate::lora::Lora> {
        self.model.lora()
    }

    fn loss(&self, batch: &[SampleSpec]) -> Result<Tensor> {
        if batch.is_empty() {
            return Err(to_candle("empty micro-batch"));
        }
        let mut total: Option<Tensor> = None;
        let mut tokens = 0;
        for spec in batch {
            let sample = encode(spec, &self.processor, self.options).map_err(to_candle)?;
            tokens += sample.input_ids.len();
            let loss = self.model.loss(&sample).map_err(to_candle)?.loss;
            total = Some(match total {
                None => loss,
                Some(t) => (t + loss)?,
            });
        }
        self.last_tokens.set(tokens);
        let total = total.expect("non-empty batch");
        total / batch.len() as f64
    }

    fn tokens(&self, _batch: &[SampleSpec]) -> usize {
        self.last_tokens.get()
    }
}
