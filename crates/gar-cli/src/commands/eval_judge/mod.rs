//! `gar eval judge`: sends a run's predictions to an OpenAI-compatible LLM judge with the
//! reference prompts, caches the replies, writes the judged file in the reference's format and
//! scores it with the same code as `gar eval replay`. User documentation: docs/eval.md.
//!
//! Implemented: Ferret-Bench (the reference's text-only review; `--with-image` also attaches
//! the question's image, for vision judges such as `gar serve`, which needs at least one image per chat),
//! DLC-Bench with the text-only Llama protocol or the GPT protocol (focal crop + mask crop), the
//! GAR-Bench captions (image, focal crops and mask crops rendered here) and MDVP-Bench with the
//! corrected per-question protocol (painted boxes).

mod client;
mod dlc;
mod garbench;
mod mdvp;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use clap::Args;
use gar_eval::ferret::{self, ModelOutput};
use gar_eval::garbench::CaptionSplit;
use gar_eval::judge::{ImageRef, JudgeRequest, Part};
use serde_json::{json, Value};

use super::eval::Benchmark;
use crate::exit::{Failure, Kind};

#[derive(Args)]
pub struct JudgeArgs {
    #[arg(long, value_enum)]
    bench: Benchmark,
    /// The run's predictions.json (reference format, as `gar eval run` writes it).
    #[arg(long, value_name = "FILE")]
    predictions: PathBuf,
    /// Benchmark root (for the judge's reference answers, rules and images).
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Base URL of an OpenAI-compatible API, e.g. https://api.openai.com/v1.
    #[arg(long, value_name = "URL")]
    judge_url: String,
    /// The judge model's name on that API.
    #[arg(long, value_name = "NAME")]
    judge_model: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Retries per request on 429 / 5xx / connection errors (exponential backoff).
    #[arg(long, default_value_t = 5)]
    retries: u32,
    /// First backoff delay in milliseconds (doubled after each retry).
    #[arg(long, default_value_t = 1000)]
    backoff_ms: u64,
    /// Override the reference's max_tokens of every judge request.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Ferret-Bench: attach the question's image to the (text-only) review request.
    #[arg(long)]
    with_image: bool,
    /// DLC-Bench judge protocol: `llama` (eval_llama_without_image.py, caption text only) or
    /// `gpt` (eval_gpt_with_image.py: the focal crop of the image and of the mask, then the text;
    /// needs evaluation/DLC-Bench/images/).
    #[arg(long, value_enum, default_value = "llama")]
    protocol: DlcProtocol,
    /// Output folder: judge_cache.jsonl (reply cache), the judged file, summary.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Reuse the replies of an earlier judge run in the reference format: DLC-Bench
    /// `gar_*_eval.json` (matched by prompt text), Ferret-Bench `review_refer_desc.jsonl`
    /// (matched by question and reviewed answer). Only what is not found there is sent.
    #[arg(long, value_name = "FILE")]
    import: Option<PathBuf>,
    /// Reply cache (default: <out>/judge_cache.jsonl); share it between runs to never pay twice.
    #[arg(long, value_name = "FILE")]
    cache: Option<PathBuf>,
    /// Print a JSON summary as the last stdout line.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DlcProtocol {
    Llama,
    Gpt,
}

fn input(e: anyhow::Error) -> anyhow::Error {
    Failure::new(Kind::Input, e).into()
}

