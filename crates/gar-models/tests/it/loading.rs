//! Checkpoint loading: sharded and reduced-precision files load to the same model, and a checkpoint that does
//! not fit the config fails with an error naming the tensor.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use gar_models::{GarModel, GarQuirks, LoadError, WeightError};

use crate::common::{diff, fixtures_dir};

/// A scratch directory under the target dir, emptied first.
fn scratch(name: &str) -> Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn tiny(name: &str) -> Option<PathBuf> {
    let dir = fixtures_dir().join("checkpoints").join(name);
    dir.join("model.safetensors").is_file().then_some(dir)
}

fn load_tensors(dir: &Path) -> Result<HashMap<String, Tensor>> {
    Ok(candle_core::safetensors::load(
        dir.join("model.safetensors"),
        &Device::Cpu,
    )?)
}

/// Writes `tensors` + the original config.json into `dir`.
fn write_checkpoint(src: &Path, dir: &Path, tensors: &HashMap<String, Tensor>) -> Result<()> {
    std::fs::copy(src.join("config.json"), dir.join("config.json"))?;
    candle_core::safetensors::save(tensors, dir.join("model.safetensors"))?;
    Ok(())
}

/// A small deterministic input: 2 tiles (1 thumbnail + 1×1 grid), labels with one region.
fn probe(model: &GarModel) -> Result<Tensor> {
    let dev = Device::Cpu;
    let pixels = (Tensor::arange(0f32, (2 * 3 * 448 * 448) as f32, &dev)?
        .reshape((2, 3, 448, 448))?
        .affine(1.0 / 9e5, -0.5)?
        .sin()?)
    .contiguous()?;
    let bg = model
        .config()
        .gar
        .as_ref()
        .map(|g| g.prompt_numbers)
        .unwrap_or(5) as u8;
    let mut labels = vec![bg; 2 * 448 * 448];
    for v in labels.iter_mut().skip(1000).take(40_000) {
        *v = 0;
    }
    let labels = Tensor::from_vec(labels, (2, 448, 448), &dev)?;
    Ok(model.encode_image(&pixels, Some(&labels))?)
}

