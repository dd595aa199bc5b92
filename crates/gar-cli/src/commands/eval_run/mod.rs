//! `gar eval run` and `gar eval merge`: benchmark inference that resumes, shards and writes the
//! reference's output files. User documentation: docs/eval.md.
//!
//! Item selection, in this order: every item of the benchmark in annotation order → with
//! `--skip-missing`, items whose image is absent are dropped (and counted) → `--limit N` keeps
//! the first N → `--shard i/n` keeps the items at positions p (within that list) with
//! p % n == i. So the shards of one `--limit` partition exactly what an unsharded run with that
//! `--limit` computes, and `gar eval merge` rebuilds the unsharded run's files byte for byte.

mod endpoint;
pub mod items;
mod outputs;
mod store;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use gar_processor::{Prompt, Request};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::common::{self, ModelArgs, ProcessArgs};
use super::eval::Benchmark;
use crate::exit::{Failure, Kind};
use items::{Item, Query};
use store::Record;

pub const MANIFEST_FILE: &str = "run.json";

#[derive(Args)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    bench: Benchmark,
    /// Benchmark root: the folder holding `evaluation/<Bench>/…` as in the reference repository.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    process: ProcessArgs,
    /// Send the requests to a running `gar serve` (its /v1/describe route) instead of loading
    /// the model here, e.g. http://127.0.0.1:8080. Key: GAR_API_KEY, if the server wants one.
    #[arg(long, value_name = "URL")]
    endpoint: Option<String>,
    /// Run only shard i of n (`i/n`, 0-based): the items at positions p with p % n == i.
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    shard: Option<Shard>,
    /// Only the first N items (after --skip-missing, before sharding).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Drop items whose image is absent under --root (counted) instead of failing.
    #[arg(long)]
    skip_missing: bool,
    /// Maximum new tokens per answer (the reference uses 1024).
    #[arg(long, default_value_t = 1024)]
    max_new_tokens: usize,
    /// Output folder: items.jsonl (finished items, resumable), run.json, and when the run is
    /// whole (unsharded) predictions.json (reference format) and score.json (VQA).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print a JSON summary as the last stdout line; no progress bar.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct MergeArgs {
    /// Where to write the merged run (the files an unsharded run writes).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The shard folders (all n of them, any order).
    #[arg(required = true, value_name = "SHARD_DIR")]
    shards: Vec<PathBuf>,
    /// Print a JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn parse_shard(s: &str) -> Result<Shard, String> {
    let (i, n) = s.split_once('/').ok_or("expected i/n, e.g. 0/2")?;
    let index: usize = i
        .trim()
        .parse()
        .map_err(|_| format!("'{i}' is not a number"))?;
    let count: usize = n
        .trim()
        .parse()
        .map_err(|_| format!("'{n}' is not a number"))?;
    if count == 0 || index >= count {
        return Err(format!("need 0 ≤ i < n, got {index}/{count}"));
    }
    Ok(Shard { index, count })
}

/// What defines a run; a folder is resumed only by the same run, and merged only with its
/// sibling shards.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Manifest {
    bench: String,
    root: PathBuf,
    model: String,
    endpoint: Option<String>,
    max_new_tokens: usize,
    max_tiles: Option<usize>,
    limit: Option<usize>,
    skip_missing: bool,
    /// Annotation indices of the selected items (before sharding).
    selected: Vec<usize>,
    shard: Shard,
}

