//! The parity ladder (spec §11) on every `fixtures/model/<case>`: each stage of our forward pass, fed only the
//! fixture's inputs (tiles, labels, ids, boxes), against the PyTorch reference's activations; then greedy
//! decoding against transformers' tokens.

use std::fmt::Write as _;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use gar_models::{generate_simple, GarModel, GarQuirks, GenerationConfig, RegionBox, StopReason};

use crate::common::{diff, model_cases, Case, Diff};

/// One row of the report.
pub struct Rung {
    pub stage: &'static str,
    pub diff: Diff,
}

pub struct CaseReport {
    pub rungs: Vec<Rung>,
    /// Reference greedy tokens and ours (step-by-step decode with the KV cache).
    pub want_tokens: Vec<u32>,
    pub got_tokens: Vec<u32>,
    /// Tokens from the public `generate` API (stops at <|eot_id|>) and transformers' `generate`.
    pub api_tokens: Vec<u32>,
    pub hf_tokens: Vec<u32>,
}

impl CaseReport {
    /// Number of leading tokens that agree with the reference.
    pub fn agreeing_prefix(&self) -> usize {
        self.want_tokens
            .iter()
            .zip(&self.got_tokens)
            .take_while(|(a, b)| a == b)
            .count()
    }

    pub fn render(&self, case: &str, dtype: DType) -> String {
        let mut s = format!("case {case} ({dtype:?}):\n");
        for r in &self.rungs {
            let _ = writeln!(
                s,
                "  {:<20} max|Δ| {:>10.3e}  rel {:>10.3e}  cos min {:.6} mean {:.6}",
                r.stage, r.diff.max_abs, r.diff.rel, r.diff.min_cos, r.diff.mean_cos
            );
        }
        let _ = writeln!(
            s,
            "  greedy tokens: {}/{} agree (prefix)",
            self.agreeing_prefix(),
            self.want_tokens.len()
        );
        s
    }
}

