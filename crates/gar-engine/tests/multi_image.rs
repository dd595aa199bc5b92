//! Multi-image prompts against the reference (fixtures/multi_image, made by
//! tools/reference/make_multi_image_fixture.py): two images with different tile grids in one PLM
//! prompt, no regions. Input ids and greedy tokens must be equal, every step's logits within the
//! f32 tolerance of the model parity ladder.

use std::path::PathBuf;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use gar_engine::{Engine, EngineOptions};
use gar_processor::{load_image, LoadOptions, Request, RgbImage};
use serde_json::Value;

/// The decoder rungs' relative tolerance in crates/gar-models/tests/it/parity.rs (see docs/parity.md).
const LOGITS_REL_TOL: f32 = 2.5e-4;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Fixture {
    meta: Value,
    tensors: std::collections::HashMap<String, Tensor>,
    images: Vec<RgbImage>,
}

impl Fixture {
    fn load() -> Result<Self> {
        let dir = root().join("fixtures/multi_image");
        let meta: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json"))?)?;
        let tensors =
            candle_core::safetensors::load(dir.join("tensors.safetensors"), &Device::Cpu)?;
        let images = meta["images"]
            .as_array()
            .context("images")?
            .iter()
            .map(|n| {
                let name = n.as_str().context("image name")?;
                Ok(load_image(dir.join(name), &LoadOptions::default())?)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            meta,
            tensors,
            images,
        })
    }

    fn ids(&self, key: &str) -> Result<Vec<u32>> {
        Ok(self.tensors[key]
            .to_vec1::<i64>()?
            .into_iter()
            .map(|v| v as u32)
            .collect())
    }

    fn request(&self) -> Result<Request> {
        let text = self.meta["text"].as_str().context("text")?;
        let tiles = self.meta["max_num_tiles"]
            .as_u64()
            .context("max_num_tiles")?;
        Ok(Request::ask(text).with_max_num_tiles(tiles as usize))
    }
}

fn engine() -> Result<Engine> {
    Ok(Engine::load(
        &root().join("fixtures/checkpoints/tiny-pe-l"),
        &EngineOptions::default(),
    )?)
}

