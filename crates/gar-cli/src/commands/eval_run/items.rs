//! The work items of each benchmark, read from a benchmark root laid out like the reference
//! repository (`<root>/evaluation/<Bench>/…`), with the reference prompts (benchmarks.md §4.2).
//!
//! Regions travel in the wire form of `gar serve`'s `/v1/describe` (`{"rle": …}` or
//! `{"polygon": [[x, y], …]}`), so the in-process and `--endpoint` paths read the very same
//! region description. Region order: the annotation's mask order, mask k = `<Prompt{k}>`; every
//! region gets its own RoI box (the reference's multi-region code reuses the last mask's box for
//! all of them, benchmarks.md §4.4) and the processor lists the prompts in ascending order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use super::super::ask::multiple_choice;
use super::super::eval::Benchmark;

/// The instruction of the single-region benchmarks (DLC, Ferret, MDVP).
pub const DESCRIBE: &str = gar_processor::DEFAULT_INSTRUCTION;
/// GAR-Bench Caption-Detailed's fixed question.
pub const DETAILED_QUESTION: &str =
    "Describe <Prompt0> in detail, including the relationship with <Prompt1>.";

/// What the model is asked about one item.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// Single-region layout, the region in slot `<Prompt1>`.
    Describe,
    /// Multi-region layout with this user text.
    Ask(String),
}

/// One inference of a benchmark.
#[derive(Debug, Clone)]
pub struct Item {
    /// Stable across runs: the annotation id where there is one (DLC), else the position in the
    /// annotation file.
    pub id: String,
    /// Image path relative to the benchmark root.
    pub image: PathBuf,
    /// Regions in `/v1/describe` wire form, in prompt order.
    pub regions: Vec<Value>,
    pub query: Query,
    /// The annotation record, for the reference-format outputs.
    pub record: Value,
}

/// Where a benchmark's annotation file lives under the root.
pub fn annotation_file(bench: Benchmark) -> &'static str {
    match bench {
        Benchmark::GarBenchVqa => "evaluation/GAR-Bench/annotations/GAR-Bench-VQA.json",
        Benchmark::GarBenchSimple => {
            "evaluation/GAR-Bench/annotations/GAR-Bench-Caption-Simple.json"
        }
        Benchmark::GarBenchDetailed => {
            "evaluation/GAR-Bench/annotations/GAR-Bench-Caption-Detailed.json"
        }
        Benchmark::DlcBench => "evaluation/DLC-Bench/annotations/annotations.json",
        Benchmark::FerretBench => "evaluation/Ferret-Bench/annotations/box_refer_caption.json",
        Benchmark::MdvpBench => "evaluation/MDVP-Bench/annotations/mdvp_caption_mask.json",
    }
}

fn read(root: &Path, rel: &str) -> Result<Value> {
    let path = root.join(rel);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (is --root a benchmark root?)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

fn list(v: &Value, what: &str) -> Result<Vec<Value>> {
    match v {
        Value::Array(a) => Ok(a.clone()),
        _ => bail!("{what}: expected a JSON list"),
    }
}

fn str_field<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .with_context(|| format!("{at}: missing string field `{key}`"))
}

/// Every item of `bench`, in annotation order.
pub fn load(bench: Benchmark, root: &Path) -> Result<Vec<Item>> {
    let rel = annotation_file(bench);
    let data = read(root, rel)?;
    match bench {
        Benchmark::GarBenchVqa | Benchmark::GarBenchSimple | Benchmark::GarBenchDetailed => {
            gar_bench(bench, &list(&data, rel)?, rel)
        }
        Benchmark::DlcBench => dlc(&data, rel),
        Benchmark::FerretBench => ferret(&list(&data, rel)?, rel),
        Benchmark::MdvpBench => mdvp(&list(&data, rel)?, rel),
    }
}

fn gar_bench(bench: Benchmark, records: &[Value], rel: &str) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let at = format!("{rel} item {i}");
        let image = Path::new("evaluation/GAR-Bench/annotations").join(str_field(r, "image", &at)?);
        let regions: Vec<Value> = r
            .get("mask_rles")
            .and_then(Value::as_array)
            .with_context(|| format!("{at}: missing `mask_rles`"))?
            .iter()
            .map(|rle| json!({ "rle": rle }))
            .collect();
        let text = match bench {
            Benchmark::GarBenchVqa => {
                let choices: Vec<String> = r
                    .get("choices")
                    .and_then(Value::as_array)
                    .with_context(|| format!("{at}: missing `choices`"))?
                    .iter()
                    .map(|c| c.as_str().unwrap_or_default().to_string())
                    .collect();
                multiple_choice(str_field(r, "question", &at)?, &choices)
            }
            Benchmark::GarBenchSimple => str_field(r, "question", &at)?.to_string(),
            _ => DETAILED_QUESTION.to_string(),
        };
        items.push(Item {
            id: i.to_string(),
            image,
            regions,
            query: Query::Ask(text),
            record: r.clone(),
        });
    }
    Ok(items)
}

