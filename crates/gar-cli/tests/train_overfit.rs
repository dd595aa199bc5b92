//! Issue #10's end-to-end check of `gar train` with the real GAR training forward: 50 optimizer steps
//! on the tiny checkpoint overfit three samples (the loss falls), the run is split 25 + resume + 25,
//! and the exported checkpoint generates the same greedy tokens in transformers (the PyTorch reference,
//! `tools/reference/train/generate_export.py`) as in `gar describe`.
//!
//! The training is chaotic (lr 3e-3: a learning rate 1e-6 higher gives an unrelated model by step ~20),
//! so another CPU, whose matmuls round differently, may train a different export. Hence two tests:
//! * `committed_export_describes_like_transformers` (CPU-independent): `gar describe` on the export
//!   committed in `fixtures/train/export_generate/export/` must give exactly the tokens transformers gave
//!   on it (`expected.json`); with `tools/reference/.venv` (unless `GAR_NO_REFERENCE_VENV=1`)
//!   transformers also runs live on it.
//! * `fifty_steps_overfit_...`: the live run (loss falls, resume, export loads, step-1 loss, inputs). If
//!   its export's weight statistics match the fixture's (this machine), its tokens must equal the
//!   fixture's too (and transformers live on it, with the venv); if not, it says so loudly and does not
//!   fail, since the committed export was checked anyway.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use image::{GrayImage, Luma, Rgb, RgbImage};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use sha2::{Digest, Sha256};

mod common;
use common::s;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

const CAPTIONS: [&str; 3] = [
    "A red square on the left.",
    "A round blue disc.",
    "A long green bar at the bottom.",
];

/// One generated 112×84 picture, three region masks (square, disc, bar) and a JSONL with one
/// caption per region (training data path A).
fn write_data(dir: &Path) {
    let (w, h) = (112u32, 84u32);
    let image = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x * 2 + y) % 256) as u8,
            (y * 3 % 256) as u8,
            ((x * y / 5) % 256) as u8,
        ])
    });
    image.save(dir.join("img.png")).unwrap();
    let masks: [Box<dyn Fn(i64, i64) -> bool>; 3] = [
        Box::new(|x, y| (8..40).contains(&x) && (10..40).contains(&y)),
        Box::new(|x, y| (x - 80) * (x - 80) + (y - 30) * (y - 30) < 200),
        Box::new(|x, y| (30..100).contains(&x) && (60..78).contains(&y)),
    ];
    let mut jsonl = String::new();
    for (i, (inside, caption)) in masks.iter().zip(CAPTIONS).enumerate() {
        let mask = GrayImage::from_fn(w, h, |x, y| {
            Luma([u8::from(inside(i64::from(x), i64::from(y))) * 255])
        });
        mask.save(dir.join(format!("m{i}.png"))).unwrap();
        let row = serde_json::json!({
            "image": "img.png",
            "regions": [{"mask": format!("m{i}.png")}],
            "conversations": [
                {"from": "human", "value": "<image>\nDescribe."},
                {"from": "gpt", "value": caption},
            ],
        });
        jsonl.push_str(&format!("{row}\n"));
    }
    std::fs::write(dir.join("data.jsonl"), jsonl).unwrap();
}