pub fn run(a: JudgeArgs) -> Result<()> {
    if a.bench == Benchmark::GarBenchVqa {
        bail!(input(anyhow!(
            "GAR-Bench-VQA needs no judge: score it with `gar eval score --bench gar-bench-vqa`"
        )));
    }
    if a.protocol == DlcProtocol::Gpt && a.bench != Benchmark::DlcBench {
        bail!(input(anyhow!("--protocol applies to dlc-bench only")));
    }
    let key = ["GAR_JUDGE_API_KEY", "OPENAI_API_KEY"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()));
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    let config = client::JudgeConfig {
        url: a.judge_url.clone(),
        model: a.judge_model.clone(),
        key,
        concurrency: a.concurrency,
        retries: a.retries,
        backoff: Duration::from_millis(a.backoff_ms),
        cache: a
            .cache
            .clone()
            .unwrap_or_else(|| a.out.join("judge_cache.jsonl")),
    };
    if a.bench == Benchmark::DlcBench {
        return judge_dlc(&a, &config);
    }
    if a.bench == Benchmark::MdvpBench {
        return judge_mdvp(&a, &config);
    }
    if let Some(split) = match a.bench {
        Benchmark::GarBenchSimple => Some(CaptionSplit::Simple),
        Benchmark::GarBenchDetailed => Some(CaptionSplit::Detailed),
        _ => None,
    } {
        return judge_captions(&a, &config, split);
    }
    let jobs = ferret_jobs(&a)?;
    let imported = a
        .import
        .as_deref()
        .map(ferret_import)
        .transpose()
        .map_err(input)?;
    let mut replies: Vec<Option<String>> = jobs
        .iter()
        .map(|j| {
            let key = (qid(&j.question_id), j.answer2.clone());
            imported.as_ref().and_then(|m| m.get(&key).cloned())
        })
        .collect();
    let imported_count = replies.iter().filter(|r| r.is_some()).count();
    let pending: Vec<usize> = (0..jobs.len()).filter(|&i| replies[i].is_none()).collect();
    let bodies: Vec<Value> = pending
        .iter()
        .map(|&i| {
            chat_body(
                &jobs[i].request,
                jobs[i].image.as_deref(),
                a.max_tokens,
                None,
            )
        })
        .collect::<Result<_>>()?;
    let (answers, stats) = client::ask_all(&config, &bodies, a.json)?;
    for (i, reply) in pending.into_iter().zip(answers) {
        replies[i] = Some(reply);
    }
    let replies: Vec<String> = replies.into_iter().map(Option::unwrap_or_default).collect();

    // The reference's review file, then the reference's scoring of it (`gar eval replay`).
    let reviews = a.out.join("review_refer_desc.jsonl");
    let mut text = String::new();
    for (n, (job, reply)) in jobs.iter().zip(&replies).enumerate() {
        let tuple = ferret::parse_score(reply).map_or(json!([-1.0, -1.0]), |(g, m)| json!([g, m]));
        let line = json!({
            "id": (n + 1).to_string(),
            "question_id": job.question_id,
            "category": job.category,
            "content": reply,
            "tuple": tuple,
            "answer1": job.answer1,
            "answer2": job.answer2,
        });
        text.push_str(&serde_json::to_string(&line)?);
        text.push('\n');
    }
    std::fs::write(&reviews, text)
        .with_context(|| format!("cannot write {}", reviews.display()))?;
    let scored = ferret::replay(&reviews)?;
    let report = scored.report();
    let summary = json!({
        "bench": "ferret-bench",
        "judged": jobs.len(),
        "imported": imported_count,
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "reviews": reviews,
        "score": scored.score,
        "parse_failures": scored.parse_failures,
        "result": scored,
    });
    let line = format!(
        "ferret-bench: {} reviews ({} requests, {} from the cache), score {} ({} unparsable) → {}",
        jobs.len(),
        stats.requests,
        stats.cache_hits,
        scored.score,
        scored.parse_failures,
        reviews.display()
    );
    finish(&a.out, a.json, &summary, &line, report)
}