#[test]
fn sharded_and_bf16_checkpoints_load() -> Result<()> {
    let Some(src) = tiny("tiny-pe-g") else {
        eprintln!("SKIPPED: fixtures/checkpoints/tiny-pe-g missing");
        return Ok(());
    };
    let dev = Device::Cpu;
    let base = GarModel::load(&src, DType::F32, &dev, GarQuirks::default())?;
    let want = probe(&base)?;

    // Two shards + index.json.
    let dir = scratch("sharded")?;
    std::fs::copy(src.join("config.json"), dir.join("config.json"))?;
    let all = load_tensors(&src)?;
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in all.iter().enumerate() {
        let (shard, file) = if i % 2 == 0 {
            (&mut a, "model-00001-of-00002.safetensors")
        } else {
            (&mut b, "model-00002-of-00002.safetensors")
        };
        shard.insert(k.clone(), v.clone());
        map.insert(k.clone(), serde_json::Value::String(file.into()));
    }
    candle_core::safetensors::save(&a, dir.join("model-00001-of-00002.safetensors"))?;
    candle_core::safetensors::save(&b, dir.join("model-00002-of-00002.safetensors"))?;
    let index = serde_json::json!({ "metadata": {}, "weight_map": map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string())?;
    let sharded = GarModel::load(&dir, DType::F32, &dev, GarQuirks::default())?;
    assert_eq!(diff(&probe(&sharded)?, &want)?.max_abs, 0.0);

    // Stored in bf16 / f16, computed in f32.
    for stored in [DType::BF16, DType::F16] {
        let dir = scratch(&format!("stored-{stored:?}"))?;
        let conv: HashMap<String, Tensor> = all
            .iter()
            .map(|(k, v)| Ok((k.clone(), v.to_dtype(stored)?)))
            .collect::<Result<_>>()?;
        write_checkpoint(&src, &dir, &conv)?;
        let m = GarModel::load(&dir, DType::F32, &dev, GarQuirks::default())?;
        let d = diff(&probe(&m)?, &want)?;
        assert!(d.min_cos > 0.99, "{stored:?}: {d:?}");
    }
    Ok(())
}

fn expect_weight_error(dir: &Path) -> WeightError {
    match GarModel::load(dir, DType::F32, &Device::Cpu, GarQuirks::default()) {
        Err(LoadError::Weight(w)) => w,
        Err(other) => panic!("expected a weight error, got: {other}"),
        Ok(_) => panic!("a broken checkpoint loaded"),
    }
}

#[test]
fn missing_or_misshaped_tensor_is_named() -> Result<()> {
    let Some(src) = tiny("tiny-pe-l") else {
        eprintln!("SKIPPED: fixtures/checkpoints/tiny-pe-l missing");
        return Ok(());
    };
    let all = load_tensors(&src)?;

    let name = "mllm.model.vision_tower.timm_model.blocks.1.attn.qkv.weight";
    let mut missing = all.clone();
    missing.remove(name);
    let dir = scratch("missing")?;
    write_checkpoint(&src, &dir, &missing)?;
    let err = expect_weight_error(&dir);
    assert!(
        matches!(&err, WeightError::Missing { name: n, expected, .. } if n == name && expected == &[96, 32])
    );
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains("missing"), "{msg}");
    eprintln!("missing: {msg}");

    let name = "mllm.model.language_model.layers.0.mlp.up_proj.weight";
    let mut bad = all.clone();
    bad.insert(
        name.to_string(),
        Tensor::zeros((64, 128), DType::F32, &Device::Cpu)?,
    );
    let dir = scratch("misshaped")?;
    write_checkpoint(&src, &dir, &bad)?;
    let err = expect_weight_error(&dir);
    assert!(
        matches!(&err, WeightError::Shape { name: n, expected, found, .. }
        if n == name && expected == &[128, 64] && found == &[64, 128])
    );
    let msg = err.to_string();
    assert!(
        msg.contains(name) && msg.contains("[64, 128]") && msg.contains("[128, 64]"),
        "{msg}"
    );
    eprintln!("misshaped: {msg}");

    // GAR needs its mask conv.
    let mut no_mask = all.clone();
    no_mask.remove("mask_patch_embedding.weight");
    let dir = scratch("no-mask")?;
    write_checkpoint(&src, &dir, &no_mask)?;
    assert!(expect_weight_error(&dir)
        .to_string()
        .contains("mask_patch_embedding.weight"));

    // No safetensors at all.
    let dir = scratch("empty")?;
    std::fs::copy(src.join("config.json"), dir.join("config.json"))?;
    let err = GarModel::load(&dir, DType::F32, &Device::Cpu, GarQuirks::default()).unwrap_err();
    assert!(matches!(err, LoadError::Files { .. }), "{err}");
    Ok(())
}

#[test]
fn tied_checkpoint_uses_embeddings_as_lm_head() -> Result<()> {
    let Some(src) = tiny("tiny-pe-l") else {
        return Ok(());
    };
    let all = load_tensors(&src)?;
    assert!(!all.contains_key("mllm.lm_head.weight"));
    let m = GarModel::load(&src, DType::F32, &Device::Cpu, GarQuirks::default())?;
    let h = Tensor::ones((1, 64), DType::F32, &Device::Cpu)?;
    let emb = &all["mllm.model.language_model.embed_tokens.weight"];
    let want = h.matmul(&emb.t()?)?;
    assert!(diff(&m.logits(&h)?, &want)?.max_abs < 1e-4);
    Ok(())
}

