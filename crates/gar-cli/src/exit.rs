//! Exit codes and one-line error messages. Every failure reaches the user as `error: …` on stderr
//! and a code that says whose problem it is:
//! 1 inference or I/O failure, 2 bad command line (clap), 3 bad input (image, region, prompt),
//! 4 checkpoint problem (missing files, wrong shapes, tokenizer mismatch).

use gar_engine::EngineError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Runtime,
    Input,
    Checkpoint,
}

impl Kind {
    pub fn code(self) -> i32 {
        match self {
            Kind::Runtime => 1,
            Kind::Input => 3,
            Kind::Checkpoint => 4,
        }
    }
}

/// An error tagged with the exit code it deserves.
#[derive(Debug)]
pub struct Failure {
    pub kind: Kind,
    pub error: anyhow::Error,
}

impl Failure {
    pub fn new(kind: Kind, error: impl Into<anyhow::Error>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }

    pub fn from_engine(error: EngineError) -> Self {
        Self::new(Kind::of_engine(&error), error)
    }

    /// SAM errors by whose problem it is: the prompt/image (3) or the checkpoint (4). The message
    /// is flattened so the `error:` line does not repeat its sources.
    pub fn from_sam(error: gar_sam::SamError) -> Self {
        use gar_sam::SamError;
        let kind = match &error {
            SamError::Prompt(_) | SamError::Image { .. } => Kind::Input,
            SamError::Candle(_) => Kind::Runtime,
            _ => Kind::Checkpoint,
        };
        Self::new(kind, anyhow::anyhow!("{error}"))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Failure {}

/// The exit code for an error returned by a command.
pub fn exit_code(error: &anyhow::Error) -> i32 {
    error
        .downcast_ref::<Failure>()
        .map(|f| f.kind.code())
        .or_else(|| {
            error
                .downcast_ref::<EngineError>()
                .map(|e| Kind::of_engine(e).code())
        })
        .unwrap_or(1)
}

impl Kind {
    /// Whose problem an engine error is.
    fn of_engine(error: &EngineError) -> Kind {
        match error {
            EngineError::Input(_) | EngineError::Usage(_) => Kind::Input,
            EngineError::Load(_)
            | EngineError::CheckpointFiles(_)
            | EngineError::Mismatch(_)
            | EngineError::Resolve(_) => Kind::Checkpoint,
            EngineError::Inference(_) | EngineError::Internal(_) => Kind::Runtime,
        }
    }
}

/// `error: a: b: c` from an error chain, dropping causes whose text the message already shows
/// (many library errors print their source themselves).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line.replace('\n', " ")
}
