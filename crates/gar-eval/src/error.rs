//! The one error type of the library: every variant names the file (and the item when
//! there is one) so a user can find the bad record without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while reading benchmark files or scoring them.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed JSON in {path}: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// One record of a file does not have the expected shape.
    #[error("{path}: item {item}: {message}")]
    Item {
        path: PathBuf,
        item: String,
        message: String,
    },
    /// The file parses but is not the kind of file this command expects.
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
    /// A companion file (annotations, questions) was not given and not found by layout.
    #[error("{what} not found; looked at: {}; pass it explicitly with --annotations", list(.searched))]
    NotFound {
        what: String,
        searched: Vec<PathBuf>,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn list(paths: &[PathBuf]) -> String {
    if paths.is_empty() {
        return "(nowhere)".into();
    }
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub type Result<T> = std::result::Result<T, EvalError>;

impl EvalError {
    pub(crate) fn item(
        path: &std::path::Path,
        item: impl ToString,
        message: impl ToString,
    ) -> Self {
        EvalError::Item {
            path: path.to_path_buf(),
            item: item.to_string(),
            message: message.to_string(),
        }
    }

    pub(crate) fn format(path: &std::path::Path, message: impl ToString) -> Self {
        EvalError::Format {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}