/// Constant rate 3e-3 (GAR's 1e-5 would need thousands of steps), one sample per step, 2 tiles.
fn write_config(dir: &Path, steps: usize) -> PathBuf {
    let text = format!(
        "out_dir = \"run\"\nseed = 5\n[model]\nkind = \"gar\"\ndtype = \"f32\"\ndir = \"{}\"\nmax_num_tiles = 1\n\
         [data]\njsonl = [\"data.jsonl\"]\nprompt_augmentation = false\n\
         [optim]\nlr = 0.003\nschedule = \"constant\"\n\
         [loop]\nsteps = {steps}\naccumulation = 1\nsave_every = 25\nkeep = 0\n",
        repo().join("fixtures/checkpoints/tiny-pe-l").display()
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `gar ARGS PATHS…`, which must succeed.
fn gar(args: &[&str], paths: &[&Path]) -> std::process::Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| s(a))
        .chain(paths.iter().map(|p| p.display().to_string()))
        .collect();
    let out = common::gar(&args);
    assert!(
        out.status.success(),
        "gar {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn log_losses(run: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

const NEW_TOKENS: usize = 16;
/// The region `gar describe` and transformers describe (the disc).
const MASK: &str = "m1.png";

/// What one training run left behind: its folder, the logged losses and `gar describe` on the export.
struct Run {
    dir: PathBuf,
    losses: Vec<(u64, f64)>,
    tokens: Vec<u64>,
    prompt_tokens: u64,
}

/// Writes the data into `dir` (emptied first), trains 25 + resume + 25 steps, checks the log, the resume
/// and that the loss falls, then runs `gar describe` on the export.
fn train_and_describe(dir: &Path) -> Run {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    write_data(dir);
    let run = dir.join("run");

    // 25 steps, then the same folder asked for 50: the second run resumes from checkpoint-25.
    gar(&["train", "--config"], &[&write_config(dir, 25)]);
    assert_eq!(log_losses(&run).len(), 25);
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("checkpoint-25/state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], 25, "{state}");
    let out = gar(&["train", "--config"], &[&write_config(dir, 50)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resumed from")
            && stderr.contains("checkpoint-25")
            && stderr.contains("(step 25)"),
        "{stderr}"
    );
    let losses = log_losses(&run);
    assert_eq!(
        losses.iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=50).collect::<Vec<_>>()
    );
    assert!(run.join("checkpoint-50/optimizer.safetensors").is_file());

    // Overfitting: measured 239.9 → 7.9 (first / last five steps); a loop that does not learn
    // stays near the start (per-sample losses 216–266 on the untrained checkpoint).
    let mean = |s: &[(u64, f64)]| s.iter().map(|l| l.1).sum::<f64>() / s.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[45..]));
    println!("loss: first five steps {first:.2}, last five {last:.2}");
    assert!(
        losses.iter().all(|l| l.1.is_finite()),
        "non-finite loss: {losses:?}"
    );
    assert!(
        last < first / 8.0,
        "the loss did not fall enough: first five {first:.2}, last five {last:.2}: {losses:?}"
    );

    let (tokens, prompt_tokens) = describe(&run.join("export"), dir);
    Run {
        dir: dir.to_path_buf(),
        losses,
        tokens,
        prompt_tokens,
    }
}

/// `gar describe` on `model` (greedy, the reference's defaults: slot 1, double BOS) with the picture and
/// mask in `data`: the generated token ids and the prompt length.
fn describe(model: &Path, data: &Path) -> (Vec<u64>, u64) {
    let path = |p: &Path| p.display().to_string();
    let v = common::ok(&common::gar(&[
        s("describe"),
        s("--max-new-tokens"),
        NEW_TOKENS.to_string(),
        s("--max-tiles"),
        s("1"),
        s("--json"),
        s("--model"),
        path(model),
        s("--image"),
        path(&data.join("img.png")),
        s("--mask"),
        path(&data.join(MASK)),
    ]));
    let tokens = common::json_tokens(&v["tokens"]);
    println!(
        "gar describe on {}: {tokens:?} {}",
        model.display(),
        v["text"]
    );
    assert!(!tokens.is_empty());
    let prompt_tokens = v["prompt_tokens"]
        .as_u64()
        .expect("prompt_tokens in --json");
    (tokens, prompt_tokens)
}

/// Relative tolerance on the per-tensor statistics of the exported weights and of their update. On this
/// machine the export is bit-identical run to run (also with RAYON_NUM_THREADS=1). The training is
/// chaotic, though (lr 3e-3; presumably AdamW's sign-like steps on tiny gradients): measured, a learning
/// rate 1e-6 higher gives losses 2e-4 apart at step 4 and unrelated from step ~20, statistics up to
/// 38 % apart and other tokens. So another CPU that rounds differently (gemm-common sizes its K blocks
/// from the L1 cache) gives a different export, not a nearby one; this tolerance only absorbs rounding
/// that did not cascade.
const STATS_RTOL: f64 = 1e-3;
/// Absolute slack on the per-step top-1/top-2 logit gaps when transformers runs live.
const MARGIN_TOL: f64 = 1e-2;

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn f32_tensors(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(key, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{key} in {}", path.display());
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (key, (view.shape().to_vec(), values))
        })
        .collect()
}