fn bench_name(bench: Benchmark) -> String {
    bench
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

fn input_error(e: anyhow::Error) -> anyhow::Error {
    Failure::new(Kind::Input, e).into()
}

pub fn run(a: RunArgs) -> Result<()> {
    let all = items::load(a.bench, &a.root).map_err(input_error)?;
    let mut selected: Vec<usize> = Vec::new();
    let mut missing = 0usize;
    for (index, item) in all.iter().enumerate() {
        if a.skip_missing && !a.root.join(&item.image).is_file() {
            missing += 1;
            continue;
        }
        selected.push(index);
    }
    if let Some(n) = a.limit {
        selected.truncate(n);
    }
    let shard = a.shard.unwrap_or(Shard { index: 0, count: 1 });
    let mine: Vec<(usize, &Item)> = selected
        .iter()
        .enumerate()
        .filter(|(p, _)| p % shard.count == shard.index)
        .map(|(_, &i)| (i, &all[i]))
        .collect();
    if let Some((_, item)) = mine
        .iter()
        .find(|(_, it)| !a.root.join(&it.image).is_file())
    {
        let absent = mine
            .iter()
            .filter(|(_, it)| !a.root.join(&it.image).is_file())
            .count();
        bail!(input_error(anyhow!(
            "image {} not found ({absent} of the {} selected items lack their image; \
             --skip-missing drops them)",
            a.root.join(&item.image).display(),
            mine.len()
        )));
    }

    let manifest = Manifest {
        bench: bench_name(a.bench),
        root: a.root.clone(),
        model: a.model.model.clone(),
        endpoint: a.endpoint.clone(),
        max_new_tokens: a.max_new_tokens,
        max_tiles: a.process.max_tiles,
        limit: a.limit,
        skip_missing: a.skip_missing,
        selected: selected.clone(),
        shard,
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    check_or_write_manifest(&a.out, &manifest)?;

    let jsonl = a.out.join(store::ITEMS_FILE);
    let (records, torn) = store::read(&jsonl)?;
    if torn && !a.json {
        eprintln!(
            "note: the last line of {} was cut off mid-write; that item is redone",
            jsonl.display()
        );
    }
    let mut done = store::by_index(records, &jsonl)?;
    if let Some(stray) = done.keys().find(|i| !mine.iter().any(|(m, _)| m == *i)) {
        bail!(
            "{}: item {stray} does not belong to this run",
            jsonl.display()
        );
    }
    let already = done.len();
    let todo: Vec<(usize, &Item)> = mine
        .iter()
        .filter(|(i, _)| !done.contains_key(i))
        .cloned()
        .collect();

    if !todo.is_empty() {
        let mut answerer = Answerer::new(&a)?;
        let mut appender = store::Appender::open(&jsonl)?;
        let bar = progress_bar(todo.len() as u64, already, a.json);
        let stop_after = stop_after()?;
        for (n, (index, item)) in todo.iter().enumerate() {
            let record = answerer
                .answer(&a, *index, item)
                .with_context(|| format!("item {} ({})", item.id, item.image.display()))?;
            appender.append(&record)?;
            done.insert(*index, record);
            bar.inc(1);
            if stop_after == Some(n + 1) {
                // The state a kill leaves behind, reached deterministically (tests).
                bar.finish_and_clear();
                std::process::exit(STOPPED_EXIT);
            }
        }
        bar.finish_and_clear();
    }
    // The finished file is sorted by index, so it does not depend on interruptions.
    store::write_sorted(&jsonl, &done)?;
    let score = if shard.count == 1 {
        outputs::write(&a.out, a.bench, &mine, &done)?
    } else {
        None
    };
    let summary = json!({
        "bench": manifest.bench,
        "out": a.out,
        "selected": selected.len(),
        "items": mine.len(),
        "already_done": already,
        "computed": todo.len(),
        "skipped_missing_images": missing,
        "shard": format!("{}/{}", shard.index, shard.count),
        "score": score,
    });
    print_summary(&summary, a.json, || {
        let mut s = format!(
            "{}: {} items ({} already done, {} computed) → {}",
            manifest.bench,
            mine.len(),
            already,
            todo.len(),
            a.out.display()
        );
        if missing > 0 {
            s.push_str(&format!("; {missing} items skipped for a missing image"));
        }
        if let Some(score) = &summary["score"].as_object() {
            s.push_str(&format!("\noverall accuracy: {}", score["overall"]));
        }
        s
    })
}

/// Exit code of a run stopped by `GAR_EVAL_STOP_AFTER`.
pub const STOPPED_EXIT: i32 = 75;

/// `GAR_EVAL_STOP_AFTER=N` (a test hook): exit with [`STOPPED_EXIT`] right after the N-th item
/// computed by this process is on disk, leaving the folder as an interrupted run.
fn stop_after() -> Result<Option<usize>> {
    match std::env::var("GAR_EVAL_STOP_AFTER") {
        Ok(v) => {
            v.trim().parse::<usize>().map(Some).map_err(|_| {
                input_error(anyhow::anyhow!("GAR_EVAL_STOP_AFTER={v}: expected a count"))
            })
        }
        Err(_) => Ok(None),
    }
}

fn check_or_write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    if path.is_file() {
        let old = read_manifest(dir)?;
        if &old != manifest {
            bail!(input_error(anyhow!(
                "{} holds another run (different benchmark, model, limit, shard or settings); \
                 use a fresh --out folder",
                dir.display()
            )));
        }
        return Ok(());
    }
    write_manifest(dir, manifest)
}

fn read_manifest(dir: &Path) -> Result<Manifest> {
    let path = dir.join(MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a run manifest", path.display()))
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<()> {
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, serde_json::to_string_pretty(manifest)? + "\n")
        .with_context(|| format!("cannot write {}", path.display()))
}

fn progress_bar(len: u64, already: usize, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} items {msg} [{elapsed_precise}, ETA {eta}]",
    ) {
        bar.set_style(style);
    }
    if already > 0 {
        bar.set_message(format!("(+{already} done before)"));
    }
    bar
}

