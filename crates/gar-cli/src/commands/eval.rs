//! `gar eval`: score benchmark predictions and replay cached judge verdicts (gar-eval).
//!
//! Output contract: without `--json` a readable table; with `--json` the last stdout line is
//! one JSON object. `--report DIR` also writes summary.md, summary.json and chart.svg.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use gar_eval::io::find_companion;
use gar_eval::report::Report;
use gar_eval::{dlc, ferret, garbench, mdvp};
use serde::Serialize;

use crate::exit::{Failure, Kind};

#[derive(Subcommand)]
pub enum EvalCommand {
    /// Score model predictions that need no judge (GAR-Bench-VQA), or regroup MDVP-Bench
    /// region captions into per-question judge inputs.
    Score(ScoreArgs),
    /// Re-score a cached LLM-judge run with the reference's parsing and aggregation rules.
    Replay(ReplayArgs),
    /// Run a benchmark's inference (resumable, shardable); see docs/eval.md.
    Run(super::eval_run::RunArgs),
    /// Combine the shard folders of a `gar eval run --shard i/n` into one run.
    Merge(super::eval_run::MergeArgs),
    /// Send a run's predictions to an OpenAI-compatible LLM judge (cached) and score them.
    Judge(super::eval_judge::JudgeArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Benchmark {
    GarBenchVqa,
    GarBenchSimple,
    GarBenchDetailed,
    DlcBench,
    FerretBench,
    MdvpBench,
}

#[derive(Args)]
pub struct Common {
    /// Print one JSON object (the last stdout line) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write summary.md, summary.json and chart.svg into this folder.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Annotation file (VQA: GAR-Bench-VQA.json, DLC: qa.json, MDVP: mdvp_caption_mask.json);
    /// by default found from the input's …/<Bench>/annotations/ layout.
    #[arg(long, value_name = "FILE")]
    annotations: Option<PathBuf>,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[arg(long, value_enum)]
    bench: Benchmark,
    /// Predictions: GAR-Bench `gar_*_vqa.json` (or `[{image, model_output}]`), MDVP `model_outputs/gar_*.json`.
    #[arg(long, value_name = "FILE")]
    predictions: PathBuf,
    /// Another predictions file to compare letters with item by item (GAR-Bench-VQA).
    #[arg(long, value_name = "FILE")]
    reference: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
}

#[derive(Args)]
pub struct ReplayArgs {
    #[arg(long, value_enum)]
    bench: Benchmark,
    /// Cached judge run: DLC `gar_*_eval.json` / `gar_*_eval_gpt.json`, GAR-Bench `gar_*_{simple,detailed}_eval.json`,
    /// Ferret `review_refer_desc.jsonl`, MDVP a review `.jsonl` or the `mdvp_for_gpt4v_eval` folder.
    #[arg(long, value_name = "FILE")]
    cache: PathBuf,
    #[command(flatten)]
    common: Common,
}

pub fn run(cmd: EvalCommand) -> Result<()> {
    let result = match cmd {
        EvalCommand::Score(a) => score(a),
        EvalCommand::Replay(a) => replay(a),
        EvalCommand::Run(a) => super::eval_run::run(a),
        EvalCommand::Merge(a) => super::eval_run::merge(a),
        EvalCommand::Judge(a) => super::eval_judge::run(a),
    };
    result.map_err(exit_kind)
}

/// A malformed or unexpected benchmark file is bad input (exit 3); failing to read or write a
/// file stays an I/O failure (exit 1), following `crate::exit`.
fn exit_kind(e: anyhow::Error) -> anyhow::Error {
    use gar_eval::EvalError;
    match e.downcast_ref::<EvalError>() {
        None | Some(EvalError::Io { .. } | EvalError::Write { .. }) => e,
        Some(_) => Failure::new(Kind::Input, e).into(),
    }
}

/// Prints the result and writes the report; `extra` notes go to the table and the report.
fn emit<T: Serialize>(
    common: &Common,
    result: &T,
    mut report: Report,
    extra: Vec<String>,
) -> Result<()> {
    report.notes.extend(extra);
    if let Some(dir) = &common.report {
        report
            .write(dir)
            .with_context(|| format!("writing the report to {}", dir.display()))?;
        eprintln!("report written to {}", dir.display());
    }
    let text = if common.json {
        serde_json::to_string(result)? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`| head`) is not an error worth a panic or a message.
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The annotation file: `--annotations`, else found by layout.
fn annotations(common: &Common, start: &Path, candidates: &[&str], what: &str) -> Result<PathBuf> {
    match &common.annotations {
        Some(p) => Ok(p.clone()),
        None => Ok(find_companion(start, candidates, what)?),
    }
}

fn score(a: ScoreArgs) -> Result<()> {
    match a.bench {
        Benchmark::GarBenchVqa => score_vqa(&a),
        Benchmark::MdvpBench => score_mdvp(&a),
        _ => bail!("this benchmark needs an LLM judge: use `gar eval replay --bench … --cache <judged file>`"),
    }
}

fn read_vqa(path: &Path, common: &Common) -> Result<Vec<garbench::VqaPrediction>> {
    let ann = if garbench::vqa_predictions_self_contained(path)? && common.annotations.is_none() {
        None
    } else {
        let p = annotations(
            common,
            path,
            &[
                "annotations/GAR-Bench-VQA.json",
                "GAR-Bench/annotations/GAR-Bench-VQA.json",
            ],
            "GAR-Bench-VQA.json",
        )?;
        Some(garbench::read_vqa_annotations(&p)?)
    };
    Ok(garbench::read_vqa_predictions(path, ann.as_deref())?)
}

fn score_vqa(a: &ScoreArgs) -> Result<()> {
    let preds = read_vqa(&a.predictions, &a.common)?;
    let result = garbench::score_vqa(&preds);
    let mut json = serde_json::to_value(&result)?;
    let mut notes = Vec::new();
    if let Some(r) = &a.reference {
        let agreement = garbench::vqa_agreement(&preds, &read_vqa(r, &a.common)?);
        notes.push(format!(
            "same letter as {} on {}/{} items",
            r.display(),
            agreement.same,
            agreement.total
        ));
        json["agreement"] = serde_json::to_value(agreement)?;
    }
    emit(&a.common, &json, result.report(), notes)
}

fn score_mdvp(a: &ScoreArgs) -> Result<()> {
    let masks_path = annotations(
        &a.common,
        &a.predictions,
        &[
            "annotations/mdvp_caption_mask.json",
            "MDVP-Bench/annotations/mdvp_caption_mask.json",
        ],
        "mdvp_caption_mask.json",
    )?;
    let data = find_companion(&masks_path, &["data"], "MDVP-Bench data/ folder")?;
    let outputs: Vec<mdvp::RegionOutput> = gar_eval::io::read_list(&a.predictions)?;
    let masks: Vec<mdvp::RegionMask> = gar_eval::io::read_list(&masks_path)?;
    let grouped = mdvp::group(
        &a.predictions,
        &outputs,
        &masks,
        &mdvp::read_questions(&data)?,
    )?;
    // The reference's judged captions, to say which run they came from (optional).
    let cached = find_companion(
        &masks_path,
        &["mdvp_for_gpt4v_eval/natural_detailed_caption_box/prediction.json"],
        "cached judge inputs",
    )
    .ok()
    .and_then(|p| gar_eval::io::read_list::<mdvp::ReviewInput>(&p).ok());
    let summary =
        mdvp::summarize_grouping(&grouped, cached.as_deref().map(|c| (c, outputs.as_slice())));
    let mut notes = Vec::new();
    if let Some(dir) = &a.common.report {
        let written = mdvp::write_judge_inputs(dir, &grouped)?;
        notes.push(format!(
            "per-question judge inputs written to {}",
            written.display()
        ));
    }
    emit(&a.common, &summary, summary.report(), notes)
}

fn replay(a: ReplayArgs) -> Result<()> {
    let cache = &a.cache;
    match a.bench {
        Benchmark::DlcBench => {
            let c = dlc::read_cache(cache)?;
            // qa.json is optional: the cache's own details hold the same questions.
            let qa_path = match &a.common.annotations {
                Some(p) => Some(p.clone()),
                None => find_companion(cache, &["annotations/qa.json", "DLC-Bench/annotations/qa.json"], "qa.json").ok(),
            };
            let qa = qa_path.as_deref().map(dlc::read_qa).transpose()?;
            let qa_ref = qa_path.as_deref().zip(qa.as_deref());
            let r = dlc::replay(&c, qa_ref)?;
            emit(&a.common, &r, r.report(), vec![])
        }
        Benchmark::GarBenchSimple | Benchmark::GarBenchDetailed => {
            let split = if a.bench == Benchmark::GarBenchSimple { garbench::CaptionSplit::Simple } else { garbench::CaptionSplit::Detailed };
            let r = garbench::replay_captions(cache, split)?;
            emit(&a.common, &r, r.report(), vec![])
        }
        Benchmark::FerretBench => {
            let r = ferret::replay(cache)?;
            emit(&a.common, &r, r.report(), vec![])
        }
        Benchmark::MdvpBench => replay_mdvp(&a),
        Benchmark::GarBenchVqa => bail!("GAR-Bench-VQA has no judge: use `gar eval score --bench gar-bench-vqa --predictions …`"),
    }
}

fn replay_mdvp(a: &ReplayArgs) -> Result<()> {
    let cache = &a.cache;
    if cache.extension().is_some_and(|e| e == "jsonl") {
        let r = mdvp::replay_reviews(cache)?;
        return emit(&a.common, &r, r.report(), vec![]);
    }
    // The reference's cached judge inputs: the folder itself, or a file inside a phase folder.
    let folder = if cache.is_dir() {
        cache.clone()
    } else {
        cache
            .parent()
            .and_then(Path::parent)
            .map(Path::to_path_buf)
            .context("expected the mdvp_for_gpt4v_eval folder or a file inside it")?
    };
    let r = mdvp::audit(&folder)?;
    emit(&a.common, &r, r.report(), vec![])
}