/// mean, mean |x|, rms, max |x| in f64, as make_export_generate_fixture.py computes them.
fn stats(values: impl Iterator<Item = f64>) -> [f64; 4] {
    let (mut n, mut sum, mut abs, mut sq, mut max) = (0.0, 0.0, 0.0, 0.0, 0.0f64);
    for x in values {
        n += 1.0;
        sum += x;
        abs += x.abs();
        sq += x * x;
        max = max.max(x.abs());
    }
    [sum / n, abs / n, (sq / n).sqrt(), max]
}

const STAT_NAMES: [&str; 4] = ["mean", "mean_abs", "rms", "max_abs"];

/// Every difference between `export`'s weights (and their update from `initial`) and the fixture's
/// statistics beyond `STATS_RTOL`, as readable lines (empty: the same export up to rounding). The mean,
/// which can be near 0, is compared relative to the rms. Also returns the largest relative difference.
fn stats_mismatches(export: &Path, initial: &Path, expected: &Value) -> (Vec<String>, f64) {
    let after = f32_tensors(export);
    let before = f32_tensors(initial);
    let expected = expected.as_object().unwrap();
    let mut bad = Vec::new();
    let mut worst = 0.0f64;
    let keys: Vec<&String> = after.keys().collect();
    let want: Vec<&String> = expected.keys().collect();
    if keys != want {
        return (
            vec![format!("keys {keys:?} vs fixture {want:?}")],
            f64::INFINITY,
        );
    }
    for (key, (shape, w)) in &after {
        let e = &expected[key];
        let e_shape: Vec<usize> = serde_json::from_value(e["shape"].clone()).unwrap();
        if *shape != e_shape {
            bad.push(format!("{key}: shape {shape:?} vs fixture {e_shape:?}"));
            continue;
        }
        let b = &before[key].1;
        let ours = [
            ("weights", stats(w.iter().map(|&x| f64::from(x)))),
            (
                "update",
                stats(w.iter().zip(b).map(|(&x, &y)| f64::from(x) - f64::from(y))),
            ),
        ];
        for (what, got) in ours {
            let want: Vec<f64> = STAT_NAMES
                .iter()
                .map(|s| e[what][s].as_f64().unwrap())
                .collect();
            for (i, name) in STAT_NAMES.iter().enumerate() {
                // The mean is compared relative to the rms (it may be close to 0); the others to themselves.
                let scale = if i == 0 { want[2] } else { want[i] };
                let diff = (got[i] - want[i]).abs();
                let rel = if diff == 0.0 { 0.0 } else { diff / scale };
                worst = worst.max(rel);
                if rel > STATS_RTOL {
                    bad.push(format!(
                        "{key} {what} {name}: {} vs fixture {} (relative {rel:.2e})",
                        got[i], want[i]
                    ));
                }
            }
        }
    }
    (bad, worst)
}