/// A plain Perception-LM checkpoint (the GAR checkpoint without `mllm.` and the mask conv, config =
/// `mllm_config`) loads and describes whole images exactly like GAR without region inputs.
#[test]
fn plain_perception_lm_checkpoint_runs() -> Result<()> {
    let Some(src) = tiny("tiny-pe-g") else {
        return Ok(());
    };
    let dev = Device::Cpu;
    let dir = scratch("plm")?;
    let gar_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json"))?)?;
    std::fs::write(dir.join("config.json"), gar_cfg["mllm_config"].to_string())?;
    let plm_tensors: HashMap<String, Tensor> = load_tensors(&src)?
        .into_iter()
        .filter_map(|(k, v)| k.strip_prefix("mllm.").map(|k| (k.to_string(), v)))
        .collect();
    candle_core::safetensors::save(&plm_tensors, dir.join("model.safetensors"))?;

    let plm = GarModel::load(&dir, DType::F32, &dev, GarQuirks::default())?;
    let gar = GarModel::load(&src, DType::F32, &dev, GarQuirks::default())?;
    assert!(plm.config().gar.is_none());
    let pixels = Tensor::randn(0f32, 0.5, (2, 3, 448, 448), &dev)?;
    let f_plm = plm.encode_image(&pixels, None)?;
    let f_gar = gar.encode_image(&pixels, None)?;
    assert_eq!(diff(&f_plm, &f_gar)?.max_abs, 0.0);
    assert!(plm
        .mask_embeds(&Tensor::zeros((2, 448, 448), DType::U8, &dev)?)
        .is_err());

    let image_id = plm.config().image_token_id;
    let mut ids = vec![1u32, 2, 3];
    ids.extend(std::iter::repeat_n(image_id, 2 * 256));
    ids.extend([5, 6]);
    let embeds = plm.embed_prompt(&ids, Some(&f_plm), (1, 1), &[])?;
    let mut cache = plm.new_cache(ids.len());
    let h = plm.forward(&embeds, 0, &mut cache)?;
    let want = gar.forward(
        &gar.embed_prompt(&ids, Some(&f_gar), (1, 1), &[])?,
        0,
        &mut gar.new_cache(8),
    )?;
    assert_eq!(diff(&h, &want)?.max_abs, 0.0);
    // Region prompts need GAR.
    let region = gar_models::RegionBox {
        crop_token_id: 404,
        bbox: [0.1, 0.1, 0.5, 0.5],
    };
    assert!(plm
        .embed_prompt(&ids, Some(&f_plm), (1, 1), &[region])
        .is_err());
    Ok(())
}

/// Quantizing while loading (layer by layer) gives the same model as loading dense and quantizing after.
#[test]
fn quantizing_at_load_matches_quantizing_after() -> Result<()> {
    let Some(src) = tiny("tiny-pe-l") else {
        eprintln!("SKIPPED: fixtures/checkpoints/tiny-pe-l missing");
        return Ok(());
    };
    let dev = Device::Cpu;
    for quant in [gar_models::Quant::Q8, gar_models::Quant::Q4] {
        let (at_load, report) =
            GarModel::load_quantized(&src, DType::F32, &dev, GarQuirks::default(), quant)?;
        let mut after = GarModel::load(&src, DType::F32, &dev, GarQuirks::default())?;
        let want_report = after.quantize_language_model(quant)?;
        assert_eq!(report, want_report, "{quant}");
        assert!(report.quantized > 0, "{quant}: nothing quantized");
        let ids: Vec<u32> = (0..40).map(|i| (i * 7 + 3) % 300).collect();
        let logits = |m: &GarModel| -> Result<Tensor> {
            let llama = m.llama();
            let mut cache = llama.new_cache(64);
            let embeds = llama.embed(&ids)?;
            Ok(llama.logits(&llama.forward(&embeds, 0, &mut cache)?)?)
        };
        assert_eq!(
            diff(&logits(&at_load)?, &logits(&after)?)?.max_abs,
            0.0,
            "{quant}"
        );
    }
    Ok(())
}