pub fn regions(case: &Case) -> Result<Vec<RegionBox>> {
    let boxes = case.t("bboxes")?.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let crops: Vec<u32> = case.meta["region_crop_token_ids"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    ensure!(
        boxes.len() == crops.len(),
        "{}: {} boxes for {} crop tokens",
        case.name,
        boxes.len(),
        crops.len()
    );
    Ok(boxes
        .into_iter()
        .zip(crops)
        .map(|(b, crop_token_id)| RegionBox {
            crop_token_id,
            bbox: [b[0], b[1], b[2], b[3]],
        })
        .collect())
}

/// Runs the full ladder of one case in `dtype` and measures every stage.
pub fn run_case(case: &Case, dtype: DType) -> Result<CaseReport> {
    let dev = Device::Cpu;
    let model = GarModel::load(case.checkpoint_dir(), dtype, &dev, GarQuirks::default())?;
    let mut rungs = Vec::new();
    // GAR_PARITY_DUMP=<dir> saves our activations (f32) as <dir>/<case>.safetensors for offline analysis.
    let mut dump = std::collections::HashMap::new();
    let mut push = |stage: &'static str, got: &Tensor, want: &Tensor| -> Result<()> {
        rungs.push(Rung {
            stage,
            diff: diff(got, want)?,
        });
        dump.insert(stage.to_string(), got.to_dtype(DType::F32)?);
        Ok(())
    };

    let pixels = case.pixel_values()?;
    let labels = case.labels()?;
    let stages = model.encode_image_stages(&pixels, labels.as_ref())?;
    // Per-tile activations are stored for a subset of tiles (`tile_indices`) to keep fixtures small.
    let tiles = match case.t("tile_indices") {
        Ok(t) => Some(t.to_dtype(DType::U32)?),
        Err(_) => None,
    };
    let sel = |x: &Tensor| -> Result<Tensor> {
        Ok(match &tiles {
            Some(idx) => x.index_select(idx, 0)?,
            None => x.clone(),
        })
    };
    if let (Some(got), Ok(want)) = (&stages.mask_embeds, case.t("mask_embeds")) {
        push("mask_embeds", &sel(got)?, want)?;
    }
    push(
        "vision_out",
        &sel(&stages.vision_out)?,
        case.t("vision_out")?,
    )?;
    push(
        "projector_unpooled",
        &sel(&stages.projector_unpooled)?,
        case.t("projector_unpooled")?,
    )?;
    push(
        "image_features",
        &stages.image_features,
        case.t("image_features")?,
    )?;

    let regions = regions(case)?;
    let ar = case.aspect_ratio();
    if !regions.is_empty() {
        let mut replays = Vec::new();
        let want_rois = case.t("replay_rois")?.to_vec2::<f32>()?;
        for (region, want_roi) in regions.iter().zip(&want_rois) {
            let (pr, pc) = model.config().pooled_grid();
            let (roi, _) = model.replay_roi(region.bbox, ar.0 * pc, ar.1 * pr);
            ensure!(
                roi[..] == want_roi[1..],
                "{}: roi {roi:?} vs reference {want_roi:?}",
                case.name
            );
            replays.push(model.replay_features(&stages.image_features, ar, region.bbox)?);
        }
        push("replay", &Tensor::stack(&replays, 0)?, case.t("replay")?)?;
    }

    let ids = case.ids("input_ids")?;
    let embeds = model.embed_prompt(&ids, Some(&stages.image_features), ar, &regions)?;
    push(
        "inputs_embeds",
        &embeds.squeeze(0)?,
        case.t("inputs_embeds")?,
    )?;

    let n_new = case.meta["n_new_tokens"].as_u64().unwrap_or(32) as usize;
    let mut cache = model.new_cache(ids.len() + n_new);
    let hidden = model.forward(&embeds, 0, &mut cache)?;
    push("final_hidden", &hidden.squeeze(0)?, case.t("final_hidden")?)?;
    let positions = case.t("logit_positions")?.to_dtype(DType::U32)?;
    let logits = model.logits(&hidden.squeeze(0)?.index_select(&positions, 0)?)?;
    push("prefill_logits", &logits, case.t("prefill_logits")?)?;
    // The decoder alone, fed the reference's own inputs_embeds (isolates its error from upstream stages).
    let ref_embeds = case.t("inputs_embeds")?.unsqueeze(0)?;
    let mut iso_cache = model.new_cache(ids.len());
    let iso_hidden = model.forward(&ref_embeds, 0, &mut iso_cache)?;
    push(
        "final_hidden (iso)",
        &iso_hidden.squeeze(0)?,
        case.t("final_hidden")?,
    )?;

    // Greedy decode step by step, keeping each step's logits, without stopping (the fixture's
    // `generated_tokens` run past <|eot_id|> for n_new_tokens).
    let eot = case.meta["eot_id"].as_u64().unwrap_or(u64::MAX) as u32;
    let mut step_logits = model.llama().last_logits(&hidden)?;
    let mut got_tokens = Vec::new();
    let mut all_logits = Vec::new();
    loop {
        all_logits.push(step_logits.squeeze(0)?);
        let tok = gar_models::sampling::argmax(&step_logits.squeeze(0)?.to_vec1::<f32>()?);
        got_tokens.push(tok);
        if got_tokens.len() == n_new {
            break;
        }
        step_logits = model.decode_step(tok, &mut cache)?.unsqueeze(0)?;
    }
    if let Ok(want) = case.t("decode_logits") {
        let steps = all_logits.len().min(want.dim(0)?);
        let got = Tensor::stack(&all_logits[..steps], 0)?;
        push("decode_logits", &got, &want.narrow(0, 0, steps)?)?;
    }

    if let Some(dir) = std::env::var_os("GAR_PARITY_DUMP") {
        let path = std::path::Path::new(&dir).join(format!("{}-{dtype:?}.safetensors", case.name));
        candle_core::safetensors::save(&dump, path)?;
    }
    let cfg = GenerationConfig {
        max_new_tokens: n_new,
        stop_tokens: vec![eot],
        ..GenerationConfig::default()
    };
    let out = generate_simple(model.llama(), &embeds, &cfg)?;
    if out.tokens.len() < n_new {
        ensure!(matches!(out.stop_reason, StopReason::StopToken(t) if t == eot));
    }
    let hf_tokens: Vec<u32> = case.meta["hf_generate_tokens"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64())
                .map(|v| v as u32)
                .collect()
        })
        .unwrap_or_default();
    Ok(CaseReport {
        rungs,
        want_tokens: case.ids("generated_tokens")?,
        got_tokens,
        api_tokens: out.tokens,
        hf_tokens,
    })
}

