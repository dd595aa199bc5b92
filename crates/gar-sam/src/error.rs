//! One error type for the crate. Every variant names what went wrong in a form a CLI can print as one line:
//! the file, the tensor, or the prompt value at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SamError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("SAM checkpoint {dir} has no {what}")]
    MissingFile { dir: PathBuf, what: String },
    #[error(
        "SAM model '{id}' is not in the Hugging Face cache at {cache}; download it first \
         (e.g. `huggingface-cli download {id}`) or pass a local directory"
    )]
    NotCached { id: String, cache: PathBuf },
    #[error("'{0}' is neither an existing directory nor a hub id of the form owner/name")]
    BadModelId(String),
    #[error("checkpoint tensor `{name}` is missing ({file})")]
    MissingTensor { name: String, file: String },
    #[error("checkpoint tensor `{name}` has shape {got:?}, expected {expected:?}")]
    Shape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("cannot load image {path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error("invalid prompt: {0}")]
    Prompt(String),
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, SamError>;
