//! Typed errors at the crate boundary. Tensor code itself returns `candle_core::Result`; loading wraps that
//! into [`LoadError`] so callers can tell a bad config from a checkpoint that does not fit.

use thiserror::Error;

/// A `config.json` that cannot be read or describes something this crate does not implement.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed config.json: {0}")]
    Json(#[source] serde_json::Error),
    #[error("invalid config: {0}")]
    Invalid(String),
    #[error("unsupported config: {0}")]
    Unsupported(String),
}

/// A checkpoint tensor that the config requires but the files do not provide as expected.
/// Raised through candle (as `candle_core::Error::Wrapped`) by [`crate::weights::Checkpoint`], which also
/// records the first one so that [`LoadError::Weight`] can carry it typed.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum WeightError {
    #[error("checkpoint tensor `{name}` is missing (the config expects shape {expected:?}); checkpoint: {source_desc}")]
    Missing {
        name: String,
        expected: Vec<usize>,
        source_desc: String,
    },
    #[error("checkpoint tensor `{name}` has shape {found:?} but the config expects {expected:?}; checkpoint: {source_desc}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
        source_desc: String,
    },
}

/// Anything that can go wrong while loading a model directory.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Weight(WeightError),
    #[error("cannot read checkpoint {path}: {message}")]
    Files { path: String, message: String },
    #[error("model construction failed: {0}")]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for LoadError {
    fn from(err: candle_core::Error) -> Self {
        LoadError::Candle(err)
    }
}
