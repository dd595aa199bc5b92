//! Checkpoint loading: the Meta key layout through the rename map, and errors that name the file
//! or tensor at fault. Needs only `fixtures/sam/tiny` (no shared data).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use common::{max_abs_diff, tiny_dir};
use gar_sam::{Layout, Prompt, Sam, SamError, Weights};

/// Inverse of `gar_sam::weights::meta_to_hf` for the tiny checkpoint's keys (written out
/// independently, so the test checks the map rather than restating it).
fn hf_to_meta(k: &str) -> String {
    if k == "shared_image_embedding.positional_embedding" {
        // Meta stores the Gaussian matrix once, in the prompt encoder.
        return "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix".into();
    }
    let mut s = k.to_string();
    if let Some(rest) = s.strip_prefix("vision_encoder.") {
        s = format!("image_encoder.{rest}")
            .replace("image_encoder.layers.", "image_encoder.blocks.")
            .replace(".layer_norm1", ".norm1")
            .replace(".layer_norm2", ".norm2")
            .replace("patch_embed.projection", "patch_embed.proj")
            .replace("neck.conv1", "neck.0")
            .replace("neck.norm1", "neck.1")
            .replace("neck.conv2", "neck.2")
            .replace("neck.norm2", "neck.3");
        return s;
    }
    let pairs = [
        (
            "prompt_encoder.point_embed.",
            "prompt_encoder.point_embeddings.",
        ),
        ("mask_embed.conv1", "mask_downscaling.0"),
        ("mask_embed.layer_norm1", "mask_downscaling.1"),
        ("mask_embed.conv2", "mask_downscaling.3"),
        ("mask_embed.layer_norm2", "mask_downscaling.4"),
        ("mask_embed.conv3", "mask_downscaling.6"),
        ("upscale_conv1", "output_upscaling.0"),
        ("upscale_layer_norm", "output_upscaling.1"),
        ("upscale_conv2", "output_upscaling.3"),
        ("layer_norm_final_attn", "norm_final_attn"),
        (".layer_norm", ".norm"),
        (".layers.0.", ".layers.1."),
        (".proj_in.", ".layers.0."),
        (".proj_out.", ".layers.2."),
    ];
    for (a, b) in pairs {
        let in_mlp = s.contains("output_hypernetworks_mlps") || s.contains("iou_prediction_head");
        let mlp_rule = a.starts_with(".layers.") || a.starts_with(".proj_");
        if mlp_rule && !in_mlp {
            continue;
        }
        s = s.replace(a, b);
    }
    s
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gar-sam-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn tiny_tensors() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(tiny_dir().join("model.safetensors"), &Device::Cpu).unwrap()
}

/// Writes `tensors` (+ the tiny config) as a checkpoint directory.
fn write_checkpoint(dir: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, dir.join("model.safetensors")).unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
}

/// A deterministic non-trivial test image (no shared data needed).
fn test_image() -> image::RgbImage {
    image::RgbImage::from_fn(300, 200, |x, y| {
        image::Rgb([
            (x * 255 / 299) as u8,
            (y * 255 / 199) as u8,
            (((x / 25) + (y / 25)) % 2 * 200) as u8,
        ])
    })
}

#[test]
fn meta_layout_loads_through_the_rename_map() {
    let hf = tiny_tensors();
    let mut meta = HashMap::new();
    for (k, v) in &hf {
        let m = hf_to_meta(k);
        // The tied Gaussian matrix comes back under the prompt encoder's HF name.
        let back = k.replace(
            "shared_image_embedding.",
            "prompt_encoder.shared_embedding.",
        );
        assert_eq!(
            gar_sam::weights::meta_to_hf(&m),
            back,
            "round trip of {k} via {m}"
        );
        meta.insert(m, v.clone());
    }
    assert!(meta.contains_key("image_encoder.patch_embed.proj.weight"));
    let w = Weights::from_tensors(meta.clone(), &Device::Cpu);
    assert_eq!(w.layout(), Layout::Meta);

    let dir = temp_dir("meta");
    write_checkpoint(&dir, &meta);
    let sam_meta = Sam::load(&dir, &Device::Cpu).unwrap();
    let sam_hf = Sam::load(tiny_dir(), &Device::Cpu).unwrap();
    let img = test_image();
    let prompt = Prompt::point(150.0, 100.0).with_box([20.0, 30.0, 250.0, 180.0]);
    let (ea, eb) = (sam_meta.embed(&img).unwrap(), sam_hf.embed(&img).unwrap());
    assert_eq!(max_abs_diff(&ea.embeddings, &eb.embeddings), 0.0);
    let (pa, pb) = (
        sam_meta.decode(&ea, &prompt).unwrap(),
        sam_hf.decode(&eb, &prompt).unwrap(),
    );
    assert_eq!(max_abs_diff(&pa.low_res, &pb.low_res), 0.0);
    assert_eq!(pa.scores, pb.scores);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    let mut t = tiny_tensors();
    t.remove("vision_encoder.neck.conv2.weight");
    let dir = temp_dir("missing");
    write_checkpoint(&dir, &t);
    let err = Sam::load(&dir, &Device::Cpu).expect_err("must fail");
    assert!(matches!(err, SamError::MissingTensor { .. }), "{err}");
    assert!(
        err.to_string().contains("vision_encoder.neck.conv2.weight"),
        "{err}"
    );

    let mut t = tiny_tensors();
    t.insert(
        "mask_decoder.iou_token.weight".into(),
        Tensor::zeros((2, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
    );
    write_checkpoint(&dir, &t);
    let err = Sam::load(&dir, &Device::Cpu).expect_err("must fail");
    let msg = err.to_string();
    assert!(matches!(err, SamError::Shape { .. }), "{msg}");
    assert!(
        msg.contains("mask_decoder.iou_token.weight") && msg.contains("[2, 32]"),
        "{msg}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_files_and_bad_configs_are_reported() {
    let err = Sam::load("/nonexistent/sam", &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("/nonexistent/sam"), "{err}");

    let dir = temp_dir("nofiles");
    let err = Sam::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");

    write_checkpoint(&dir, &tiny_tensors());
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = Sam::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    // No config.json and not a ViT-B/L/H: the shapes cannot say which model this is.
    std::fs::remove_file(dir.join("config.json")).unwrap();
    let err = Sam::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("config.json"), "{err}");

    std::fs::write(dir.join("model.safetensors"), b"garbage").unwrap();
    std::fs::copy(tiny_dir().join("config.json"), dir.join("config.json")).unwrap();
    let err = Sam::load(&dir, &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn prompts_outside_the_image_are_rejected() {
    let sam = Sam::load(tiny_dir(), &Device::Cpu).unwrap();
    let emb = sam.embed(&test_image()).unwrap();
    for p in [
        Prompt::point(300.0, 10.0),
        Prompt::point(-1.0, 10.0),
        Prompt::default().with_box([0.0, 0.0, 301.0, 10.0]),
        Prompt::default(),
    ] {
        let err = sam.decode(&emb, &p).expect_err("must fail");
        assert!(matches!(err, SamError::Prompt(_)), "{err}");
    }
    // Scribbles decode like the points they become.
    let s = Prompt::scribble(&[(10.0, 10.0), (200.0, 150.0)]).unwrap();
    assert_eq!(s.points.len(), gar_sam::prompt::SCRIBBLE_POINTS);
    sam.decode(&emb, &s).unwrap();
}