fn print_summary(summary: &Value, json: bool, text: impl FnOnce() -> String) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{summary}")?;
    } else {
        writeln!(out, "{}", text())?;
    }
    Ok(())
}

/// In-process engine or a `gar serve` endpoint.
enum Answerer {
    Local {
        engine: Box<gar_engine::Engine>,
        generation: gar_models::GenerationConfig,
    },
    Remote {
        client: endpoint::Client,
        /// GAR-Bench re-decodes the tokens its own way (see [`gar_bench_text`]).
        processor: Option<Box<gar_processor::GarProcessor>>,
    },
}

/// Whether the benchmark keeps special tokens in its answers.
fn keeps_special_tokens(bench: Benchmark) -> bool {
    matches!(
        bench,
        Benchmark::GarBenchVqa | Benchmark::GarBenchSimple | Benchmark::GarBenchDetailed
    )
}

/// GAR-Bench's inference decodes with `skip_special_tokens=False`, strips, and removes
/// `<|eot_id|>` (benchmarks.md §3.2, §4.1), so `<PromptN>` survive in Caption-Simple answers.
fn gar_bench_text(processor: &gar_processor::GarProcessor, tokens: &[u32]) -> Result<String> {
    let raw = processor.decode_raw(tokens, false)?;
    Ok(gar_processor::py_strip(&raw).replace("<|eot_id|>", ""))
}

impl Answerer {
    fn new(a: &RunArgs) -> Result<Self> {
        if let Some(url) = &a.endpoint {
            // The tokenizer (not the weights) of --model, for GAR-Bench's decoding.
            let processor = if keeps_special_tokens(a.bench) {
                let dir = gar_engine::resolve_model(&a.model.model, &a.model.revision)
                    .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
                let p = gar_processor::GarProcessor::from_dir(&dir)
                    .map_err(|e| Failure::new(Kind::Checkpoint, e))?;
                Some(Box::new(p))
            } else {
                None
            };
            return Ok(Self::Remote {
                client: endpoint::Client::new(url),
                processor,
            });
        }
        let engine = common::load_engine(&a.model, &a.process)?;
        let mut generation = engine.generation_config();
        generation.max_new_tokens = a.max_new_tokens;
        Ok(Self::Local {
            engine: Box::new(engine),
            generation,
        })
    }

    fn answer(&mut self, a: &RunArgs, index: usize, item: &Item) -> Result<Record> {
        let path = a.root.join(&item.image);
        let (text, tokens, prompt_tokens, stop_reason) = match self {
            Self::Local { engine, generation } => {
                let image = gar_processor::load_image(&path, &common::load_options(&a.process))
                    .map_err(|e| Failure::new(Kind::Input, e))?;
                let regions = items::engine_regions(item).map_err(input_error)?;
                let mut request = match &item.query {
                    Query::Describe => Request::new(Prompt::Describe {
                        instruction: items::DESCRIBE.to_string(),
                        slot: 1,
                    }),
                    Query::Ask(text) => Request::ask(text.clone()),
                };
                request.max_num_tiles = a.process.max_tiles;
                let answer = engine
                    .answer(&image, &regions, &request, generation, &mut |_| {
                        std::ops::ControlFlow::Continue(())
                    })
                    .map_err(Failure::from_engine)?;
                let text = if keeps_special_tokens(a.bench) {
                    gar_bench_text(engine.processor(), &answer.tokens)?
                } else {
                    answer.text
                };
                (
                    text,
                    answer.tokens,
                    answer.prompt_tokens,
                    answer.stop_reason,
                )
            }
            Self::Remote { client, processor } => {
                let reply = client.describe(&path, item, a.max_new_tokens, a.process.max_tiles)?;
                let text = match processor {
                    Some(p) => gar_bench_text(p, &reply.tokens)?,
                    None => reply.text,
                };
                (text, reply.tokens, reply.prompt_tokens, reply.stop_reason)
            }
        };
        Ok(Record {
            index,
            id: item.id.clone(),
            text,
            tokens,
            prompt_tokens,
            stop_reason,
        })
    }
}