fn load_fixture() -> Value {
    let path = repo().join("fixtures/train/export_generate/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with tools/reference/regenerate.sh trainexport)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

/// The generated picture and mask in `dir` are the fixture's, pixel for pixel.
fn check_inputs(dir: &Path, fixture: &Value) {
    let image = image::open(dir.join("img.png")).unwrap().to_rgb8();
    let mask = image::open(dir.join(MASK)).unwrap().to_luma8();
    assert_eq!(fixture["mask"], MASK);
    assert_eq!(
        sha256_hex(image.as_raw()),
        fixture["image_pixels_sha256"].as_str().unwrap(),
        "the generated picture differs from the fixture's"
    );
    assert_eq!(
        sha256_hex(mask.as_raw()),
        fixture["mask_pixels_sha256"].as_str().unwrap(),
        "the generated mask differs from the fixture's"
    );
}

/// `gar describe`'s tokens and prompt length equal transformers' in the fixture.
fn check_tokens(tokens: &[u64], prompt_tokens: u64, fixture: &Value, what: &str) {
    let generate = &fixture["generate"];
    assert_eq!(generate["slot"], 1);
    assert_eq!(generate["max_num_tiles"], 1);
    assert_eq!(generate["max_new_tokens"], NEW_TOKENS);
    let theirs: Vec<u64> = serde_json::from_value(generate["tokens"].clone()).unwrap();
    println!(
        "transformers on the fixture's export: {theirs:?} (smallest top-1/top-2 gap {})",
        generate["min_margin"]
    );
    assert_eq!(
        tokens, theirs,
        "gar describe on {what} vs transformers' tokens in the fixture"
    );
    assert_eq!(
        prompt_tokens,
        generate["prompt_tokens"].as_u64().unwrap(),
        "prompt length: gar describe vs transformers"
    );
}

/// Checks the run's config, inputs and step-1 loss against the fixture, then whether its export is the
/// fixture's (weight statistics within `STATS_RTOL`). If so, its tokens must be the fixture's; if not (a
/// CPU that rounds differently: the training is chaotic), says so loudly and returns false.
fn check_against_fixture(run: &Run, fixture: &Value) -> bool {
    let repo_text = repo().display().to_string();
    let config = std::fs::read_to_string(run.dir.join("train.toml"))
        .unwrap()
        .replace(&repo_text, "{repo}");
    assert_eq!(
        config,
        fixture["config"].as_str().unwrap(),
        "the training config differs from the fixture's"
    );
    check_inputs(&run.dir, fixture);

    // The first loss is the untrained forward: only summation order can move it.
    let want_losses: Vec<f64> = serde_json::from_value(fixture["losses"].clone()).unwrap();
    assert_eq!(run.losses.len(), want_losses.len());
    let rel = |a: f64, b: f64| (a - b).abs() / b.abs();
    let first = rel(run.losses[0].1, want_losses[0]);
    assert!(
        first < 1e-4,
        "step 1 loss {} vs fixture {}",
        run.losses[0].1,
        want_losses[0]
    );
    let worst_loss = run
        .losses
        .iter()
        .zip(&want_losses)
        .map(|(a, &b)| rel(a.1, b))
        .fold(0.0, f64::max);

    let export = run.dir.join("run/export/model.safetensors");
    let initial = repo().join("fixtures/checkpoints/tiny-pe-l/model.safetensors");
    let identical =
        sha256_hex(&std::fs::read(&export).unwrap()) == fixture["export_sha256"].as_str().unwrap();
    let (bad, worst) = stats_mismatches(&export, &initial, &fixture["export_tensors"]);
    println!(
        "export vs fixture: bit-identical {identical}, largest relative difference of the weight \
         statistics {worst:.2e}, of the 50 losses {worst_loss:.2e}"
    );
    // The comparison can fail: the untrained checkpoint is far outside it.
    let (untrained, _) = stats_mismatches(&initial, &initial, &fixture["export_tensors"]);
    assert!(
        untrained.len() > 10,
        "the untrained checkpoint passes the statistics check: {untrained:?}"
    );
    if !bad.is_empty() {
        let shown: Vec<&String> = bad.iter().take(12).collect();
        // Straight to stderr, not println!: libtest hides a passing test's captured output, and this
        // note must show in CI's log.
        let _ = writeln!(
            std::io::stderr(),
            "\n******** NOTE: this run's export is NOT the one fixtures/train/export_generate was made from ********\n\
             {} of its weight statistics differ by more than {STATS_RTOL} (relative; largest {worst:.2e}); \
             the 50 losses differ by up to {worst_loss:.2e}. First differences:\n{}\n\
             This is expected on a CPU that rounds differently: the 50-step training at lr 3e-3 is chaotic \
             (a learning rate 1e-6 higher gives an unrelated model by step ~20), and the matmul kernels \
             size their blocks from the detected cache sizes, so summation order differs between CPUs. \
             So this run's tokens ({:?}) are NOT compared with the fixture's. The CPU-independent check \
             still runs: committed_export_describes_like_transformers requires `gar describe` on the \
             committed export (fixtures/train/export_generate/export/) to give transformers' tokens. \
             If the training itself changed, regenerate: tools/reference/regenerate.sh trainexport.\n\
             ****************************************************************************************************\n",
            bad.len(),
            shown
                .iter()
                .map(|l| format!("  {l}"))
                .collect::<Vec<_>>()
                .join("\n"),
            run.tokens,
        );
        return false;
    }
    check_tokens(&run.tokens, run.prompt_tokens, fixture, "this run's export");
    true
}

fn reference_python() -> Option<PathBuf> {
    let python = repo().join("tools/reference/.venv/bin/python");
    let hidden = std::env::var("GAR_NO_REFERENCE_VENV").is_ok_and(|v| v == "1");
    if hidden || !python.is_file() {
        let why = if hidden {
            "GAR_NO_REFERENCE_VENV=1".to_string()
        } else {
            format!("{} is missing", python.display())
        };
        println!("transformers not run live ({why}): checked against fixtures/train/export_generate only");
        None
    } else {
        Some(python)
    }
}

/// transformers live on `export` (picture and mask in `data`): same tokens as `gar describe` (`ours`)
/// and as the fixture.
fn check_with_transformers(
    export: &Path,
    data: &Path,
    ours: &[u64],
    python: &Path,
    fixture: &Value,
) {
    let out = Command::new(python)
        .arg(repo().join("tools/reference/train/generate_export.py"))
        .arg(export)
        .arg(data.join("img.png"))
        .arg(data.join(MASK))
        .args([
            "--max-num-tiles",
            "1",
            "--max-new-tokens",
            &NEW_TOKENS.to_string(),
        ])
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "generate_export.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().expect("a JSON line");
    let v: Value = serde_json::from_str(last).unwrap();
    let theirs: Vec<u64> = serde_json::from_value(v["tokens"].clone()).unwrap();
    println!(
        "transformers live on {}: {theirs:?} (smallest top-1/top-2 gap {})",
        export.display(),
        v["min_margin"]
    );
    assert_eq!(ours, theirs, "gar describe vs transformers on the export");
    let want = &fixture["generate"];
    assert_eq!(v["tokens"], want["tokens"], "transformers live vs fixture");
    assert_eq!(v["prompt_tokens"], want["prompt_tokens"]);
    let margins: Vec<f64> = serde_json::from_value(v["margins"].clone()).unwrap();
    let want_margins: Vec<f64> = serde_json::from_value(want["margins"].clone()).unwrap();
    assert_eq!(margins.len(), want_margins.len());
    let worst = margins
        .iter()
        .zip(&want_margins)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    println!("transformers live vs fixture: largest logit-gap difference {worst:.2e}");
    assert!(
        worst <= MARGIN_TOL,
        "per-step logit gaps live {margins:?} vs fixture {want_margins:?}"
    );
}

/// CPU-independent: the committed export (the one the fixture's tokens are transformers' on) gives
/// exactly those tokens in `gar describe` (the smallest top-1/top-2 gap is 0.85, far above rounding).
#[test]
fn committed_export_describes_like_transformers() {
    let fixture = load_fixture();
    let export = repo().join("fixtures/train/export_generate/export");
    assert_eq!(
        sha256_hex(&std::fs::read(export.join("model.safetensors")).unwrap()),
        fixture["export_sha256"].as_str().unwrap(),
        "fixtures/train/export_generate/export is not the export expected.json describes"
    );
    let dir = std::env::temp_dir().join(format!("gar-train-committed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_data(&dir);
    check_inputs(&dir, &fixture);
    let (tokens, prompt_tokens) = describe(&export, &dir);
    check_tokens(&tokens, prompt_tokens, &fixture, "the committed export");
    if let Some(python) = reference_python() {
        check_with_transformers(&export, &dir, &tokens, &python, &fixture);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fifty_steps_overfit_resume_and_the_export_generates_like_transformers() {
    let fixture = load_fixture();
    let dir = std::env::temp_dir().join(format!("gar-train-overfit-{}", std::process::id()));
    let run = train_and_describe(&dir);
    let same_export = check_against_fixture(&run, &fixture);
    // Live transformers on this run's export only when it is the fixture's (else the committed-export
    // test has done the check that matters, and an unrelated model may have near-ties).
    if same_export {
        if let Some(python) = reference_python() {
            check_with_transformers(
                &run.dir.join("run/export"),
                &run.dir,
                &run.tokens,
                &python,
                &fixture,
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Only the run, kept in `GAR_TRAIN_OVERFIT_DIR`: the first step of `tools/reference/regenerate.sh
/// trainexport`, whose script then runs transformers on that folder's export and writes the fixture.
#[test]
#[ignore = "fixture generation: run with GAR_TRAIN_OVERFIT_DIR=<dir> -- --ignored"]
fn run_only_for_the_fixture() {
    let dir = std::env::var("GAR_TRAIN_OVERFIT_DIR")
        .expect("set GAR_TRAIN_OVERFIT_DIR to the folder the run should be kept in");
    let run = train_and_describe(Path::new(&dir));
    println!("kept the run in {}", run.dir.display());
}