/// DLC-Bench images are not in the annotation repository; they are expected (from the HF
/// dataset `nvidia/DLC-Bench`) in `evaluation/DLC-Bench/images/`.
fn dlc(data: &Value, rel: &str) -> Result<Vec<Item>> {
    let images = list(data.get("images").unwrap_or(&Value::Null), rel)?;
    let file_of = |id: &Value| {
        images
            .iter()
            .find(|im| im.get("id") == Some(id))
            .and_then(|im| im.get("file_name").and_then(Value::as_str))
    };
    let mut items = Vec::new();
    for (i, a) in list(data.get("annotations").unwrap_or(&Value::Null), rel)?
        .iter()
        .enumerate()
    {
        let at = format!("{rel} annotation {i}");
        let id = a.get("id").with_context(|| format!("{at}: no `id`"))?;
        let file = file_of(a.get("image_id").unwrap_or(&Value::Null))
            .with_context(|| format!("{at}: its image_id is not in `images`"))?;
        let rle = a
            .get("segmentation")
            .with_context(|| format!("{at}: no `segmentation`"))?;
        items.push(Item {
            id: id.to_string().trim_matches('"').to_string(),
            image: Path::new("evaluation/DLC-Bench/images").join(file),
            regions: vec![json!({ "rle": rle })],
            query: Query::Describe,
            record: a.clone(),
        });
    }
    Ok(items)
}

/// Ferret-Bench: the box is the 4-corner polygon the annotation stores (a filled rectangle).
fn ferret(records: &[Value], rel: &str) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let at = format!("{rel} item {i}");
        let flat: Vec<f64> = r
            .pointer("/annotation/segmentation/0")
            .and_then(Value::as_array)
            .with_context(|| format!("{at}: missing annotation.segmentation[0]"))?
            .iter()
            .map(|v| v.as_f64().unwrap_or(f64::NAN))
            .collect();
        if flat.len() < 6 || !flat.len().is_multiple_of(2) || flat.iter().any(|v| !v.is_finite()) {
            bail!("{at}: annotation.segmentation[0] is not a polygon");
        }
        let points: Vec<[f64; 2]> = flat.chunks(2).map(|c| [c[0], c[1]]).collect();
        items.push(Item {
            id: i.to_string(),
            image: Path::new("evaluation/Ferret-Bench/annotations/coco/val2017")
                .join(str_field(r, "image", &at)?),
            regions: vec![json!({ "polygon": points })],
            query: Query::Describe,
            record: r.clone(),
        });
    }
    Ok(items)
}

/// MDVP-Bench: one item per region mask; images (not in the annotation repository) under
/// `evaluation/MDVP-Bench/data/<image_path>`.
fn mdvp(records: &[Value], rel: &str) -> Result<Vec<Item>> {
    let mut items = Vec::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let at = format!("{rel} item {i}");
        let rle = r
            .get("mask_rle")
            .with_context(|| format!("{at}: missing `mask_rle`"))?;
        items.push(Item {
            id: i.to_string(),
            image: Path::new("evaluation/MDVP-Bench/data").join(str_field(r, "image_path", &at)?),
            regions: vec![json!({ "rle": rle })],
            query: Query::Describe,
            record: r.clone(),
        });
    }
    Ok(items)
}

/// The regions as the engine takes them (same conversion as `gar serve` for these two forms).
pub fn engine_regions(item: &Item) -> Result<Vec<gar_processor::Region>> {
    item.regions
        .iter()
        .map(|w| {
            if let Some(rle) = w.get("rle") {
                Ok(gar_processor::Region::Rle(
                    serde_json::from_value(rle.clone()).context("a COCO RLE")?,
                ))
            } else if let Some(points) = w.get("polygon") {
                let points: Vec<[f64; 2]> = serde_json::from_value(points.clone())?;
                Ok(gar_processor::Region::Polygon(vec![points
                    .iter()
                    .flat_map(|p| [p[0], p[1]])
                    .collect()]))
            } else {
                bail!("unknown region form {w}")
            }
        })
        .collect()
}
