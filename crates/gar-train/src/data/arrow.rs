//! The published GAR training set: a folder written by HF `datasets` `save_to_disk`
//! (training.md §1.2–1.3) — `state.json` lists the shards in order, each shard an Arrow IPC
//! *stream*. Opening a folder only walks the message headers of each (memory-mapped) shard to
//! find its record batches; a row read decodes its batch (the last one is cached) and converts the
//! three columns GAR reads: `image`, `conversations`, `mask_rle`. Dictionary-encoded and
//! compressed shards (which `datasets` does not write) are refused with an error.

use super::{decode_image, DataError, DataResult, Message, RawRow, RowSource};
use arrow_array::cast::AsArray;
use arrow_array::types::Int64Type;
use arrow_array::{Array, RecordBatch, StructArray};
use arrow_schema::{DataType, SchemaRef};
use image::GrayImage;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

struct BatchLoc {
    meta: std::ops::Range<usize>,
    body: std::ops::Range<usize>,
    rows: usize,
}

struct Shard {
    path: PathBuf,
    map: memmap2::Mmap,
    schema: SchemaRef,
    batches: Vec<BatchLoc>,
    /// Cumulative row counts (end of each batch).
    ends: Vec<usize>,
}

type CachedBatch = ((usize, usize), Arc<RecordBatch>);

pub struct ArrowSource {
    dir: PathBuf,
    shards: Vec<Shard>,
    ends: Vec<usize>,
    /// The last decoded batch, keyed by (shard, batch).
    cache: Mutex<Option<CachedBatch>>,
}

fn fmt_err(path: &Path, msg: impl std::fmt::Display) -> DataError {
    DataError::Format(format!("{}: {msg}", path.display()))
}

impl ArrowSource {
    pub fn open(dir: &Path) -> DataResult<Self> {
        let state_path = dir.join("state.json");
        let text = std::fs::read_to_string(&state_path).map_err(|e| DataError::Io {
            path: state_path.display().to_string(),
            msg: e.to_string(),
        })?;
        let state: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fmt_err(&state_path, e))?;
        let files = state["_data_files"]
            .as_array()
            .ok_or_else(|| fmt_err(&state_path, "no _data_files list"))?;
        let mut shards = Vec::new();
        for f in files {
            let name = f["filename"]
                .as_str()
                .ok_or_else(|| fmt_err(&state_path, "a _data_files entry has no filename"))?;
            shards.push(Shard::open(&dir.join(name))?);
        }
        let mut total = 0;
        let ends = shards
            .iter()
            .map(|s| {
                total += s.ends.last().copied().unwrap_or(0);
                total
            })
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            shards,
            ends,
            cache: Mutex::new(None),
        })
    }

    fn batch(&self, shard: usize, batch: usize) -> DataResult<Arc<RecordBatch>> {
        let mut cache = self.cache.lock().expect("arrow cache lock poisoned");
        if let Some((key, b)) = cache.as_ref() {
            if *key == (shard, batch) {
                return Ok(b.clone());
            }
        }
        let b = Arc::new(self.shards[shard].decode(batch)?);
        *cache = Some(((shard, batch), b.clone()));
        Ok(b)
    }
}