pub fn merge(a: MergeArgs) -> Result<()> {
    let mut manifests = Vec::new();
    for dir in &a.shards {
        manifests.push((dir, read_manifest(dir).map_err(input_error)?));
    }
    let (_, first) = &manifests[0];
    let count = first.shard.count;
    let mut seen_shards = vec![None::<&PathBuf>; count];
    for (dir, m) in &manifests {
        let mut same = m.clone();
        same.shard = first.shard;
        if &same != first {
            bail!(input_error(anyhow!(
                "{} and {} are shards of different runs",
                a.shards[0].display(),
                dir.display()
            )));
        }
        if let Some(other) = seen_shards[m.shard.index].replace(dir) {
            bail!(input_error(anyhow!(
                "{} and {} are both shard {}/{count}",
                other.display(),
                dir.display(),
                m.shard.index
            )));
        }
    }
    if let Some(i) = seen_shards.iter().position(Option::is_none) {
        bail!(input_error(anyhow!("shard {i}/{count} is missing")));
    }
    let mut done: BTreeMap<usize, Record> = BTreeMap::new();
    for (dir, _) in &manifests {
        let path = dir.join(store::ITEMS_FILE);
        let (records, _) = store::read(&path)?;
        for r in records {
            let index = r.index;
            if done.insert(index, r).is_some() {
                bail!(input_error(anyhow!(
                    "item {index} appears twice (again in {})",
                    path.display()
                )));
            }
        }
    }
    let missing: Vec<usize> = first
        .selected
        .iter()
        .filter(|i| !done.contains_key(i))
        .copied()
        .collect();
    if !missing.is_empty() {
        bail!(input_error(anyhow!(
            "{} items are not finished in the shards (first: item {}); rerun those shards",
            missing.len(),
            missing[0]
        )));
    }
    if let Some(stray) = done.keys().find(|i| !first.selected.contains(i)) {
        bail!(input_error(anyhow!("item {stray} is not part of the run")));
    }
    let bench = Benchmark::from_str(&first.bench, true)
        .map_err(|e| input_error(anyhow!("run.json: unknown benchmark: {e}")))?;
    let all = items::load(bench, &first.root).map_err(input_error)?;
    let selected: Vec<(usize, &Item)> = first
        .selected
        .iter()
        .map(|&i| {
            all.get(i)
                .map(|it| (i, it))
                .ok_or_else(|| anyhow!("item {i} is not in the annotations any more"))
        })
        .collect::<Result<_>>()?;

    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let mut merged = first.clone();
    merged.shard = Shard { index: 0, count: 1 };
    write_manifest(&a.out, &merged)?;
    store::write_sorted(&a.out.join(store::ITEMS_FILE), &done)?;
    let score = outputs::write(&a.out, bench, &selected, &done)?;
    let summary = json!({
        "bench": first.bench,
        "out": a.out,
        "shards": count,
        "items": done.len(),
        "score": score,
    });
    print_summary(&summary, a.json, || {
        format!(
            "merged {count} shards: {} items of {} → {}",
            done.len(),
            first.bench,
            a.out.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gar_bench_answers_keep_prompt_tokens() {
        let dir =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/checkpoints/tiny-pe-l");
        let processor = gar_processor::GarProcessor::from_dir(&dir).unwrap();
        let tok = processor.tokenizer();
        let mut ids = tok.encode(" is beside", false).unwrap().get_ids().to_vec();
        ids.insert(0, tok.token_to_id("<Prompt1>").unwrap());
        ids.push(tok.token_to_id("<|eot_id|>").unwrap());
        assert_eq!(
            gar_bench_text(&processor, &ids).unwrap(),
            "<Prompt1> is beside"
        );
        // The other benchmarks' decoding drops them.
        assert_eq!(processor.decode(&ids).unwrap(), "is beside");
    }

    #[test]
    fn shards_parse() {
        assert_eq!(parse_shard("1/3"), Ok(Shard { index: 1, count: 3 }));
        assert!(
            parse_shard("3/3").is_err() && parse_shard("0/0").is_err() && parse_shard("1").is_err()
        );
    }
}
