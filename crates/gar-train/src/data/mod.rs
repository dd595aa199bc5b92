//! Training rows as read from disk, before sample construction: the image, the dialogue in GAR's
//! `{from, value}` form and the decoded masks (training.md §1.3). Two readers produce them: the
//! published Arrow shards (`arrow`) and a JSONL format for users' own data (`jsonl`).

pub mod arrow;
pub mod jsonl;

use image::{GrayImage, RgbImage};

/// One message of a row's conversation: `from` is `"human"` or `"gpt"`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub from: String,
    pub value: String,
}

/// One row. `image: None` and bad masks are not errors here: construction rejects the row and
/// resamples (§2.10), as GAR does.
#[derive(Clone, Debug)]
pub struct RawRow {
    pub image: Option<RgbImage>,
    pub conversations: Vec<Message>,
    /// `None` = the row has no mask column value (path C); masks are 0/1.
    pub masks: Option<Vec<GrayImage>>,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: {msg}")]
    Io { path: String, msg: String },
    #[error("{0}")]
    Format(String),
    #[error("row {index} is out of range (the data has {len} rows)")]
    OutOfRange { index: usize, len: usize },
}

pub type DataResult<T> = Result<T, DataError>;

/// A random-access list of rows, read lazily.
pub trait RowSource: Send + Sync {
    fn len(&self) -> usize;
    fn row(&self, index: usize) -> DataResult<RawRow>;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Several sources one after the other (§1.1: global index → first source whose cumulative length
/// exceeds it).
pub struct Concat {
    sources: Vec<Box<dyn RowSource>>,
    ends: Vec<usize>,
}

impl Concat {
    pub fn new(sources: Vec<Box<dyn RowSource>>) -> Self {
        let mut total = 0;
        let ends = sources
            .iter()
            .map(|s| {
                total += s.len();
                total
            })
            .collect();
        Self { sources, ends }
    }
}

impl RowSource for Concat {
    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }
    fn row(&self, index: usize) -> DataResult<RawRow> {
        let k = self.ends.partition_point(|&end| end <= index);
        let Some(src) = self.sources.get(k) else {
            return Err(DataError::OutOfRange {
                index,
                len: self.len(),
            });
        };
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        src.row(index - start)
    }
}

/// Rows held in memory (tests, small synthetic sets).
pub struct VecSource(pub Vec<RawRow>);

impl RowSource for VecSource {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn row(&self, index: usize) -> DataResult<RawRow> {
        self.0.get(index).cloned().ok_or(DataError::OutOfRange {
            index,
            len: self.0.len(),
        })
    }
}

/// Decode an encoded image (PNG/JPEG/…) to RGB.
pub(crate) fn decode_image(bytes: &[u8], what: &str) -> DataResult<RgbImage> {
    image::load_from_memory(bytes)
        .map(|i| i.to_rgb8())
        .map_err(|e| DataError::Format(format!("{what}: cannot decode image: {e}")))
}
