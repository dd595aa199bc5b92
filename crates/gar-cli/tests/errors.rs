//! Bad inputs give one clear `error: …` line and a meaningful exit code, never a panic:
//! 3 = the caller's input, 4 = the checkpoint.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gar-cli-errors-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn tiny(name: &str) -> String {
    fixtures()
        .join("checkpoints")
        .join(name)
        .display()
        .to_string()
}

fn s(v: &str) -> String {
    v.to_string()
}

/// Runs gar and checks the exit code and that stderr is one `error:` line mentioning `needle`.
fn expect_error(args: Vec<String>, code: i32, needle: &str) {
    let out = gar(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(code),
        "args {args:?}\nstderr: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected: {stderr}");
    assert!(
        errors[0].to_lowercase().contains(&needle.to_lowercase()),
        "'{needle}' not in: {}",
        errors[0]
    );
}

fn write_mask(path: &Path, w: u32, h: u32, inside: impl Fn(u32, u32) -> bool) {
    image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if inside(x, y) { 255 } else { 0 }])
    })
    .save(path)
    .expect("write mask");
}

fn demo(data: &Path) -> (String, String) {
    (
        data.join("assets/demo_image_1.png").display().to_string(),
        data.join("assets/demo_mask_1.png").display().to_string(),
    )
}

#[test]
fn corrupt_image_is_an_input_error() {
    let dir = tmp_dir("corrupt");
    let img = dir.join("broken.png");
    std::fs::write(&img, b"\x89PNG\r\n\x1a\nthis is not a png").unwrap();
    let mask = dir.join("m.png");
    write_mask(&mask, 8, 8, |_, _| true);
    let args = vec![
        s("describe"),
        s("--model"),
        tiny("tiny-pe-l"),
        s("--image"),
        img.display().to_string(),
        s("--mask"),
        mask.display().to_string(),
        s("--json"),
    ];
    expect_error(args, 3, "image");
}

#[test]
fn empty_mask_is_an_input_error() {
    let Some(data) = shared_data() else { return };
    let (img, _) = demo(&data);
    let dir = tmp_dir("empty");
    let mask = dir.join("empty.png");
    write_mask(&mask, 1024, 770, |_, _| false);
    let args = vec![
        s("describe"),
        s("--model"),
        tiny("tiny-pe-l"),
        s("--image"),
        img,
        s("--mask"),
        mask.display().to_string(),
        s("--json"),
    ];
    expect_error(args, 3, "empty");
}

#[test]
fn too_many_regions_names_the_limit() {
    let Some(data) = shared_data() else { return };
    let (img, mask) = demo(&data);
    // tiny-pe-g has prompt_numbers = 3.
    let mut args = vec![s("ask"), s("--model"), tiny("tiny-pe-g"), s("--image"), img];
    for _ in 0..4 {
        args.extend([s("--mask"), mask.clone()]);
    }
    args.extend([s("--json"), s("How do <Prompt0> and <Prompt3> relate?")]);
    expect_error(args, 3, "3");
}

#[test]
fn a_prompt_without_its_region_is_an_input_error() {
    let Some(data) = shared_data() else { return };
    let (img, mask) = demo(&data);
    let args = vec![
        s("ask"),
        s("--model"),
        tiny("tiny-pe-l"),
        s("--image"),
        img,
        s("--mask"),
        mask,
        s("--json"),
        s("What is <Prompt2> doing?"),
    ];
    expect_error(args, 3, "Prompt2");
}

#[test]
fn malformed_box_is_a_usage_error() {
    let args = vec![
        s("describe"),
        s("--model"),
        tiny("tiny-pe-l"),
        s("--image"),
        s("x.png"),
        s("--box"),
        s("10,20,5"),
        s("--json"),
    ];
    expect_error(args, 3, "box");
}

#[test]
fn missing_checkpoint_files_are_checkpoint_errors() {
    let Some(data) = shared_data() else { return };
    let (img, mask) = demo(&data);
    let dir = tmp_dir("nofiles");
    std::fs::copy(
        fixtures().join("checkpoints/tiny-pe-l/config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let args = vec![
        s("describe"),
        s("--model"),
        dir.display().to_string(),
        s("--image"),
        img.clone(),
        s("--mask"),
        mask.clone(),
        s("--json"),
    ];
    expect_error(args, 4, "tokenizer");

    let args = vec![
        s("describe"),
        s("--model"),
        s("nobody/not-a-cached-model"),
        s("--image"),
        img,
        s("--mask"),
        mask,
        s("--json"),
    ];
    expect_error(args, 4, "HF_HUB_OFFLINE");
}

#[test]
fn missing_weights_tensor_is_named() {
    let Some(data) = shared_data() else { return };
    let (img, mask) = demo(&data);
    let dir = tmp_dir("noweights");
    let src = fixtures().join("checkpoints/tiny-pe-l");
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() != "model.safetensors" {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    // Keep every tensor but the mask patch embedding.
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .tensors()
        .into_iter()
        .filter(|(name, _)| name != "mask_patch_embedding.weight")
        .collect();
    safetensors::serialize_to_file(kept, None, &dir.join("model.safetensors")).unwrap();
    let args = vec![
        s("describe"),
        s("--model"),
        dir.display().to_string(),
        s("--image"),
        img,
        s("--mask"),
        mask,
        s("--json"),
    ];
    expect_error(args, 4, "mask_patch_embedding.weight");
}

#[test]
fn mismatched_tokenizer_is_a_checkpoint_error() {
    let Some(data) = shared_data() else { return };
    let (img, mask) = demo(&data);
    let dir = tmp_dir("mismatch");
    for entry in std::fs::read_dir(fixtures().join("checkpoints/tiny-pe-l")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
    }
    // The other checkpoint's tokenizer has different special-token ids.
    std::fs::copy(
        fixtures().join("checkpoints/tiny-pe-g/tokenizer.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    let args = vec![
        s("describe"),
        s("--model"),
        dir.display().to_string(),
        s("--image"),
        img,
        s("--mask"),
        mask,
        s("--json"),
    ];
    let out = gar(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
