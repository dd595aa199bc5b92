//! Errors and warnings. Every failure of the processor is one of these variants: the library never panics
//! on user input.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong between user input and model inputs.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("unsupported image format (expected PNG, JPEG, WebP, BMP, GIF or TIFF)")]
    UnsupportedFormat,

    #[error("corrupt or unsupported image: {0}")]
    Decode(String),

    #[error(
        "image of {width}x{height} = {pixels} pixels exceeds the limit of {limit} pixels \
         (possible decompression bomb; raise LoadOptions::max_pixels to accept it)"
    )]
    ImageTooLarge {
        width: u64,
        height: u64,
        pixels: u64,
        limit: u64,
    },

    #[error("image has zero width or height")]
    EmptyImage,

    #[error("invalid raw image buffer: {0}")]
    InvalidBuffer(String),

    #[error("invalid checkpoint file {file}: {msg}")]
    Config { file: PathBuf, msg: String },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("token {0:?} is missing from the tokenizer")]
    MissingToken(String),

    #[error(
        "config.json crop_tokens_ids[{index}] = {config_id}, but the tokenizer maps {token} to {tokenizer_id}: \
         checkpoint config and tokenizer disagree"
    )]
    CropTokenMismatch {
        index: usize,
        config_id: u32,
        token: String,
        tokenizer_id: u32,
    },

    #[error("config.json {field} = {config_id}, but the tokenizer maps {token} to {tokenizer_id}")]
    TokenIdMismatch {
        field: &'static str,
        config_id: u32,
        token: String,
        tokenizer_id: u32,
    },

    #[error("chat template: {0}")]
    Template(String),

    #[error("region {index} is empty: no pixel lies inside it")]
    EmptyRegion { index: usize },

    #[error("invalid region {index}: {msg}")]
    InvalidRegion { index: usize, msg: String },

    #[error(
        "{given} regions given, but this checkpoint supports at most {limit} (prompt_numbers)"
    )]
    TooManyRegions { given: usize, limit: usize },

    #[error("the text mentions <Prompt{prompt}> but no region was given for it ({regions} region(s) given)")]
    UnknownPrompt { prompt: usize, regions: usize },

    #[error(
        "prompt slot <Prompt{slot}> is out of range: this checkpoint has prompt_numbers = {limit}"
    )]
    SlotOutOfRange { slot: usize, limit: usize },

    #[error("invalid request: {0}")]
    InvalidRequest(String),
}

impl ProcessorError {
    pub(crate) fn config(file: impl Into<PathBuf>, msg: impl fmt::Display) -> Self {
        Self::Config {
            file: file.into(),
            msg: msg.to_string(),
        }
    }

    pub(crate) fn tokenizer(err: impl fmt::Display) -> Self {
        Self::Tokenizer(err.to_string())
    }
}

pub type Result<T, E = ProcessorError> = std::result::Result<T, E>;

/// Non-fatal conditions: the processor went on, but the caller should know (and may show it to the user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A region mask did not have the image's size; it was resized with NEAREST (as the reference's
    /// multi-region path does) before building the label map and the box.
    MaskResized {
        region: usize,
        from: (u32, u32),
        to: (u32, u32),
    },
    /// Pixels of this region already belong to a region with a lower prompt index, which keeps them.
    RegionsOverlap { region: usize, pixels: u64 },
    /// An `Ask` request whose texts never mention the `<PromptK>` of a region that was given.
    RegionNotMentioned { region: usize, prompt: usize },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::MaskResized { region, from, to } => write!(
                f,
                "region {region}: mask is {}x{} but the image is {}x{}; resized with NEAREST",
                from.0, from.1, to.0, to.1
            ),
            Warning::RegionsOverlap { region, pixels } => write!(
                f,
                "region {region}: {pixels} pixels already belong to an earlier region and stay with it"
            ),
            Warning::RegionNotMentioned { region, prompt } => {
                write!(f, "region {region} is never mentioned as <Prompt{prompt}>")
            }
        }
    }
}
