//! The append-only record of finished items (`items.jsonl`): one JSON object per line, written
//! and flushed as each item finishes, so a killed run loses at most the item in flight. On
//! reopening, a last line without its newline (killed mid-write) is cut off and recomputed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

pub const ITEMS_FILE: &str = "items.jsonl";

/// One finished item. Timings are left out on purpose: the file of a run must not depend on
/// how fast the machine was, so sharded + merged and uninterrupted runs are byte-equal.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// Position in the benchmark's annotation file.
    pub index: usize,
    pub id: String,
    pub text: String,
    pub tokens: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop_reason: String,
}

/// Reads the finished records of `path` (none if it does not exist). Returns the records and
/// whether a torn last line was found.
pub fn read(path: &Path) -> Result<(Vec<Record>, bool)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
    let text = std::str::from_utf8(&bytes[..complete])
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(line).with_context(|| {
            format!(
                "{} line {}: not a finished-item record",
                path.display(),
                n + 1
            )
        })?;
        records.push(record);
    }
    Ok((records, complete < bytes.len()))
}

/// Records by item index; a duplicate index is an error naming the file.
pub fn by_index(records: Vec<Record>, origin: &Path) -> Result<BTreeMap<usize, Record>> {
    let mut map = BTreeMap::new();
    for r in records {
        let index = r.index;
        if map.insert(index, r).is_some() {
            bail!("item {index} appears twice in {}", origin.display());
        }
    }
    Ok(map)
}

/// Appends records one line at a time.
pub struct Appender {
    file: File,
    path: PathBuf,
}

impl Appender {
    /// Opens `path` for appending, first cutting off a torn last line.
    pub fn open(path: &Path) -> Result<Self> {
        if let Ok(bytes) = std::fs::read(path) {
            let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            if complete < bytes.len() {
                let f = OpenOptions::new().write(true).open(path)?;
                f.set_len(complete as u64)
                    .with_context(|| format!("cannot truncate {}", path.display()))?;
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_string(record)?;
        line.push('\n');
        // One write call per line, then flush: a crash leaves whole lines plus at most one torn one.
        self.file
            .write_all(line.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot append to {}", self.path.display()))
    }
}

/// Writes records sorted by index (the merged and the finished form of a run).
pub fn write_sorted(path: &Path, records: &BTreeMap<usize, Record>) -> Result<()> {
    let mut text = String::new();
    for r in records.values() {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
