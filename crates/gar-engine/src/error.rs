//! The engine's error type: what went wrong, in terms a caller can act on.

use gar_models::LoadError;
use gar_processor::ProcessorError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The request itself is wrong (bad image, region, prompt): the caller's mistake.
    #[error(transparent)]
    Input(#[from] ProcessorError),
    /// The checkpoint cannot be loaded (missing file, wrong shape, bad config).
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The checkpoint's tokenizer / processor files are missing or inconsistent.
    #[error(transparent)]
    CheckpointFiles(ProcessorError),
    /// Checkpoint files that disagree with each other (tokenizer vs config vs weights).
    #[error("checkpoint mismatch: {0}")]
    Mismatch(String),
    /// Finding or downloading the checkpoint failed.
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    /// An API misuse, such as a follow-up before any answer.
    #[error("{0}")]
    Usage(String),
    /// Tensor computation failed.
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl EngineError {
    /// True when the error is the caller's to fix (HTTP 4xx), false for server-side failures.
    pub fn is_client_error(&self) -> bool {
        matches!(self, EngineError::Input(_) | EngineError::Usage(_))
    }
}
