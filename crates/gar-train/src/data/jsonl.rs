//! A JSONL format for users' own data: one JSON object per line,
//!
//! ```json
//! {"image": "imgs/a.jpg",
//!  "regions": [{"mask": "masks/a0.png"}, {"rle": {"size": [480, 640], "counts": "..."}}, {"box": [10, 20, 200, 300]}],
//!  "conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}]}
//! ```
//!
//! Paths are relative to the JSONL file's folder. A region is a PNG mask (non-zero = inside, same
//! size as the image), a COCO compressed RLE, or a pixel box `[x1, y1, x2, y2]` (x2, y2 exclusive).
//! No `regions` key (or an empty list) = a row without masks (GAR's path C). The conversation
//! follows GAR's rules (training.md §2): `<PromptK>` tags in the text select the relation path.
//! Images and masks are read when the row is requested; the lines are parsed up front so that
//! format errors surface before training starts.

use super::{decode_image, DataError, DataResult, Message, RawRow, RowSource};
use image::GrayImage;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
struct Line {
    image: String,
    #[serde(default)]
    regions: Vec<Region>,
    conversations: Vec<Message>,
}

#[derive(Deserialize, Clone, Debug)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
enum Region {
    Mask(String),
    Rle(Rle),
    Box([u32; 4]),
}

#[derive(Deserialize, Clone, Debug)]
pub(crate) struct Rle {
    pub size: [u32; 2],
    pub counts: String,
}

pub struct JsonlSource {
    dir: PathBuf,
    name: String,
    lines: Vec<Line>,
}

impl JsonlSource {
    pub fn open(path: &Path) -> DataResult<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let mut lines = Vec::new();
        for (n, l) in text.lines().enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let line: Line = serde_json::from_str(l)
                .map_err(|e| DataError::Format(format!("{}:{}: {e}", path.display(), n + 1)))?;
            lines.push(line);
        }
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Ok(Self {
            dir,
            name: path.display().to_string(),
            lines,
        })
    }

    fn read(&self, rel: &str) -> DataResult<Vec<u8>> {
        let p = self.dir.join(rel);
        std::fs::read(&p).map_err(|e| DataError::Io {
            path: p.display().to_string(),
            msg: e.to_string(),
        })
    }
}

impl RowSource for JsonlSource {
    fn len(&self) -> usize {
        self.lines.len()
    }

    fn row(&self, index: usize) -> DataResult<RawRow> {
        let line = self.lines.get(index).ok_or(DataError::OutOfRange {
            index,
            len: self.len(),
        })?;
        let what = format!("{} row {index}", self.name);
        let image = decode_image(&self.read(&line.image)?, &what)?;
        let (w, h) = image.dimensions();
        let mut masks = Vec::new();
        for region in &line.regions {
            masks.push(match region {
                Region::Mask(p) => binary_mask(&self.read(p)?, &what)?,
                Region::Rle(r) => crate::rle::decode(r.size[0], r.size[1], &r.counts)
                    .map_err(|e| DataError::Format(format!("{what}: {e}")))?,
                Region::Box([x1, y1, x2, y2]) => {
                    let mut m = GrayImage::new(w, h);
                    for y in *y1..(*y2).min(h) {
                        for x in *x1..(*x2).min(w) {
                            m.put_pixel(x, y, image::Luma([1]));
                        }
                    }
                    m
                }
            });
        }
        let masks = (!masks.is_empty()).then_some(masks);
        Ok(RawRow {
            image: Some(image),
            conversations: line.conversations.clone(),
            masks,
        })
    }
}

/// A PNG (or other image) mask at its own size: non-zero luma = inside. A size different from the
/// image's is left for construction to reject, as GAR does (§2.1).
fn binary_mask(bytes: &[u8], what: &str) -> DataResult<GrayImage> {
    let img = image::load_from_memory(bytes)
        .map_err(|e| DataError::Format(format!("{what}: cannot decode mask: {e}")))?
        .to_luma8();
    let (w, h) = img.dimensions();
    let raw = img
        .into_raw()
        .into_iter()
        .map(|v| u8::from(v != 0))
        .collect();
    Ok(GrayImage::from_raw(w, h, raw).expect("same size as the decoded mask"))
}