fn judge_dlc(a: &JudgeArgs, config: &client::JudgeConfig) -> Result<()> {
    let protocol = match a.protocol {
        DlcProtocol::Llama => gar_eval::dlc::Protocol::Llama,
        DlcProtocol::Gpt => gar_eval::dlc::Protocol::Gpt,
    };
    let inputs = dlc::inputs(&a.predictions, &a.root, protocol).map_err(input)?;
    let imported = a
        .import
        .as_deref()
        .map(dlc::import)
        .transpose()
        .map_err(input)?;
    let mut replies: Vec<Vec<Option<String>>> = Vec::new();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    let mut bodies = Vec::new();
    for (o, object) in inputs.objects.iter().enumerate() {
        let mut row = Vec::new();
        // The GPT protocol's two crops, rendered once per object and only if something is asked.
        let mut renderer: Option<garbench::Renderer> = None;
        for (q, request) in object.requests.iter().enumerate() {
            let known = imported
                .as_ref()
                .and_then(|m| m.get(&object.prompts[q]).cloned());
            if known.is_none() {
                pending.push((o, q));
                let body = match protocol {
                    gar_eval::dlc::Protocol::Llama => chat_body(request, None, a.max_tokens, None)?,
                    gar_eval::dlc::Protocol::Gpt => {
                        if renderer.is_none() {
                            renderer = Some(dlc::renderer(&inputs, object).map_err(input)?);
                        }
                        let r = renderer.as_ref().expect("set above");
                        let mut body =
                            chat_body(request, None, a.max_tokens, Some(&|i| r.image_url(i)))?;
                        // eval_gpt_with_image.py also sends these (their API defaults).
                        body["top_p"] = json!(1);
                        body["frequency_penalty"] = json!(0);
                        body["presence_penalty"] = json!(0);
                        body
                    }
                };
                bodies.push(body);
            }
            row.push(known);
        }
        replies.push(row);
    }
    let imported_count = replies.iter().flatten().filter(|r| r.is_some()).count();
    let (answers, stats) = client::ask_all(config, &bodies, a.json)?;
    for ((o, q), reply) in pending.into_iter().zip(answers) {
        replies[o][q] = Some(reply);
    }
    let replies: Vec<Vec<String>> = replies
        .into_iter()
        .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    let (path, scored) = dlc::judged(&inputs, &replies, &a.out)?;
    let report = scored.report();
    let protocol_name = match a.protocol {
        DlcProtocol::Llama => "llama",
        DlcProtocol::Gpt => "gpt",
    };
    let summary = json!({
        "bench": "dlc-bench",
        "protocol": protocol_name,
        "objects": inputs.objects.len(),
        "questions": replies.iter().map(Vec::len).sum::<usize>(),
        "imported": imported_count,
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "judged": path,
        "pos": scored.pos,
        "neg": scored.neg,
        "avg": scored.avg,
        "result": scored,
    });
    let line = format!(
        "dlc-bench ({protocol_name} protocol): {} objects, pos {} neg {} avg {} ({} requests, {} cached, {} imported) → {}",
        inputs.objects.len(),
        scored.pos,
        scored.neg,
        scored.avg,
        stats.requests,
        stats.cache_hits,
        imported_count,
        path.display()
    );
    finish(&a.out, a.json, &summary, &line, report)
}

/// MDVP-Bench, corrected protocol: one review per question (its regions regrouped), per domain.
fn judge_mdvp(a: &JudgeArgs, config: &client::JudgeConfig) -> Result<()> {
    let jobs = mdvp::jobs(&a.predictions, &a.root).map_err(input)?;
    let imported = a
        .import
        .as_deref()
        .map(mdvp::import)
        .transpose()
        .map_err(input)?;
    let mut replies: Vec<Option<String>> = jobs
        .iter()
        .map(|j| {
            imported
                .as_ref()
                .and_then(|m| m.get(&mdvp::import_key(j)).cloned())
        })
        .collect();
    let imported_count = replies.iter().filter(|r| r.is_some()).count();
    let pending: Vec<usize> = (0..jobs.len()).filter(|&i| replies[i].is_none()).collect();
    let bodies: Vec<Value> = pending
        .iter()
        .map(|&i| {
            let job = &jobs[i];
            let render = |which: ImageRef| match which {
                ImageRef::PaintedBoxes => mdvp::painted_image_url(job).map_err(input),
                other => bail!("MDVP-Bench has no {other:?} image"),
            };
            chat_body(&job.request, None, a.max_tokens, Some(&render))
        })
        .collect::<Result<_>>()?;
    let (answers, stats) = client::ask_all(config, &bodies, a.json)?;
    for (i, reply) in pending.into_iter().zip(answers) {
        replies[i] = Some(reply);
    }
    let replies: Vec<String> = replies.into_iter().map(Option::unwrap_or_default).collect();
    let (path, scored) = mdvp::judged(&jobs, &replies, &a.out)?;
    let report = scored.report();
    let mut domains = serde_json::Map::new();
    for (phase, r) in &scored.domains {
        domains.insert(
            phase.clone(),
            json!({
                "questions": r.reviews,
                "score": scored.scores.get(phase),
                "gt_mean": r.gt_mean,
                "model_mean": r.model_mean,
            }),
        );
    }
    let summary = json!({
        "bench": "mdvp-bench",
        "protocol": "per-question (regions regrouped as <Region k>: …), painted boxes, score = model/(GT+1e-6) × 100",
        "questions": jobs.len(),
        "regions": jobs.iter().map(|j| j.grouped.regions).sum::<usize>(),
        "imported": imported_count,
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "reviews": path,
        "domains": domains,
        "groups": scored.groups,
        "overall": scored.overall_score,
        "parse_failures": scored.parse_failures,
        "comparable_to_published": false,
        "note": gar_eval::mdvp::NOTE,
        "result": scored,
    });
    let per_domain: Vec<String> = scored
        .scores
        .iter()
        .map(|(p, v)| format!("{} {v}", gar_eval::mdvp::domain(p)))
        .collect();
    let line = format!(
        "mdvp-bench: {} questions ({} requests, {} from the cache, {} imported), {}; overall {} ({} unparsable) → {}",
        jobs.len(),
        stats.requests,
        stats.cache_hits,
        imported_count,
        per_domain.join(", "),
        scored.overall_score,
        scored.parse_failures,
        path.display()
    );
    finish(&a.out, a.json, &summary, &line, report)
}