impl Shard {
    fn open(path: &Path) -> DataResult<Self> {
        let file = std::fs::File::open(path).map_err(|e| DataError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        // SAFETY: the shard is opened read-only and datasets never rewrites shards in place; a
        // concurrent truncation by another process would be a misuse of the data folder.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| DataError::Io {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let (mut pos, mut schema, mut batches) = (0usize, None, Vec::new());
        let word = |p: usize| -> DataResult<u32> {
            map.get(p..p + 4)
                .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
                .ok_or_else(|| fmt_err(path, format!("stream truncated at byte {p}")))
        };
        loop {
            if pos == map.len() {
                break; // a stream may end without the end-of-stream marker
            }
            let mut len = word(pos)?;
            pos += 4;
            if len == 0xFFFF_FFFF {
                len = word(pos)?;
                pos += 4;
            }
            if len == 0 {
                break;
            }
            let meta = pos..pos + len as usize;
            let bytes = map
                .get(meta.clone())
                .ok_or_else(|| fmt_err(path, "message header past the end"))?;
            let msg = arrow_ipc::root_as_message(bytes).map_err(|e| fmt_err(path, e))?;
            let body = meta.end..meta.end + msg.bodyLength() as usize;
            if body.end > map.len() {
                return Err(fmt_err(path, "message body past the end"));
            }
            match msg.header_type() {
                arrow_ipc::MessageHeader::Schema => {
                    let s = arrow_ipc::convert::try_schema_from_flatbuffer_bytes(bytes)
                        .map_err(|e| fmt_err(path, e))?;
                    schema = Some(Arc::new(s));
                }
                arrow_ipc::MessageHeader::RecordBatch => {
                    let rb = msg
                        .header_as_record_batch()
                        .ok_or_else(|| fmt_err(path, "bad record batch header"))?;
                    if rb.compression().is_some() {
                        return Err(fmt_err(path, "compressed IPC buffers are not supported"));
                    }
                    batches.push(BatchLoc {
                        meta: meta.clone(),
                        body: body.clone(),
                        rows: rb.length() as usize,
                    });
                }
                arrow_ipc::MessageHeader::DictionaryBatch => {
                    return Err(fmt_err(
                        path,
                        "dictionary-encoded columns are not supported",
                    ));
                }
                other => return Err(fmt_err(path, format!("unexpected IPC message {other:?}"))),
            }
            pos = body.end;
        }
        let schema =
            schema.ok_or_else(|| fmt_err(path, "no schema message: not an Arrow IPC stream"))?;
        for col in ["image", "conversations"] {
            if schema.field_with_name(col).is_err() {
                return Err(fmt_err(path, format!("no `{col}` column")));
            }
        }
        let mut total = 0;
        let ends = batches
            .iter()
            .map(|b| {
                total += b.rows;
                total
            })
            .collect();
        Ok(Self {
            path: path.to_path_buf(),
            map,
            schema,
            batches,
            ends,
        })
    }

    fn decode(&self, k: usize) -> DataResult<RecordBatch> {
        let loc = &self.batches[k];
        let msg = arrow_ipc::root_as_message(&self.map[loc.meta.clone()])
            .map_err(|e| fmt_err(&self.path, e))?;
        let rb = msg
            .header_as_record_batch()
            .ok_or_else(|| fmt_err(&self.path, "bad record batch header"))?;
        let body = arrow_buffer::Buffer::from(&self.map[loc.body.clone()]);
        arrow_ipc::reader::read_record_batch(
            &body,
            rb,
            self.schema.clone(),
            &Default::default(),
            None,
            &msg.version(),
        )
        .map_err(|e| fmt_err(&self.path, e))
    }
}

impl RowSource for ArrowSource {
    fn len(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    fn row(&self, index: usize) -> DataResult<RawRow> {
        let s = self.ends.partition_point(|&e| e <= index);
        let shard = self.shards.get(s).ok_or(DataError::OutOfRange {
            index,
            len: self.len(),
        })?;
        let in_shard = index - if s == 0 { 0 } else { self.ends[s - 1] };
        let b = shard.ends.partition_point(|&e| e <= in_shard);
        let r = in_shard - if b == 0 { 0 } else { shard.ends[b - 1] };
        let batch = self.batch(s, b)?;
        let what = format!("{} row {index}", self.dir.display());
        let col = |name: &str| batch.column_by_name(name).cloned();
        let image = match col("image") {
            Some(c) => image_at(c.as_ref(), r, &self.dir, &what)?,
            None => None,
        };
        let conversations = conversations_at(col("conversations").as_deref(), r, &what)?;
        let masks = match col("mask_rle") {
            Some(c) => masks_at(c.as_ref(), r, &what)?,
            None => None,
        };
        Ok(RawRow {
            image,
            conversations,
            masks,
        })
    }
}

fn bad(what: &str, msg: impl std::fmt::Display) -> DataError {
    DataError::Format(format!("{what}: {msg}"))
}

fn string_at(a: &dyn Array, i: usize) -> Option<String> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(a.as_string::<i32>().value(i).to_string()),
        DataType::LargeUtf8 => Some(a.as_string::<i64>().value(i).to_string()),
        DataType::Binary => {
            Some(String::from_utf8_lossy(a.as_binary::<i32>().value(i)).into_owned())
        }
        DataType::LargeBinary => {
            Some(String::from_utf8_lossy(a.as_binary::<i64>().value(i)).into_owned())
        }
        _ => None,
    }
}

fn bytes_at(a: &dyn Array, i: usize) -> Option<Vec<u8>> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::Binary => Some(a.as_binary::<i32>().value(i).to_vec()),
        DataType::LargeBinary => Some(a.as_binary::<i64>().value(i).to_vec()),
        _ => None,
    }
}

