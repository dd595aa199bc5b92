//! Runs the built `gar` binary on each `gar eval` contract command with the shipped benchmark
//! files (skipped, with a message, when ../shared/data is absent).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn evaluation_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/evaluation");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!("SKIP: benchmark data not found at {}", dir.display());
        None
    }
}

/// Runs `gar eval <args>` and returns (success, stdout, stderr).
fn gar(args: &[&str]) -> (bool, String, String) {
    let (code, stdout, stderr) = gar_code(args);
    (code == Some(0), stdout, stderr)
}

/// Runs `gar eval <args>` and returns (exit code, stdout, stderr).
fn gar_code(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gar"))
        .arg("eval")
        .args(args)
        .output()
        .expect("run gar");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs with `--json` and parses the last stdout line.
fn gar_json(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.push("--json");
    let (ok, stdout, stderr) = gar(&all);
    assert!(ok, "gar eval {args:?} failed: {stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn score_gar_bench_vqa() {
    let Some(dir) = evaluation_dir() else { return };
    for (model, overall, correct) in [("1b", 47.9, 203), ("8b", 57.8, 245)] {
        let f = dir.join(format!("GAR-Bench/model_outputs/gar_{model}_vqa.json"));
        let v = gar_json(&["score", "--bench", "gar-bench-vqa", "--predictions", s(&f)]);
        assert_eq!(v["overall"], overall);
        assert_eq!(
            (v["correct"].as_u64(), v["total"].as_u64()),
            (Some(correct), Some(424))
        );
        assert_eq!(v["categories"].as_object().unwrap().len(), 7);
        assert!(v["overall_fraction"].as_f64().unwrap() > 0.4);
    }
    let f = dir.join("GAR-Bench/model_outputs/gar_8b_vqa.json");
    let v = gar_json(&["score", "--bench", "gar-bench-vqa", "--predictions", s(&f)]);
    assert_eq!(v["categories"]["relation"]["correct"], 66);
    assert_eq!(v["categories"]["relation"]["total"], 101);
    assert_eq!(v["categories"]["texture/pattern"]["accuracy"], 75.9);
}

#[test]
fn replay_dlc_bench_both_judges() {
    let Some(dir) = evaluation_dir() else { return };
    for (file, protocol, avg) in [
        ("gar_1b_eval.json", "llama-3.1-8b-text-only", 0.679),
        ("gar_8b_eval.json", "llama-3.1-8b-text-only", 0.674),
        ("gar_8b_eval_gpt.json", "gpt-4o-with-image", 0.770),
    ] {
        let f = dir.join("DLC-Bench/model_outputs").join(file);
        let v = gar_json(&["replay", "--bench", "dlc-bench", "--cache", s(&f)]);
        assert_eq!(v["avg"], avg, "{file}");
        assert_eq!(v["protocol"], protocol, "{file}");
        assert!(v["pos"].is_number() && v["neg"].is_number());
    }
}

#[test]
fn replay_gar_bench_captions() {
    let Some(dir) = evaluation_dir() else { return };
    for (bench, file, correct, total) in [
        ("gar-bench-simple", "gar_1b_simple_eval.json", 54, 97),
        ("gar-bench-simple", "gar_8b_simple_eval.json", 62, 97),
        ("gar-bench-detailed", "gar_1b_detailed_eval.json", 71, 107),
        ("gar-bench-detailed", "gar_8b_detailed_eval.json", 74, 107),
    ] {
        let f = dir.join("GAR-Bench/model_outputs").join(file);
        let v = gar_json(&["replay", "--bench", bench, "--cache", s(&f)]);
        assert_eq!(
            (v["correct"].as_u64(), v["total"].as_u64()),
            (Some(correct), Some(total)),
            "{file}"
        );
        assert!((v["accuracy"].as_f64().unwrap() - correct as f64 / total as f64).abs() < 1e-12);
    }
}

#[test]
fn replay_ferret_bench() {
    let Some(dir) = evaluation_dir() else { return };
    for (model, score) in [("gar_1b", 56.0), ("gar_8b", 64.8)] {
        let f = dir
            .join("Ferret-Bench/gpt4_result")
            .join(model)
            .join("review_refer_desc.jsonl");
        let v = gar_json(&["replay", "--bench", "ferret-bench", "--cache", s(&f)]);
        assert_eq!(v["score"], score, "{model}");
    }
}

#[test]
fn mdvp_bench_regroup_and_audit() {
    let Some(dir) = evaluation_dir() else { return };
    let root = dir.join("MDVP-Bench");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eval_cli_mdvp");
    let v = gar_json(&[
        "score",
        "--bench",
        "mdvp-bench",
        "--predictions",
        s(&root.join("model_outputs/gar_8b.json")),
        "--report",
        s(&out),
    ]);
    assert_eq!(
        (v["questions"].as_u64(), v["regions"].as_u64()),
        (Some(60), Some(364))
    );
    assert_eq!(v["comparable_to_published"], false);
    let answers: Value = serde_json::from_str(
        &std::fs::read_to_string(
            out.join("judge_inputs/natural_detailed_caption_box/prediction.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(answers.as_array().unwrap().len(), 10);
    let v = gar_json(&[
        "replay",
        "--bench",
        "mdvp-bench",
        "--cache",
        s(&root.join("mdvp_for_gpt4v_eval")),
    ]);
    assert_eq!(v["identical_inputs_across_phases"], true);
    assert_eq!(
        v["phases"]["natural_detailed_caption_box"]["pairs_matching_question_image"],
        0
    );
}

#[test]
fn tables_reports_and_errors() {
    let Some(dir) = evaluation_dir() else { return };
    let f = dir.join("GAR-Bench/model_outputs/gar_1b_vqa.json");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("eval_cli_vqa");
    let (ok, stdout, stderr) = gar(&[
        "score",
        "--bench",
        "gar-bench-vqa",
        "--predictions",
        s(&f),
        "--report",
        s(&out),
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("overall") && stdout.contains("203/424") && stdout.contains("GAR-8B"),
        "{stdout}"
    );
    for name in ["summary.md", "summary.json", "chart.svg"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    assert!(std::fs::read_to_string(out.join("chart.svg"))
        .unwrap()
        .starts_with("<svg"));
    // Missing file and wrong kind of file: a clear error naming the file, no panic.
    let (ok, _, stderr) = gar(&[
        "score",
        "--bench",
        "gar-bench-vqa",
        "--predictions",
        "/nonexistent/x.json",
    ]);
    assert!(
        !ok && stderr.contains("/nonexistent/x.json") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let simple = dir.join("GAR-Bench/model_outputs/gar_1b_simple_eval.json");
    let (ok, _, stderr) = gar(&[
        "replay",
        "--bench",
        "gar-bench-detailed",
        "--cache",
        s(&simple),
    ]);
    assert!(
        !ok && stderr.contains("gar_1b_simple_eval.json"),
        "{stderr}"
    );
    // Wrong kind of file: bad input (exit 3); missing file: I/O failure (exit 1).
    let (code, _, stderr) = gar_code(&["replay", "--bench", "dlc-bench", "--cache", s(&f)]);
    assert!(
        code == Some(3) && stderr.contains("gar_1b_vqa.json") && !stderr.contains("panicked"),
        "{stderr}"
    );
    let missing = [
        "replay",
        "--bench",
        "ferret-bench",
        "--cache",
        "/nonexistent/r.jsonl",
    ];
    assert_eq!(gar_code(&missing).0, Some(1));
}