/// `question_id` as text (the files mix numbers and strings).
fn qid(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

/// Reviews of an earlier run (`review_refer_desc.jsonl`), by question and reviewed answer: a
/// review is reused only for the very same model answer.
fn ferret_import(path: &Path) -> Result<std::collections::HashMap<(String, String), String>> {
    let mut map = std::collections::HashMap::new();
    for r in ferret::read_reviews(path)? {
        if let (Some(content), Some(answer2)) = (r.content, r.answer2) {
            map.insert((qid(&r.question_id), answer2), content);
        }
    }
    Ok(map)
}

/// One judge call with what the review file records about it.
struct Job {
    request: JudgeRequest,
    image: Option<PathBuf>,
    question_id: Value,
    category: String,
    answer1: String,
    answer2: String,
}

/// Ferret-Bench: each prediction is matched to its question by image and box (a run may hold
/// any subset of the 40 questions), then reviewed against GPT-4's answer with the category's rule.
fn ferret_jobs(a: &JudgeArgs) -> Result<Vec<Job>> {
    let base = a.root.join("evaluation/Ferret-Bench");
    let preds: Vec<Value> = serde_json::from_str(
        &std::fs::read_to_string(&a.predictions)
            .with_context(|| format!("cannot read {}", a.predictions.display()))?,
    )
    .map_err(|e| input(anyhow!("{}: {e}", a.predictions.display())))?;
    let boxes: Vec<ferret::BoxReferItem> =
        gar_eval::io::read_list(&base.join("annotations/box_refer_caption.json"))?;
    let dir = base.join("ferret_gpt4_data");
    let questions = ferret::read_text_records(&dir.join("refer_desc/question.jsonl"))?;
    let contexts = ferret::read_text_records(&dir.join("refer_desc/context.jsonl"))?;
    let answers = ferret::read_text_records(&dir.join("refer_desc/answer.jsonl"))?;
    let rules = ferret::read_rules(&dir.join("rule.json"))?;
    let mut jobs = Vec::with_capacity(preds.len());
    for (n, p) in preds.iter().enumerate() {
        let out: ModelOutput = serde_json::from_value(p.clone())
            .map_err(|e| input(anyhow!("{} item {n}: {e}", a.predictions.display())))?;
        let bbox = p
            .pointer("/annotation/bbox")
            .cloned()
            .unwrap_or(Value::Null);
        let i = boxes
            .iter()
            .position(|b| out.image_path.ends_with(&b.image) && json!(b.annotation.bbox) == bbox)
            .ok_or_else(|| {
                input(anyhow!(
                    "{} item {n}: no Ferret-Bench question has this image and box",
                    a.predictions.display()
                ))
            })?;
        let (q, c, ans) = (&questions[i], &contexts[i], &answers[i]);
        let category = q.category.clone().unwrap_or_else(|| "refer_desc".into());
        let rule = rules
            .get(&category)
            .ok_or_else(|| anyhow!("rule.json has no rule for {category}"))?;
        let request = gar_eval::prompts::ferret_request(
            &c.text,
            &q.text,
            &ans.text,
            &out.caption,
            &category,
            rule,
        );
        jobs.push(Job {
            image: a
                .with_image
                .then(|| base.join("annotations/coco/val2017").join(&boxes[i].image)),
            question_id: q.question_id.clone(),
            answer2: ferret::postprocess_answer(&out.caption, &category),
            answer1: ans.text.clone(),
            category,
            request,
        });
    }
    Ok(jobs)
}

fn judge_captions(a: &JudgeArgs, config: &client::JudgeConfig, split: CaptionSplit) -> Result<()> {
    let items = garbench::inputs(&a.predictions, &a.root, split).map_err(input)?;
    let mut bodies = Vec::with_capacity(items.len());
    for item in &items {
        let renderer = garbench::Renderer::new(item).map_err(input)?;
        bodies.push(chat_body(
            &item.request,
            None,
            a.max_tokens,
            Some(&|i| renderer.image_url(i)),
        )?);
    }
    let (replies, stats) = client::ask_all(config, &bodies, a.json)?;
    let (path, scored) = garbench::judged(&items, &replies, &a.out, split)?;
    let report = scored.report();
    let summary = json!({
        "bench": scored.bench,
        "judged": items.len(),
        "requests": stats.requests,
        "cache_hits": stats.cache_hits,
        "retries": stats.retries,
        "judged_file": path,
        "accuracy": scored.accuracy,
        "correct": scored.correct,
        "total": scored.total,
        "result": scored,
    });
    let line = format!(
        "{}: {}/{} True ({} requests, {} from the cache) → {}",
        scored.bench,
        scored.correct,
        scored.total,
        stats.requests,
        stats.cache_hits,
        path.display()
    );
    finish(&a.out, a.json, &summary, &line, report)
}

/// Draws a named judge image: the `image_url` object (`url`, and `detail` where the reference
/// sets one).
type Render<'a> = &'a dyn Fn(ImageRef) -> Result<Value>;

/// The OpenAI chat body of a judge request (`model` is set by the client). Text parts are sent
/// as they are; `image` (if any) goes first in the user message; named images are drawn by
/// `renderer`.
fn chat_body(
    r: &JudgeRequest,
    image: Option<&Path>,
    max_tokens: Option<u32>,
    renderer: Option<Render>,
) -> Result<Value> {
    let mut content: Vec<Value> = Vec::new();
    if let Some(path) = image {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let mime = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        {
            "image/png"
        } else {
            "image/jpeg"
        };
        let url = format!(
            "data:{mime};base64,{}",
            base64::engine::general_purpose::STANDARD.encode(bytes)
        );
        content.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    for part in &r.user {
        match part {
            Part::Text { text } => content.push(json!({"type": "text", "text": text})),
            Part::Image { image } => match renderer {
                Some(render) => {
                    content.push(json!({"type": "image_url", "image_url": render(*image)?}))
                }
                None => bail!("rendering judge image {image:?} is not implemented"),
            },
        }
    }
    let mut messages = Vec::new();
    if let Some(system) = &r.system {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.push(json!({"role": "user", "content": content}));
    Ok(json!({
        "messages": messages,
        "temperature": r.temperature,
        "max_tokens": max_tokens.unwrap_or(r.max_tokens),
    }))
}

/// Writes `judge_summary.json` into the judge folder and prints the summary: the JSON object with
/// `--json`, else the one-line `line`.
/// Writes `judge_summary.json` and the run's report (`summary.md`, `summary.json`, `chart.svg`: the
/// scores next to the published GAR-1B / GAR-8B values), then prints the summary.
fn finish(
    out_dir: &Path,
    json: bool,
    summary: &serde_json::Value,
    line: &str,
    report: gar_eval::report::Report,
) -> Result<()> {
    report
        .write(out_dir)
        .with_context(|| format!("writing the report to {}", out_dir.display()))?;
    std::fs::write(
        out_dir.join("judge_summary.json"),
        serde_json::to_string_pretty(summary)? + "\n",
    )?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{summary}")?;
    } else {
        writeln!(out, "{line}")?;
    }
    Ok(())
}
