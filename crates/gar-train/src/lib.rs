//! Fine-tuning GAR (`../shared/docs/training.md`).
//!
//! Two halves meet at one interface: the *conversation* of a sample after construction (turns with
//! `[[crop K]]` markers plus the mask of each `<PromptK>`). Data reading, augmentation, the optimiser and
//! the training loop produce and consume it; sample encoding, the training forward and the loss turn it
//! into a loss and gradients.

pub mod conversation;
pub mod encode;
pub mod forward;
pub mod loss;
