//! Single-op fixtures: torchvision `roi_align` (every sampler branch, and GAR's double-scaled replay boxes)
//! and one Perception Encoder block with its RoPE table.

use std::sync::Arc;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use gar_models::nn::rope::{vision_rope_table, VisionRope};
use gar_models::roi_align::{gar_replay_roi, roi_align, RoiAlignParams};
use gar_models::vision::block::Block;
use gar_models::weights::Checkpoint;
use gar_models::GarConfig;

use crate::common::{diff, fixtures_dir};

fn load(
    dir: &std::path::Path,
) -> Option<(serde_json::Value, std::collections::HashMap<String, Tensor>)> {
    let meta = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let t = candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu).ok()?;
    Some((serde_json::from_str(&meta).ok()?, t))
}

#[test]
fn roi_align_matches_torchvision() -> Result<()> {
    let Some((meta, t)) = load(&fixtures_dir().join("ops/roi_align")) else {
        eprintln!("SKIPPED: fixtures/ops/roi_align missing");
        return Ok(());
    };
    // (1, C, H, W) → (H, W, C)
    let feature = t["feature"].squeeze(0)?.permute((1, 2, 0))?.contiguous()?;
    let (h, w, _) = feature.dims3()?;
    let params = |scale: f32| RoiAlignParams {
        pooled_h: 16,
        pooled_w: 16,
        spatial_scale: scale,
        sampling_ratio: 2,
        aligned: true,
    };
    let check = |rois: &Tensor, want: &Tensor, scale: f32, what: &str| -> Result<f32> {
        let rois = rois.to_vec2::<f32>()?;
        let mut worst = 0f32;
        for (i, r) in rois.iter().enumerate() {
            let got = roi_align(&feature, [r[1], r[2], r[3], r[4]], &params(scale))?; // (256, C)
            let want_i = want.get(i)?.flatten_from(1)?.t()?; // (C, 16, 16) → (256, C)
            let d = diff(&got, &want_i)?;
            ensure!(
                d.max_abs <= 1e-5,
                "{what} box {i} {r:?}: max |Δ| {}",
                d.max_abs
            );
            worst = worst.max(d.max_abs);
        }
        Ok(worst)
    };
    let plain = meta["plain_spatial_scale"].as_f64().unwrap_or(1.0) as f32;
    let a = check(&t["plain_rois"], &t["plain_out"], plain, "plain")?;

    // GAR boxes: our box arithmetic must reproduce the reference's f32 RoIs bit for bit.
    let (ncw, nch) = (
        meta["grid"]["ncw"].as_u64().unwrap_or(0) as usize,
        meta["grid"]["nch"].as_u64().unwrap_or(0) as usize,
    );
    ensure!(
        (16 * nch, 16 * ncw) == (h, w),
        "grid {ncw}x{nch} vs map {h}x{w}"
    );
    let bboxes = t["gar_bboxes"].to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let want_rois = t["gar_rois"].to_vec2::<f32>()?;
    let mut scale = 0f32;
    for (b, want) in bboxes.iter().zip(&want_rois) {
        let (roi, ss) = gar_replay_roi([b[0], b[1], b[2], b[3]], w, h, 28, true);
        ensure!(roi[..] == want[1..], "roi {roi:?} vs {want:?}");
        scale = ss;
    }
    ensure!(scale == meta["gar_spatial_scale"].as_f64().unwrap_or(0.0) as f32);
    // The quirk switch off samples the box itself (same RoI, spatial scale 1).
    let b0 = &bboxes[0];
    let (roi_fixed, ss_fixed) = gar_replay_roi([b0[0], b0[1], b0[2], b0[3]], w, h, 28, false);
    ensure!(roi_fixed[..] == want_rois[0][1..] && ss_fixed == 1.0);
    let b = check(&t["gar_rois"], &t["gar_out"], scale, "gar")?;
    eprintln!("roi_align: plain max|Δ| {a:.3e}, gar max|Δ| {b:.3e}");
    Ok(())
}

#[test]
fn pe_block_matches_timm() -> Result<()> {
    for ck in ["tiny-pe-l", "tiny-pe-g"] {
        let dir = fixtures_dir().join("ops/pe_block").join(ck);
        let ckpt_dir = fixtures_dir().join("checkpoints").join(ck);
        let Some((meta, t)) = load(&dir) else {
            eprintln!("SKIPPED: fixtures/ops/pe_block/{ck} missing");
            continue;
        };
        let cfg = GarConfig::from_file(ckpt_dir.join("config.json"))?;
        let ckpt = Arc::new(Checkpoint::open_dir(&ckpt_dir)?);
        let vb = ckpt.var_builder(DType::F32, &Device::Cpu);
        let prefix = meta["weights_prefix"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('.');
        let block = Block::new(&cfg.vision, vb.pp(prefix))?;

        // RoPE table: timm stores cat(sin, cos) with each angle repeated for its pair of dims.
        let (cos, sin, n, half) = vision_rope_table(&cfg.vision);
        let hd = 2 * half;
        let want = t["rope_embed"].to_vec2::<f32>()?;
        let mut rope_err = 0f32;
        for p in 0..n {
            for m in 0..hd {
                let (s, c) = (sin[p * half + m / 2], cos[p * half + m / 2]);
                rope_err = rope_err
                    .max((s - want[p][m]).abs())
                    .max((c - want[p][hd + m]).abs());
            }
        }
        ensure!(rope_err < 1e-5, "{ck}: rope table off by {rope_err}");

        let rope = VisionRope::new(&cfg.vision, &Device::Cpu)?;
        let (after_attn, out) = block.forward_parts(&t["input"], &rope)?;
        let da = diff(&after_attn, &t["after_attn"])?;
        let db = diff(&out, &t["output"])?;
        eprintln!(
            "pe_block {ck}: rope {rope_err:.2e}, after_attn rel {:.2e}, output rel {:.2e}",
            da.rel, db.rel
        );
        ensure!(da.rel < 1e-5 && db.rel < 1e-5, "{ck}: {da:?} {db:?}");
    }
    Ok(())
}