/// max |a − b| / max |b|.
fn rel_diff(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let diff = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

#[test]
fn two_images_give_the_reference_ids_pixels_logits_and_tokens() -> Result<()> {
    let fx = Fixture::load()?;
    let engine = engine()?;
    let request = fx.request()?;
    let inputs = engine.prepare_images(&fx.images, &request)?;

    let tiles: Vec<usize> = serde_json::from_value(fx.meta["image_tiles"].clone())?;
    assert_eq!(inputs.image_tiles, tiles, "tiles per image");
    assert_eq!(inputs.input_ids, fx.ids("input_ids")?, "input ids");

    let stride = fx.meta["pixel_stride"].as_u64().context("pixel_stride")? as usize;
    let sample = fx.tensors["pixel_values_sample"].to_vec1::<f32>()?;
    assert_eq!(sample.len(), inputs.pixel_values.len().div_ceil(stride));
    for (k, want) in sample.iter().enumerate() {
        let got = inputs.pixel_values[k * stride];
        assert!(
            (got - want).abs() <= 1e-6,
            "pixel {}: {got} vs {want}",
            k * stride
        );
    }
    let plane = 3 * inputs.tile_size * inputs.tile_size;
    let sums = fx.tensors["pixel_values_tile_sums"].to_vec1::<f64>()?;
    assert_eq!(sums.len(), inputs.num_tiles);
    for (t, want) in sums.iter().enumerate() {
        let got: f64 = inputs.pixel_values[t * plane..(t + 1) * plane]
            .iter()
            .map(|&v| f64::from(v))
            .sum();
        assert!(
            (got - want).abs() <= 1e-3 * want.abs().max(1.0),
            "tile {t} sum {got} vs {want}"
        );
    }

    // Model level: the image features of both images scattered in order, greedy with each step's
    // logits, no stop (as the fixture's greedy loop).
    let model = engine.model();
    let ts = inputs.tile_size;
    let pixels = Tensor::from_slice(
        &inputs.pixel_values,
        (inputs.num_tiles, 3, ts, ts),
        model.device(),
    )?;
    let features = model.encode_image(&pixels, None)?;
    let (ncw, nch) = inputs.aspect_ratio;
    let embeds = model.embed_prompt(
        &inputs.input_ids,
        Some(&features),
        (ncw as usize, nch as usize),
        &[],
    )?;
    let want_tokens = fx.ids("generated_tokens")?;
    let want_logits = &fx.tensors["decode_logits"];
    let mut cache = model.new_cache(inputs.input_ids.len() + want_tokens.len());
    let mut logits = model.prefill(&embeds, &mut cache)?;
    let mut worst = 0f32;
    for (step, want_tok) in want_tokens.iter().enumerate() {
        let got = logits.to_vec1::<f32>()?;
        let want = want_logits.get(step)?.to_vec1::<f32>()?;
        let rel = rel_diff(&got, &want);
        worst = worst.max(rel);
        assert!(
            rel <= LOGITS_REL_TOL,
            "step {step}: logits off by {rel} (relative)"
        );
        let tok = gar_models::sampling::argmax(&got);
        assert_eq!(tok, *want_tok, "step {step}");
        logits = model.decode_step(tok, &mut cache)?;
    }
    eprintln!(
        "multi-image logits: worst relative difference {worst:.2e} over {} steps",
        want_tokens.len()
    );

    // Engine level: the same answer through `answer_images` (greedy, stop at <|eot_id|>).
    let hf = fx.ids_from_meta("hf_generate_tokens")?;
    let mut generation = engine.generation_config();
    generation.max_new_tokens = fx.meta["n_new_tokens"].as_u64().context("n_new_tokens")? as usize;
    let answer = engine.answer_images(&fx.images, &request, &generation, &mut |_| {
        std::ops::ControlFlow::Continue(())
    })?;
    let eot = fx.meta["eot_id"].as_u64().context("eot")? as u32;
    let hf_no_eot: Vec<u32> = hf.into_iter().take_while(|&t| t != eot).collect();
    assert_eq!(answer.tokens, hf_no_eot);
    assert_eq!(answer.prompt_tokens, inputs.input_ids.len());
    Ok(())
}

impl Fixture {
    fn ids_from_meta(&self, key: &str) -> Result<Vec<u32>> {
        Ok(serde_json::from_value(self.meta[key].clone())?)
    }
}

#[test]
fn one_image_through_the_multi_image_path_is_the_single_image_prompt() -> Result<()> {
    let fx = Fixture::load()?;
    let engine = engine()?;
    let request = fx.request()?;
    // Without regions, <Prompt0> in a single-image prompt must name a region: use plain text.
    let plain = Request::ask("What is shown?").with_max_num_tiles(4);
    let one = engine.prepare_images(&fx.images[1..], &plain)?;
    let single = engine.prepare(&fx.images[1], &[], &plain)?;
    assert_eq!(one.input_ids, single.input_ids);
    assert_eq!(one.pixel_values, single.pixel_values);
    assert_eq!(one.image_tiles, vec![single.num_tiles]);
    assert!(engine.prepare(&fx.images[1], &[], &request).is_err());
    Ok(())
}

#[test]
fn a_chat_without_images_is_refused() -> Result<()> {
    let fx = Fixture::load()?;
    let engine = engine()?;
    let err = gar_engine::Chat::with_images(&engine, Vec::new(), fx.request()?)
        .err()
        .context("no image must be refused")?;
    assert!(err.to_string().contains("at least one image"), "{err}");
    let empty: Vec<RgbImage> = Vec::new();
    assert!(engine
        .processor()
        .process_images(&empty, &fx.request()?)
        .is_err());
    Ok(())
}
