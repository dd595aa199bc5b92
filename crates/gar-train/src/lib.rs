//! Fine-tuning GAR (`../shared/docs/training.md`).
//!
//! Two halves meet at one interface: the *conversation* of a sample after construction (turns with
//! `[[crop K]]` markers plus the mask of each `<PromptK>`). Data reading, augmentation, the optimiser and
//! the training loop produce and consume it; sample encoding, the training forward and the loss turn it
//! into a loss and gradients.

pub mod accumulate;
pub mod allreduce;
pub mod checkpoint;
pub mod choices;
pub mod clip;
pub mod config;
pub mod construct;
pub mod conversation;
pub mod data;
pub mod encode;
pub mod forward;
pub mod freeze;
pub mod gar_loss;
pub mod lora;
pub mod loss;
pub mod model;
#[cfg(feature = "nccl")]
pub mod nccl;
pub mod optim;
pub mod plot;
pub mod rle;
pub mod sampler;
pub mod schedule;
pub mod tcp;
pub mod trainer;
