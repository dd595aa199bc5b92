//! `gar eval judge --bench gar-bench-simple` against a real `gar serve` acting as the judge: each
//! request carries 5 images (full image, then focal crop and mask crop of both masks), which the
//! server answers as one PLM multi-image prompt. The tiny checkpoint's True/False verdicts are
//! arbitrary, so structure and counts are checked, not accuracy.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

fn tmp(name: &str) -> PathBuf {
    let dir = fresh_tmp("judgecap", name);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The first `n` published GAR-1B Caption-Simple predictions whose image is in the shared data.
fn published_items(data: &Path, n: usize) -> Vec<Value> {
    let path = data.join("evaluation/GAR-Bench/model_outputs/gar_1b_simple.json");
    let all: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("published predictions"))
            .expect("a JSON list");
    let annotations = data.join("evaluation/GAR-Bench/annotations");
    let items: Vec<Value> = all
        .into_iter()
        .filter(|r| {
            annotations
                .join(r["image"].as_str().expect("image"))
                .is_file()
        })
        .take(n)
        .collect();
    assert_eq!(items.len(), n, "{n} items with their image");
    items
}

fn judge_args(preds: &Path, data: &Path, url: &str, out: &Path) -> Vec<String> {
    vec![
        s("eval"),
        s("judge"),
        s("--bench"),
        s("gar-bench-simple"),
        s("--predictions"),
        preds.display().to_string(),
        s("--root"),
        data.display().to_string(),
        s("--judge-url"),
        url.to_string(),
        s("--judge-model"),
        s("tiny-pe-l"),
        s("--max-tokens"),
        s("4"),
        s("--concurrency"),
        s("2"),
        s("--retries"),
        s("0"),
        s("--out"),
        out.display().to_string(),
        s("--json"),
    ]
}

#[test]
fn caption_judge_against_gar_serve_sends_five_images_and_caches() {
    let Some(data) = shared_data() else { return };
    let items = published_items(&data, 2);
    for item in &items {
        // Full image + (focal crop, mask crop) per mask: the 5-image request of the brief.
        assert_eq!(item["mask_rles"].as_array().expect("masks").len(), 2);
    }
    let dir = tmp("run");
    let preds = dir.join("predictions.json");
    std::fs::write(&preds, serde_json::to_string(&items).unwrap()).unwrap();
    let out = dir.join("judge");
    let model = fixtures()
        .join("checkpoints/tiny-pe-l")
        .display()
        .to_string();
    let server = Server::start(&model);
    let url = format!("{}/v1", server.url);

    let first = ok(&gar(&judge_args(&preds, &data, &url, &out)));
    assert_eq!(first["requests"], 2, "{first}");
    assert_eq!(first["cache_hits"], 0);
    assert_eq!(first["retries"], 0);
    assert_eq!(first["judged"], 2);
    assert_eq!(first["total"], 2);
    let correct = first["correct"].as_u64().expect("correct");
    assert!(correct <= 2);
    let accuracy = first["accuracy"].as_f64().expect("accuracy");
    assert!((accuracy - correct as f64 / 2.0).abs() < 1e-9, "{first}");

    let cache = std::fs::read_to_string(out.join("judge_cache.jsonl")).expect("cache");
    assert_eq!(cache.lines().count(), 2);
    // The run's report: Markdown and JSON summaries and the chart next to the published numbers.
    let chart = std::fs::read_to_string(out.join("chart.svg")).expect("chart.svg");
    assert!(
        chart.starts_with("<svg") && chart.contains("GAR-1B"),
        "{chart}"
    );
    assert!(out.join("summary.md").is_file() && out.join("summary.json").is_file());
    let judged_path = out.join("simple_eval.json");
    let judged_text = std::fs::read_to_string(&judged_path).expect("judged file");
    let judged: Vec<Value> = serde_json::from_str(&judged_text).expect("judged JSON");
    assert_eq!(judged.len(), 2);
    for (record, item) in judged.iter().zip(&items) {
        assert_eq!(record["model_output"], item["model_output"]);
        // The tiny judge's reply, whatever it says, as the reference stores it.
        assert!(record["eval_result"].is_string(), "{record}");
    }
    // The judged file is what `gar eval replay` scores.
    let replayed = ok(&gar(&[
        s("eval"),
        s("replay"),
        s("--bench"),
        s("gar-bench-simple"),
        s("--cache"),
        judged_path.display().to_string(),
        s("--json"),
    ]));
    assert_eq!(replayed["accuracy"], first["accuracy"], "{replayed}");

    // The server saw all images of each request: 5 images × (thumbnail + 1 tile at --max-tiles 1)
    // × 256 tokens per request, so more than 2 × 2560 prompt tokens in all.
    let metrics = ureq::get(&format!("{}/metrics", server.url))
        .call()
        .expect("metrics")
        .into_string()
        .unwrap();
    let prompt_tokens: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gar_prompt_tokens_total "))
        .expect("gar_prompt_tokens_total")
        .trim()
        .parse()
        .unwrap();
    assert!(prompt_tokens > 2.0 * 2560.0, "{prompt_tokens}");
    eprintln!("judge: {first}\nserver prompt tokens: {prompt_tokens}");

    // Second run: every reply from the cache, no request (the server is gone).
    drop(server);
    let second = ok(&gar(&judge_args(&preds, &data, &url, &out)));
    assert_eq!(second["requests"], 0, "{second}");
    assert_eq!(second["cache_hits"], 2);
    assert_eq!(second["correct"], first["correct"]);
    assert_eq!(std::fs::read_to_string(&judged_path).unwrap(), judged_text);
    let _ = std::fs::remove_dir_all(dir);
}
