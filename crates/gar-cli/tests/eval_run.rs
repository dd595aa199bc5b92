//! `gar eval run` / `gar eval merge` end to end with the tiny checkpoint on the items of
//! ../shared/data whose images exist: every benchmark with images, resume after an interruption
//! (GAR_EVAL_STOP_AFTER) and after a torn last line, 2 shards merged == one unsharded run (byte-equal files), and a run against
//! a real `gar serve` (--endpoint) giving the in-process predictions.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

fn tmp(name: &str) -> PathBuf {
    fresh_tmp("evalrun", name)
}

/// `gar eval run` flags for `bench` on the first `limit` items whose image exists, fast settings.
fn run_args(bench: &str, data: &Path, limit: usize, out: &Path) -> Vec<String> {
    vec![
        s("eval"),
        s("run"),
        s("--bench"),
        s(bench),
        s("--root"),
        data.display().to_string(),
        s("--model"),
        tiny_pe_l(),
        s("--skip-missing"),
        s("--limit"),
        limit.to_string(),
        s("--max-tiles"),
        s("1"),
        s("--max-new-tokens"),
        s("4"),
        s("--out"),
        out.display().to_string(),
        s("--json"),
    ]
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn assert_same_files(a: &Path, b: &Path, files: &[&str]) {
    for f in files {
        assert!(
            read(&a.join(f)) == read(&b.join(f)),
            "{f} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

#[test]
fn every_benchmark_with_images_runs_and_writes_reference_formats() {
    let Some(data) = shared_data() else { return };
    for bench in [
        "gar-bench-vqa",
        "gar-bench-simple",
        "gar-bench-detailed",
        "ferret-bench",
    ] {
        let out = tmp(bench);
        let summary = ok(&gar(&run_args(bench, &data, 2, &out)));
        assert_eq!(summary["items"], 2, "{bench}");
        assert_eq!(summary["computed"], 2, "{bench}");
        let preds: serde_json::Value =
            serde_json::from_slice(&read(&out.join("predictions.json"))).unwrap();
        let list = preds.as_array().expect("a list");
        assert_eq!(list.len(), 2, "{bench}");
        let lines = String::from_utf8(read(&out.join("items.jsonl"))).unwrap();
        let records: Vec<serde_json::Value> = lines
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(records.len(), 2);
        for (p, r) in list.iter().zip(&records) {
            assert_eq!(
                r["tokens"].as_array().unwrap().len(),
                4,
                "{bench}: --max-new-tokens"
            );
            let text = if bench == "ferret-bench" {
                &p["caption"]
            } else {
                &p["model_output"]
            };
            assert_eq!(text, &r["text"], "{bench}");
        }
        if bench == "ferret-bench" {
            assert!(list[0]["annotation"]["bbox"].is_array());
            assert!(list[0]["image_path"]
                .as_str()
                .unwrap()
                .ends_with("000000069138.jpg"));
        } else {
            // The annotation record is kept, so the reference scripts find their fields.
            assert!(list[0]["mask_rles"].is_array() && list[0]["image"].is_string());
        }
        if bench == "gar-bench-vqa" {
            // The existing scorer reads the reference-format file.
            let scored = ok(&gar(&[
                s("eval"),
                s("score"),
                s("--bench"),
                s("gar-bench-vqa"),
                s("--predictions"),
                out.join("predictions.json").display().to_string(),
                s("--json"),
            ]));
            assert_eq!(scored["total"], 2);
            let score: serde_json::Value =
                serde_json::from_slice(&read(&out.join("score.json"))).unwrap();
            assert_eq!(score["overall"], scored["overall"]);
            // The report: the chart names the published models next to this run.
            let chart = String::from_utf8(read(&out.join("chart.svg"))).unwrap();
            assert!(
                chart.starts_with("<svg") && chart.contains("GAR-8B"),
                "{chart}"
            );
            assert!(out.join("summary.md").is_file() && out.join("summary.json").is_file());
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn missing_images_name_the_file_or_are_skipped_and_counted() {
    let Some(data) = shared_data() else { return };
    // DLC-Bench and MDVP-Bench images are not in ../shared/data.
    for (bench, file) in [
        ("dlc-bench", "objects365_v2_01002306.jpg"),
        ("mdvp-bench", "web_shopping_251980.png"),
    ] {
        let out = tmp(&format!("missing-{bench}"));
        let mut args = run_args(bench, &data, 1, &out);
        args.retain(|a| a != "--skip-missing");
        let res = gar(&args);
        assert_eq!(res.status.code(), Some(3), "{bench}");
        let err = String::from_utf8_lossy(&res.stderr);
        assert!(
            err.contains(file) && err.contains("not found"),
            "{bench}: {err}"
        );
        let summary = ok(&gar(&run_args(bench, &data, 1, &out)));
        assert_eq!(summary["items"], 0);
        assert_eq!(
            summary["skipped_missing_images"],
            if bench == "dlc-bench" { 100 } else { 364 }
        );
        let _ = std::fs::remove_dir_all(&out);
    }
}

#[test]
fn resume_after_an_interruption_or_a_torn_line_equals_an_uninterrupted_run() {
    let Some(data) = shared_data() else { return };
    let whole = tmp("whole");
    ok(&gar(&run_args("gar-bench-vqa", &data, 3, &whole)));
    let files = ["items.jsonl", "predictions.json", "score.json", "run.json"];

    // Stopped (GAR_EVAL_STOP_AFTER: exit 75 right after the first item is on disk) — the state a
    // kill leaves, reached without racing a timer.
    let killed = tmp("killed");
    let stopped = Command::new(env!("CARGO_BIN_EXE_gar"))
        .args(run_args("gar-bench-vqa", &data, 3, &killed))
        .env("HF_HUB_OFFLINE", "1")
        .env("GAR_EVAL_STOP_AFTER", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(stopped.code(), Some(75), "the run stopped early");
    let jsonl = killed.join("items.jsonl");
    assert!(
        !killed.join("predictions.json").exists(),
        "an interrupted run writes no predictions"
    );
    let before = std::fs::read_to_string(&jsonl).unwrap().lines().count();
    assert_eq!(before, 1, "exactly one item finished before the stop");
    let summary = ok(&gar(&run_args("gar-bench-vqa", &data, 3, &killed)));
    assert_eq!(summary["already_done"], before);
    assert_eq!(
        summary["computed"],
        3 - before as u64,
        "finished items are not recomputed"
    );
    assert_same_files(&whole, &killed, &files);

    // A torn last line (killed mid-write) is dropped and that item redone.
    let torn = tmp("torn");
    std::fs::create_dir_all(&torn).unwrap();
    std::fs::copy(whole.join("run.json"), torn.join("run.json")).unwrap();
    let text = std::fs::read_to_string(whole.join("items.jsonl")).unwrap();
    let first_two: Vec<&str> = text.lines().take(2).collect();
    std::fs::write(
        torn.join("items.jsonl"),
        format!(
            "{}\n{}",
            first_two[0],
            &first_two[1][..first_two[1].len() / 2]
        ),
    )
    .unwrap();
    let summary = ok(&gar(&run_args("gar-bench-vqa", &data, 3, &torn)));
    assert_eq!(
        (
            summary["already_done"].as_u64(),
            summary["computed"].as_u64()
        ),
        (Some(1), Some(2))
    );
    assert_same_files(&whole, &torn, &files);

    // Another run's folder is refused rather than mixed.
    let res = gar(&run_args("gar-bench-vqa", &data, 2, &whole));
    assert_eq!(res.status.code(), Some(3));
    for d in [whole, killed, torn] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn two_shards_merged_equal_one_unsharded_run() {
    let Some(data) = shared_data() else { return };
    let whole = tmp("shards-whole");
    ok(&gar(&run_args("gar-bench-vqa", &data, 3, &whole)));
    let mut shard_dirs = Vec::new();
    for i in 0..2 {
        let dir = tmp(&format!("shard{i}"));
        let mut args = run_args("gar-bench-vqa", &data, 3, &dir);
        args.extend([s("--shard"), format!("{i}/2")]);
        let summary = ok(&gar(&args));
        assert_eq!(summary["items"], if i == 0 { 2 } else { 1 });
        assert!(
            !dir.join("predictions.json").exists(),
            "a shard is not a whole run"
        );
        shard_dirs.push(dir);
    }
    let merged = tmp("shards-merged");
    let mut merge = vec![
        s("eval"),
        s("merge"),
        s("--out"),
        merged.display().to_string(),
        s("--json"),
    ];
    // Any order.
    merge.extend(shard_dirs.iter().rev().map(|d| d.display().to_string()));
    let summary = ok(&gar(&merge));
    assert_eq!(summary["items"], 3);
    assert_same_files(
        &whole,
        &merged,
        &[
            "items.jsonl",
            "predictions.json",
            "score.json",
            "run.json",
            "summary.md",
            "summary.json",
            "chart.svg",
        ],
    );

    // A missing shard is refused.
    let res = gar(&[
        s("eval"),
        s("merge"),
        s("--out"),
        merged.display().to_string(),
        shard_dirs[0].display().to_string(),
    ]);
    assert_eq!(res.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&res.stderr).contains("shard 1/2 is missing"));
    for d in shard_dirs.into_iter().chain([whole, merged]) {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn endpoint_run_gives_the_in_process_predictions() {
    let Some(data) = shared_data() else { return };
    let server = Server::start(&tiny_pe_l());
    for bench in ["ferret-bench", "gar-bench-vqa"] {
        let local = tmp(&format!("local-{bench}"));
        ok(&gar(&run_args(bench, &data, 2, &local)));
        let remote = tmp(&format!("remote-{bench}"));
        let mut args = run_args(bench, &data, 2, &remote);
        args.extend([s("--endpoint"), server.url.clone()]);
        ok(&gar(&args));
        assert_same_files(&local, &remote, &["items.jsonl", "predictions.json"]);
        let _ = std::fs::remove_dir_all(local);
        let _ = std::fs::remove_dir_all(remote);
    }
}

fn judge_args(preds: &Path, data: &Path, url: &str, out: &Path) -> Vec<String> {
    vec![
        s("eval"),
        s("judge"),
        s("--bench"),
        s("ferret-bench"),
        s("--predictions"),
        preds.display().to_string(),
        s("--root"),
        data.display().to_string(),
        s("--judge-url"),
        url.to_string(),
        s("--judge-model"),
        s("tiny-pe-l"),
        s("--with-image"),
        s("--max-tokens"),
        s("6"),
        s("--concurrency"),
        s("2"),
        s("--out"),
        out.display().to_string(),
        s("--json"),
    ]
}

#[test]
fn judge_client_against_gar_serve_caches_every_reply() {
    let Some(data) = shared_data() else { return };
    let run = tmp("judge-run");
    ok(&gar(&run_args("ferret-bench", &data, 2, &run)));
    let preds = run.join("predictions.json");
    let server = Server::start(&tiny_pe_l());
    let url = format!("{}/v1", server.url);
    let out = tmp("judge-out");
    let first = ok(&gar(&judge_args(&preds, &data, &url, &out)));
    assert_eq!(
        (first["requests"].as_u64(), first["cache_hits"].as_u64()),
        (Some(2), Some(0))
    );
    // Every reply went through the reference parser (the tiny judge's words are no "g m" scores).
    assert_eq!(first["result"]["reviews"], 2);
    assert_eq!(first["parse_failures"], 2);
    let cache = std::fs::read_to_string(out.join("judge_cache.jsonl")).unwrap();
    assert_eq!(cache.lines().count(), 2);
    let reviews = std::fs::read_to_string(out.join("review_refer_desc.jsonl")).unwrap();
    assert_eq!(reviews.lines().count(), 2);
    // The review file is what `gar eval replay` scores.
    let replayed = ok(&gar(&[
        s("eval"),
        s("replay"),
        s("--bench"),
        s("ferret-bench"),
        s("--cache"),
        out.join("review_refer_desc.jsonl").display().to_string(),
        s("--json"),
    ]));
    assert_eq!(replayed["score"], first["score"]);

    // Second run: no request at all, even with the server gone.
    drop(server);
    let second = ok(&gar(&judge_args(&preds, &data, &url, &out)));
    assert_eq!(
        (second["requests"].as_u64(), second["cache_hits"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(
        std::fs::read_to_string(out.join("review_refer_desc.jsonl")).unwrap(),
        reviews
    );

    // With the cache elsewhere and nobody listening: retried with backoff, then a clear error.
    let mut args = judge_args(&preds, &data, &url, &out);
    args.extend([
        s("--cache"),
        out.join("other_cache.jsonl").display().to_string(),
        s("--retries"),
        s("2"),
        s("--backoff-ms"),
        s("10"),
    ]);
    let res = gar(&args);
    assert!(!res.status.success());
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(err.contains("gave up after 3 tries"), "{err}");
    for d in [run, out] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// The DLC-Bench Llama judge builds byte-exact reference prompts: importing the published judge
/// run (replies matched by prompt text) leaves nothing to ask — the URL is a closed port, so one
/// unmatched prompt would fail the run — and the score is the published one.
#[test]
fn dlc_judge_prompts_match_the_published_run_and_score_0_679() {
    let Some(data) = shared_data() else { return };
    let outputs = data.join("evaluation/DLC-Bench/model_outputs");
    let out = tmp("dlc-judge");
    let summary = ok(&gar(&[
        s("eval"),
        s("judge"),
        s("--bench"),
        s("dlc-bench"),
        s("--predictions"),
        outputs.join("gar_1b.json").display().to_string(),
        s("--root"),
        data.display().to_string(),
        s("--import"),
        outputs.join("gar_1b_eval.json").display().to_string(),
        s("--judge-url"),
        s("http://127.0.0.1:1/v1"),
        s("--judge-model"),
        s("llama3.1-8b"),
        s("--retries"),
        s("0"),
        s("--out"),
        out.display().to_string(),
        s("--json"),
    ]));
    assert_eq!(summary["requests"], 0);
    assert_eq!(summary["imported"], summary["questions"]);
    assert_eq!(summary["avg"], 0.679);
    // The judged file is in the reference format: `gar eval replay` scores it the same.
    let replayed = ok(&gar(&[
        s("eval"),
        s("replay"),
        s("--bench"),
        s("dlc-bench"),
        s("--cache"),
        out.join("dlc_eval.json").display().to_string(),
        s("--json"),
    ]));
    assert_eq!(replayed["avg"], 0.679);
    let _ = std::fs::remove_dir_all(out);
}

/// Ferret-Bench through the judge path: the published GAR-8B captions matched to their questions
/// by image and box, the published reviews imported (same question, same stripped answer), no
/// request left, and the published 64.8.
#[test]
fn ferret_judge_with_imported_reviews_scores_64_8() {
    let Some(data) = shared_data() else { return };
    let ferret = data.join("evaluation/Ferret-Bench");
    let out = tmp("ferret-judge");
    let summary = ok(&gar(&[
        s("eval"),
        s("judge"),
        s("--bench"),
        s("ferret-bench"),
        s("--predictions"),
        ferret
            .join("model_outputs/gar_8b.json")
            .display()
            .to_string(),
        s("--root"),
        data.display().to_string(),
        s("--import"),
        ferret
            .join("gpt4_result/gar_8b/review_refer_desc.jsonl")
            .display()
            .to_string(),
        s("--judge-url"),
        s("http://127.0.0.1:1/v1"),
        s("--judge-model"),
        s("gpt-4o"),
        s("--retries"),
        s("0"),
        s("--out"),
        out.display().to_string(),
        s("--json"),
    ]));
    assert_eq!(
        (summary["requests"].as_u64(), summary["imported"].as_u64()),
        (Some(0), Some(40))
    );
    assert_eq!(summary["score"], 64.8);
    let _ = std::fs::remove_dir_all(out);
}