/// Relative tolerance (max |Δ| / max |reference|) of each f32 rung. Vision-side stages agree to ~1e-6. The
/// decoder stages are bounded by f32 noise itself: against an f64 evaluation of the same chain, the
/// reference's own f32 activations are off by up to 1.1e-4 relative on these tiny random models (their q/k
/// weights are deliberately large, so attention amplifies rounding), and ours by the same amount; the two
/// errors add up in a direct comparison. See docs/parity.md.
fn f32_rel_tol(stage: &str) -> f32 {
    match stage {
        "final_hidden" | "prefill_logits" | "final_hidden (iso)" | "decode_logits" => 2.5e-4,
        _ => 1e-5,
    }
}

#[test]
fn f32_ladder_matches_reference_on_every_case() -> Result<()> {
    let cases = model_cases();
    if cases.is_empty() {
        eprintln!("SKIPPED: no fixtures/model/<case> (run tools/reference/regenerate.sh)");
        return Ok(());
    }
    let mut failures = Vec::new();
    for name in &cases {
        let case = Case::load(name)?;
        let report = run_case(&case, DType::F32)?;
        eprint!("{}", report.render(name, DType::F32));
        for r in &report.rungs {
            if r.diff.rel > f32_rel_tol(r.stage) {
                failures.push(format!("{name}: {} rel {:.3e}", r.stage, r.diff.rel));
            }
        }
        if report.got_tokens != report.want_tokens {
            failures.push(format!(
                "{name}: greedy tokens differ\n  want {:?}\n  got  {:?}",
                report.want_tokens, report.got_tokens
            ));
        }
        if report.api_tokens != report.hf_tokens {
            failures.push(format!(
                "{name}: generate() differs from transformers' generate\n  want {:?}\n  got  {:?}",
                report.hf_tokens, report.api_tokens
            ));
        }
    }
    ensure!(
        failures.is_empty(),
        "parity failures:\n{}",
        failures.join("\n")
    );
    Ok(())
}

/// Stages computed before the decoder (vision tower, projector, replay, embedding scatter).
const VISION_SIDE: [&str; 6] = [
    "mask_embeds",
    "vision_out",
    "projector_unpooled",
    "image_features",
    "replay",
    "inputs_embeds",
];

/// Reduced-precision compute. Vision-side stages must keep every row's cosine ≥ 0.999 with the f32 reference.
/// The tiny decoders are chaotic by construction (large random q/k: PyTorch's own bf16 run of the same
/// decoder on the same inputs has row cosines down to 0.25 / mean 0.75-0.96 against its f32 run), so decoder
/// stages and token agreement are measured and reported, not asserted here; the real-weight check is the
/// SmolLM2 test.
fn reduced_precision(dtype: DType) -> Result<()> {
    let cases = model_cases();
    if cases.is_empty() {
        eprintln!("SKIPPED: no fixtures/model/<case>");
        return Ok(());
    }
    let mut failures = Vec::new();
    for name in &cases {
        let case = Case::load(name)?;
        let report = run_case(&case, dtype)?;
        eprint!("{}", report.render(name, dtype));
        for r in report
            .rungs
            .iter()
            .filter(|r| VISION_SIDE.contains(&r.stage))
        {
            if r.diff.min_cos < 0.999 {
                failures.push(format!(
                    "{name} {dtype:?}: {} min cos {:.6}",
                    r.stage, r.diff.min_cos
                ));
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "cosine failures:\n{}",
        failures.join("\n")
    );
    Ok(())
}

#[test]
fn bf16_stages_keep_cosine() -> Result<()> {
    reduced_precision(DType::BF16)
}

#[test]
fn f16_stages_keep_cosine() -> Result<()> {
    reduced_precision(DType::F16)
}
