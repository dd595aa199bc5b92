//! The reference's output files, so the original judge scripts read them unchanged
//! (benchmarks.md §5 and the published `model_outputs/` files):
//! * GAR-Bench (all three): the annotation records in order, each with `model_output` added;
//! * DLC-Bench: `{"<ann_id>": caption, …}`;
//! * Ferret-Bench: `[{"image_path", "annotation", "caption"}]`;
//! * MDVP-Bench: `[{"image_path", "caption", "gt"}]` (one per region mask).
//!
//! GAR-Bench-VQA is also scored (`score.json`, and the report `summary.md` / `summary.json` /
//! `chart.svg`) with the same scorer as `gar eval score`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Map, Value};

use super::items::Item;
use super::store::Record;
use crate::commands::eval::Benchmark;

pub const PREDICTIONS_FILE: &str = "predictions.json";
pub const SCORE_FILE: &str = "score.json";

/// Builds the reference-format predictions of the selected items (all must be finished).
pub fn predictions(
    bench: Benchmark,
    items: &[(usize, &Item)],
    done: &BTreeMap<usize, Record>,
) -> Result<Value> {
    let text = |index: usize| -> Result<&str> {
        done.get(&index)
            .map(|r| r.text.as_str())
            .with_context(|| format!("item {index} has no prediction"))
    };
    Ok(match bench {
        Benchmark::DlcBench => {
            let mut map = Map::new();
            for (index, item) in items {
                map.insert(item.id.clone(), Value::String(text(*index)?.to_string()));
            }
            Value::Object(map)
        }
        Benchmark::FerretBench => Value::Array(
            items
                .iter()
                .map(|(index, item)| {
                    Ok(json!({
                        "image_path": item.image,
                        "annotation": item.record.get("annotation"),
                        "caption": text(*index)?,
                    }))
                })
                .collect::<Result<_>>()?,
        ),
        Benchmark::MdvpBench => Value::Array(
            items
                .iter()
                .map(|(index, item)| {
                    Ok(json!({
                        "image_path": item.image,
                        "caption": text(*index)?,
                        "gt": item.record.get("caption"),
                    }))
                })
                .collect::<Result<_>>()?,
        ),
        _ => Value::Array(
            items
                .iter()
                .map(|(index, item)| {
                    let mut r = item.record.clone();
                    r["model_output"] = Value::String(text(*index)?.to_string());
                    Ok(r)
                })
                .collect::<Result<_>>()?,
        ),
    })
}

/// Writes predictions.json (and, for GAR-Bench-VQA, score.json plus the report: summary.md,
/// summary.json and chart.svg next to the published numbers); returns the score if any.
pub fn write(
    dir: &Path,
    bench: Benchmark,
    items: &[(usize, &Item)],
    done: &BTreeMap<usize, Record>,
) -> Result<Option<Value>> {
    let preds = predictions(bench, items, done)?;
    let path = dir.join(PREDICTIONS_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(&preds)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))?;
    if bench != Benchmark::GarBenchVqa {
        return Ok(None);
    }
    let parsed = gar_eval::garbench::read_vqa_predictions(&path, None)?;
    let result = gar_eval::garbench::score_vqa(&parsed);
    result.report().write(dir)?;
    let score = serde_json::to_value(result)?;
    let score_path = dir.join(SCORE_FILE);
    std::fs::write(&score_path, serde_json::to_string_pretty(&score)? + "\n")
        .with_context(|| format!("cannot write {}", score_path.display()))?;
    Ok(Some(score))
}