/// The elements of list entry `i` (List or LargeList), or `None` when the entry is null.
fn list_at(a: &dyn Array, i: usize) -> Option<Arc<dyn Array>> {
    if a.is_null(i) {
        return None;
    }
    match a.data_type() {
        DataType::List(_) => Some(a.as_list::<i32>().value(i)),
        DataType::LargeList(_) => Some(a.as_list::<i64>().value(i)),
        _ => None,
    }
}

/// HF Image feature (`struct<bytes, path>`), or a string: `data:base64,…` or a file path (§1.3).
fn image_at(
    a: &dyn Array,
    r: usize,
    dir: &Path,
    what: &str,
) -> DataResult<Option<image::RgbImage>> {
    if a.is_null(r) {
        return Ok(None);
    }
    let read_path = |p: &str| -> DataResult<image::RgbImage> {
        let full = dir.join(p);
        let bytes = std::fs::read(&full).map_err(|e| DataError::Io {
            path: full.display().to_string(),
            msg: e.to_string(),
        })?;
        decode_image(&bytes, what)
    };
    if let Some(s) = a.as_struct_opt() {
        let field = |n: &str| s.column_by_name(n).cloned();
        if let Some(b) = field("bytes").and_then(|c| bytes_at(c.as_ref(), r)) {
            return decode_image(&b, what).map(Some);
        }
        if let Some(p) = field("path").and_then(|c| string_at(c.as_ref(), r)) {
            return read_path(&p).map(Some);
        }
        return Ok(None);
    }
    let Some(s) = string_at(a, r) else {
        return Err(bad(what, "`image` is neither an Image struct nor a string"));
    };
    if let Some(b64) = s.strip_prefix("data:base64,") {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| bad(what, e))?;
        return decode_image(&bytes, what).map(Some);
    }
    read_path(&s).map(Some)
}

fn conversations_at(a: Option<&dyn Array>, r: usize, what: &str) -> DataResult<Vec<Message>> {
    let Some(items) = a.and_then(|a| list_at(a, r)) else {
        return Ok(Vec::new());
    };
    let s: &StructArray = items
        .as_struct_opt()
        .ok_or_else(|| bad(what, "`conversations` is not a list of structs"))?;
    let (from, value) = match (s.column_by_name("from"), s.column_by_name("value")) {
        (Some(f), Some(v)) => (f.clone(), v.clone()),
        _ => return Err(bad(what, "`conversations` entries need `from` and `value`")),
    };
    (0..s.len())
        .map(|i| {
            Ok(Message {
                from: string_at(from.as_ref(), i)
                    .ok_or_else(|| bad(what, "a turn has no `from`"))?,
                value: string_at(value.as_ref(), i).unwrap_or_default(),
            })
        })
        .collect()
}

/// `mask_rle`: a list of `{size, counts}` structs, a single struct, or null (no masks).
fn masks_at(a: &dyn Array, r: usize, what: &str) -> DataResult<Option<Vec<GrayImage>>> {
    if a.is_null(r) {
        return Ok(None);
    }
    let (entries, rows): (Arc<dyn Array>, Vec<usize>) = match list_at(a, r) {
        Some(items) => {
            let n = items.len();
            (items, (0..n).collect())
        }
        None => (
            Arc::new(
                a.as_struct_opt()
                    .ok_or_else(|| bad(what, "`mask_rle` is not a list or struct"))?
                    .clone(),
            ),
            vec![r],
        ),
    };
    let s = entries
        .as_struct_opt()
        .ok_or_else(|| bad(what, "`mask_rle` entries are not structs"))?;
    let (size, counts) = match (s.column_by_name("size"), s.column_by_name("counts")) {
        (Some(a), Some(b)) => (a.clone(), b.clone()),
        _ => return Err(bad(what, "`mask_rle` entries need `size` and `counts`")),
    };
    let mut masks = Vec::new();
    for i in rows {
        let hw = list_at(size.as_ref(), i).ok_or_else(|| bad(what, "a mask has no size"))?;
        let hw: Vec<i64> = match hw.as_primitive_opt::<Int64Type>() {
            Some(p) => p.values().to_vec(),
            None => return Err(bad(what, "mask size is not int64")),
        };
        let [h, w] = hw[..] else {
            return Err(bad(what, "mask size is not [height, width]"));
        };
        let c = string_at(counts.as_ref(), i)
            .ok_or_else(|| bad(what, "a mask has no counts string"))?;
        let (h, w) = (
            u32::try_from(h).map_err(|e| bad(what, e))?,
            u32::try_from(w).map_err(|e| bad(what, e))?,
        );
        masks.push(crate::rle::decode(h, w, &c).map_err(|e| bad(what, e))?);
    }
    Ok(Some(masks))
}
